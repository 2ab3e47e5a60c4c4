//! The packer is chosen per connection by the `packer` query parameter; binary packers use
//! WebSocket binary frames, raw POST bodies (`binary?`) and byte poll responses.

mod common;

use common::*;
use futures::SinkExt;
use sente_proto::packer::{Packer, by_name};
use sente_proto::{Envelope, Limits, Uid, Value, client_msg};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

fn packer(name: &str) -> Arc<dyn Packer> {
    by_name(name).unwrap()
}

fn unpack(p: &dyn Packer, bytes: &[u8]) -> Envelope {
    Envelope::unpack(p, bytes, &Limits::default()).unwrap()
}

fn echo_req(p: &dyn Packer, cb: &str) -> Vec<u8> {
    client_msg::event(ev("test/echo", Value::from("hi")), Some(cb))
        .pack(p)
        .unwrap()
        .into_bytes()
}

async fn next_data(ws: &mut Ws) -> (bool, Vec<u8>) {
    loop {
        match ws_frame(ws, 5000).await {
            Some(Message::Text(t)) => return (false, t.as_bytes().to_vec()),
            Some(Message::Binary(b)) => return (true, b.to_vec()),
            Some(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn ws_with_each_packer() {
    let h = start(transcript_builder()).await;
    for name in [
        "edn",
        "json",
        "transit",
        "msgpack",
        "edn+gzip",
        "msgpack+gzip",
    ] {
        let p = packer(name);
        let mut ws = ws_connect(
            h.addr,
            &format!(
                "uid=p&client-id={name}&csrf-token=tok-123&packer={}",
                enc(name)
            ),
        )
        .await;
        let (binary, hs) = next_data(&mut ws).await;
        assert_eq!(binary, p.is_binary(), "{name}");
        let hs = unpack(&*p, &hs);
        assert!(
            hs.payload.as_seq().unwrap()[0].is_kw("chsk/handshake"),
            "{name}"
        );
        let req = echo_req(&*p, "cb0001");
        let msg = if p.is_binary() {
            Message::binary(req)
        } else {
            Message::text(String::from_utf8(req).unwrap())
        };
        ws.send(msg).await.unwrap();
        let (_, reply) = next_data(&mut ws).await;
        let reply = unpack(&*p, &reply);
        assert_eq!(reply.cb, Some(Value::from("cb0001")), "{name}");
        let echo = reply.payload.as_map().unwrap().get_kw("echo").cloned();
        assert_eq!(echo, Some(Value::from("hi")), "{name}");
    }
    // One push to the uid reaches every connection, each in its own packer.
    h.server
        .send_flush(&Uid::from("p"), ev("t/all", Value::Int(1)))
        .unwrap();
}

#[tokio::test]
async fn ajax_with_a_text_packer() {
    let h = start(transcript_builder()).await;
    let p = packer("json");
    let r = raw(
        h.addr,
        &get_req(
            "/chsk?client-id=j&packer=json&handshake%3F=1",
            &ajax_headers(),
        ),
    )
    .await;
    let hs = unpack(&*p, &r.body);
    assert!(hs.payload.as_seq().unwrap()[0].is_kw("chsk/handshake"));
    let env = client_msg::ajax_event(ev("test/echo", Value::Int(5)), true)
        .pack(&*p)
        .unwrap();
    let body = format!(
        "udt=1&client-id=j&ppstr={}",
        enc(std::str::from_utf8(env.as_bytes()).unwrap())
    );
    let mut hd = ajax_headers();
    hd.push((
        "Content-Type",
        "application/x-www-form-urlencoded;charset=UTF-8",
    ));
    let r = raw(h.addr, &post_req("/chsk?packer=json", &hd, body.as_bytes())).await;
    let reply = unpack(&*p, &r.body);
    assert_eq!(
        reply.payload.as_map().unwrap().get_kw("echo"),
        Some(&Value::Int(5))
    );
}

#[tokio::test]
async fn ajax_with_a_binary_packer() {
    let h = start(transcript_builder()).await;
    let p = packer("msgpack");
    let q = "client-id=m&packer=msgpack";
    let r = raw(
        h.addr,
        &get_req(&format!("/chsk?{q}&handshake%3F=1"), &ajax_headers()),
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(unpack(&*p, &r.body).payload.as_seq().unwrap()[0].is_kw("chsk/handshake"));
    // Binary POST: raw body, params in the query; trailing zero bytes (CLJS quirk) are ignored.
    let mut body = client_msg::ajax_event(ev("test/echo", Value::Int(7)), true)
        .pack(&*p)
        .unwrap()
        .into_bytes();
    body.extend_from_slice(&[0, 0, 0]);
    let mut hd = ajax_headers();
    hd.push(("Content-Type", "application/octet-stream"));
    let r = raw(
        h.addr,
        &post_req(&format!("/chsk?udt=1&{q}&binary%3F=true"), &hd, &body),
    )
    .await;
    assert_eq!(r.status, 200);
    let reply = unpack(&*p, &r.body);
    assert_eq!(
        reply.payload.as_map().unwrap().get_kw("echo"),
        Some(&Value::Int(7))
    );
    // A poll answered with pushed bytes.
    let addr = h.addr;
    let poll =
        tokio::spawn(
            async move { raw(addr, &get_req(&format!("/chsk?{q}"), &ajax_headers())).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    h.server
        .send_flush(&Uid::Nil, ev("t/b", Value::Int(1)))
        .unwrap();
    let r = poll.await.unwrap();
    let batch = unpack(&*p, &r.body);
    assert_eq!(batch.payload.as_seq().unwrap().len(), 1);
}

#[tokio::test]
async fn frame_of_the_wrong_kind_is_a_bad_package() {
    let mut h = start(transcript_builder()).await;
    let mut ws = ws_connect(h.addr, "client-id=w&csrf-token=tok-123&packer=msgpack").await;
    next_data(&mut ws).await;
    ws.send(Message::text("[[:test/echo 1] nil]"))
        .await
        .unwrap();
    assert_eq!(
        h.next_app().await.event,
        "[:chsk/bad-package \"[[:test/echo 1] nil]\"]"
    );
    ws.send(Message::binary(vec![0xc1, 0xc1])).await.unwrap();
    assert_eq!(h.next_app().await.event, "[:chsk/bad-package 2]");
}

/// Sente >= 1.21 clients name their packer on the handshake and polls only: a POST without a
/// `packer` parameter is read with the packer its client-id handshook with (text and binary),
/// and a POST that names another packer gets a clear 400.
#[tokio::test]
async fn ajax_posts_use_the_packer_of_their_handshake() {
    let h = start(transcript_builder()).await;
    let form = |cid: &str, p: &dyn Packer| {
        let env = client_msg::ajax_event(ev("test/echo", Value::Int(3)), true)
            .pack(p)
            .unwrap();
        format!(
            "udt=1&client-id={cid}&ppstr={}",
            enc(std::str::from_utf8(env.as_bytes()).unwrap())
        )
    };
    let mut hd = ajax_headers();
    hd.push((
        "Content-Type",
        "application/x-www-form-urlencoded;charset=UTF-8",
    ));
    let t = packer("transit");
    let r = raw(
        h.addr,
        &get_req(
            "/chsk?client-id=t&packer=transit&handshake%3F=1",
            &ajax_headers(),
        ),
    )
    .await;
    assert!(unpack(&*t, &r.body).payload.as_seq().is_some());
    let r = raw(h.addr, &post_req("/chsk", &hd, form("t", &*t).as_bytes())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = unpack(&*t, &r.body);
    assert_eq!(
        reply.payload.as_map().unwrap().get_kw("echo"),
        Some(&Value::Int(3))
    );
    let r = raw(
        h.addr,
        &post_req(
            "/chsk?packer=edn",
            &hd,
            form("t", &*packer("edn")).as_bytes(),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("handshook with \"transit\""),
        "{}",
        r.text()
    );
    // Binary: msgpack handshake, then a raw body with only `binary?` and the client id.
    let m = packer("msgpack");
    raw(
        h.addr,
        &get_req(
            "/chsk?client-id=m&packer=msgpack&handshake%3F=1",
            &ajax_headers(),
        ),
    )
    .await;
    let body = client_msg::ajax_event(ev("test/echo", Value::Int(4)), true)
        .pack(&*m)
        .unwrap()
        .into_bytes();
    let mut hd = ajax_headers();
    hd.push(("Content-Type", "application/octet-stream"));
    let r = raw(
        h.addr,
        &post_req("/chsk?udt=1&client-id=m&binary%3F=true", &hd, &body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        unpack(&*m, &r.body)
            .payload
            .as_map()
            .unwrap()
            .get_kw("echo"),
        Some(&Value::Int(4))
    );
}
