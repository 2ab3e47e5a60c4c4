//! TCP connections from spread loopback source addresses.
//!
//! One (source address, destination) pair has about 28k ephemeral ports, and closed client
//! sockets linger in TIME_WAIT for a minute, so the load tool binds every client socket to
//! one of 250 source addresses `127.0.0.2..=127.0.0.251` before connecting, at most
//! [`CONNS_PER_SOURCE`] connections each, moving on across runs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// How many connections of one run share one source address.
pub const CONNS_PER_SOURCE: u64 = 2000;

static NEXT_SOURCE_BLOCK: AtomicU64 = AtomicU64::new(u64::MAX);

/// Source addresses for one run of `n` clients: returns the index of the first address;
/// client `i` then uses [`source_ip`]`(first, i)`.
pub fn reserve_sources(n: u64) -> u64 {
    let blocks = n.div_ceil(CONNS_PER_SOURCE).max(1);
    // Start at a pid-dependent offset so that runs in quick succession from different
    // processes do not reuse the same address first.
    let _ = NEXT_SOURCE_BLOCK.compare_exchange(
        u64::MAX,
        u64::from(std::process::id()) % 250,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT_SOURCE_BLOCK.fetch_add(blocks, Ordering::Relaxed)
}

/// The source address of client `i` of a run whose first address index is `first`.
pub fn source_ip(first: u64, i: u64) -> Ipv4Addr {
    let k = (first + i / CONNS_PER_SOURCE) % 250;
    Ipv4Addr::new(127, 0, 0, 2 + k as u8)
}

/// Connects to `addr` (loopback only), bound to `src` first when given, with TCP_NODELAY.
pub async fn connect(addr: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the load tool only sends traffic to loopback addresses",
        ));
    }
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
