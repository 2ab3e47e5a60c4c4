//! Server memory per WebSocket connection. The idle figure is a measurement, run on demand:
//!
//! ```text
//! cargo test --release -p sente --test memory -- --ignored --nocapture
//! ```
//!
//! `a_large_message_is_not_kept_per_connection` runs with the other tests: after one large
//! message on each of many connections, the server holds about one message's worth of memory,
//! not one per connection.
//!
//! The clients run in a child process (this test binary re-executed), so the server process's
//! resident memory grows only with the server side of the connections. The two processes talk
//! over a small control TCP connection.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

const WARM: usize = 100;
const N: usize = 2000;
/// Connections that each receive one large message.
const LARGE_CONNS: usize = 40;
/// The large message (a string of this many bytes), close to the 1 MiB message limit.
const LARGE: usize = 900_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child: opens `WARM` connections, says "warm", waits for a line, opens `N` more, says
/// "ready", and keeps them open until the control connection closes.
#[test]
fn client_process() {
    let Ok(spec) = std::env::var("SENTE_MEMORY_CLIENT") else {
        return;
    };
    let (addr, control) = spec.split_once(',').unwrap();
    let control = std::net::TcpStream::connect(control).unwrap();
    let mut reader = BufReader::new(control.try_clone().unwrap());
    let mut writer = control;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let addr = addr.parse().unwrap();
        let mut conns = Vec::new();
        let open = async |n: usize, conns: &mut Vec<Ws>| {
            for _ in 0..n {
                let i = conns.len();
                let q = format!("uid=u{}&client-id=c{i}&csrf-token=tok-123", i % 500);
                let mut ws = ws_connect(addr, &q).await;
                ws_text(&mut ws).await;
                conns.push(ws);
            }
        };
        if let Ok(large) = std::env::var("SENTE_MEMORY_LARGE") {
            open(LARGE_CONNS, &mut conns).await;
            writeln!(writer, "warm").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let big = format!(
                "[[:test/ignored \"{}\"] nil]",
                "x".repeat(large.parse().unwrap())
            );
            for ws in &mut conns {
                ws_send(ws, &big).await;
                // Answered after the large message was read: it has been processed.
                ws_send(ws, "[[:test/echo 1] \"cb1\"]").await;
                assert_eq!(ws_text(ws).await, "[{:echo 1} \"cb1\"]");
            }
            writeln!(writer, "ready").unwrap();
            line.clear();
            let _ = reader.read_line(&mut line);
            drop(conns);
            return;
        }
        open(WARM, &mut conns).await;
        writeln!(writer, "warm").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        open(N, &mut conns).await;
        writeln!(writer, "ready").unwrap();
        line.clear();
        let _ = reader.read_line(&mut line);
        drop(conns);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn idle_ws_connection_memory() {
    let mut h = start(transcript_builder()).await;
    tokio::spawn(async move { while h.handled.recv().await.is_some() {} });
    let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["client_process", "--exact", "--test-threads=1"])
        .env(
            "SENTE_MEMORY_CLIENT",
            format!("{},{}", h.addr, control.local_addr().unwrap()),
        )
        .spawn()
        .unwrap();
    let (mut writer, mut reader) = tokio::task::spawn_blocking(move || {
        let (s, _) = control.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "warm");
        (s, r)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    writeln!(writer, "go").unwrap();
    let reader_back = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        reader
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / N as f64;
    println!(
        "server RSS {before} KiB -> {after} KiB for {N} idle WebSocket connections: {per_conn:.0} bytes each"
    );
    drop((writer, reader_back));
    let _ = child.wait();
}

/// After one 900 KB message on each of 40 connections, the server's memory grows by about one
/// message (the reader's buffer returns to its small size), not by 40 of them (36 MB, as when
/// each connection kept its grown buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_is_not_kept_per_connection() {
    let mut h = start(transcript_builder()).await;
    tokio::spawn(async move { while h.handled.recv().await.is_some() {} });
    let control = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["client_process", "--exact", "--test-threads=1"])
        .env(
            "SENTE_MEMORY_CLIENT",
            format!("{},{}", h.addr, control.local_addr().unwrap()),
        )
        .env("SENTE_MEMORY_LARGE", LARGE.to_string())
        .spawn()
        .unwrap();
    let (mut writer, mut reader) = tokio::task::spawn_blocking(move || {
        let (s, _) = control.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "warm");
        (s, r)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    writeln!(writer, "go").unwrap();
    let reader_back = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        reader
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib();
    let grown = after.saturating_sub(before) * 1024;
    let per_conn = grown / LARGE_CONNS as u64;
    println!(
        "server RSS {before} KiB -> {after} KiB after one {LARGE}-byte message on each of {LARGE_CONNS} connections: {per_conn} bytes each"
    );
    // Kept per connection, it would be LARGE each; a few large buffers in the allocator are fine.
    assert!(
        grown < (LARGE * LARGE_CONNS / 4) as u64,
        "{per_conn} bytes kept per connection after a large message"
    );
    drop((writer, reader_back));
    let _ = child.wait();
}
