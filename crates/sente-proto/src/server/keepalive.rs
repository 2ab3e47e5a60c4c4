//! WebSocket keepalive of one server-side connection (spec 5.5, Sente >= 1.21 semantics).

/// What the keepalive asks the connection to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Send `[:chsk/ws-ping nil]`.
    Ping,
    /// Close the socket (code 1000): the client did not answer the ping in time.
    Close,
}

/// The server's fixed-interval liveness check of one WebSocket connection.
///
/// Every `ws_kalive_ms / 2` the check looks for activity (a frame received from the client, or a
/// push delivered to it; pings and replies the server sends do not count). With no activity it
/// sends a ping and checks again after `ws_ping_timeout_ms`; if there was still no activity the
/// connection is closed. With no ping timeout the server keeps pinging and never closes.
///
/// ```
/// use sente_proto::server::{Keepalive, KeepaliveAction};
/// let mut k = Keepalive::new(0, Some(25_000), Some(10_000));
/// assert_eq!(k.next_deadline(), Some(12_500));
/// assert_eq!(k.poll(12_500), None); // first tick: the open itself counts as activity
/// assert_eq!(k.poll(25_000), Some(KeepaliveAction::Ping));
/// assert_eq!(k.poll(35_000), Some(KeepaliveAction::Close));
/// ```
#[derive(Clone, Debug)]
pub struct Keepalive {
    interval: Option<u64>,
    ping_timeout: Option<u64>,
    next_check: Option<u64>,
    active: bool,
    awaiting_pong: bool,
}

impl Keepalive {
    /// A keepalive for a connection opened at `now`. `ws_kalive_ms` `None` disables it; the
    /// check interval is half of it (Sente >= 1.21, issue #455).
    pub fn new(now: u64, ws_kalive_ms: Option<u64>, ws_ping_timeout_ms: Option<u64>) -> Self {
        let interval = ws_kalive_ms.map(|ms| (ms / 2).max(1));
        Keepalive {
            interval,
            ping_timeout: ws_ping_timeout_ms,
            next_check: interval.map(|i| now + i),
            // The handshake push at open counts as a successful push.
            active: true,
            awaiting_pong: false,
        }
    }

    /// Records activity: a frame received from the client or a push delivered to it.
    pub fn handle_activity(&mut self) {
        self.active = true;
    }

    /// When [`Keepalive::poll`] next has something to decide.
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_check
    }

    /// Runs the check if it is due.
    pub fn poll(&mut self, now: u64) -> Option<KeepaliveAction> {
        let (due, interval) = (self.next_check?, self.interval?);
        if now < due {
            return None;
        }
        if self.active {
            self.active = false;
            self.awaiting_pong = false;
            self.next_check = Some(now + interval);
            return None;
        }
        if self.awaiting_pong && self.ping_timeout.is_some() {
            self.next_check = None;
            return Some(KeepaliveAction::Close);
        }
        self.awaiting_pong = true;
        self.next_check = Some(now + self.ping_timeout.unwrap_or(interval));
        Some(KeepaliveAction::Ping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_client_that_answers_is_pinged_every_timeout_plus_interval() {
        // Transcript 4-keepalive phase A: kalive 3000, ping timeout 2000 -> ping every ~3.5 s.
        let mut k = Keepalive::new(0, Some(3000), Some(2000));
        assert_eq!(k.poll(1500), None);
        assert_eq!(k.poll(3000), Some(KeepaliveAction::Ping));
        k.handle_activity(); // pong
        assert_eq!(k.next_deadline(), Some(5000));
        assert_eq!(k.poll(5000), None);
        assert_eq!(k.next_deadline(), Some(6500));
        assert_eq!(k.poll(6500), Some(KeepaliveAction::Ping));
    }

    #[test]
    fn close_after_ping_timeout() {
        let mut k = Keepalive::new(0, Some(3000), Some(2000));
        assert_eq!(k.poll(1500), None);
        assert_eq!(k.poll(3000), Some(KeepaliveAction::Ping));
        assert_eq!(k.poll(4999), None);
        assert_eq!(k.poll(5000), Some(KeepaliveAction::Close));
        assert_eq!(k.next_deadline(), None);
    }

    #[test]
    fn busy_client_is_never_pinged() {
        let mut k = Keepalive::new(0, Some(25_000), Some(10_000));
        for i in 1..100 {
            k.handle_activity();
            assert_eq!(k.poll(i * 12_500), None);
        }
    }

    #[test]
    fn no_ping_timeout_pings_forever() {
        let mut k = Keepalive::new(0, Some(2000), None);
        assert_eq!(k.poll(1000), None);
        assert_eq!(k.poll(2000), Some(KeepaliveAction::Ping));
        assert_eq!(k.poll(3000), Some(KeepaliveAction::Ping));
        assert_eq!(k.poll(4000), Some(KeepaliveAction::Ping));
    }

    #[test]
    fn disabled() {
        let mut k = Keepalive::new(0, None, Some(10));
        assert_eq!(k.next_deadline(), None);
        assert_eq!(k.poll(u64::MAX), None);
    }

    #[test]
    fn late_poll_is_fine() {
        let mut k = Keepalive::new(0, Some(25_000), Some(10_000));
        assert_eq!(k.poll(100_000), None);
        assert_eq!(k.next_deadline(), Some(112_500));
    }
}
