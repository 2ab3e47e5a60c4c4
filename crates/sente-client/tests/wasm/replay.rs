//! Transcript replays for the WASM client: the server side of recorded real-Sente traffic is
//! replayed by `sente-replay-server --control` (its URL passed at build time in
//! `SENTE_REPLAY_CONTROL_URL`), this client is driven the way the recording's driver drove
//! Sente's ClojureScript client, and what it observes (open/close state changes and their
//! reasons, handshake, pushes in batch order, callback replies) and sends must match what
//! Sente's client observed and sent. Same cases and comparison as the native client's
//! (`crates/sente-test-kit/tests/replay_rust.rs`) and the JS client's
//! (`clients/js/test/replay.test.js`).

use super::{env, sleep};
use futures_util::StreamExt;
use futures_util::future::join_all;
use sente_client::{Client, ClientEvent, Event, Kind, RequestError};
use sente_edn::{ReadOptions, read, to_edn_string};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use wasm_bindgen_test::wasm_bindgen_test;

struct Case {
    name: &'static str,
    transcript: &'static str,
    tab: &'static str,
    cutoff_ms: Option<u32>,
    kind: Kind,
    uid: Option<&'static str>,
    keepalive: Option<Duration>,
    /// The differences from Sente's client we know of and keep (see the native test).
    known: &'static [&'static str],
}

/// README observation 13 of the transcripts (as in the native and JS replays): when an Ajax
/// request's own timeout fires before any response, Sente's client gives the callback
/// `:chsk/error` and marks the chsk closed `:unexpected`; ours gives `:chsk/timeout`.
const AJAX_CLIENT_TIMEOUT: &[&str] = &[
    r#"states: ours ["open", "closed :requested-disconnect"] / Sente ["open", "closed :unexpected", "open", "closed :requested-disconnect"]"#,
    r#"replies: ours [("echo-1", "{:echo {:msg \"hello\", :n 1}}"), ("no-reply-1000", ":chsk/timeout"), ("no-reply-8000", ":chsk/timeout")] / Sente [("echo-1", "{:echo {:msg \"hello\", :n 1}}"), ("no-reply-1000", ":chsk/error"), ("no-reply-8000", ":chsk/timeout")]"#,
];

fn canonical(text: &str) -> String {
    read(text, &ReadOptions::default()).map_or_else(|_| text.to_owned(), |v| to_edn_string(&v))
}

async fn get_json(url: &str) -> Result<Json, String> {
    let js = |e: wasm_bindgen::JsValue| format!("{url}: {e:?}");
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(js)?
        .unchecked_into();
    let text = JsFuture::from(resp.text().map_err(js)?)
        .await
        .map_err(js)?
        .as_string()
        .unwrap_or_default();
    if !resp.ok() {
        return Err(format!("{url}: {} {text}", resp.status()));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Default, Clone, PartialEq)]
struct Observed {
    states: Vec<String>,
    recv: Vec<String>,
    replies: Vec<(String, String)>,
}

/// `Some("ping")` / `Some("pong")` for a logged keepalive frame of the client.
fn keepalive(line: &str) -> Option<&'static str> {
    let p = line.strip_prefix("ws ")?;
    if p.starts_with("[[:chsk/ws-ping]") {
        Some("ping")
    } else if p.starts_with("[[:chsk/ws-pong]") {
        Some("pong")
    } else {
        None
    }
}

/// Replays one case; returns the differences from Sente's client.
async fn run(case: &Case) -> Result<Vec<String>, String> {
    let control = env(
        "SENTE_REPLAY_CONTROL_URL",
        option_env!("SENTE_REPLAY_CONTROL_URL"),
    );
    let mut start = format!(
        "{control}/start?transcript={}&tab={}",
        case.transcript, case.tab
    );
    if let Some(c) = case.cutoff_ms {
        start += &format!("&cutoff={c}");
    }
    let info = get_json(&start).await?;
    let e = &info["expected"];
    let want = Observed {
        states: strings(&e["states"]),
        recv: strings(&e["recv"]).iter().map(|s| canonical(s)).collect(),
        replies: e["replies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let s = strings(r);
                        (s[0].clone(), canonical(&s[1]))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };

    let mut b = Client::builder(info["url"].as_str().unwrap_or_default())
        .kind(case.kind)
        .packer_name("edn")
        .csrf_token("tok-123")
        .keepalive(case.keepalive);
    if let Some(uid) = case.uid {
        b = b.param("uid", uid);
    }
    let client = Rc::new(b.connect().map_err(|e| e.to_string())?);
    let got = Rc::new(RefCell::new(Observed::default()));
    let mut events = client.events();
    let observed = got.clone();
    spawn_local(async move {
        while let Some(ev) = events.next().await {
            let mut g = observed.borrow_mut();
            match &ev {
                ClientEvent::State(ch) if ch.open_changed() => g.states.push(if ch.new.open {
                    "open".into()
                } else {
                    let r = ch.new.last_close.as_ref();
                    format!(
                        "closed {}",
                        r.map_or("-".into(), |c| format!(":{}", c.reason.as_str()))
                    )
                }),
                ClientEvent::State(_) => {}
                other => g.recv.push(canonical(&other.to_event().to_string())),
            }
        }
    });

    let t0 = js_sys::Date::now();
    let pending = Rc::new(RefCell::new(0u32));
    let drain = |pending: Rc<RefCell<u32>>| async move {
        let until = js_sys::Date::now() + 10_000.0;
        while *pending.borrow() > 0 && js_sys::Date::now() < until {
            sleep(50).await;
        }
    };
    for a in info["actions"].as_array().cloned().unwrap_or_default() {
        let at = t0 + a["at_ms"].as_f64().unwrap_or(0.0);
        sleep((at - js_sys::Date::now()).max(0.0) as u32).await;
        if a["kind"] == "disconnect" {
            drain(pending.clone()).await;
            client.disconnect();
            continue;
        }
        let value = read(a["event"].as_str().unwrap_or(""), &ReadOptions::default())
            .map_err(|e| e.to_string())?;
        let ev = Event::from_value(value).map_err(|e| e.to_string())?;
        match a["timeout_ms"].as_u64() {
            None => client.send(ev).map_err(|e| e.to_string())?,
            Some(t) => {
                let (c, g, p) = (client.clone(), got.clone(), pending.clone());
                let label = a["label"].as_str().unwrap_or("").to_owned();
                *p.borrow_mut() += 1;
                spawn_local(async move {
                    let reply = match c.request(ev, Duration::from_millis(t)).await {
                        Ok(v) => to_edn_string(&v),
                        Err(RequestError::Timeout) => ":chsk/timeout".into(),
                        Err(RequestError::Closed) => ":chsk/closed".into(),
                        Err(RequestError::Error(_)) => ":chsk/error".into(),
                        Err(e) => e.to_string(),
                    };
                    g.borrow_mut().replies.push((label, reply));
                    *p.borrow_mut() -= 1;
                });
            }
        }
    }
    drain(pending.clone()).await;
    // Let the last state changes and pushes arrive, then the last frames reach the server.
    let until = js_sys::Date::now() + 8_000.0;
    while *got.borrow() != want && js_sys::Date::now() < until {
        sleep(50).await;
    }
    sleep(300).await;
    let log_url = info["log_url"].as_str().unwrap_or_default().to_owned();
    let sent = strings(&get_json(&log_url).await?);
    client.disconnect();

    let got = got.borrow().clone();
    let mut diffs = Vec::new();
    let mut check = |what: &str, ours: String, sente: String| {
        if ours != sente {
            diffs.push(format!("{what}: ours {ours} / Sente {sente}"));
        }
    };
    check(
        "states",
        format!("{:?}", got.states),
        format!("{:?}", want.states),
    );
    check(
        "recv",
        format!("{:?}", got.recv),
        format!("{:?}", want.recv),
    );
    let (mut ours, mut sente) = (got.replies.clone(), want.replies.clone());
    ours.sort();
    sente.sort();
    check("replies", format!("{ours:?}"), format!("{sente:?}"));
    // What the client sent: exactly, apart from keepalive frames (their timing differs); of
    // those, as many pongs as Sente's, and pings iff Sente's client sent any.
    let want_sent = strings(&info["expected_sent"]);
    let strip = |log: &[String]| -> Vec<String> {
        log.iter()
            .filter(|l| keepalive(l).is_none())
            .cloned()
            .collect()
    };
    let count = |log: &[String], k| log.iter().filter(|l| keepalive(l) == Some(k)).count();
    check(
        "sent",
        format!("{:?}", strip(&sent)),
        format!("{:?}", strip(&want_sent)),
    );
    check(
        "pongs sent",
        count(&sent, "pong").to_string(),
        count(&want_sent, "pong").to_string(),
    );
    check(
        "pinged",
        (count(&sent, "ping") > 0).to_string(),
        (count(&want_sent, "ping") > 0).to_string(),
    );
    Ok(diffs)
}

const fn case(name: &'static str, transcript: &'static str, tab: &'static str, kind: Kind) -> Case {
    Case {
        name,
        transcript,
        tab,
        cutoff_ms: None,
        kind,
        uid: None,
        keepalive: None,
        known: &[],
    }
}

/// All recorded cases, replayed side by side (each takes as long as its recording).
#[wasm_bindgen_test]
async fn transcript_replays() {
    let cases = [
        Case {
            uid: Some("u1"),
            ..case("1-ws", "1-ws", "A", Kind::Ws)
        },
        Case {
            known: AJAX_CLIENT_TIMEOUT,
            ..case("2-ajax", "2-ajax", "A", Kind::Ajax)
        },
        Case {
            uid: Some("u3"),
            ..case(
                "3-auto-downgrade (403 on the upgrade)",
                "3-auto-downgrade",
                "A",
                Kind::Auto,
            )
        },
        Case {
            uid: Some("u4a"),
            ..case("4-keepalive server pings", "4-keepalive", "A", Kind::Ws)
        },
        Case {
            uid: Some("u4b"),
            keepalive: Some(Duration::from_secs(2)),
            ..case("4-keepalive client pings", "4-keepalive", "B", Kind::Ws)
        },
        Case {
            uid: Some("u4c"),
            ..case(
                "4-keepalive ping-timeout close",
                "4-keepalive",
                "C",
                Kind::Ws,
            )
        },
        Case {
            uid: Some("u6"),
            cutoff_ms: Some(12_000),
            ..case("6-close tab A", "6-close", "A", Kind::Ws)
        },
        Case {
            uid: Some("u6"),
            cutoff_ms: Some(12_000),
            ..case("6-close tab B", "6-close", "B", Kind::Ws)
        },
    ];
    let results = join_all(cases.iter().map(run)).await;
    let mut failures = Vec::new();
    for (case, result) in cases.iter().zip(results) {
        match result {
            Ok(diffs) if diffs == case.known => {}
            Ok(diffs) => failures.push(format!("{}: {diffs:#?}", case.name)),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "differences from Sente's client:\n{}",
        failures.join("\n")
    );
}
