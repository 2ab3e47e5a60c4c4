//! Large payloads offloaded over HTTP (issue 15 item 7), from the outside: the real server on
//! 127.0.0.1, the native Rust client on both transports, and raw clients for what the wire
//! must and must not carry. A 1 MiB push arrives intact with the pushes after it in order; the
//! socket carries a small reference instead (small pushes behind it are not held up on the
//! socket while the body is fetched); only the client it was sent to may fetch it, once; a
//! plain Sente client (no `ext`) gets it inline.

use futures_util::{SinkExt, StreamExt};
use sente::Server;
use sente_client::{Client, ClientEvent, Event, EventId, Kind, Limits, Uid, Value};
use sente_proto::packer::EdnPacker;
use sente_proto::{Envelope, ServerMsg};
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer, raw};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1 << 20;

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

/// 1 MiB of varied text (so a truncated or shuffled body cannot pass for it).
fn big_payload() -> String {
    sente_test_kit::large_text(MIB)
}

fn options() -> ServerOptions {
    ServerOptions {
        max_message_bytes: 4 * MIB,
        ..ServerOptions::default()
    }
}

fn sente(server: &TestServer) -> Server {
    server.server().expect("a sente-rs server")
}

fn client(server: &TestServer, uid: &str, kind: Kind) -> sente_client::ClientBuilder {
    Client::builder(server.url())
        .kind(kind)
        .csrf_token(CSRF_TOKEN)
        .param("uid", uid)
        .limits(Limits::default().max_message_bytes(4 * MIB))
}

/// The next `test/*` push or `LargeFailed` (other events skipped), within 20 s.
async fn next_push(events: &mut sente_client::EventStream) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(e @ (ClientEvent::Push(_) | ClientEvent::LargeFailed(_))) => {
                    return e;
                }
                Some(_) => {}
                None => panic!("the client ended"),
            }
        }
    })
    .await
    .expect("a push within 20 s")
}

fn push_of(e: ClientEvent) -> Event {
    match e {
        ClientEvent::Push(ev) => ev,
        other => panic!("expected a push, got {other:?}"),
    }
}

async fn opened(events: &mut sente_client::EventStream) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if matches!(e, ClientEvent::Handshake(_)) {
                return;
            }
        }
    })
    .await
    .expect("a handshake");
}

/// Waits until an Ajax client of `uid` has polled (it then counts as connected).
async fn ajax_polls(s: &Server, uid: &Uid) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !s.connected_uids().borrow().ajax.contains(uid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the Ajax client polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_push_arrives_intact_and_in_order_on_both_transports() {
    let server = TestServer::spawn(options()).await.unwrap();
    let s = sente(&server);
    let big = big_payload();
    for (kind, name) in [(Kind::Ws, "large-ws"), (Kind::Ajax, "large-ajax")] {
        let uid = Uid::from(name);
        let c = client(&server, name, kind).connect().unwrap();
        let mut events = c.events();
        opened(&mut events).await;
        if kind == Kind::Ajax {
            ajax_polls(&s, &uid).await;
        }
        s.send(&uid, ev("test/n", 0)).unwrap();
        s.send(&uid, ev("test/big", big.as_str())).unwrap();
        s.send(&uid, ev("test/n", 1)).unwrap();
        s.send_flush(&uid, ev("test/n", 2)).unwrap();
        let got: Vec<Event> = [
            next_push(&mut events).await,
            next_push(&mut events).await,
            next_push(&mut events).await,
            next_push(&mut events).await,
        ]
        .into_iter()
        .map(push_of)
        .collect();
        let ids: Vec<&str> = got.iter().map(|e| e.id().as_str()).collect();
        assert_eq!(ids, ["test/n", "test/big", "test/n", "test/n"], "{name}");
        assert_eq!(got[1].data().as_str(), Some(big.as_str()), "{name}: intact");
        assert_eq!(
            [got[0].data(), got[2].data(), got[3].data()],
            [&Value::Int(0), &Value::Int(1), &Value::Int(2)]
        );
        // A push to this client alone is offloaded the same way.
        let cid = c.client_id().clone();
        s.send_to_client(&uid, &cid, ev("test/big", format!("one-{big}")))
            .unwrap();
        s.send_to_client(&uid, &cid, ev("test/n", 3)).unwrap();
        let e = push_of(next_push(&mut events).await);
        assert_eq!(e.data().as_str(), Some(format!("one-{big}").as_str()));
        let e = push_of(next_push(&mut events).await);
        assert_eq!(e.data(), &Value::Int(3));
        c.disconnect();
    }
}

/// A raw WebSocket client: `ext` as given, uid `uid`, client id `cid`.
async fn raw_ws(
    server: &TestServer,
    uid: &str,
    cid: &str,
    ext: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let ws_url = server.url().replacen("http://", "ws://", 1);
    let ext = ext.map(|e| format!("&ext={e}")).unwrap_or_default();
    let url = format!("{ws_url}?client-id={cid}&uid={uid}&csrf-token={CSRF_TOKEN}{ext}");
    let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    cfg.max_message_size = Some(8 * MIB);
    cfg.max_frame_size = Some(8 * MIB);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(cfg), false)
        .await
        .expect("the upgrade");
    // The handshake.
    let first = next_frame(&mut ws).await;
    assert!(first.contains("chsk/handshake"), "{first}");
    ws
}

async fn next_frame<S>(ws: &mut S) -> String
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame within 10 s")
}

/// The events of a pushed batch frame.
fn batch(frame: &str) -> Vec<Event> {
    let env = Envelope::unpack(
        &EdnPacker,
        frame.as_bytes(),
        &Limits::default().max_message_bytes(8 * MIB),
    )
    .unwrap();
    match ServerMsg::classify(env) {
        ServerMsg::Batch(events) => events,
        other => panic!("not a batch: {other:?}"),
    }
}

/// Reads batches until `n` events came; returns them and the largest frame's size.
async fn events_of<S>(ws: &mut S, n: usize) -> (Vec<Event>, usize)
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let (mut got, mut largest) = (Vec::new(), 0);
    while got.len() < n {
        let f = next_frame(ws).await;
        largest = largest.max(f.len());
        got.extend(batch(&f));
    }
    (got, largest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_carries_a_reference_and_only_its_client_fetches_it_once() {
    let server = TestServer::spawn(options()).await.unwrap();
    let s = sente(&server);
    let big = big_payload();
    let uid = Uid::from("large-raw");
    let mut ext_client = raw_ws(&server, "large-raw", "raw-ext", Some("req,large")).await;
    let mut plain_client = raw_ws(&server, "large-raw", "raw-plain", None).await;
    s.send(&uid, ev("test/big", big.as_str())).unwrap();
    s.send_flush(&uid, ev("test/n", 1)).unwrap();

    // The extension's client: a small reference in the event's place, and the small push
    // after it on the socket, before anything was fetched.
    let (got, largest) = events_of(&mut ext_client, 2).await;
    assert!(largest < 1024, "the socket carried {largest} bytes");
    assert_eq!(got[0].id().as_str(), "chsk/large");
    assert_eq!(got[1].id().as_str(), "test/n");
    let (id, size) = sente_proto::large::parse_reference(got[0].data()).unwrap();
    assert!(size as usize > MIB, "size {size}");
    assert!(id.len() >= 32, "an unguessable id: {id}");

    // A plain Sente client (no `ext`) gets the event inline.
    let (got, largest) = events_of(&mut plain_client, 2).await;
    assert!(largest > MIB);
    assert_eq!(got[0].id().as_str(), "test/big");
    assert_eq!(got[0].data().as_str(), Some(big.as_str()));
    assert_eq!(got[1].id().as_str(), "test/n");

    let fetch = |uid: &str, cid: &str, id: &str| {
        format!(
            "{}?client-id={cid}&uid={uid}&packer=edn&large={id}",
            server.url()
        )
    };
    // Another uid (with the same client id), and another client of the same uid, are refused.
    let (status, _) = raw::get(&fetch("intruder", "raw-ext", &id), CSRF_TOKEN)
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, _) = raw::get(&fetch("large-raw", "raw-plain", &id), CSRF_TOKEN)
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Without the CSRF token: refused like an Ajax poll.
    let (status, _) = raw::get(&fetch("large-raw", "raw-ext", &id), "wrong")
        .await
        .unwrap();
    assert_eq!(status, 403);
    // An unknown id.
    let (status, _) = raw::get(
        &fetch("large-raw", "raw-ext", "0123456789abcdef"),
        CSRF_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    // The client it went to gets the event, as a one-event batch, once.
    let (status, body) = raw::get(&fetch("large-raw", "raw-ext", &id), CSRF_TOKEN)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let got = batch(std::str::from_utf8(&body).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id().as_str(), "test/big");
    assert_eq!(got[0].data().as_str(), Some(big.as_str()));
    let (status, _) = raw::get(&fetch("large-raw", "raw-ext", &id), CSRF_TOKEN)
        .await
        .unwrap();
    assert_eq!(status, 410);
    let _ = ext_client.close(None).await;
    let _ = plain_client.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pushes_are_not_held_up_while_another_client_fetches() {
    let server = TestServer::spawn(options()).await.unwrap();
    let s = sente(&server);
    let big = big_payload();
    // A client that receives references and fetches none of them for now.
    let mut holder = raw_ws(&server, "large-holder", "holder", Some("large")).await;
    // A Rust client of another uid.
    let other = Uid::from("large-other");
    let c = client(&server, "large-other", Kind::Ws).connect().unwrap();
    let mut events = c.events();
    opened(&mut events).await;
    let holder_uid = Uid::from("large-holder");
    for i in 0..5 {
        s.send(&holder_uid, ev("test/big", format!("{i}{big}")))
            .unwrap();
    }
    for i in 0..20 {
        s.send_flush(&other, ev("test/n", i)).unwrap();
        s.send_flush(&holder_uid, ev("test/n", i)).unwrap();
    }
    // Both get every small push while five 1 MiB bodies wait to be fetched.
    for i in 0..20 {
        let e = push_of(next_push(&mut events).await);
        assert_eq!(e.data(), &Value::Int(i));
    }
    let (got, largest) = events_of(&mut holder, 25).await;
    assert!(
        largest < 4096,
        "the holder's socket carried {largest} bytes"
    );
    let ids: Vec<&str> = got.iter().map(|e| e.id().as_str()).collect();
    assert_eq!(ids[..5], ["chsk/large"; 5]);
    assert!(ids[5..].iter().all(|id| *id == "test/n"));
    // The bodies are one fetch away.
    let (id, _) = sente_proto::large::parse_reference(got[4].data()).unwrap();
    let url = format!(
        "{}?client-id=holder&uid=large-holder&packer=edn&large={id}",
        server.url()
    );
    let (status, body) = raw::get(&url, CSRF_TOKEN).await.unwrap();
    assert_eq!(status, 200);
    let got = batch(std::str::from_utf8(&body).unwrap());
    assert_eq!(got[0].data().as_str(), Some(format!("4{big}").as_str()));
    c.disconnect();
    let _ = holder.send(Message::Close(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_an_error_event_in_its_place() {
    let server = TestServer::spawn(options()).await.unwrap();
    let s = sente(&server);
    let uid = Uid::from("large-fail");
    // A client whose messages may be at most 256 KiB: the fetched body is refused.
    let c = Client::builder(server.url())
        .kind(Kind::Ws)
        .csrf_token(CSRF_TOKEN)
        .param("uid", "large-fail")
        .limits(Limits::default().max_message_bytes(256 * 1024))
        .connect()
        .unwrap();
    let mut events = c.events();
    opened(&mut events).await;
    s.send(&uid, ev("test/big", big_payload())).unwrap();
    s.send_flush(&uid, ev("test/n", 1)).unwrap();
    match next_push(&mut events).await {
        ClientEvent::LargeFailed(f) => {
            assert!(f.size as usize > MIB);
            assert!(f.reason.contains("limit"), "{}", f.reason);
        }
        other => panic!("expected LargeFailed, got {other:?}"),
    }
    let e = push_of(next_push(&mut events).await);
    assert_eq!((e.id().as_str(), e.data()), ("test/n", &Value::Int(1)));
    c.disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_store_bound_a_push_goes_inline() {
    let server = TestServer::spawn(ServerOptions {
        large: Some(sente::large::LargeConfig::default().max_stored_bytes(MIB + MIB / 2)),
        ..options()
    })
    .await
    .unwrap();
    let s = sente(&server);
    let big = big_payload();
    let uid = Uid::from("large-bound");
    let mut ws = raw_ws(&server, "large-bound", "bound", Some("large")).await;
    s.send(&uid, ev("test/big", format!("1{big}"))).unwrap();
    s.send_flush(&uid, ev("test/big", format!("2{big}")))
        .unwrap();
    let (got, _) = events_of(&mut ws, 2).await;
    assert_eq!(got[0].id().as_str(), "chsk/large");
    assert_eq!(got[1].id().as_str(), "test/big");
    assert_eq!(got[1].data().as_str(), Some(format!("2{big}").as_str()));
    let _ = ws.close(None).await;
}

/// Measurement for BENCHMARKS.md ("Large pushes"), not a check: how long a request's reply
/// takes on a WebSocket that just got 8 pushes of 1 MiB, and when the 8 pushes are all
/// delivered, with the extension (references on the socket, bodies fetched by HTTP) and
/// without (the bodies inline), side by side, rounds alternating; over plain loopback, then
/// through the test proxy limited to 10 MiB/s downstream (all connections sharing it). Run with
/// `cargo test -p sente-test-kit --test large_rust -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_reply_latency_behind_large_pushes() {
    const ROUNDS: usize = 9;
    const PUSHES: usize = 8;
    let server = TestServer::spawn(ServerOptions {
        max_message_bytes: 16 * MIB,
        ..options()
    })
    .await
    .unwrap();
    let s = sente(&server);
    let big = big_payload();
    let mut clients = Vec::new();
    for large in [true, false] {
        let name = format!("measure-{large}");
        let c = client(&server, &name, Kind::Ws)
            .large(large)
            .limits(Limits::default().max_message_bytes(16 * MIB))
            .event_buffer(4096)
            .connect()
            .unwrap();
        let mut events = c.events();
        opened(&mut events).await;
        clients.push((large, Uid::from(name.as_str()), c, events));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for rate in [None, Some(10 * MIB as u64)] {
        server.proxy().limit_rate(rate);
        let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 2];
        for _ in 0..ROUNDS {
            for (i, (_, uid, c, events)) in clients.iter_mut().enumerate() {
                let t0 = std::time::Instant::now();
                for _ in 0..PUSHES {
                    s.send(uid, ev("test/big", big.as_str())).unwrap();
                }
                s.flush(uid);
                let reply = c
                    .request(ev("demo/echo", 1), Duration::from_secs(30))
                    .await
                    .unwrap();
                assert_eq!(reply, Value::Int(1));
                results[i].0.push(t0.elapsed().as_secs_f64() * 1000.0);
                for _ in 0..PUSHES {
                    let e = push_of(next_push(events).await);
                    assert_eq!(e.data().as_str().map(str::len), Some(MIB));
                }
                results[i].1.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let link = rate.map_or("loopback".to_owned(), |r| format!("{} MiB/s", r >> 20));
        for ((large, ..), (replied, all)) in clients.iter().zip(&mut results) {
            println!(
                "{link}, large={large}: reply behind {PUSHES} x 1 MiB: median {:.0} ms \
                 (max {:.0}); all {PUSHES} delivered: median {:.0} ms",
                median(replied),
                replied.last().copied().unwrap_or_default(),
                median(all)
            );
        }
    }
    server.proxy().limit_rate(None);
    for (_, _, c, _) in clients {
        c.disconnect();
    }
}

/// Measurement for BENCHMARKS.md, the socket alone: a raw WebSocket client (which fetches
/// nothing) sends a request right after 8 pushes of 1 MiB, through the test proxy limited to
/// 10 MiB/s; when its reply frame arrives, with the extension announced and without, median
/// of 5 rounds each, alternating. Run with
/// `cargo test -p sente-test-kit --test large_rust -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_raw_reply_behind_large_pushes() {
    let server = TestServer::spawn(ServerOptions {
        max_message_bytes: 16 * MIB,
        ..options()
    })
    .await
    .unwrap();
    let s = sente(&server);
    let big = big_payload();
    server.proxy().limit_rate(Some(10 * MIB as u64));
    let mut times: [Vec<u128>; 2] = [Vec::new(), Vec::new()];
    for round in 0..10 {
        let ext = (round % 2 == 0).then_some("large");
        let cid = format!("raw-measure-{round}");
        let mut ws = raw_ws(&server, "raw-measure", &cid, ext).await;
        let uid = Uid::from("raw-measure");
        let t0 = std::time::Instant::now();
        for _ in 0..8 {
            s.send(&uid, ev("test/big", big.as_str())).unwrap();
        }
        s.flush(&uid);
        ws.send(Message::Text("[[:demo/echo 1] \"cb1\"]".into()))
            .await
            .unwrap();
        while !next_frame(&mut ws).await.ends_with("\"cb1\"]") {}
        times[round % 2].push(t0.elapsed().as_millis());
        let _ = ws.close(None).await;
    }
    for (ext, t) in ["large", "none"].iter().zip(&mut times) {
        t.sort_unstable();
        println!(
            "raw client, ext={ext}, 10 MiB/s: reply behind 8 x 1 MiB: median {} ms (min {}, max {})",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
    server.proxy().limit_rate(None);
}
