//! The metrics, scraped over HTTP from the Prometheus route after scripted traffic on both
//! transports: counts match the traffic exactly, histograms are filled, rejections are counted
//! by reason. The recorder is process-wide: everything is in one test.

// Counts are integers carried as f64: exact comparison is intended.
#![allow(clippy::float_cmp, clippy::type_complexity)]

mod common;

use common::*;
use sente::{EventMsg, Router, Uid};
use sente_proto::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One scrape: every sample, `(name, labels)` -> value.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            out.push((name, labels, value));
        }
        Scrape(out)
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let r = raw(addr, &get_req("/metrics", &[])).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    Scrape::parse(&r.text())
}

fn upgrade_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Origin", ORIGIN),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_match_the_traffic() {
    let prom = sente::metrics::prometheus().expect("recorder installed");
    assert!(
        sente::metrics::prometheus().is_ok(),
        "a second call is fine"
    );
    let router = Router::new().on("test/echo", |mut msg: EventMsg| async move {
        let data = msg.data_value().clone();
        msg.reply(data);
    });
    let server = transcript_builder().handler(router).build().unwrap();
    let app = server
        .router::<()>("/chsk")
        .route_service("/metrics", prom.service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Two WebSocket clients: three echo requests each, answered; one bad package.
    let mut bytes_in = 0;
    let mut wss = Vec::new();
    for uid in ["a", "b"] {
        let mut ws = ws_connect(
            addr,
            &format!("uid={uid}&client-id={uid}1&csrf-token={TOKEN}"),
        )
        .await;
        assert!(ws_text(&mut ws).await.starts_with("[[:chsk/handshake "));
        for n in 0..3 {
            let frame = format!("[[:test/echo {n}] \"cb000{n}\"]");
            bytes_in += frame.len();
            ws_send(&mut ws, &frame).await;
            assert_eq!(ws_text(&mut ws).await, format!("[{n} \"cb000{n}\"]"));
        }
        wss.push(ws);
    }
    let bad = "[[[[";
    bytes_in += bad.len();
    ws_send(&mut wss[0], bad).await;
    // Two pushes to `a`, sent as one batch.
    let a = Uid::from("a");
    server.send(&a, ev("test/push", Value::Int(1))).unwrap();
    server
        .send_flush(&a, ev("test/push", Value::Int(2)))
        .unwrap();
    assert_eq!(
        ws_text(&mut wss[0]).await,
        "[[[:test/push 1] [:test/push 2]] nil]"
    );

    // One Ajax client: handshake, an echo request, a held poll answered by a push.
    let q = "uid=c&client-id=c1";
    let r = raw(
        addr,
        &get_req(&format!("/chsk?{q}&handshake%3F=1"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_ppstr(addr, "c1", "[[:test/echo 7] \"ajax-cb\"]").await;
    assert_eq!((r.status, r.text().as_str()), (200, "[7 nil]"));
    let poll =
        tokio::spawn(
            async move { raw(addr, &get_req(&format!("/chsk?{q}"), &ajax_headers())).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = scrape(addr).await;
    assert_eq!(held.get("sente_connections", &[("transport", "ws")]), 2.0);
    assert_eq!(held.get("sente_connections", &[("transport", "ajax")]), 1.0);
    server
        .send_flush(&Uid::from("c"), ev("test/push", Value::Int(3)))
        .unwrap();
    let r = poll.await.unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "[[[:test/push 3]] nil]")
    );

    // Resuming Ajax handshakes: a first one (no position: neither hit nor miss), one from the
    // position it was given (a replay hit), one from an epoch the server never had (a miss).
    let resume_handshake = |resume: String| async move {
        let target = format!("/chsk?uid=e&client-id=e1&resume={resume}&handshake%3F=1");
        let r = raw(addr, &get_req(&target, &ajax_headers())).await;
        assert_eq!(r.status, 200);
        r.text()
    };
    let first = resume_handshake(String::new()).await;
    let epoch = first
        .split_once(":epoch \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(
            || panic!("no epoch in {first}"),
            |(epoch, _)| epoch.to_owned(),
        );
    let hit = resume_handshake(format!("{epoch}:0")).await;
    assert!(hit.contains(":recovered true"), "{hit}");
    let miss = resume_handshake("gone:5".to_owned()).await;
    assert!(miss.contains(":recovered false"), "{miss}");

    // Rejections, one of each kind.
    let refused: [(&str, Vec<(&str, &str)>, u16); 5] = [
        // A WebSocket upgrade with a wrong CSRF token.
        (
            "/chsk?client-id=x1&csrf-token=wrong",
            upgrade_headers(),
            403,
        ),
        // A page of another origin.
        (
            "/chsk?client-id=x2&handshake%3F=1",
            vec![("Origin", "http://evil.example"), ("X-CSRF-Token", TOKEN)],
            403,
        ),
        // `authorized_fn` says no.
        (
            "/chsk?client-id=x3&deny=1&handshake%3F=1",
            ajax_headers(),
            401,
        ),
        ("/chsk?handshake%3F=1", ajax_headers(), 400),
        (
            "/chsk?client-id=x4&packer=yaml&handshake%3F=1",
            ajax_headers(),
            400,
        ),
    ];
    for (target, headers, status) in refused {
        assert_eq!(
            raw(addr, &get_req(target, &headers)).await.status,
            status,
            "{target}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let m = scrape(addr).await;
    // SHOW_METRICS=1 cargo test -p sente --test metrics -- --nocapture: the whole scrape.
    if std::env::var_os("SHOW_METRICS").is_some() {
        let r = raw(addr, &get_req("/metrics", &[])).await;
        println!("{}", r.text());
    }
    let ws = [("transport", "ws"), ("packer", "edn")];
    let ajax = [("transport", "ajax"), ("packer", "edn")];
    let counts = [
        ("sente_handshakes_total", &[("transport", "ws")][..], 2.0),
        ("sente_handshakes_total", &[("transport", "ajax")][..], 4.0),
        ("sente_replay_hits_total", &[("transport", "ajax")][..], 1.0),
        (
            "sente_replay_misses_total",
            &[("transport", "ajax")][..],
            1.0,
        ),
        // 6 echo requests and the bad package.
        ("sente_events_received_total", &ws[..], 7.0),
        ("sente_events_received_total", &ajax[..], 1.0),
        // 6 replies and 2 pushes; 1 reply and 1 push.
        ("sente_events_sent_total", &ws[..], 8.0),
        ("sente_events_sent_total", &ajax[..], 2.0),
        ("sente_received_bytes_total", &ws[..], bytes_in as f64),
        ("sente_batch_size_sum", &[("transport", "ws")][..], 2.0),
        ("sente_batch_size_count", &[("transport", "ws")][..], 1.0),
        ("sente_batch_size_count", &[("transport", "ajax")][..], 1.0),
        ("sente_reply_seconds_count", &[("transport", "ws")][..], 6.0),
        (
            "sente_reply_seconds_count",
            &[("transport", "ajax")][..],
            1.0,
        ),
        ("sente_rejections_total", &[("reason", "csrf")][..], 1.0),
        ("sente_rejections_total", &[("reason", "origin")][..], 1.0),
        (
            "sente_rejections_total",
            &[("reason", "auth"), ("detail", "unauthorized")][..],
            1.0,
        ),
        (
            "sente_rejections_total",
            &[("detail", "missing-client-id")][..],
            1.0,
        ),
        (
            "sente_rejections_total",
            &[("detail", "unknown-packer")][..],
            1.0,
        ),
        (
            "sente_rejections_total",
            &[("detail", "bad-package")][..],
            1.0,
        ),
        (
            "sente_rejections_total",
            &[("reason", "bad-input")][..],
            3.0,
        ),
        ("sente_rejections_total", &[][..], 6.0),
        ("sente_connections", &[("transport", "ws")][..], 2.0),
        ("sente_connections", &[("transport", "ajax")][..], 0.0),
    ];
    let mut wrong = Vec::new();
    for (name, labels, want) in counts {
        let got = m.get(name, labels);
        if (got - want).abs() > f64::EPSILON {
            wrong.push(format!("{name}{labels:?}: {got}, expected {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Non-empty histograms, and bytes both ways.
    assert!(m.get("sente_reply_seconds_sum", &[]) > 0.0);
    assert!(m.get("sente_reply_seconds_bucket", &[("le", "+Inf")]) >= 7.0);
    assert!(m.get("sente_pending_sends_max", &[]) >= 1.0);
    assert!(m.get("sente_sent_bytes_total", &ws) > 0.0);
    assert!(m.get("sente_sent_bytes_total", &ajax) > 0.0);
    assert!(m.get("sente_received_bytes_total", &ajax) > 0.0);
    // Bounded labels only: no uid or client id anywhere.
    for (name, labels, _) in &m.0 {
        for key in labels.keys() {
            assert!(
                [
                    "transport",
                    "packer",
                    "reason",
                    "detail",
                    "cause",
                    "kind",
                    "backplane",
                    "direction",
                    "le",
                    "quantile",
                ]
                .contains(&key.as_str()),
                "{name} has the label {key}"
            );
        }
    }
    // The stats and the metrics are one count (fed by the same calls).
    let stats = server.handle().stats();
    assert_eq!((stats.ws_connections, stats.ajax_polls), (2, 0));
    assert_eq!((stats.events_in, stats.events_out), (7 + 1, 8 + 2));
    assert_eq!(stats.replies.count, 6 + 1);
    assert_eq!(stats.replies.buckets.iter().sum::<u64>(), 7);
    // Every rejection (sente_rejections_total: 6), the unreadable package included.
    assert_eq!(stats.rejected_requests, 6);
    assert_eq!(
        (
            stats.dropped_system_events,
            stats.dropped_push_events,
            stats.dropped_clients
        ),
        (0, 0, 0)
    );

    // The WebSockets close: the gauge goes back to 0.
    for mut ws in wss {
        let _ = futures::SinkExt::close(&mut ws).await;
    }
    let mut open = 2.0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = scrape(addr)
            .await
            .get("sente_connections", &[("transport", "ws")]);
        if open == 0.0 {
            break;
        }
    }
    assert_eq!(open, 0.0);
    // Each closed WebSocket recorded its deepest send queue.
    let m = scrape(addr).await;
    assert_eq!(m.get("sente_pending_sends_count", &[]), 2.0);
    assert!(m.get("sente_pending_sends_sum", &[]) >= 2.0);
}
