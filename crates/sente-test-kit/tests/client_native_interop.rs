//! The native client against servers that behave like a real Sente deployment (issue 13):
//! - a server close frame (Sente's `[:chsk/close]`) with TCP left open, as http-kit does;
//! - `Origin`, custom headers and cookies, as a browser page would send them;
//! - `https://` and `wss://`, with a CA made at test time.

use futures_util::{SinkExt, StreamExt};
use sente::{AllowedOrigins, ChskService, CsrfToken, EventMsg, Router, Server};
use sente_client::{
    Certificate, Client, CloseReason, ConnectError, Event, EventId, HttpFailure, Kind,
    RequestError, State, TlsError, Value,
};
use sente_proto::Uid;
use sente_test_kit::{CSRF_TOKEN, ServerOptions, TestServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).unwrap(), data)
}

async fn wait_state(
    state: &mut watch::Receiver<State>,
    within: Duration,
    what: &str,
    f: impl FnMut(&State) -> bool,
) -> State {
    let found = match timeout(within, state.wait_for(f)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| {
        panic!(
            "{what}: not within {within:?}; state: {:?}",
            *state.borrow()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Item 2: the server's close frame

/// A scripted Sente-like WebSocket server: every connection gets the handshake (after
/// `reconnect_delay` for connections after the first); the first connection then gets a close
/// frame 1000 after 300 ms, and its TCP connection is left open (http-kit does not close it).
/// Sends the instant of the close frame on the channel.
async fn scripted_closing_server(
    reconnect_delay: Duration,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Instant>,
    Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                if n > 0 {
                    tokio::time::sleep(reconnect_delay).await;
                }
                let hs = r#"[[:chsk/handshake ["u1" nil {:hello "world"}]] nil]"#;
                if ws.send(Message::text(hs)).await.is_err() {
                    return;
                }
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "bye".into(),
                    };
                    ws.send(Message::Close(Some(frame))).await.unwrap();
                    let _ = tx.send(Instant::now());
                    // Keep TCP open without reading: the client's answer is never processed.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(ws);
                } else {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    (addr, rx, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_frame_is_a_clean_close_even_when_tcp_stays_open() {
    let (addr, mut closed_at, conns) = scripted_closing_server(Duration::from_millis(700)).await;
    let client = Client::builder(format!("http://{addr}/chsk"))
        .kind(Kind::Ws)
        .connect()
        .unwrap();
    let mut state = client.state();
    wait_state(&mut state, Duration::from_secs(5), "open", |s| s.open).await;
    let sent = timeout(Duration::from_secs(5), closed_at.recv())
        .await
        .unwrap()
        .unwrap();
    let s = wait_state(&mut state, Duration::from_secs(3), "close seen", |s| {
        s.last_close.is_some()
    })
    .await;
    // Long before the keepalive (20 s) and within the browsers' close-handshake wait.
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "close seen after {took:?}"
    );
    assert!(!s.open);
    let ws_close = s.last_ws_close.expect("last_ws_close");
    assert_eq!(
        (ws_close.code, ws_close.reason.as_str(), ws_close.clean),
        (1000, "bye", true)
    );
    assert_eq!(s.last_close.unwrap().reason, CloseReason::Clean);
    assert!(s.last_ws_error.is_none(), "{:?}", s.last_ws_error);
    // A request made while reconnecting fails as closed, at once (no queue configured).
    let r = timeout(
        Duration::from_secs(1),
        client.request(ev("demo/echo", 1), Duration::from_secs(10)),
    )
    .await
    .expect("the request does not hang");
    assert_eq!(r, Err(RequestError::Closed));
    // And the client reconnects.
    wait_state(&mut state, Duration::from_secs(5), "reopened", |s| s.open).await;
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_uid_on_the_sente_rs_server_is_a_clean_close_and_the_client_comes_back() {
    let server = TestServer::spawn(ServerOptions::default()).await.unwrap();
    let client = Client::builder(server.url())
        .kind(Kind::Ws)
        .csrf_token(CSRF_TOKEN)
        .param("uid", "kick-me")
        .queue_while_connecting(16, Duration::from_secs(10))
        .connect()
        .unwrap();
    let mut state = client.state();
    wait_state(&mut state, Duration::from_secs(5), "open", |s| s.open).await;
    // A request in flight while the server closes: answered or failed, never left hanging.
    let c2 = client.clone();
    let in_flight = tokio::spawn(async move {
        c2.request(ev("demo/echo", 1), Duration::from_secs(30))
            .await
    });
    let start = Instant::now();
    server.server().unwrap().close_uid(&Uid::from("kick-me"));
    let s = wait_state(&mut state, Duration::from_secs(3), "close seen", |s| {
        s.last_close.is_some()
    })
    .await;
    assert!(start.elapsed() < Duration::from_millis(2500));
    let ws_close = s.last_ws_close.expect("last_ws_close");
    assert_eq!((ws_close.code, ws_close.clean), (1000, true));
    assert_eq!(s.last_close.unwrap().reason, CloseReason::Clean);
    // Made while reconnecting: queued, then sent on the new connection.
    let queued = client.request(ev("demo/echo", 2), Duration::from_secs(10));
    assert_eq!(
        timeout(Duration::from_secs(10), queued).await.unwrap(),
        Ok(Value::Int(2))
    );
    let r = timeout(Duration::from_secs(3), in_flight)
        .await
        .expect("the in-flight request does not hang")
        .unwrap();
    assert!(
        matches!(
            r,
            Ok(Value::Int(1)) | Err(RequestError::Closed | RequestError::Error(_))
        ),
        "{r:?}"
    );
    wait_state(&mut state, Duration::from_secs(5), "reopened", |s| s.open).await;
}

// ---------------------------------------------------------------------------------------------
// Item 3: origin, headers and cookies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_allowed_origins_needs_the_origin() {
    let server = TestServer::spawn(ServerOptions {
        allowed_origins: AllowedOrigins::list(["https://app.example"]),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    for kind in [Kind::Ws, Kind::Ajax, Kind::Auto] {
        let refused = Client::builder(server.url())
            .kind(kind)
            .csrf_token(CSRF_TOKEN)
            .connect()
            .unwrap();
        let mut state = refused.state();
        let s = wait_state(&mut state, Duration::from_secs(10), "rejected", |s| {
            s.last_close.is_some()
        })
        .await;
        assert_eq!(
            s.last_close.unwrap().reason,
            CloseReason::Rejected { status: 403 },
            "{kind}"
        );
        assert!(!s.ever_opened, "{kind}");
        drop(refused);

        let accepted = Client::builder(server.url())
            .kind(kind)
            .csrf_token(CSRF_TOKEN)
            .origin("https://app.example")
            .connect()
            .unwrap();
        let mut state = accepted.state();
        wait_state(&mut state, Duration::from_secs(10), "open", |s| s.open).await;
        // Ajax POSTs carry it too.
        let r = accepted
            .request(ev("demo/echo", 3), Duration::from_secs(10))
            .await;
        assert_eq!(r, Ok(Value::Int(3)), "{kind}");
    }
}

/// A sente-rs server whose uid is the `session` cookie and whose handshake data is the
/// `x-tenant` header; `demo/echo` echoes, `demo/who` replies `[uid tenant cookie-header]` as the
/// server saw them on that request.
fn cookie_server() -> Server {
    fn cookie(req: &sente::ChskRequest, name: &str) -> Option<String> {
        req.header("cookie")?
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    }
    let router = Router::new()
        .on("demo/echo", |mut msg: EventMsg| async move {
            let data = msg.data_value().clone();
            msg.reply(data);
        })
        .on("demo/who", |mut msg: EventMsg| async move {
            let uid = msg.uid.to_value();
            msg.reply(uid);
        });
    Server::builder()
        .csrf_token_fn(|_| CsrfToken::Skip)
        .allowed_origins(AllowedOrigins::All)
        .user_id_fn(move |req| cookie(req, "session").map_or(Uid::Nil, Uid::from))
        .handshake_data_fn(|req| Value::from(req.header("x-tenant").unwrap_or("none")))
        .handler(router)
        .build()
        .unwrap()
}

/// Serves `svc` on `listener` (through TLS when `tls` is given), one task per connection.
async fn serve(listener: TcpListener, svc: ChskService, tls: Option<tokio_rustls::TlsAcceptor>) {
    use tower_service::Service;
    while let Ok((tcp, _)) = listener.accept().await {
        let svc = svc.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| svc.clone().call(req));
            let http = hyper::server::conn::http1::Builder::new();
            if let Some(acceptor) = tls {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = http.serve_connection(io, handler).with_upgrades().await;
            } else {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = http.serve_connection(io, handler).with_upgrades().await;
            }
        });
    }
}

async fn spawn_server(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = cookie_server().service_at("/chsk");
    tokio::spawn(serve(listener, svc, tls));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_and_headers_go_on_the_upgrade_and_every_ajax_request() {
    let addr = spawn_server(None).await;
    for kind in [Kind::Ws, Kind::Ajax] {
        let client = Client::builder(format!("http://{addr}/chsk"))
            .kind(kind)
            .cookie("theme", "dark")
            .cookie("session", "alice")
            .header("X-Tenant", "acme")
            .connect()
            .unwrap();
        let mut events = client.events();
        let hs = timeout(Duration::from_secs(10), async {
            loop {
                if let Some(sente_client::ClientEvent::Handshake(h)) = events.next().await {
                    return h;
                }
            }
        })
        .await
        .expect("handshake");
        assert_eq!(hs.uid, Uid::from("alice"), "{kind}");
        assert_eq!(hs.data, Value::from("acme"), "{kind}");
        // Over Ajax this is a POST, resolved again from its own cookie.
        let who = client
            .request(ev("demo/who", Value::Nil), Duration::from_secs(10))
            .await;
        assert_eq!(who, Ok(Value::from("alice")), "{kind}");
    }
}

#[test]
fn cookies_join_into_one_header_and_origin_replaces() {
    let cfg = Client::builder("http://x/chsk")
        .origin("http://a.example")
        .header("X-Other", "1")
        .cookie("a", "1")
        .origin("http://b.example")
        .cookie("b", "2")
        .config()
        .unwrap();
    assert_eq!(
        cfg.headers,
        [
            ("X-Other".to_owned(), "1".to_owned()),
            ("Cookie".to_owned(), "a=1; b=2".to_owned()),
            ("Origin".to_owned(), "http://b.example".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: TLS

struct TestPki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// A CA and a certificate for `localhost` / `127.0.0.1` signed by it, made now.
fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sente-rs test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_work_with_a_trusted_ca() {
    let pki = test_pki();
    let addr = spawn_server(Some(pki.acceptor.clone())).await;
    let cases = [
        (Kind::Ws, format!("wss://127.0.0.1:{}/chsk", addr.port())),
        (
            Kind::Ajax,
            format!("https://127.0.0.1:{}/chsk", addr.port()),
        ),
        (
            Kind::Auto,
            format!("https://localhost:{}/chsk", addr.port()),
        ),
    ];
    for (kind, url) in cases {
        let client = Client::builder(&url)
            .kind(kind)
            .cookie("session", "tls-user")
            .add_root_certificate(Certificate::from_pem(&pki.ca_pem).unwrap())
            .tls_built_in_root_certs(false)
            .connect()
            .unwrap();
        let mut state = client.state();
        let s = wait_state(&mut state, Duration::from_secs(10), &url, |s| s.open).await;
        let expected = if kind == Kind::Ajax {
            Kind::Ajax
        } else {
            Kind::Ws
        };
        assert_eq!(s.kind, expected, "{url}");
        assert_eq!(s.uid, Some(Uid::from("tls-user")), "{url}");
        let r = client
            .request(ev("demo/echo", 9), Duration::from_secs(10))
            .await;
        assert_eq!(r, Ok(Value::Int(9)), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_error_in_the_state() {
    let pki = test_pki();
    let addr = spawn_server(Some(pki.acceptor)).await;
    // Verification is on by default: the test CA is not among the built-in roots.
    let ws = Client::builder(format!("wss://127.0.0.1:{}/chsk", addr.port()))
        .kind(Kind::Ws)
        .connect()
        .unwrap();
    let mut state = ws.state();
    let s = wait_state(&mut state, Duration::from_secs(10), "ws TLS error", |s| {
        s.last_ws_error.is_some()
    })
    .await;
    let err = s.last_ws_error.unwrap();
    assert!(err.tls, "{err:?}");
    assert!(err.message.contains("TLS"), "{err:?}");
    assert!(!s.open && !s.ever_opened);

    let ajax = Client::builder(format!("https://127.0.0.1:{}/chsk", addr.port()))
        .kind(Kind::Ajax)
        .connect()
        .unwrap();
    let mut state = ajax.state();
    let s = wait_state(&mut state, Duration::from_secs(10), "ajax TLS error", |s| {
        s.last_ajax_error.is_some()
    })
    .await;
    let err = s.last_ajax_error.clone().unwrap();
    assert!(matches!(err.failure, HttpFailure::Tls(_)), "{err:?}");
    assert!(!s.open && !s.ever_opened);
    let value = s.to_value().to_string();
    assert!(value.contains(":tls? true"), "{value}");
}

#[test]
fn bad_tls_settings_are_refused_when_building() {
    assert!(matches!(
        Certificate::from_pem("not a certificate"),
        Err(TlsError::InvalidCertificate(_))
    ));
    let r = Client::builder("https://x/chsk")
        .tls_built_in_root_certs(false)
        .connect();
    assert!(
        matches!(r, Err(ConnectError::Tls(TlsError::NoRoots))),
        "{r:?}"
    );
}
