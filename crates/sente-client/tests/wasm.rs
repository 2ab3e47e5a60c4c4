//! The conformance scenarios for the wasm32 build, in headless Chromium (wasm-bindgen-test).
//!
//! The servers come from `sente-test-server --cors` (crate `sente-test-kit`); their URLs are
//! passed at build time in `SENTE_TEST_URL`, `SENTE_TEST_REFUSE_WS_URL`, `SENTE_TEST_SMALL_URL`
//! and `SENTE_TEST_CONTROL_URL`. `scripts/test-wasm-client.sh` does all of it. Scenario names
//! match `sente_test_kit::scenarios()`; `origin-rejected` does not apply (a browser cannot set
//! `Origin`). The transcript replays (module `replay`) use `sente-replay-server --control`, whose
//! URL comes in `SENTE_REPLAY_CONTROL_URL`. The sente-rs extensions (resume, server requests
//! answered by `on_request`, large pushes, `retry_requests`) run against the unit server
//! (`SENTE_TEST_UNIT_URL`), driven through its control routes under `/unit`.
#![cfg(target_arch = "wasm32")]

use futures_util::StreamExt;
use futures_util::future::{Either, select};
use sente_client::{
    Client, ClientBuilder, ClientEvent, Event, EventId, EventStream, Kind, RequestError, Value,
};
use std::pin::pin;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "wasm/replay.rs"]
mod replay;

const TOKEN: &str = "tok-123";
const KINDS: [Kind; 3] = [Kind::Ws, Kind::Ajax, Kind::Auto];
const PACKERS: [&str; 6] = [
    "edn",
    "transit",
    "json",
    "msgpack",
    "edn+gzip",
    "msgpack+gzip",
];

fn env(name: &str, value: Option<&'static str>) -> &'static str {
    value.unwrap_or_else(|| panic!("{name} is not set: run scripts/test-wasm-client.sh"))
}

fn url() -> &'static str {
    env("SENTE_TEST_URL", option_env!("SENTE_TEST_URL"))
}

async fn sleep(ms: u32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let g: wasm_bindgen::JsValue = js_sys::global().into();
        let f: js_sys::Function = js_sys::Reflect::get(&g, &"setTimeout".into())
            .expect("setTimeout")
            .unchecked_into();
        f.call2(&g, &resolve, &ms.into()).expect("setTimeout call");
    });
    let _ = JsFuture::from(p).await;
}

async fn timeout<T>(ms: u32, fut: impl std::future::Future<Output = T>) -> Option<T> {
    match select(pin!(fut), pin!(sleep(ms))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

fn kw_map(entries: &[(&str, Value)]) -> Value {
    let mut map = sente_edn::Map::new();
    for (k, v) in entries {
        map.insert(Value::kw(k), v.clone());
    }
    Value::Map(map)
}

struct Cell {
    kind: Kind,
    packer: &'static str,
    n: u32,
}

impl Cell {
    fn uid(&self, name: &str) -> String {
        format!("wasm-{name}-{}-{}-{}", self.kind, self.packer, self.n)
    }
}

fn builder(url: &str, cell: &Cell, uid: Option<&str>, token: Option<&str>) -> ClientBuilder {
    let mut b = Client::builder(url)
        .kind(cell.kind)
        .packer_name(cell.packer)
        .rejected_retry(Duration::from_secs(2));
    if let Some(t) = token {
        b = b.csrf_token(t);
    }
    if let Some(u) = uid {
        b = b.param("uid", u);
    }
    b
}

fn client(url: &str, cell: &Cell, uid: Option<&str>, token: Option<&str>) -> (Client, EventStream) {
    connect(builder(url, cell, uid, token))
}

fn connect(b: ClientBuilder) -> (Client, EventStream) {
    let c = b.connect().expect("client");
    let events = c.events();
    (c, events)
}

async fn wait_event(
    events: &mut EventStream,
    ms: u32,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event, String> {
    let deadline = js_sys::Date::now() + f64::from(ms);
    loop {
        let left = deadline - js_sys::Date::now();
        if left <= 0.0 {
            return Err(format!("no matching event within {ms} ms"));
        }
        match timeout(left as u32, events.next()).await {
            Some(Some(e)) => {
                let e: Event = e.to_event();
                if pred(&e) {
                    return Ok(e);
                }
            }
            Some(None) => return Err("event stream ended".into()),
            None => {}
        }
    }
}

async fn open(url: &str, cell: &Cell, uid: Option<&str>) -> Result<(Client, EventStream), String> {
    open_with(builder(url, cell, uid, Some(TOKEN))).await
}

/// Connects `b` and waits for its handshake.
async fn open_with(b: ClientBuilder) -> Result<(Client, EventStream), String> {
    let (c, mut events) = connect(b);
    wait_event(&mut events, 20_000, |e| e.id().as_str() == "chsk/handshake").await?;
    Ok((c, events))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

async fn echo_ok(c: &Client, n: i64) -> Result<(), String> {
    let data = kw_map(&[("n", Value::Int(n))]);
    let r = c
        .request(ev("demo/echo", data.clone()), Duration::from_secs(10))
        .await;
    ensure(r.as_ref() == Ok(&data), || {
        format!("echo: expected {data}, got {r:?}")
    })
}

fn first_flag(e: &Event) -> Option<Value> {
    e.data().as_seq().and_then(|s| s.get(3)).cloned()
}

/// Runs `f` for every transport x packer (filtered by `applies`) and panics listing failures.
async fn matrix<F, Fut>(scenario: &str, applies: impl Fn(Kind) -> bool, f: F)
where
    F: Fn(Cell) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    let mut n = 0;
    for kind in KINDS {
        if !applies(kind) {
            continue;
        }
        for packer in PACKERS {
            n += 1;
            let cell = Cell { kind, packer, n };
            let r = timeout(90_000, f(cell))
                .await
                .unwrap_or_else(|| Err("timed out".into()));
            if let Err(e) = r {
                failures.push(format!(
                    "[client=rust-wasm adapter=axum transport={kind} packer={packer}] {scenario}: {e}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn all(_: Kind) -> bool {
    true
}

/// POSTs `body` with `headers` to `url`; the answer's status and text.
async fn post_text(
    url: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let js = |e: wasm_bindgen::JsValue| format!("{e:?}");
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    if let Some(b) = body {
        init.set_body(&b.into());
    }
    let h = web_sys::Headers::new().map_err(js)?;
    for (k, v) in headers {
        h.append(k, v).map_err(js)?;
    }
    init.set_headers(&h);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(js)?;
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(js)?
        .unchecked_into();
    let text = JsFuture::from(resp.text().map_err(js)?).await.map_err(js)?;
    Ok((resp.status(), text.as_string().unwrap_or_default()))
}

async fn post(url: &str, body: Option<String>, headers: &[(&str, &str)]) -> Result<u16, String> {
    post_text(url, body, headers)
        .await
        .map(|(status, _)| status)
}

#[wasm_bindgen_test]
async fn handshake() {
    matrix("handshake", all, |cell| async move {
        let uid = cell.uid("hs");
        let (c, mut events) = client(url(), &cell, Some(&uid), Some(TOKEN));
        let st = wait_event(&mut events, 20_000, |e| e.id().as_str() == "chsk/state").await?;
        let new = st.data().as_seq().map_or(Value::Nil, |s| s[1].clone());
        let first_open = new.as_map().and_then(|m| m.get_kw("first-open?")).cloned();
        ensure(first_open == Some(Value::Bool(true)), || {
            format!("first state {}", st.to_value())
        })?;
        let hs = wait_event(&mut events, 20_000, |e| e.id().as_str() == "chsk/handshake").await?;
        let hd = kw_map(&[("hello", Value::from("world"))]);
        let want = Value::Vector(vec![
            Value::from(uid.as_str()),
            Value::Nil,
            hd,
            Value::Bool(true),
        ]);
        ensure(hs.data() == &want, || {
            format!("handshake {}", hs.to_value())
        })?;
        let state = c.state().borrow().clone();
        ensure(state.open, || format!("{state:?}"))?;
        let want_kind = if cell.kind == Kind::Ajax {
            Kind::Ajax
        } else {
            Kind::Ws
        };
        ensure(state.kind == want_kind, || format!("type {:?}", state.kind))
    })
    .await;
}

#[wasm_bindgen_test]
async fn echo() {
    matrix("echo", all, |cell| async move {
        let (c, _events) = open(url(), &cell, None).await?;
        let data = kw_map(&[
            ("msg", Value::from("héllo \"world\"\n")),
            ("n", Value::Int(-42)),
            ("x", Value::Float(1.5)),
            ("ok?", Value::Bool(true)),
            ("nothing", Value::Nil),
            (
                "tags",
                Value::Vector(vec![Value::kw("a/b"), Value::from("s"), Value::Int(3)]),
            ),
        ]);
        c.send(ev("demo/echo", "fire and forget"))
            .map_err(|e| e.to_string())?;
        let r = c
            .request(ev("demo/echo", data.clone()), Duration::from_secs(10))
            .await;
        ensure(r.as_ref() == Ok(&data), || format!("echo {r:?}"))
    })
    .await;
}

#[wasm_bindgen_test]
async fn reply_timeout() {
    matrix("reply-timeout", all, |cell| async move {
        let (c, _events) = open(url(), &cell, None).await?;
        let r = c
            .request(ev("demo/no-reply", 1), Duration::from_millis(400))
            .await;
        ensure(r == Err(RequestError::Timeout), || format!("{r:?}"))?;
        ensure(c.is_open(), || "closed after a timeout".into())?;
        echo_ok(&c, 1).await
    })
    .await;
}

#[wasm_bindgen_test]
async fn handler_error() {
    matrix("handler-error", all, |cell| async move {
        let (c, _events) = open(url(), &cell, None).await?;
        let r = c.request(ev("demo/fail", 1), Duration::from_secs(10)).await;
        ensure(
            r == Err(RequestError::Error(
                sente_client::RequestFailure::HandlerFailed,
            )),
            || format!("{r:?}"),
        )?;
        ensure(c.is_open(), || "closed after a handler error".into())?;
        echo_ok(&c, 1).await
    })
    .await;
}

#[wasm_bindgen_test]
async fn push_batch_and_fan_out() {
    matrix("push-batch+fan-out", all, |cell| async move {
        let uid = cell.uid("fan");
        let (a, mut ea) = open(url(), &cell, Some(&uid)).await?;
        let (_b, mut eb) = open(url(), &cell, Some(&uid)).await?;
        let r = a
            .request(ev("demo/push-me", 3), Duration::from_secs(10))
            .await;
        ensure(r == Ok(Value::kw("ok")), || format!("push-me {r:?}"))?;
        for events in [&mut ea, &mut eb] {
            for i in 0..3 {
                let e = wait_event(events, 10_000, |e| e.id().as_str() == "demo/pushed").await?;
                let want = kw_map(&[("i", Value::Int(i))]);
                ensure(e.data() == &want, || format!("push {i}: {}", e.to_value()))?;
            }
        }
        Ok(())
    })
    .await;
}

#[wasm_bindgen_test]
async fn uidport() {
    matrix("uidport", all, |cell| async move {
        let uid = cell.uid("port");
        let (c, _events) = open(url(), &cell, Some(&uid)).await?;
        let (observer, _oe) = open(url(), &cell, None).await?;
        let open_ev = Value::Vector(vec![
            Value::kw("chsk/uidport-open"),
            Value::from(uid.as_str()),
        ]);
        let close_ev = Value::Vector(vec![
            Value::kw("chsk/uidport-close"),
            Value::from(uid.as_str()),
        ]);
        let logged = |want: Value| {
            let observer = observer.clone();
            async move {
                for _ in 0..150 {
                    let r = observer
                        .request(ev("demo/uidport-log", Value::Nil), Duration::from_secs(5))
                        .await;
                    if r.as_ref()
                        .ok()
                        .and_then(Value::as_seq)
                        .is_some_and(|s| s.contains(&want))
                    {
                        return Ok(());
                    }
                    sleep(100).await;
                }
                Err(format!("{want} never logged"))
            }
        };
        logged(open_ev).await?;
        c.disconnect();
        logged(close_ev).await
    })
    .await;
}

#[wasm_bindgen_test]
async fn server_restart() {
    let control = env(
        "SENTE_TEST_CONTROL_URL",
        option_env!("SENTE_TEST_CONTROL_URL"),
    );
    matrix("server-restart", all, |cell| async move {
        let (c, mut events) = open(url(), &cell, Some(&cell.uid("restart"))).await?;
        echo_ok(&c, 1).await?;
        post(&format!("{control}/restart"), None, &[]).await?;
        let hs = wait_event(&mut events, 40_000, |e| e.id().as_str() == "chsk/handshake").await?;
        ensure(first_flag(&hs) == Some(Value::Bool(false)), || {
            format!("{}", hs.to_value())
        })?;
        echo_ok(&c, 2).await
    })
    .await;
}

#[wasm_bindgen_test]
async fn server_close() {
    matrix("server-close", all, |cell| async move {
        let (c, mut events) = open(url(), &cell, Some(&cell.uid("close"))).await?;
        echo_ok(&c, 0).await?;
        sleep(200).await;
        c.send(ev("demo/close-me", Value::Nil))
            .map_err(|e| e.to_string())?;
        let hs = wait_event(&mut events, 30_000, |e| e.id().as_str() == "chsk/handshake").await?;
        ensure(first_flag(&hs) == Some(Value::Bool(false)), || {
            format!("{}", hs.to_value())
        })?;
        echo_ok(&c, 3).await
    })
    .await;
}

#[wasm_bindgen_test]
async fn auto_downgrade() {
    let refuse = env(
        "SENTE_TEST_REFUSE_WS_URL",
        option_env!("SENTE_TEST_REFUSE_WS_URL"),
    );
    matrix(
        "auto-downgrade",
        |k| k == Kind::Auto,
        |cell| async move {
            let (c, _events) = open(refuse, &cell, None).await?;
            let state = c.state().borrow().clone();
            ensure(state.kind == Kind::Ajax, || format!("{state:?}"))?;
            ensure(state.last_ws_error.is_some(), || format!("{state:?}"))?;
            echo_ok(&c, 1).await
        },
    )
    .await;
}

#[wasm_bindgen_test]
async fn csrf_rejected() {
    matrix("csrf-rejected", all, |cell| async move {
        for token in [Some("wrong-token"), None] {
            let (c, mut events) = client(url(), &cell, None, token);
            let hs = wait_event(&mut events, 2_000, |e| e.id().as_str() == "chsk/handshake").await;
            ensure(hs.is_err(), || format!("opened with token {token:?}"))?;
            ensure(!c.is_open(), || "open".into())?;
            let r = c.request(ev("demo/echo", 1), Duration::from_secs(1)).await;
            ensure(r == Err(RequestError::Closed), || format!("{r:?}"))?;
            // Ajax sees the status (a browser hides it for WebSockets).
            if cell.kind != Kind::Ws {
                let lc = c.state().borrow().last_close.clone();
                let rejected = matches!(
                    lc.as_ref().map(|l| &l.reason),
                    Some(sente_client::CloseReason::Rejected { status: 403 })
                );
                ensure(rejected, || format!("last-close {lc:?}"))?;
            }
        }
        Ok(())
    })
    .await;
}

#[wasm_bindgen_test]
async fn oversize() {
    let small = env("SENTE_TEST_SMALL_URL", option_env!("SENTE_TEST_SMALL_URL"));
    matrix("oversize", all, |cell| async move {
        let (c, _events) = open(small, &cell, None).await?;
        let big = Value::from("x".repeat(64 * 1024));
        let r = c
            .request(ev("demo/echo", big), Duration::from_secs(5))
            .await;
        ensure(r.is_err(), || "oversize message was echoed".into())?;
        for _ in 0..30 {
            if echo_ok(&c, 9).await.is_ok() {
                return Ok(());
            }
            sleep(500).await;
        }
        Err("no recovery after an oversize message".into())
    })
    .await;
}

#[wasm_bindgen_test]
async fn bad_event() {
    matrix("bad-event", all, |cell| async move {
        let uid = cell.uid("bad");
        let (c, mut events) = open(url(), &cell, Some(&uid)).await?;
        let enc = sente_proto::client::url::url_encode;
        let body = format!(
            "udt=0&client-id=raw-{}&ppstr={}",
            enc(&uid),
            enc("[[:not-namespaced 1] :ajax]")
        );
        let status = post(
            &format!("{}?uid={}", url(), enc(&uid)),
            Some(body),
            &[
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded;charset=UTF-8",
                ),
                ("X-CSRF-Token", TOKEN),
            ],
        )
        .await?;
        ensure(status == 200, || format!("raw POST HTTP {status}"))?;
        let e = wait_event(&mut events, 10_000, |e| {
            e.id().as_str() == "demo/saw-bad-event"
        })
        .await?;
        let want = Value::Vector(vec![Value::kw("not-namespaced"), Value::Int(1)]);
        ensure(e.data() == &want, || format!("{}", e.to_value()))?;
        echo_ok(&c, 1).await
    })
    .await;
}

#[wasm_bindgen_test]
fn events_are_sente_shaped() {
    let e = ClientEvent::WsPing.to_event();
    assert_eq!(e.id().as_str(), "chsk/ws-ping");
}

/// The numbers pushed as `my-app/n` that arrive on `events`: the first `want`, or fewer when
/// none arrives for `ms`.
async fn numbers(events: &mut EventStream, want: usize, ms: u32) -> Vec<i64> {
    let mut got = Vec::new();
    while got.len() < want {
        match wait_event(events, ms, |e| e.id().as_str() == "my-app/n").await {
            Ok(e) => got.extend(e.data().as_i64()),
            Err(_) => break,
        }
    }
    got
}

/// Resume after a blip (sente-rs extension, on by default): the unit server's proxy throws away
/// what the server writes (the network path died unnoticed), then drops the connection; the
/// pushes written into the dead path arrive after the reconnect, once, in order, and the state
/// says `recovered`.
#[wasm_bindgen_test]
async fn resume_after_a_blip() {
    let control = env(
        "SENTE_TEST_CONTROL_URL",
        option_env!("SENTE_TEST_CONTROL_URL"),
    );
    let unit = env("SENTE_TEST_UNIT_URL", option_env!("SENTE_TEST_UNIT_URL"));
    let uid = format!("wasm-resume-{}", js_sys::Date::now());
    let control_post = |path: &str, body: String| {
        let url = format!("{control}/unit/{path}");
        async move {
            let status = post(&url, Some(body), &[]).await.expect("control");
            assert_eq!(status, 200, "{url}");
        }
    };
    let push = |from: i64, to: i64| {
        let data: Vec<String> = (from..=to).map(|n| n.to_string()).collect();
        let body = format!(
            r#"{{"uid":"{uid}","id":"my-app/n","data":[{}]}}"#,
            data.join(",")
        );
        control_post("push", body)
    };
    let cell = Cell {
        kind: Kind::Ws,
        packer: "json",
        n: 0,
    };
    let (c, mut events) = open(unit, &cell, Some(&uid)).await.expect("open");
    push(1, 3).await;
    assert_eq!(numbers(&mut events, 3, 5_000).await, vec![1, 2, 3]);
    assert_eq!(c.state().borrow().recovered, None, "first connection");
    control_post("blackhole", "on".into()).await;
    push(4, 6).await; // written into the dead path
    sleep(300).await;
    control_post("drop", String::new()).await;
    control_post("blackhole", "off".into()).await;
    wait_event(&mut events, 20_000, |e| e.id().as_str() == "chsk/handshake")
        .await
        .expect("reconnected");
    assert_eq!(c.state().borrow().recovered, Some(true));
    push(9, 10).await;
    assert_eq!(numbers(&mut events, 5, 5_000).await, vec![4, 5, 6, 9, 10]);
    assert!(
        numbers(&mut events, 1, 300).await.is_empty(),
        "no duplicates"
    );
}

fn unit_url() -> &'static str {
    env("SENTE_TEST_UNIT_URL", option_env!("SENTE_TEST_UNIT_URL"))
}

/// POSTs `body` to the unit server's control `path` and returns the answer's text (HTTP 200
/// only).
async fn unit_control(path: &str, body: String) -> Result<String, String> {
    let control = env(
        "SENTE_TEST_CONTROL_URL",
        option_env!("SENTE_TEST_CONTROL_URL"),
    );
    let url = format!("{control}/unit/{path}");
    let (status, text) = post_text(&url, Some(body), &[]).await?;
    ensure(status == 200, || format!("{url}: HTTP {status} {text}"))?;
    Ok(text)
}

/// Server requests (`ServerHandle::request`, the `req` extension): the unit server asks each
/// client of a uid (control `POST /unit/request`) and reports what came back; the client's
/// `on_request` handler answers with a value built from the event, over every transport and
/// packer. An event with no handler is answered with the error `no-handler`.
#[wasm_bindgen_test]
async fn on_request_answers_the_server() {
    matrix("server-request", all, |cell| async move {
        let uid = cell.uid("ask");
        let b = builder(unit_url(), &cell, Some(&uid), Some(TOKEN)).on_request(
            "my-app/ask",
            |e: &Event| {
                let n = e.data().as_i64().unwrap_or(0);
                Value::Vector(vec![Value::kw("twice"), Value::Int(n * 2)])
            },
        );
        let (_c, _events) = open_with(b).await?;
        let ask = |id: &str, data: i64| {
            let body = format!(r#"{{"uid":"{uid}","id":"{id}","data":{data},"timeout_ms":5000}}"#);
            async move {
                let text = unit_control("request", body).await?;
                let answers: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                let answers = answers.as_array().cloned().unwrap_or_default();
                ensure(answers.len() == 1, || {
                    format!("one client expected: {text}")
                })?;
                Ok::<_, String>(answers[0].clone())
            }
        };
        let got = ask("my-app/ask", 21).await?;
        let ok = got["ok"]
            .as_str()
            .ok_or_else(|| format!("no answer: {got}"))?;
        let ok = sente_edn::read(ok, &sente_edn::ReadOptions::default())
            .map_err(|e| format!("{e}: {ok}"))?;
        let want = Value::Vector(vec![Value::kw("twice"), Value::Int(42)]);
        ensure(ok == want, || format!("answer {ok}, want {want}"))?;
        let got = ask("my-app/unknown", 1).await?;
        ensure(
            got["error"]
                .as_str()
                .is_some_and(|e| e.contains("no-handler")),
            || format!("unhandled request: {got}"),
        )
    })
    .await;
}

/// `sente_test_kit::large_text(n)`: the text the unit server pushes for `{"large": n}`.
fn large_text(n: usize) -> String {
    (0..n)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect()
}

fn performance_call(method: &str, arg: &wasm_bindgen::JsValue) -> wasm_bindgen::JsValue {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).expect("performance");
    let f: js_sys::Function = js_sys::Reflect::get(&perf, &method.into())
        .expect(method)
        .unchecked_into();
    f.call1(&perf, arg).expect(method)
}

/// Forgets the resources fetched so far and makes room for many more (the browser keeps 250
/// resource timing entries by default, and then records no more), for [`fetched`].
fn watch_fetches() {
    performance_call("setResourceTimingBufferSize", &100_000.into());
    performance_call("clearResourceTimings", &wasm_bindgen::JsValue::UNDEFINED);
}

/// How many resources this page fetched since [`watch_fetches`] whose URL contains `part`
/// (the browser's resource timing entries).
fn fetched(part: &str) -> usize {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).expect("performance");
    let by_type: js_sys::Function = js_sys::Reflect::get(&perf, &"getEntriesByType".into())
        .expect("getEntriesByType")
        .unchecked_into();
    let entries: js_sys::Array = by_type
        .call1(&perf, &"resource".into())
        .expect("resource entries")
        .unchecked_into();
    entries
        .iter()
        .filter_map(|e| js_sys::Reflect::get(&e, &"name".into()).ok()?.as_string())
        .filter(|name| name.contains(part))
        .count()
}

/// Large pushes (sente-rs extension, on by default): a push over the server's `large`
/// threshold (64 KiB) comes as a reference the client fetches with one GET `?large=<id>`; the
/// app sees one event with the whole text, in order between the small pushes around it.
#[wasm_bindgen_test]
async fn extension_large_push() {
    matrix("large-push", all, |cell| async move {
        let uid = cell.uid("large");
        let (_c, mut events) = open(unit_url(), &cell, Some(&uid)).await?;
        watch_fetches();
        let n = 300_000;
        let body = format!(r#"{{"uid":"{uid}","id":"my-app/big","data":[1,{{"large":{n}}},2]}}"#);
        unit_control("push", body).await?;
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = wait_event(&mut events, 20_000, |e| e.id().as_str() == "my-app/big").await?;
            got.push(e.data().clone());
        }
        ensure(got[0] == Value::Int(1) && got[2] == Value::Int(2), || {
            format!("order: {} .. {}", got[0], got[2])
        })?;
        ensure(got[1] == Value::from(large_text(n)), || {
            format!("large push: {} chars", got[1].as_str().map_or(0, str::len))
        })?;
        ensure(fetched("large=") == 1, || {
            format!("{} large fetches, want 1", fetched("large="))
        })
    })
    .await;
}

/// `retry_requests(true)` (sente-rs extension): a request whose connection is cut while the
/// server runs it (`demo/once` takes 1.5 s; the unit server's proxy drops every connection
/// after 300 ms) is re-sent with the same id, and the server runs it once (`{:ran 1}`: the
/// handler ran once for this key). Every transport and packer. Over Ajax the copy often
/// reaches the server at the cut (Chrome re-sends a POST whose reused connection closed
/// before any response byte) and joins the run underway; the unit server holds a POST 1 s
/// (its long-poll timeout), less than the run has left, so the copy is answered
/// `:chsk/timeout` and the client asks again until the reply is known.
#[wasm_bindgen_test]
async fn extension_retry_requests() {
    matrix("retry-requests", all, |cell| async move {
        let uid = cell.uid("retry");
        let b = builder(unit_url(), &cell, Some(&uid), Some(TOKEN)).retry_requests(true);
        let (c, _events) = open_with(b).await?;
        let key = Value::from(format!("{uid}-{}", js_sys::Date::now()));
        let data = Value::Vector(vec![key, Value::Int(1_500)]);
        let asked = c.request(ev("demo/once", data), Duration::from_secs(20));
        let cut = async {
            sleep(300).await;
            unit_control("drop", String::new()).await
        };
        let (r, dropped) = futures_util::future::join(asked, cut).await;
        dropped?;
        let want = kw_map(&[("ran", Value::Int(1))]);
        ensure(r.as_ref() == Ok(&want), || {
            format!("retried request: {r:?}")
        })?;
        echo_ok(&c, 5).await
    })
    .await;
}
