//! Peer (d): our own server, crates/sente (not wired up yet).

use std::net::SocketAddr;

/// Runs the server on `addr` until the process is killed.
pub async fn run(_addr: SocketAddr) -> std::io::Result<()> {
    Err(std::io::Error::other("the sente-rs peer is not available yet"))
}
