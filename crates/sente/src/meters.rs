//! The server's live meters, for [`Stats`](crate::Stats) and the [`admin`](crate::admin) page:
//! open WebSockets and held Ajax polls (gauges), events in and out, reply latency (a
//! histogram of power-of-two microsecond buckets), and a bounded ring of recent rejections.
//! Atomics only on the hot paths; the ring takes its lock only when a request is refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buckets of the reply-latency histogram: bucket `i` counts replies that took less than
/// `2^(i+1)` µs (and at least `2^i` µs, except bucket 0); the last one counts the rest.
pub const LATENCY_BUCKETS: usize = 32;

/// Default capacity of the recent-rejections ring
/// ([`Builder::recent_rejections`](crate::Builder::recent_rejections)).
pub(crate) const DEFAULT_RECENT_REJECTIONS: usize = 64;

/// At most this many bytes of a path or an `Origin` are kept in a rejection's detail.
const MAX_DETAIL_PART: usize = 120;

/// A request the server refused, as kept in the recent-rejections ring
/// ([`ServerHandle::recent_rejections`](crate::ServerHandle::recent_rejections)). Redacted:
/// no query string (it carries the CSRF token), no body, no cookies; the uid only when the
/// application opted in ([`Builder::record_rejected_uids`](crate::Builder::record_rejected_uids)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedRequest {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Why: `host`, `reject-fn`, `csrf`, `origin`, `unauthorized` (the guard's
    /// [`Rejection`](crate::Rejection)s), `missing client-id` or `unknown packer`.
    pub reason: &'static str,
    /// The HTTP status answered.
    pub status: u16,
    /// `ws` (a WebSocket upgrade), `ajax-get` (a handshake or poll) or `ajax-post`.
    pub transport: &'static str,
    /// The method and path (without the query), and the `Origin` if any, each cut at 120 bytes.
    pub detail: String,
    /// The request's uid (what `user_id_fn` says), when the application opted in.
    pub uid: Option<String>,
}

/// The reply latencies so far: how many, their sum, and the histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyHistogram {
    /// Replies sent.
    pub count: u64,
    /// Their latencies summed, in microseconds.
    pub sum_us: u64,
    /// Bucket `i` counts the replies that took less than `2^(i+1)` µs and (but for bucket 0) at
    /// least `2^i` µs; the last bucket counts the rest.
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// The upper bound (µs) under which `q` (0..=1) of the replies counted fell, read from the
    /// buckets (so within a factor of 2); `None` without replies.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        quantile_us(&self.buckets, q)
    }
}

/// The upper bound of the bucket holding quantile `q` of `buckets`.
pub(crate) fn quantile_us(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based (at least the first reply).
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(1u64 << (i + 1).min(63));
        }
    }
    Some(1u64 << LATENCY_BUCKETS.min(63))
}

#[derive(Debug)]
pub(crate) struct Meters {
    ws_open: AtomicUsize,
    ajax_polls: AtomicUsize,
    events_in: AtomicU64,
    events_out: AtomicU64,
    reply_count: AtomicU64,
    reply_sum_us: AtomicU64,
    reply_buckets: [AtomicU64; LATENCY_BUCKETS],
    rejected: AtomicU64,
    recent: Mutex<VecDeque<RejectedRequest>>,
    recent_cap: usize,
}

impl Meters {
    pub(crate) fn new(recent_cap: usize) -> Self {
        Meters {
            ws_open: AtomicUsize::new(0),
            ajax_polls: AtomicUsize::new(0),
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            reply_count: AtomicU64::new(0),
            reply_sum_us: AtomicU64::new(0),
            reply_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            recent_cap,
        }
    }

    /// Counts an open WebSocket until the returned gauge is dropped.
    pub(crate) fn ws_open(self: &Arc<Self>) -> Gauge {
        self.ws_open.fetch_add(1, Ordering::Relaxed);
        Gauge(self.clone(), GaugeKind::Ws)
    }

    /// Counts a held Ajax poll until the returned gauge is dropped.
    pub(crate) fn ajax_poll(self: &Arc<Self>) -> Gauge {
        self.ajax_polls.fetch_add(1, Ordering::Relaxed);
        Gauge(self.clone(), GaugeKind::AjaxPoll)
    }

    /// An event arrived from a client.
    pub(crate) fn event_in(&self) {
        self.events_in.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` pushed events went out to one client.
    pub(crate) fn events_out(&self, n: usize) {
        self.events_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A reply was sent, `took` after its event arrived.
    pub(crate) fn reply(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = us.max(1).ilog2() as usize;
        self.reply_count.fetch_add(1, Ordering::Relaxed);
        self.reply_sum_us.fetch_add(us, Ordering::Relaxed);
        self.reply_buckets[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused: counted, and `noted` (an admission refusal, whose head is known)
    /// kept in the ring (the oldest goes when it is full). Called by `Why::count` only.
    pub(crate) fn rejected(&self, noted: Option<RejectedRequest>) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let Some(mut r) = noted else { return };
        if self.recent_cap == 0 {
            return;
        }
        r.at_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent.len() >= self.recent_cap {
            recent.pop_front();
        }
        recent.push_back(r);
    }

    /// The recent rejections, oldest first.
    pub(crate) fn recent_rejections(&self) -> Vec<RejectedRequest> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn ws_connections(&self) -> usize {
        self.ws_open.load(Ordering::Relaxed)
    }

    pub(crate) fn ajax_polls(&self) -> usize {
        self.ajax_polls.load(Ordering::Relaxed)
    }

    pub(crate) fn events_in_total(&self) -> u64 {
        self.events_in.load(Ordering::Relaxed)
    }

    pub(crate) fn events_out_total(&self) -> u64 {
        self.events_out.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn latency(&self) -> LatencyHistogram {
        LatencyHistogram {
            count: self.reply_count.load(Ordering::Relaxed),
            sum_us: self.reply_sum_us.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.reply_buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// A rejection's detail: method and path (no query), and the `Origin`, each cut short.
pub(crate) fn detail(method: &http::Method, path: &str, origin: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(method.as_str());
    out.push(' ');
    out.push_str(cut(path));
    if let Some(o) = origin {
        out.push_str(" origin=");
        out.push_str(cut(o));
    }
    out
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_DETAIL_PART {
        return s;
    }
    let mut end = MAX_DETAIL_PART;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Clone, Copy)]
enum GaugeKind {
    Ws,
    AjaxPoll,
}

/// One unit of a gauge ([`Meters::ws_open`], [`Meters::ajax_poll`]), given back on drop.
pub(crate) struct Gauge(Arc<Meters>, GaugeKind);

impl Drop for Gauge {
    fn drop(&mut self) {
        match self.1 {
            GaugeKind::Ws => self.0.ws_open.fetch_sub(1, Ordering::Relaxed),
            GaugeKind::AjaxPoll => self.0.ajax_polls.fetch_sub(1, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let mut b = [0u64; LATENCY_BUCKETS];
        assert_eq!(quantile_us(&b, 0.5), None);
        b[3] = 98; // 8..16 µs
        b[10] = 2; // 1024..2048 µs
        assert_eq!(quantile_us(&b, 0.5), Some(16));
        assert_eq!(quantile_us(&b, 0.99), Some(2048));
        assert_eq!(quantile_us(&b, 0.0), Some(16));
    }

    #[test]
    fn ring_is_bounded_and_details_are_cut() {
        let m = Meters::new(2);
        for reason in ["a", "b", "c"] {
            m.rejected(Some(RejectedRequest {
                at_ms: 0,
                reason,
                status: 403,
                transport: "ws",
                detail: detail(&http::Method::GET, &"é".repeat(100), Some("http://x")),
                uid: None,
            }));
        }
        let r = m.recent_rejections();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].reason, "b");
        assert_eq!(m.rejected_total(), 3);
        assert!(r[0].detail.len() < 160 && r[0].detail.ends_with("origin=http://x"));
    }
}
