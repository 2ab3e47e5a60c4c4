//! The client state machine with the real edn packer: exact wire texts (spec 12.1, 12.3, 12.6).

use sente_proto::client::{
    Action, ChskUrl, ClientConfig, ClientEvent, ClientMachine, CsrfToken, Kind, Output,
};
use sente_proto::packer::EdnPacker;
use sente_proto::{ClientId, Event, EventId, Value};
use std::sync::Arc;

const T0: u64 = 1_718_600_000_000;

fn machine(kind: Kind) -> ClientMachine {
    let mut c = ClientConfig::new(
        ChskUrl::parse("http://localhost:3000/chsk").unwrap(),
        ClientId::new("7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f").unwrap(),
        Arc::new(EdnPacker),
    );
    c.kind = kind;
    c.csrf_token = CsrfToken::Value("a+b/c==".into());
    ClientMachine::new(c, 1, 0, T0)
}

fn drain(m: &mut ClientMachine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn text_frames(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Action(Action::WsSend { frame, .. }) => {
                Some(String::from_utf8(frame.as_bytes().to_vec()).unwrap())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn ws_url_pong_and_request_frames() {
    let mut m = machine(Kind::Ws);
    m.connect(0);
    let out = drain(&mut m);
    let Some(Output::Action(Action::WsOpen { conn, url, .. })) = out.first() else {
        panic!()
    };
    // Vector 27, plus the packer parameter, the resume extension's (empty: no position) and
    // the extensions announced (`idem`, and `large`, on by default).
    assert_eq!(
        url,
        "ws://localhost:3000/chsk?client-id=7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f&csrf-token=a%2Bb%2Fc%3D%3D&packer=edn&ext=idem%2Clarge&resume="
    );
    let conn = *conn;
    // Vector 50: a 2-element handshake opens too.
    m.handle_ws_message(conn, br#"[[:chsk/handshake ["u" nil]] nil]"#, 0);
    assert!(m.is_open());
    drain(&mut m);
    // Vector 5 -> vector 6.
    m.handle_ws_message(conn, b"[:chsk/ws-ping nil]", 0);
    let out = drain(&mut m);
    assert_eq!(text_frames(&out), vec!["[[:chsk/ws-pong] nil]"]);
    assert!(out.contains(&Output::Event(ClientEvent::WsPing)));
    // Vector 8 and 9.
    let ev = |d: i64| {
        let mut map = sente_proto::Map::new();
        map.insert(Value::kw("n"), Value::Int(d));
        Event::new(EventId::new("my-app/req").unwrap(), Value::Map(map))
    };
    m.send(ev(42), 0).unwrap();
    m.request(ev(42), 5000, 0);
    let frames = text_frames(&drain(&mut m));
    assert_eq!(frames[0], "[[:my-app/req {:n 42}] nil]");
    let cb = &frames[1]["[[:my-app/req {:n 42}] \"".len()..frames[1].len() - 2];
    assert_eq!(frames[1], format!("[[:my-app/req {{:n 42}}] \"{cb}\"]"));
    assert!(cb.len() == 6 && cb.chars().all(|c| c.is_ascii_hexdigit()));
    m.handle_ws_message(
        conn,
        format!("[{{:ok? true, :n 43}} \"{cb}\"]").as_bytes(),
        0,
    );
    let out = drain(&mut m);
    assert!(
        matches!(
            &out[..],
            [Output::Reply {
                result: Ok(Value::Map(_)),
                ..
            }]
        ),
        "{out:?}"
    );
    // Vector 3/4: a pushed batch.
    m.handle_ws_message(
        conn,
        br#"[[[:my-app/a 1] [:my-app/b {:x [1 2 3], :y "s"}]] nil]"#,
        0,
    );
    let out = drain(&mut m);
    assert_eq!(out.len(), 2);
}

#[test]
fn ajax_handshake_get_and_post_body() {
    let mut m = machine(Kind::Ajax);
    m.connect(0);
    let out = drain(&mut m);
    let Some(Output::Action(Action::Http { id, request })) = out.first() else {
        panic!()
    };
    // Vector 21, plus the packer parameter, the resume extension's (empty: no position) and
    // the extensions announced.
    assert_eq!(
        request.url,
        "http://localhost:3000/chsk?udt=1718600000000&client-id=7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f&handshake%3F=1&packer=edn&ext=idem%2Clarge&resume="
    );
    assert!(
        request
            .headers
            .contains(&("X-CSRF-Token".into(), "a+b/c==".into()))
    );
    m.handle_http_response(
        *id,
        200,
        b"[[:chsk/handshake [:sente/nil-uid nil nil]] nil]",
        0,
    );
    assert!(m.is_open());
    drain(&mut m);
    // Vector 24: the exact form body, 123 ms later.
    let mut map = sente_proto::Map::new();
    map.insert(Value::kw("x"), Value::Int(1));
    m.send(
        Event::new(EventId::new("my-app/hello").unwrap(), Value::Map(map)),
        123,
    )
    .unwrap();
    let out = drain(&mut m);
    let Some(Output::Action(Action::Http { request, .. })) = out.first() else {
        panic!()
    };
    assert_eq!(
        request.url, "http://localhost:3000/chsk",
        "no packer parameter for edn POSTs"
    );
    assert_eq!(
        String::from_utf8(request.body.clone().unwrap()).unwrap(),
        "udt=1718600000123&client-id=7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f&ppstr=%5B%5B%3Amy-app%2Fhello%20%7B%3Ax%201%7D%5D%20nil%5D"
    );
    // Vector 25: with a reply.
    let mut map = sente_proto::Map::new();
    map.insert(Value::kw("id"), Value::Int(7));
    let rid = m.request(
        Event::new(EventId::new("my-app/get-user").unwrap(), Value::Map(map)),
        5000,
        123,
    );
    let out = drain(&mut m);
    let Some(Output::Action(Action::Http { id, request })) = out.first() else {
        panic!()
    };
    assert!(
        String::from_utf8(request.body.clone().unwrap())
            .unwrap()
            .ends_with("&ppstr=%5B%5B%3Amy-app%2Fget-user%20%7B%3Aid%207%7D%5D%20%3Aajax%5D")
    );
    m.handle_http_response(*id, 200, b"[{:id 7} nil]", 200);
    let out = drain(&mut m);
    let Some(Output::Reply { id, result: Ok(v) }) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(*id, rid);
    assert_eq!(v.to_string(), "{:id 7}");
}
