//! Transcript replays for the native Rust client: the server side of recorded real-Sente traffic
//! (`tests/data/sente-transcripts/`) is replayed by [`Replay`], the client is driven the way the
//! recording's driver drove Sente's ClojureScript client, and what our client observes (open/close
//! state changes and their reasons, handshake, pushes in batch order, callback replies) and sends
//! must match what Sente's client observed and sent.

use futures_util::StreamExt;
use sente_client::Client;
use sente_proto::client::{ClientEvent, Kind, RequestError};
use sente_proto::{Event, edn};
use sente_test_kit::replay::{
    Action, Observed, Replay, actions, canonical_edn, client_ids, expected, expected_client_log,
    keepalive_kind, load_transcript,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Case {
    transcript: &'static str,
    tab: &'static str,
    /// Only the recording up to this time (transcript ms) is replayed and compared.
    cutoff_ms: f64,
    kind: Kind,
    uid: Option<&'static str>,
    keepalive: Option<Duration>,
}

async fn run(case: Case) -> Vec<String> {
    let records = load_transcript(case.transcript);
    let tab_index = (case.tab.as_bytes()[0] - b'A') as usize;
    let client_id = client_ids(&records)[tab_index].clone();
    let replay = Replay::start_records(&records, &client_id).await.unwrap();
    let want = expected(&records, case.tab, case.cutoff_ms);
    let steps = actions(&records, case.tab, case.cutoff_ms);

    let mut builder = Client::builder(replay.url.clone())
        .kind(case.kind)
        .packer_name("edn")
        .csrf_token("tok-123")
        .origin("http://127.0.0.1:8300")
        .keepalive(case.keepalive);
    if let Some(uid) = case.uid {
        builder = builder.param("uid", uid);
    }
    let client = Arc::new(builder.connect().unwrap());
    let mut events = client.events();
    let got = Arc::new(Mutex::new(Observed::default()));

    let observed = got.clone();
    let collector = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let mut g = observed.lock().unwrap();
            match &ev {
                ClientEvent::State(ch) if ch.open_changed() => g.states.push(if ch.new.open {
                    "open".into()
                } else {
                    format!(
                        "closed {}",
                        ch.new
                            .last_close
                            .as_ref()
                            .map_or("-".into(), |c| format!(":{}", c.reason.as_str()))
                    )
                }),
                ClientEvent::State(_) => {}
                other => g.recv.push(canonical_edn(&other.to_event().to_string())),
            }
        }
    });

    let t0 = tokio::time::Instant::now();
    let mut pending = Vec::new();
    for step in steps {
        match step {
            Action::Send {
                at,
                label,
                event,
                timeout,
            } => {
                tokio::time::sleep_until(t0 + at).await;
                let value = edn::read(&event, &edn::ReadOptions::default()).unwrap();
                let ev = Event::from_value(value).unwrap();
                match timeout {
                    None => client.send(ev).unwrap(),
                    Some(t) => {
                        let (c, g) = (client.clone(), got.clone());
                        pending.push(tokio::spawn(async move {
                            let reply = match c.request(ev, t).await {
                                Ok(v) => edn::to_edn_string(&v),
                                Err(RequestError::Timeout) => ":chsk/timeout".into(),
                                Err(RequestError::Closed) => ":chsk/closed".into(),
                                Err(RequestError::Error(_)) => ":chsk/error".into(),
                                Err(e) => format!("{e}"),
                            };
                            g.lock().unwrap().replies.push((label, reply));
                        }));
                    }
                }
            }
            Action::Disconnect { at } => {
                tokio::time::sleep_until(t0 + at).await;
                for p in pending.drain(..) {
                    let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
                }
                client.disconnect();
            }
        }
    }
    for p in pending.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
    }
    // Let the last state changes and pushes arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while *got.lock().unwrap() != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last frames (the close) reach the replay server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.abort();
    let got = got.lock().unwrap().clone();
    let mut diffs = Vec::new();
    let mut check = |what: &str, got: String, want: String| {
        if got != want {
            diffs.push(format!("{what}: ours {got} / Sente {want}"));
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
    let mut got_replies = got.replies.clone();
    let mut want_replies = want.replies.clone();
    got_replies.sort();
    want_replies.sort();
    check(
        "replies",
        format!("{got_replies:?}"),
        format!("{want_replies:?}"),
    );
    // What the client sent: exactly, apart from keepalive frames, whose timing differs; of those,
    // the pongs must be as many as Sente's, and pings (with a cb) sent iff Sente's client sent any.
    let sent = replay.client_log();
    let want_sent = expected_client_log(&records, &client_id, case.cutoff_ms);
    let count = |log: &[String], k: &str| {
        log.iter()
            .filter(|l| l.strip_prefix("ws ").and_then(keepalive_kind) == Some(k))
            .count()
    };
    let strip = |log: &[String]| -> Vec<String> {
        log.iter()
            .filter(|l| l.strip_prefix("ws ").and_then(keepalive_kind).is_none())
            .cloned()
            .collect()
    };
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
    diffs
}

/// Runs a case and checks that the differences from Sente's client are exactly `known` (so a
/// new difference, or a fixed one, fails the test).
async fn check(case: Case, known: &[&str]) {
    let label = format!("{} tab {}", case.transcript, case.tab);
    let diffs = run(case).await;
    assert_eq!(diffs, known, "{label}: differences from Sente's client");
}

/// README observation 13: when an Ajax request's own timeout fires before any response, Sente's
/// client (its XHR timed out) gives the callback `:chsk/error` and marks the chsk closed
/// `:unexpected` until the next poll returns; ours gives `:chsk/timeout` and stays open.
const AJAX_CLIENT_TIMEOUT: &[&str] = &[
    r#"states: ours ["open", "closed :requested-disconnect"] / Sente ["open", "closed :unexpected", "open", "closed :requested-disconnect"]"#,
    r#"replies: ours [("echo-1", "{:echo {:msg \"hello\", :n 1}}"), ("no-reply-1000", ":chsk/timeout"), ("no-reply-8000", ":chsk/timeout")] / Sente [("echo-1", "{:echo {:msg \"hello\", :n 1}}"), ("no-reply-1000", ":chsk/error"), ("no-reply-8000", ":chsk/timeout")]"#,
];

#[tokio::test]
async fn replay_1_ws() {
    check(
        Case {
            transcript: "1-ws",
            tab: "A",
            cutoff_ms: f64::MAX,
            kind: Kind::Ws,
            uid: Some("u1"),
            keepalive: None,
        },
        &[],
    )
    .await;
}

#[tokio::test]
async fn replay_2_ajax() {
    check(
        Case {
            transcript: "2-ajax",
            tab: "A",
            cutoff_ms: f64::MAX,
            kind: Kind::Ajax,
            uid: None,
            keepalive: None,
        },
        AJAX_CLIENT_TIMEOUT,
    )
    .await;
}

/// The WS upgrade is refused (403) and the `:auto` client falls back to Ajax.
#[tokio::test]
async fn replay_3_auto_downgrade() {
    check(
        Case {
            transcript: "3-auto-downgrade",
            tab: "A",
            cutoff_ms: f64::MAX,
            kind: Kind::Auto,
            uid: Some("u3"),
            keepalive: None,
        },
        &[],
    )
    .await;
}

/// Server pings to an idle client with default keepalive; the client pongs.
#[tokio::test]
async fn replay_4_keepalive_server_pings() {
    check(
        Case {
            transcript: "4-keepalive",
            tab: "A",
            cutoff_ms: f64::MAX,
            kind: Kind::Ws,
            uid: Some("u4a"),
            keepalive: None,
        },
        &[],
    )
    .await;
}

/// Client pings every 2 s (`:ws-kalive-ms 2000`), with server pings in between.
#[tokio::test]
async fn replay_4_keepalive_client_pings() {
    check(
        Case {
            transcript: "4-keepalive",
            tab: "B",
            cutoff_ms: f64::MAX,
            kind: Kind::Ws,
            uid: Some("u4b"),
            keepalive: Some(Duration::from_secs(2)),
        },
        &[],
    )
    .await;
}

/// The server closes (1000, empty reason) after its ping timeout and keeps TCP open; the client
/// must finish the close itself, report `:clean` and reconnect.
#[tokio::test]
async fn replay_4_keepalive_ping_timeout_close() {
    check(
        Case {
            transcript: "4-keepalive",
            tab: "C",
            cutoff_ms: f64::MAX,
            kind: Kind::Ws,
            uid: Some("u4c"),
            keepalive: None,
        },
        &[],
    )
    .await;
}

/// `[:chsk/close]` to the uid: close frame 1000 with TCP left open by http-kit, reconnect,
/// then the pushes of the other tab's push-me (the recording up to 12 s; the Ajax tab C and the
/// 60 s tail are not replayed).
#[tokio::test]
async fn replay_6_close_tab_a() {
    check(
        Case {
            transcript: "6-close",
            tab: "A",
            cutoff_ms: 12000.0,
            kind: Kind::Ws,
            uid: Some("u6"),
            keepalive: None,
        },
        &[],
    )
    .await;
}

/// Tab B of `6-close`: closed by the server, reconnects, asks for the pushes, then an echo.
#[tokio::test]
async fn replay_6_close_tab_b() {
    check(
        Case {
            transcript: "6-close",
            tab: "B",
            cutoff_ms: 12000.0,
            kind: Kind::Ws,
            uid: Some("u6"),
            keepalive: None,
        },
        &[],
    )
    .await;
}
