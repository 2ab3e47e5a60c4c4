//! Server memory per idle WebSocket connection (a measurement, run on demand):
//!
//! ```text
//! cargo test --release -p sente --test memory -- --ignored --nocapture
//! ```
//!
//! The clients run in a child process (this test binary re-executed), so the server process's
//! resident memory grows only with the server side of the connections.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const WARM: usize = 100;
const N: usize = 2000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child: opens `WARM` connections, waits for a line, opens `N` more, reports, and keeps
/// them open until its stdin closes.
#[test]
fn client_process() {
    let Ok(addr) = std::env::var("SENTE_MEMORY_CLIENT") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let addr = addr.parse().unwrap();
        let mut conns = Vec::new();
        let mut open = async |n: usize, conns: &mut Vec<Ws>| {
            for _ in 0..n {
                let i = conns.len();
                let mut ws = ws_connect(addr, &format!("uid=u{}&client-id=c{i}&csrf-token=tok-123", i % 500)).await;
                ws_text(&mut ws).await;
                conns.push(ws);
            }
        };
        open(WARM, &mut conns).await;
        println!("warm");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        open(N, &mut conns).await;
        println!("ready");
        line.clear();
        let _ = std::io::stdin().read_line(&mut line);
        drop(conns);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn idle_ws_connection_memory() {
    let mut h = start(transcript_builder()).await;
    tokio::spawn(async move { while h.handled.recv().await.is_some() {} });
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["client_process", "--exact", "--nocapture", "--test-threads=1"])
        .env("SENTE_MEMORY_CLIENT", h.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stdout);
        let mut wait_for = |word: &str| loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "client exited");
            if l.trim() == word {
                return;
            }
        };
        wait_for("warm");
        r
    });
    let mut r = lines.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    writeln!(stdin).unwrap();
    let r2 = tokio::task::spawn_blocking(move || {
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "client exited");
            if l.trim() == "ready" {
                return;
            }
        }
    });
    r2.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / N as f64;
    println!("server RSS {before} KiB -> {after} KiB for {N} idle WebSocket connections: {per_conn:.0} bytes each");
    drop(stdin);
    let _ = child.wait();
}
