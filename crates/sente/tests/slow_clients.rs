//! Slow and greedy clients (issue 12, findings 3 and 6), over real sockets: a slowloris head is
//! dropped at the header timeout, unfinished bodies at the body timeout, a POST that fails the
//! Origin / CSRF / authorization checks is refused before its body is read, a huge form gets a
//! clear 400, and a healthy client's request/reply keeps working while each attack runs.
//!
//! The `measure_*` tests are measurements (RSS of this process, healthy-client latency):
//!
//! ```text
//! cargo test --release -p sente --test slow_clients -- --ignored --nocapture --test-threads=1
//! ```

mod common;

use common::*;
use sente::{ServeConfig, ServerLimits};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short timeouts, so that the tests run in about a second.
fn short() -> ServeConfig {
    ServeConfig::default()
        .header_read_timeout(Duration::from_millis(500))
        .max_connections(1_000)
}

fn short_body_limits() -> ServerLimits {
    ServerLimits::default().body_read_timeout_ms(500)
}

/// Reads until the server closes the connection (or 10 s pass: a failure). Returns what came.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the server kept the connection open for 10 s; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            });
        match read {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn status_of(resp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(resp.get(..12)?).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// `n` request/reply round trips of a well-behaved Ajax client; every reply must arrive (each
/// within the 30 s of [`raw`]). Returns the latencies.
async fn healthy_client(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let r = post_ppstr(addr, "healthy", &format!("[[:test/echo {i}] :ajax-cb]")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains(&format!(":echo {i}")), "{}", r.text());
        lat.push(t.elapsed());
    }
    lat
}

/// The head of a form POST with the browser client's headers (good Origin and CSRF token
/// unless `headers` says otherwise), declaring `len` body bytes.
fn post_head(target: &str, headers: &[(&str, &str)], len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1:8300\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_dropped_at_header_timeout() {
    let h = start_served(transcript_builder(), short()).await;
    let addr = h.addr;
    let attack = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /chsk?client-id=slow HTTP/1.1\r\nHost: 127.0.0.1:8300\r\nX-Slow: ")
            .await
            .unwrap();
        let started = Instant::now();
        // One byte every 100 ms: never a whole head.
        let trickle = async {
            loop {
                if s.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut b = [0u8; 1];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
                {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), trickle)
            .await
            .expect("the slow head was dropped");
        started.elapsed()
    });
    healthy_client(addr, 10).await;
    let held = attack.await.unwrap();
    assert!(
        held >= Duration::from_millis(400),
        "dropped too early: {held:?}"
    );
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_header_timeout() {
    let h = start_served(transcript_builder(), short()).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    // A complete request on a kept-alive connection, then silence.
    s.write_all(b"GET /chsk/client.js HTTP/1.1\r\nHost: 127.0.0.1:8300\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(status_of(&got), Some(200));
}

#[tokio::test]
async fn oversized_head_is_refused_without_buffering_it() {
    let h = start_served(transcript_builder(), ServeConfig::default()).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /chsk?client-id=big HTTP/1.1\r\nHost: 127.0.0.1:8300\r\n")
        .await
        .unwrap();
    // 64 KiB of headers (hyper alone would buffer ~400 KB): refused once past 16 KiB.
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    let mut sent = 0;
    while sent < 64 * 1024 {
        if s.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        sent += line.len();
    }
    let got = read_to_close(&mut s).await;
    assert_eq!(
        status_of(&got),
        Some(431),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_are_dropped_at_body_timeout() {
    // Library level: the body timeout holds under axum::serve too.
    let h = start(transcript_builder().limits(short_body_limits())).await;
    let addr = h.addr;
    let attackers: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut head = post_head("/chsk", &ajax_headers(), 1_000_000);
                head.extend_from_slice(format!("client-id=slow{i}&ppstr=").as_bytes());
                head.extend(std::iter::repeat_n(b'a', 64 * 1024));
                s.write_all(&head).await.unwrap();
                // ... and the remaining ~930 KB never come.
                read_to_close(&mut s).await
            })
        })
        .collect();
    healthy_client(addr, 10).await;
    for a in attackers {
        let got = a.await.unwrap();
        assert_eq!(
            status_of(&got),
            Some(408),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(String::from_utf8_lossy(&got).contains("did not arrive within 500 ms"));
    }
}

/// A POST with a large declared body of which only the head and a few bytes are sent: the
/// answer must come without the rest of the body.
async fn refused_before_body(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = post_head(target, headers, 2_000_000);
    req.extend_from_slice(b"client-id=c1&ppstr=");
    s.write_all(&req).await.unwrap();
    read_to_close(&mut s).await
}

#[tokio::test]
async fn post_failing_the_guard_is_refused_before_its_body_is_read() {
    let h = start(transcript_builder()).await;
    let token = ("X-CSRF-Token", TOKEN);
    let bad_origin =
        refused_before_body(h.addr, "/chsk", &[("Origin", "http://evil.example"), token]).await;
    assert_eq!(status_of(&bad_origin), Some(403));
    assert!(String::from_utf8_lossy(&bad_origin).contains("Unauthorized origin"));

    let bad_csrf = refused_before_body(
        h.addr,
        "/chsk",
        &[("Origin", ORIGIN), ("X-CSRF-Token", "nope")],
    )
    .await;
    assert_eq!(status_of(&bad_csrf), Some(403));
    assert!(String::from_utf8_lossy(&bad_csrf).contains("Bad CSRF token"));

    let unauthorized =
        refused_before_body(h.addr, "/chsk?deny=1", &[("Origin", ORIGIN), token]).await;
    assert_eq!(status_of(&unauthorized), Some(401));

    // No token in the head, bad Origin: refused before the body too.
    let no_token = refused_before_body(h.addr, "/chsk", &[("Origin", "http://evil.example")]).await;
    assert_eq!(status_of(&no_token), Some(403));
}

#[tokio::test]
async fn reject_fn_runs_before_the_body_is_read() {
    let h = start(transcript_builder().reject_fn(|r| {
        r.header("x-banned").map(|_| {
            http::Response::builder()
                .status(429)
                .body(bytes::Bytes::from_static(b"banned"))
                .unwrap()
        })
    }))
    .await;
    let got = refused_before_body(
        h.addr,
        "/chsk",
        &[
            ("Origin", ORIGIN),
            ("X-CSRF-Token", TOKEN),
            ("X-Banned", "1"),
        ],
    )
    .await;
    assert_eq!(status_of(&got), Some(429));
}

#[tokio::test]
async fn csrf_token_and_client_id_in_the_form_body_still_work() {
    let h = start(transcript_builder()).await;
    let form = |token: &str| {
        format!(
            "udt=1&client-id=formonly&csrf-token={token}&ppstr={}",
            enc("[[:test/echo 7] :ajax-cb]")
        )
    };
    let headers = [
        ("Origin", ORIGIN),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let ok = raw(h.addr, &post_req("/chsk", &headers, form(TOKEN).as_bytes())).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().contains(":echo 7"), "{}", ok.text());
    let bad = raw(
        h.addr,
        &post_req("/chsk", &headers, form("nope").as_bytes()),
    )
    .await;
    assert_eq!(bad.status, 403, "{}", bad.text());
    // No client id anywhere: 400 once the body is read.
    let body = format!("udt=1&ppstr={}", enc("[[:test/echo 7] :ajax-cb]"));
    let mut h2 = ajax_headers();
    h2.push(("Content-Type", "application/x-www-form-urlencoded"));
    let none = raw(h.addr, &post_req("/chsk", &h2, body.as_bytes())).await;
    assert_eq!(none.status, 400, "{}", none.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_form_gets_a_clear_400() {
    let h = start(transcript_builder()).await;
    let addr = h.addr;
    let attack = tokio::spawn(async move {
        // 1.5M empty fields in 3 MB (within the 3 MiB body limit of a 1 MiB message).
        let body = "=&".repeat(1_500_000);
        let mut hs = ajax_headers();
        hs.push(("Content-Type", "application/x-www-form-urlencoded"));
        let mut out = Vec::new();
        for _ in 0..4 {
            let r = raw(
                addr,
                &post_req("/chsk?client-id=flood", &hs, body.as_bytes()),
            )
            .await;
            out.push(r);
        }
        out
    });
    healthy_client(addr, 10).await;
    for r in attack.await.unwrap() {
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("at most 64 fields"), "{}", r.text());
    }
    // The query string is capped the same way.
    let q = (0..65).fold(String::new(), |mut q, i| {
        let _ = write!(q, "f{i}=1&");
        q
    });
    let r = raw(
        addr,
        &get_req(&format!("/chsk?{q}client-id=c"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("at most 64 fields"), "{}", r.text());
}

#[tokio::test]
async fn connection_cap_makes_new_clients_wait_for_a_free_slot() {
    let h = start_served(
        transcript_builder(),
        ServeConfig::default()
            .max_connections(2)
            .header_read_timeout(Duration::from_secs(30)),
    )
    .await;
    let a = TcpStream::connect(h.addr).await.unwrap();
    let b = TcpStream::connect(h.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = h.addr;
    let third =
        tokio::spawn(async move { raw(addr, &get_req("/chsk/client.js", &[])).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served past the connection cap");
    drop(a);
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status, 200);
    drop(b);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens `n` POSTs that send `sent` bytes of a `declared`-byte body and stall; returns the
/// sockets (kept open by the caller).
async fn stalled_bodies(
    addr: SocketAddr,
    n: usize,
    sent: usize,
    headers: &[(&str, &str)],
) -> Vec<TcpStream> {
    let filler = vec![b'a'; sent];
    let mut out = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head = post_head("/chsk", headers, 3 * 1024 * 1024);
        head.extend_from_slice(format!("client-id=slow{i}&ppstr=").as_bytes());
        s.write_all(&head).await.unwrap();
        let _ = s.write_all(&filler).await;
        out.push(s);
    }
    out
}

/// Memory held by N POST bodies that stop one byte short of ~3 MiB, before and after the body
/// timeout; and by the same bodies with a bad Origin (refused before the body is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn measure_memory_of_slow_bodies() {
    const N: usize = 200;
    const SENT: usize = 3 * 1024 * 1024 - 4096;
    let h = start_served(
        transcript_builder().limits(ServerLimits::default().body_read_timeout_ms(5_000)),
        ServeConfig::default(),
    )
    .await;
    healthy_client(h.addr, 20).await;
    let idle = rss_kib();
    let t = Instant::now();
    let socks = stalled_bodies(h.addr, N, SENT, &ajax_headers()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pinned = rss_kib();
    let elapsed = t.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(elapsed) + Duration::from_secs(2))
        .await;
    let mut closed = 0;
    for mut s in socks {
        let mut b = [0u8; 256];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await {
            closed += 1;
        }
    }
    let after = rss_kib();
    println!(
        "{N} slow bodies of {} KiB: idle {idle} KiB, pinned {pinned} KiB (+{} MiB), after the 5 s body timeout {after} KiB (+{} MiB), {closed}/{N} answered and closed",
        SENT / 1024,
        (pinned.saturating_sub(idle)) / 1024,
        (after.saturating_sub(idle)) / 1024,
    );
    // A second round: the freed memory is reused (the allocator keeps it mapped, so RSS stays
    // near the first round's peak instead of growing by another N bodies).
    let socks = stalled_bodies(h.addr, N, SENT, &ajax_headers()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = rss_kib();
    drop(socks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "second round of {N}: {second} KiB (+{} MiB over idle): the first round's memory was released and reused",
        second.saturating_sub(idle) / 1024
    );
    let before_bad = rss_kib();
    let bad = [("Origin", "http://evil.example"), ("X-CSRF-Token", TOKEN)];
    let socks = stalled_bodies(h.addr, N, SENT, &bad).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bad_rss = rss_kib();
    println!(
        "{N} bad-Origin bodies: {before_bad} KiB -> {bad_rss} KiB (+{} MiB): refused before the body is read",
        bad_rss.saturating_sub(before_bad) / 1024
    );
    drop(socks);
}

fn percentile(lat: &mut [Duration], p: f64) -> Duration {
    lat.sort();
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[i]
}

/// Healthy-client latency (sequential Ajax request/reply) alone, then while a slowloris flood
/// and a slow-body flood run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn measure_healthy_client_latency_under_slow_attacks() {
    const REQS: usize = 500;
    let h = start_served(transcript_builder(), ServeConfig::default()).await;
    let addr = h.addr;
    healthy_client(addr, 50).await;
    let report = |name: &str, mut lat: Vec<Duration>| {
        println!(
            "{name}: {REQS} requests, p50 {:?}, p99 {:?}, max {:?}",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99),
            percentile(&mut lat, 1.0)
        );
    };
    report("no attack", healthy_client(addr, REQS).await);

    // Slowloris: 1 000 connections, each sending one header byte every 2 s (dropped at 10 s,
    // and reopened at once).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = s.write_all(b"GET /chsk HTTP/1.1\r\nX-A: ").await;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && s.write_all(b"a").await.is_ok()
                {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report("slowloris x1000", healthy_client(addr, REQS).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks.drain(..) {
        t.abort();
    }

    // Slow bodies: 200 POSTs stalled one byte short of ~3 MiB, renewed as they are dropped.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..200 {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let filler = vec![b'a'; 3 * 1024 * 1024 - 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let mut head = post_head("/chsk", &ajax_headers(), 3 * 1024 * 1024);
                head.extend_from_slice(b"client-id=slow&ppstr=");
                let _ = s.write_all(&head).await;
                let _ = s.write_all(&filler).await;
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    report("slow bodies x200", healthy_client(addr, REQS).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
}
