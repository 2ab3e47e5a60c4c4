//! The demo's request checks over real sockets: the chat binary on a free port, plain HTTP/1.1
//! requests written by hand (so every header is the test's choice).
//!
//! - a page of another origin is refused on `/chsk` (WebSocket upgrade, Ajax GET and POST) even
//!   with a valid session and token;
//! - the CSRF token is bound to the session: another session's token, an empty one, or a token
//!   without a session is refused on `/chsk`, `/login` and `/logout`.

mod common;
use common::{Demo, header};

const EVIL: &str = "http://evil.example";

#[test]
fn a_foreign_origin_is_refused_on_websocket_and_ajax() {
    let demo = Demo::start();
    let mut s = demo.session();
    demo.login(&mut s, "alice");
    let own = demo.origin();

    // The same request passes from the page's own origin...
    assert_eq!(demo.ws(&s.cookie, &s.token, &own).status, 101);
    let r = demo.ajax_get(&s.cookie, &s.token, &own);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(r#"[:chsk/handshake ["alice""#),
        "{}",
        r.body
    );

    // ...and is refused from any other, valid session and token notwithstanding.
    for origin in [EVIL, "http://127.0.0.1.evil.example", "null"] {
        for (what, r) in [
            ("ws", demo.ws(&s.cookie, &s.token, origin)),
            ("ajax GET", demo.ajax_get(&s.cookie, &s.token, origin)),
            ("ajax POST", demo.ajax_post(&s.cookie, &s.token, origin)),
        ] {
            assert_eq!(r.status, 403, "{what} from {origin}: {}", r.body);
            assert_eq!(r.body, "Unauthorized origin", "{what} from {origin}");
        }
    }
    // A foreign Referer without an Origin is refused too.
    let head = format!(
        "GET /chsk?client-id=ref-1&csrf-token={}&handshake%3F=true HTTP/1.1\r\n\
         Connection: close\r\nCookie: {}\r\nReferer: {EVIL}/page",
        s.token, s.cookie
    );
    assert_eq!(demo.request(&head, "").status, 403);
}

#[test]
fn the_csrf_token_is_bound_to_the_session() {
    let demo = Demo::start();
    let mut a = demo.session();
    let mut b = demo.session();
    assert_ne!(a.token, b.token, "a token per session");
    demo.login(&mut a, "alice");
    demo.login(&mut b, "bob");
    let own = demo.origin();

    // Each session passes with its own token (the token survives the login's new session id).
    assert_eq!(demo.ws(&a.cookie, &a.token, &own).status, 101);
    assert_eq!(demo.ws(&b.cookie, &b.token, &own).status, 101);
    assert_eq!(demo.ajax_get(&b.cookie, &b.token, &own).status, 200);

    // Another session's token, an empty token, a made-up token, or no session at all: 403.
    let refused = [
        (
            "b's session, a's token",
            b.cookie.as_str(),
            a.token.as_str(),
        ),
        ("b's session, no token", b.cookie.as_str(), ""),
        (
            "b's session, made-up token",
            b.cookie.as_str(),
            "0123456789abcdef0123456789abcdef",
        ),
        ("no session, a's token", "", a.token.as_str()),
        (
            "unknown session, a's token",
            "id=AAAAAAAAAAAAAAAAAAAAAA",
            a.token.as_str(),
        ),
    ];
    for (what, cookie, token) in refused {
        for (transport, r) in [
            ("ws", demo.ws(cookie, token, &own)),
            ("ajax GET", demo.ajax_get(cookie, token, &own)),
            ("ajax POST", demo.ajax_post(cookie, token, &own)),
        ] {
            assert_eq!(r.status, 403, "{transport}, {what}: {}", r.body);
            assert_eq!(r.body, "Bad CSRF token", "{transport}, {what}");
        }
        // The login and logout forms check the same token.
        let r = demo.post(
            "/login",
            cookie,
            &format!("name=mallory&csrf-token={token}"),
        );
        assert_eq!(r.status, 403, "login, {what}");
        let r = demo.post("/logout", cookie, &format!("csrf-token={token}"));
        assert_eq!(r.status, 403, "logout, {what}");
    }
    // The refused logout left bob signed in.
    let r = demo.ajax_get(&b.cookie, &b.token, &own);
    assert!(r.body.contains(r#"[:chsk/handshake ["bob""#), "{}", r.body);
}

#[test]
fn a_name_in_use_is_refused_to_another_session() {
    let demo = Demo::start();
    let mut a = demo.session();
    demo.login(&mut a, "bob");
    let mut b = demo.session();
    for name in ["bob", "BOB", "%20bob%20"] {
        let r = demo.post(
            "/login",
            &b.cookie,
            &format!("name={name}&csrf-token={}", b.token),
        );
        assert_eq!(r.status, 303, "the form goes back to the page");
        let page = demo.request(
            &format!(
                "GET / HTTP/1.1\r\nConnection: close\r\nCookie: {}",
                b.cookie
            ),
            "",
        );
        assert!(page.body.contains("is taken"), "{name}: {}", page.body);
        assert!(page.body.contains(r#"<meta name="user-name" content="">"#));
        // And a fetch gets a 409 with the reason.
        let head = format!(
            "POST /login HTTP/1.1\r\nConnection: close\r\nAccept: application/json\r\nCookie: {}\r\nOrigin: {}",
            b.cookie,
            demo.origin()
        );
        let r = demo.request(&head, &format!("name={name}&csrf-token={}", b.token));
        assert_eq!(r.status, 409);
        assert!(r.body.contains("is taken"), "{}", r.body);
    }
    // b is still anonymous on /chsk; a is bob.
    let own = demo.origin();
    let r = demo.ajax_get(&b.cookie, &b.token, &own);
    assert!(
        r.body.contains("[:chsk/handshake [:sente/nil-uid"),
        "{}",
        r.body
    );
    let r = demo.ajax_get(&a.cookie, &a.token, &own);
    assert!(r.body.contains(r#"[:chsk/handshake ["bob""#), "{}", r.body);

    // Once bob logs out, the name is free.
    let r = demo.post("/logout", &a.cookie, &format!("csrf-token={}", a.token));
    assert_eq!(r.status, 303);
    demo.login(&mut b, "bob");
    let r = demo.ajax_get(&b.cookie, &b.token, &own);
    assert!(r.body.contains(r#"[:chsk/handshake ["bob""#), "{}", r.body);
}

#[test]
fn a_logged_out_session_does_not_sign_itself_in_again() {
    let demo = Demo::start();
    let mut s = demo.session();
    demo.login(&mut s, "kate");
    let r = demo.post("/logout", &s.cookie, &format!("csrf-token={}", s.token));
    assert_eq!(r.status, 303);
    let cookie = header(&r.head, "set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a new session id on logout")
        .to_owned();

    // What another tab of the session finds when it reconnects: a new token and no name.
    let r = demo.request(
        &format!("GET /session HTTP/1.1\r\nConnection: close\r\nCookie: {cookie}"),
        "",
    );
    assert!(r.body.contains(r#""name":"""#), "{}", r.body);
    let token = r
        .body
        .split(r#""csrfToken":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token")
        .to_owned();

    // That tab signing itself in again is refused; joining by hand works.
    let head = format!(
        "POST /login HTTP/1.1\r\nConnection: close\r\nAccept: application/json\r\nCookie: {cookie}\r\nOrigin: {}",
        demo.origin()
    );
    let r = demo.request(&head, &format!("name=kate&rejoin=true&csrf-token={token}"));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("logged out in another tab"), "{}", r.body);
    let r = demo.request(&head, &format!("name=kate&csrf-token={token}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "{}");
}

#[test]
fn refusals_are_json_for_the_page_and_the_limits_are_in_the_page() {
    let demo = Demo::start();
    let s = demo.session();
    let page = demo.request("GET / HTTP/1.1\r\nConnection: close", "");
    assert!(page.body.contains(r#"<meta name="max-name" content="32">"#));
    assert!(
        page.body
            .contains(r#"<meta name="max-text" content="2000">"#)
    );
    let head = format!(
        "POST /login HTTP/1.1\r\nConnection: close\r\nAccept: application/json\r\nCookie: {}\r\nOrigin: {}",
        s.cookie,
        demo.origin()
    );
    let long = "x".repeat(33);
    let r = demo.request(&head, &format!("name={long}&csrf-token={}", s.token));
    assert_eq!(r.status, 400);
    assert_eq!(
        header(&r.head, "content-type"),
        Some("application/json"),
        "{}",
        r.head
    );
    assert!(
        r.body.contains("at most 32 characters; this one has 33"),
        "{}",
        r.body
    );
    let r = demo.request(&head, "name=zed&csrf-token=wrong");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("session has expired"), "{}", r.body);
}
