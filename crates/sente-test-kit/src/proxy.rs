//! A small TCP proxy in front of the test server. It lets scenarios refuse WebSocket upgrades
//! (the way a corporate proxy might), cut every connection at once and point at a restarted
//! server, without the server having to support any of that. [`Proxy::round_robin`] spreads
//! connections over several upstreams (cluster nodes), skipping the ones that refuse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Debug)]
struct ProxyState {
    /// Where new connections go (empty: refused); round-robin over several.
    targets: Vec<SocketAddr>,
    /// The upstream tried first for the next connection (an index into `targets`).
    next: usize,
    refuse_ws: bool,
    conns: Vec<AbortHandle>,
}

/// Which connections lose everything in both directions (see [`Proxy::blackhole`]): those
/// accepted before it was turned on. Each accepted connection takes the next serial number;
/// `below` is the count of connections accepted when the blackhole went on (0: off), so a
/// connection made while it is on, such as a client's reconnect racing the switch off, is
/// forwarded as usual.
#[derive(Debug, Default)]
struct Blackhole {
    accepted: AtomicU64,
    below: AtomicU64,
}

impl Blackhole {
    /// The serial number of a connection just accepted.
    fn admit(&self) -> u64 {
        self.accepted.fetch_add(1, Ordering::SeqCst)
    }

    fn set(&self, on: bool) {
        let below = if on {
            self.accepted.load(Ordering::SeqCst)
        } else {
            0
        };
        self.below.store(below, Ordering::SeqCst);
    }

    /// Whether the connection numbered `serial` loses its bytes now.
    fn swallows(&self, serial: u64) -> bool {
        serial < self.below.load(Ordering::SeqCst)
    }
}

/// How many times the proxy cut its connections. A connection forwards nothing once the count
/// moved past the one it was accepted under: aborting its task takes effect only at the task's
/// next poll, and a connection accepted just before a cut may not be registered for the abort
/// yet, so without this a request sent right after a cut could still reach the old upstream.
#[derive(Debug, Default)]
struct Cuts(AtomicU64);

impl Cuts {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A shared downstream link of limited bandwidth (see [`Proxy::limit_rate`]): each chunk
/// books the link for `len / rate` after the chunks booked before it.
#[derive(Debug, Default)]
struct Link {
    /// Bytes per second (0: unlimited).
    rate: AtomicU64,
    free_at: Mutex<Option<tokio::time::Instant>>,
}

impl Link {
    /// Waits until a chunk of `n` bytes has crossed the link.
    async fn cross(&self, n: usize) {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return;
        }
        let took = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
        let done = {
            let mut free = self.free_at.lock().unwrap_or_else(PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let start = free.map_or(now, |f| f.max(now));
            *free = Some(start + took);
            start + took
        };
        tokio::time::sleep_until(done).await;
    }
}

/// A proxy listening on `127.0.0.1:0`. Dropping it stops it and cuts every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    blackhole: Arc<Blackhole>,
    link: Arc<Link>,
    cuts: Arc<Cuts>,
    accept: JoinHandle<()>,
}

fn lock(m: &Mutex<ProxyState>) -> std::sync::MutexGuard<'_, ProxyState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Starts a proxy forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        Self::round_robin(vec![target]).await
    }

    /// Starts a proxy that sends each new TCP connection to the next of `upstreams` in turn
    /// (round robin); an upstream that refuses the connection is skipped for the one after it,
    /// so a dead node costs a client one failed connect, not a failed request. Clients reaching
    /// a cluster through one address land on different nodes, as behind a load balancer
    /// without sticky sessions.
    pub async fn round_robin(upstreams: Vec<SocketAddr>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProxyState {
            targets: upstreams,
            next: 0,
            refuse_ws: false,
            conns: Vec::new(),
        }));
        let st = state.clone();
        let blackhole = Arc::new(Blackhole::default());
        let bh = blackhole.clone();
        let link = Arc::new(Link::default());
        let ln = link.clone();
        let cuts = Arc::new(Cuts::default());
        let cu = cuts.clone();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let born = cu.now();
                let conn = Conn {
                    serial: bh.admit(),
                    blackhole: bh.clone(),
                    link: ln.clone(),
                    cuts: cu.clone(),
                    born,
                };
                let task = tokio::spawn(handle(sock, st.clone(), conn));
                let mut s = lock(&st);
                s.conns.retain(|h| !h.is_finished());
                s.conns.push(task.abort_handle());
            }
        });
        Ok(Proxy {
            addr,
            state,
            blackhole,
            link,
            cuts,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer WebSocket upgrade requests with `403 Forbidden` instead of forwarding them.
    pub fn refuse_ws_upgrades(&self, refuse: bool) {
        lock(&self.state).refuse_ws = refuse;
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::set_target`].
    pub fn cut(&self) {
        let mut s = lock(&self.state);
        self.cuts.0.fetch_add(1, Ordering::SeqCst);
        s.targets.clear();
        for c in s.conns.drain(..) {
            c.abort();
        }
    }

    /// Cuts every open connection; new ones are forwarded as before (a network blip).
    pub fn drop_connections(&self) {
        let mut s = lock(&self.state);
        self.cuts.0.fetch_add(1, Ordering::SeqCst);
        for c in s.conns.drain(..) {
            c.abort();
        }
    }

    /// While `on`, every byte of the connections open when it was turned on is read and thrown
    /// away, in both directions: the peers' writes succeed and nothing arrives, like a network
    /// path that died without either end noticing (a half-open connection). Connections made
    /// after it was turned on are forwarded as usual, so a client that reconnects before the
    /// blackhole is turned off is not caught by it.
    pub fn blackhole(&self, on: bool) {
        self.blackhole.set(on);
    }

    /// Limits what flows to the clients, all connections together, to `bytes_per_sec` (a slow
    /// shared downlink; `None`: unlimited, the default). Chunks of up to 16 KiB take turns.
    pub fn limit_rate(&self, bytes_per_sec: Option<u64>) {
        self.link
            .rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    /// Forwards new connections to `target`.
    pub fn set_target(&self, target: SocketAddr) {
        self.set_targets(vec![target]);
    }

    /// Forwards new connections to `targets`, round robin (a node replaced in a rolling
    /// restart); open connections are left alone.
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        lock(&self.state).targets = targets;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What a proxied connection shares with the proxy.
struct Conn {
    blackhole: Arc<Blackhole>,
    /// The connection's number in [`Blackhole`]'s count.
    serial: u64,
    link: Arc<Link>,
    cuts: Arc<Cuts>,
    /// [`Cuts`] when the connection was accepted.
    born: u64,
}

impl Conn {
    /// The proxy cut its connections since this one was accepted.
    fn is_cut(&self) -> bool {
        self.cuts.now() != self.born
    }
}

async fn handle(mut client: TcpStream, state: Arc<Mutex<ProxyState>>, conn: Conn) {
    // Read the first request head to spot WebSocket upgrades.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return;
        }
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (targets, first, refuse_ws) = {
        let mut s = lock(&state);
        let first = s.next;
        s.next = s.next.wrapping_add(1);
        (s.targets.clone(), first, s.refuse_ws)
    };
    if targets.is_empty() {
        return;
    }
    if refuse_ws {
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if text
            .lines()
            .any(|l| l.starts_with("upgrade:") && l.contains("websocket"))
        {
            let _ = client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 21\r\nconnection: close\r\n\r\nWebSocket not allowed",
                )
                .await;
            let _ = client.shutdown().await;
            return;
        }
    }
    let mut upstream = None;
    for i in 0..targets.len() {
        if let Ok(s) = TcpStream::connect(targets[first.wrapping_add(i) % targets.len()]).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        return;
    };
    if conn.is_cut() || upstream.write_all(&head).await.is_err() {
        return;
    }
    let (client_rd, client_wr) = client.into_split();
    let (upstream_rd, upstream_wr) = upstream.into_split();
    tokio::select! {
        () = pump(client_rd, upstream_wr, &conn, false) => {}
        () = pump(upstream_rd, client_wr, &conn, true) => {}
    }
}

/// Copies `from` to `to` until either ends or the proxy cuts the connection, throwing the
/// bytes away while the blackhole is on, through the shared link `downstream`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    conn: &Conn,
    downstream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if conn.blackhole.swallows(conn.serial) {
            continue;
        }
        if downstream {
            conn.link.cross(n).await;
        }
        if conn.is_cut() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An upstream that echoes every connection's bytes.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = sock.split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        addr
    }

    /// Connects through `proxy` and sends a request head, which the proxy reads first; says
    /// whether it came back within 300 ms.
    async fn open(proxy: &Proxy) -> (TcpStream, bool) {
        let mut sock = TcpStream::connect(proxy.addr()).await.unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut head = [0u8; 18];
        let back = tokio::time::timeout(Duration::from_millis(300), sock.read_exact(&mut head))
            .await
            .is_ok_and(|r| r.is_ok());
        (sock, back)
    }

    /// Sends `ping` and says whether it came back within 300 ms.
    async fn echoes(sock: &mut TcpStream) -> bool {
        sock.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_millis(300), sock.read_exact(&mut back))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn the_blackhole_takes_the_open_connections_only() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let (mut old, back) = open(&proxy).await;
        assert!(back && echoes(&mut old).await);
        proxy.blackhole(true);
        assert!(
            !echoes(&mut old).await,
            "an open connection loses its bytes"
        );
        let (mut new, back) = open(&proxy).await;
        assert!(back, "one made meanwhile is forwarded");
        assert!(echoes(&mut new).await);
        proxy.blackhole(false);
        assert!(echoes(&mut old).await, "bytes flow again once it is off");
    }
}
