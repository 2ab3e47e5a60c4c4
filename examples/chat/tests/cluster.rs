//! Two nodes of the demo over Redis, then over NATS (each run its own `--cluster`): a session
//! made on one node is the same session on the other (its CSRF token, its name), the rate limit
//! counts a user's messages on both nodes, the room's history holds the messages sent on either
//! node (once each, in order, bounded by `--history`) and either node answers `chat/history`, a
//! name claimed on one node is refused on the other, and a logout on one node frees the name for
//! both. Then `--remove-cluster` deletes what the cluster kept in the engine.
//! Needs Redis on 127.0.0.1:6379 and NATS with JetStream on 127.0.0.1:4222 (`REDIS_URL`,
//! `NATS_URL` override).

use std::fmt::Write as _;

mod common;
use common::{Demo, Session, header, unique};

/// `/session` of `s` on `node`: its CSRF token and name.
fn session_info(node: &Demo, s: &Session) -> String {
    let r = node.request(
        &format!(
            "GET /session HTTP/1.1\r\nConnection: close\r\nCookie: {}",
            s.cookie
        ),
        "",
    );
    assert_eq!(r.status, 200);
    r.body
}

/// A JSON login of `s` as `name` on `node` (the session id changes if it succeeds): its status.
fn try_login(node: &Demo, s: &mut Session, name: &str) -> u16 {
    let head = format!(
        "POST /login HTTP/1.1\r\nConnection: close\r\nAccept: application/json\r\nCookie: {}\r\nOrigin: {}",
        s.cookie,
        node.origin()
    );
    let r = node.request(&head, &format!("name={name}&csrf-token={}", s.token));
    if let Some(c) = header(&r.head, "set-cookie").and_then(|c| c.split(';').next()) {
        c.clone_into(&mut s.cookie);
    }
    r.status
}

/// `chat/say {:text text}` by Ajax POST of `s` on `node`, with a reply: the reply (EDN).
fn say(node: &Demo, s: &Session, text: &str) -> String {
    request(node, s, &format!(r#"[:chat/say {{:text "{text}"}}]"#))
}

/// The event `ev` (EDN) by Ajax POST of `s` on `node`, with a reply: the reply (EDN).
fn request(node: &Demo, s: &Session, ev: &str) -> String {
    let head = format!(
        "POST /chsk HTTP/1.1\r\nConnection: close\r\nCookie: {}\r\nOrigin: {}",
        s.cookie,
        node.origin()
    );
    let mut ppstr = String::new();
    for byte in format!("[{ev} :ajax-cb]").bytes() {
        write!(ppstr, "%{byte:02X}").unwrap();
    }
    let body = format!(
        "client-id=ajax-{}&csrf-token={}&udt=1&ppstr={ppstr}",
        unique(),
        s.token
    );
    let r = node.request(&head, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn two_nodes_share_sessions_and_names(engine: &str, url: &str) {
    let cluster = format!("test-{engine}-{}-{}", std::process::id(), unique());
    let args = [
        format!("--{engine}"),
        url.to_owned(),
        "--cluster".to_owned(),
        cluster,
        "--history".to_owned(),
        "8".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = (Demo::start_with(&args), Demo::start_with(&args));
    let name = format!("eve{}", unique());

    // A session made on a, signed in on a: b knows its token and its name.
    let mut s = a.session();
    a.login(&mut s, &name);
    let info = session_info(&b, &s);
    assert!(
        info.contains(&format!(r#""csrfToken":"{}""#, s.token)),
        "{info}"
    );
    assert!(info.contains(&format!(r#""name":"{name}""#)), "{info}");
    // The token is checked on b too: the Ajax handshake there is the user's.
    let r = b.ajax_get(&s.cookie, &s.token, &b.origin());
    assert!(
        r.body.contains(&format!(r#"[:chsk/handshake ["{name}""#)),
        "{}",
        r.body
    );
    let r = b.ajax_get(&s.cookie, "wrong-token", &b.origin());
    assert_eq!(r.status, 403, "{}", r.body);

    // The rate limit (bursts of 10) counts the user's messages on both nodes.
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let answer = say(node, &s, &format!("m{i}"));
        assert!(answer.contains(":ok true"), "message {i}: {answer}");
    }
    let answer = say(&b, &s, "one too many");
    assert!(answer.contains("Slow down"), "{answer}");

    // Both nodes answer the same history: the last 8 messages (`--history 8`), in order, once
    // each (the refused one is not there).
    let want: Vec<String> = (2..10).map(|i| format!("m{i}")).collect();
    for node in [&a, &b] {
        let history = request(node, &s, "[:chat/history]");
        // Each message's text, in order (the texts hold no quotes).
        let got: Vec<&str> = history
            .split(r#":text ""#)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default())
            .collect();
        assert_eq!(got, want, "{history}");
    }

    // Another session on b cannot take the name (any case), nor on a.
    let mut other = b.session();
    assert_eq!(try_login(&b, &mut other, &name.to_uppercase()), 409);
    assert_eq!(try_login(&a, &mut other, &name), 409);

    // Logging out on b frees it everywhere: the other session takes it on a.
    let r = b.post("/logout", &s.cookie, &format!("csrf-token={}", s.token));
    assert_eq!(r.status, 303);
    assert!(session_info(&a, &s).contains(r#""name":"""#));
    assert_eq!(try_login(&a, &mut other, &name), 200);
    assert!(session_info(&b, &other).contains(&format!(r#""name":"{name}""#)));

    // The nodes stop; `--remove-cluster` deletes what the cluster kept (sessions, names,
    // history, the backplane's numbering; with NATS its buckets), once.
    drop((a, b));
    let remove = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(&args)
            .arg("--remove-cluster")
            .output()
            .expect("run chat --remove-cluster");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = remove();
    assert!(
        first.starts_with("removed ") && !first.starts_with("removed 0 "),
        "{first}"
    );
    assert!(remove().starts_with("removed 0 "));
}

#[test]
fn two_nodes_over_redis_share_sessions_and_names() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    two_nodes_share_sessions_and_names("redis", &url);
}

#[test]
fn two_nodes_over_nats_share_sessions_and_names() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    two_nodes_share_sessions_and_names("nats", &url);
}
