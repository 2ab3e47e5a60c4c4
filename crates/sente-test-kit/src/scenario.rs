//! Named conformance scenarios, run for every client x adapter x transport x packer.

use crate::server::{Adapter, CSRF_TOKEN, ServerOptions, TestServer};
use futures_util::StreamExt;
use sente::AllowedOrigins;
use sente_proto::client::{Kind, RequestError, RequestFailure};
use sente_proto::{Event, EventId, Map, Uid, Value};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How to connect a client under test.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// The chsk URL (`http://127.0.0.1:port/chsk`).
    pub url: String,
    /// Transport.
    pub kind: Kind,
    /// Packer name (`edn`, `transit`, `json`, `msgpack`, `edn+gzip`, ...).
    pub packer: String,
    /// CSRF token to send.
    pub csrf_token: Option<String>,
    /// Extra query parameters (the test server reads the uid from `uid`).
    pub params: Vec<(String, String)>,
    /// Extra headers (only for clients that [can set them](ClientFactory::can_set_headers)).
    pub headers: Vec<(String, String)>,
}

/// Creates clients of one implementation (the Rust client, the JS client, the wasm build...).
pub trait ClientFactory: Send + Sync {
    /// Name used in failure messages, e.g. `rust-native`.
    fn name(&self) -> &str;
    /// Whether the client can send custom headers (`Origin`); browsers cannot.
    fn can_set_headers(&self) -> bool;
    /// Whether the client reports the HTTP status of a refused handshake in its state
    /// (`:last-close {:reason :rejected, :status 403}`); browsers cannot see it on WebSocket.
    fn reports_rejection_status(&self) -> bool;
    /// Starts a client; it connects in the background.
    fn connect(&self, spec: ClientSpec) -> BoxFut<'_, Result<Box<dyn ClientUnderTest>, String>>;
}

/// One connected client, driven by a scenario. Events and state use Sente's shapes
/// (`[:chsk/handshake [uid nil hd first?]]`, the state map), so any client can implement it.
pub trait ClientUnderTest: Send {
    /// Sends an event without asking for a reply.
    fn send(&mut self, event: Event) -> Result<(), String>;
    /// Sends an event and waits for its reply.
    fn request(
        &mut self,
        event: Event,
        timeout: Duration,
    ) -> BoxFut<'_, Result<Value, RequestError>>;
    /// The next event (`chsk/state`, `chsk/handshake`, `chsk/ws-ping` or a push), if one comes
    /// within `timeout`.
    fn next_event(&mut self, timeout: Duration) -> BoxFut<'_, Option<Event>>;
    /// The current state map, as edn.
    fn state(&mut self) -> Value;
    /// Closes the connection and stops reconnecting.
    fn disconnect(&mut self);
}

/// One cell of the matrix.
#[derive(Clone, Debug)]
pub struct Combo {
    /// Server adapter.
    pub adapter: Adapter,
    /// Transport.
    pub kind: Kind,
    /// Packer name.
    pub packer: String,
}

/// What a scenario runs with.
pub struct Ctx {
    /// The server (behind its proxy).
    pub server: TestServer,
    /// The client implementation.
    pub factory: Arc<dyn ClientFactory>,
    /// The cell of the matrix.
    pub combo: Combo,
    /// A prefix for uids unique to this run.
    pub tag: String,
}

impl Ctx {
    /// A spec for a client of uid `uid` (anonymous when `None`) with the right token.
    pub fn spec(&self, uid: Option<&str>) -> ClientSpec {
        ClientSpec {
            url: self.server.url(),
            kind: self.combo.kind,
            packer: self.combo.packer.clone(),
            csrf_token: Some(CSRF_TOKEN.to_owned()),
            params: uid
                .map(|u| vec![("uid".to_owned(), u.to_owned())])
                .unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    /// A uid unique to this run.
    pub fn uid(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Connects a client and waits for its first handshake.
    pub async fn open(&self, spec: ClientSpec) -> Result<Box<dyn ClientUnderTest>, String> {
        let mut c = self.factory.connect(spec).await?;
        wait_event(&mut *c, OPEN_TIMEOUT, |e| {
            e.id().as_str() == "chsk/handshake"
        })
        .await?;
        Ok(c)
    }
}

/// How long a client may take to open.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of requests that should succeed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type RunFn = for<'a> fn(&'a mut Ctx) -> BoxFut<'a, Result<(), String>>;

/// A named conformance scenario.
pub struct Scenario {
    /// Name, e.g. `echo`.
    pub name: &'static str,
    /// What it checks.
    pub about: &'static str,
    /// Server settings.
    pub server: fn() -> ServerOptions,
    /// Whether it applies to a cell / client (e.g. header-based checks need a native client).
    pub applies: fn(&Combo, &dyn ClientFactory) -> bool,
    /// The scenario.
    pub run: RunFn,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn always(_: &Combo, _: &dyn ClientFactory) -> bool {
    true
}

fn ev(id: &str, data: impl Into<Value>) -> Event {
    Event::new(EventId::new(id).expect("valid id"), data)
}

fn kw_map(entries: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in entries {
        m.insert(Value::kw(k), v.clone());
    }
    Value::Map(m)
}

/// Waits for an event matching `pred`, skipping others.
pub async fn wait_event(
    c: &mut dyn ClientUnderTest,
    timeout: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no matching event within {timeout:?}; saw {seen:?}"
            ));
        }
        match c.next_event(left).await {
            Some(e) if pred(&e) => return Ok(e),
            Some(e) => seen.push(e.to_value().to_string()),
            None => {}
        }
    }
}

/// A key of the state map.
pub fn state_get<'v>(state: &'v Value, key: &str) -> Option<&'v Value> {
    state.as_map().and_then(|m| m.get_kw(key))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

async fn echo_ok(c: &mut dyn ClientUnderTest, n: i64) -> Result<(), String> {
    let data = kw_map(&[("n", Value::Int(n))]);
    let r = c
        .request(ev("demo/echo", data.clone()), REQUEST_TIMEOUT)
        .await;
    ensure(r.as_ref() == Ok(&data), || {
        format!("echo: expected {data}, got {r:?}")
    })
}

async fn wait_state(
    c: &mut dyn ClientUnderTest,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = c.state();
        if pred(&st) {
            return Ok(st);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("state never matched within {timeout:?}; last {st}"));
        }
        // Consume events too, so clients with bounded buffers keep flowing.
        let _ = c.next_event(Duration::from_millis(50)).await;
    }
}

fn expected_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Ajax => "ajax",
        // Ws, and Auto (WebSocket works against the test server).
        _ => "ws",
    }
}

// ---------------------------------------------------------------------------------------------

fn handshake(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let uid = ctx.uid("hs");
        let mut c = ctx.factory.connect(ctx.spec(Some(&uid))).await?;
        let st = wait_event(&mut *c, OPEN_TIMEOUT, |e| e.id().as_str() == "chsk/state").await?;
        let new = &st.data().as_seq().ok_or("state data")?[1];
        ensure(
            state_get(new, "first-open?") == Some(&Value::Bool(true)),
            || {
                format!(
                    "first chsk/state should carry :first-open? true: {}",
                    st.to_value()
                )
            },
        )?;
        let hs = wait_event(&mut *c, OPEN_TIMEOUT, |e| {
            e.id().as_str() == "chsk/handshake"
        })
        .await?;
        let hd = kw_map(&[("hello", Value::from("world"))]);
        let expected = Value::Vector(vec![
            Value::from(uid.as_str()),
            Value::Nil,
            hd,
            Value::Bool(true),
        ]);
        ensure(hs.data() == &expected, || {
            format!("handshake {}, expected data {expected}", hs.to_value())
        })?;
        let state = c.state();
        ensure(
            state_get(&state, "open?") == Some(&Value::Bool(true)),
            || format!("{state}"),
        )?;
        let ty = Value::kw(expected_type(ctx.combo.kind));
        ensure(state_get(&state, "type") == Some(&ty), || {
            format!("type: {state}")
        })?;
        ensure(
            state_get(&state, "uid") == Some(&Value::from(uid.as_str())),
            || format!("{state}"),
        )
    })
}

fn echo(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(None)).await?;
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
            (
                "nested",
                kw_map(&[("deep", kw_map(&[("er", Value::Vector(vec![]))]))]),
            ),
            (
                "id",
                Value::Uuid(
                    "66d96ab4-9834-40db-a3cd-42b361503ab9"
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                ),
            ),
        ]);
        c.send(ev("demo/echo", "fire and forget"))?;
        let r = c
            .request(ev("demo/echo", data.clone()), REQUEST_TIMEOUT)
            .await;
        ensure(r.as_ref() == Ok(&data), || {
            format!("echo: sent {data}, got {r:?}")
        })?;
        let r = c
            .request(ev("demo/echo", Value::Nil), REQUEST_TIMEOUT)
            .await;
        ensure(r == Ok(Value::Nil), || format!("echo nil: {r:?}"))
    })
}

fn handler_error(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(None)).await?;
        let t0 = std::time::Instant::now();
        let r = c.request(ev("demo/fail", 1), Duration::from_secs(10)).await;
        ensure(
            r == Err(RequestError::Error(RequestFailure::HandlerFailed)),
            || format!("expected Error(HandlerFailed), got {r:?}"),
        )?;
        ensure(t0.elapsed() < Duration::from_secs(2), || {
            format!(
                "the error took {:?}: it must not wait for the timeout",
                t0.elapsed()
            )
        })?;
        let state = c.state();
        ensure(
            state_get(&state, "open?") == Some(&Value::Bool(true)),
            || format!("a handler error must not close: {state}"),
        )?;
        echo_ok(&mut *c, 1).await
    })
}

fn reply_timeout(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(None)).await?;
        let r = c
            .request(ev("demo/no-reply", 1), Duration::from_millis(400))
            .await;
        ensure(r == Err(RequestError::Timeout), || {
            format!("expected Timeout, got {r:?}")
        })?;
        let state = c.state();
        ensure(
            state_get(&state, "open?") == Some(&Value::Bool(true)),
            || format!("a timeout must not close: {state}"),
        )?;
        echo_ok(&mut *c, 1).await
    })
}

fn push_batch(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let uid = ctx.uid("push");
        let mut c = ctx.open(ctx.spec(Some(&uid))).await?;
        let r = c.request(ev("demo/push-me", 5), REQUEST_TIMEOUT).await;
        ensure(r == Ok(Value::kw("ok")), || format!("push-me reply {r:?}"))?;
        for i in 0..5 {
            let e = wait_event(&mut *c, REQUEST_TIMEOUT, |e| {
                e.id().as_str() == "demo/pushed"
            })
            .await?;
            let want = kw_map(&[("i", Value::Int(i))]);
            ensure(e.data() == &want, || {
                format!("push {i}: got {}", e.to_value())
            })?;
        }
        Ok(())
    })
}

fn fan_out(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let uid = ctx.uid("fan");
        let mut a = ctx.open(ctx.spec(Some(&uid))).await?;
        let mut b = ctx.open(ctx.spec(Some(&uid))).await?;
        let mut other = ctx.open(ctx.spec(Some(&ctx.uid("other")))).await?;
        let r = a.request(ev("demo/push-me", 3), REQUEST_TIMEOUT).await;
        ensure(r == Ok(Value::kw("ok")), || format!("push-me reply {r:?}"))?;
        for (name, c) in [("a", &mut a), ("b", &mut b)] {
            for i in 0..3 {
                let e = wait_event(&mut **c, REQUEST_TIMEOUT, |e| {
                    e.id().as_str() == "demo/pushed"
                })
                .await
                .map_err(|e| format!("client {name}: {e}"))?;
                let want = kw_map(&[("i", Value::Int(i))]);
                ensure(e.data() == &want, || {
                    format!("client {name} push {i}: got {}", e.to_value())
                })?;
            }
        }
        let stray = wait_event(&mut *other, Duration::from_millis(500), |e| {
            e.id().as_str() == "demo/pushed"
        })
        .await;
        ensure(stray.is_err(), || {
            format!("another uid got the push: {stray:?}")
        })
    })
}

fn uidport(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let uid = ctx.uid("port");
        let u = Uid::from(uid.as_str());
        let mut c = ctx.open(ctx.spec(Some(&uid))).await?;
        let log = ctx.server.log().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !log.has("chsk/uidport-open", &u) {
            ensure(tokio::time::Instant::now() < deadline, || {
                format!("no uidport-open for {uid}: {:?}", log.events())
            })?;
            let _ = c.next_event(Duration::from_millis(50)).await;
        }
        // The log is visible to clients too.
        let r = c
            .request(ev("demo/uidport-log", Value::Nil), REQUEST_TIMEOUT)
            .await
            .map_err(|e| format!("uidport-log: {e}"))?;
        let open = Value::Vector(vec![
            Value::kw("chsk/uidport-open"),
            Value::from(uid.as_str()),
        ]);
        ensure(r.as_seq().is_some_and(|s| s.contains(&open)), || {
            format!("uidport-log {r}")
        })?;
        c.disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !log.has("chsk/uidport-close", &u) {
            ensure(tokio::time::Instant::now() < deadline, || {
                format!("no uidport-close for {uid}: {:?}", log.events())
            })?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
}

fn server_restart(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(Some(&ctx.uid("restart")))).await?;
        echo_ok(&mut *c, 1).await?;
        ctx.server
            .restart()
            .await
            .map_err(|e| format!("restart: {e}"))?;
        let hs = wait_event(&mut *c, Duration::from_secs(40), |e| {
            e.id().as_str() == "chsk/handshake"
        })
        .await?;
        let first = hs.data().as_seq().and_then(|s| s.get(3)).cloned();
        ensure(first == Some(Value::Bool(false)), || {
            format!("second handshake: {}", hs.to_value())
        })?;
        echo_ok(&mut *c, 2).await
    })
}

fn server_close(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(Some(&ctx.uid("close")))).await?;
        // Let an Ajax client's first long-poll reach the server: a kick that falls between two
        // polls goes unnoticed (as in Sente, where it closes no channel).
        echo_ok(&mut *c, 0).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(ev("demo/close-me", Value::Nil))?;
        // The WebSocket is closed / the held poll answered 410: the client comes back.
        let hs = wait_event(&mut *c, Duration::from_secs(30), |e| {
            e.id().as_str() == "chsk/handshake"
        })
        .await?;
        let first = hs.data().as_seq().and_then(|s| s.get(3)).cloned();
        ensure(first == Some(Value::Bool(false)), || {
            format!("handshake {}", hs.to_value())
        })?;
        echo_ok(&mut *c, 3).await
    })
}

fn auto_downgrade(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(None)).await?;
        let state = c.state();
        ensure(
            state_get(&state, "type") == Some(&Value::kw("ajax")),
            || format!("expected an Ajax fallback: {state}"),
        )?;
        ensure(state_get(&state, "last-ws-error").is_some(), || {
            format!("{state}")
        })?;
        echo_ok(&mut *c, 1).await
    })
}

async fn expect_rejected(
    ctx: &Ctx,
    c: &mut dyn ClientUnderTest,
    status: i64,
) -> Result<(), String> {
    let hs = wait_event(c, Duration::from_secs(2), |e| {
        e.id().as_str() == "chsk/handshake"
    })
    .await;
    ensure(hs.is_err(), || format!("must not open: {hs:?}"))?;
    if ctx.factory.reports_rejection_status() {
        let st = wait_state(c, Duration::from_secs(10), |s| {
            state_get(s, "last-close").and_then(|lc| state_get(lc, "reason"))
                == Some(&Value::kw("rejected"))
        })
        .await?;
        let lc = state_get(&st, "last-close").cloned().unwrap_or(Value::Nil);
        ensure(
            state_get(&lc, "status") == Some(&Value::Int(status)),
            || format!("{st}"),
        )?;
    }
    let st = c.state();
    ensure(state_get(&st, "open?") == Some(&Value::Bool(false)), || {
        format!("{st}")
    })?;
    let r = c.request(ev("demo/echo", 1), Duration::from_secs(1)).await;
    ensure(r == Err(RequestError::Closed), || {
        format!("request while rejected: {r:?}")
    })
}

fn csrf_rejected(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut spec = ctx.spec(None);
        spec.csrf_token = Some("wrong-token".to_owned());
        let mut c = ctx.factory.connect(spec).await?;
        expect_rejected(ctx, &mut *c, 403).await?;
        c.disconnect();
        let mut spec = ctx.spec(None);
        spec.csrf_token = None;
        let mut c = ctx.factory.connect(spec).await?;
        expect_rejected(ctx, &mut *c, 403).await
    })
}

fn origin_rejected(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut spec = ctx.spec(None);
        spec.headers = vec![("Origin".to_owned(), "http://evil.example".to_owned())];
        let mut c = ctx.factory.connect(spec).await?;
        expect_rejected(ctx, &mut *c, 403).await?;
        c.disconnect();
        let mut spec = ctx.spec(None);
        spec.headers = vec![("Origin".to_owned(), "http://good.example".to_owned())];
        let mut c = ctx.open(spec).await?;
        echo_ok(&mut *c, 1).await
    })
}

fn oversize(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let mut c = ctx.open(ctx.spec(None)).await?;
        let big = Value::from("x".repeat(64 * 1024));
        let r = c
            .request(ev("demo/echo", big), Duration::from_secs(5))
            .await;
        ensure(r.is_err(), || {
            "an oversize message must not be echoed".to_owned()
        })?;
        // The client recovers (reconnecting if the server closed the socket).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let data = kw_map(&[("after", Value::Bool(true))]);
            match c
                .request(ev("demo/echo", data.clone()), Duration::from_secs(2))
                .await
            {
                Ok(v) if v == data => return Ok(()),
                other => {
                    ensure(tokio::time::Instant::now() < deadline, || {
                        format!("no recovery after an oversize message: {other:?}")
                    })?;
                    let _ = c.next_event(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

fn bad_event(ctx: &mut Ctx) -> BoxFut<'_, Result<(), String>> {
    Box::pin(async move {
        let uid = ctx.uid("bad");
        let mut c = ctx.open(ctx.spec(Some(&uid))).await?;
        // A raw Sente POST (edn) with an invalid event asking for a reply.
        let (status, body) = crate::raw::post_edn(
            &ctx.server.url(),
            &uid,
            "[[:not-namespaced 1] :ajax]",
            CSRF_TOKEN,
        )
        .await?;
        ensure(status == 200, || format!("raw POST: HTTP {status} {body}"))?;
        ensure(body.contains(":bad-event [:not-namespaced 1]"), || {
            format!("raw reply {body}")
        })?;
        let e = wait_event(&mut *c, REQUEST_TIMEOUT, |e| {
            e.id().as_str() == "demo/saw-bad-event"
        })
        .await?;
        let want = Value::Vector(vec![Value::kw("not-namespaced"), Value::Int(1)]);
        ensure(e.data() == &want, || {
            format!("saw-bad-event {}", e.to_value())
        })?;
        echo_ok(&mut *c, 1).await
    })
}

/// Every scenario, in a stable order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "handshake",
            about: "chsk/state (first-open?) then chsk/handshake [uid nil hd true]; state map",
            server: ServerOptions::default,
            applies: always,
            run: handshake,
        },
        Scenario {
            name: "echo",
            about: "request/reply round-trips rich data; fire-and-forget send",
            server: ServerOptions::default,
            applies: always,
            run: echo,
        },
        Scenario {
            name: "reply-timeout",
            about: "no reply within the timeout gives chsk/timeout; the connection stays open",
            server: ServerOptions::default,
            applies: always,
            run: reply_timeout,
        },
        Scenario {
            name: "handler-error",
            about: "a server handler that fails before replying gives chsk/error at once",
            server: ServerOptions::default,
            applies: always,
            run: handler_error,
        },
        Scenario {
            name: "push-batch",
            about: "pushes to the caller's uid arrive in order",
            server: ServerOptions::default,
            applies: always,
            run: push_batch,
        },
        Scenario {
            name: "fan-out",
            about: "a push reaches every client of the uid and no other uid",
            server: ServerOptions::default,
            applies: always,
            run: fan_out,
        },
        Scenario {
            name: "uidport",
            about: "uidport-open on connect, uidport-close after disconnect + grace",
            server: ServerOptions::default,
            applies: always,
            run: uidport,
        },
        Scenario {
            name: "server-restart",
            about: "the client reconnects to a restarted server (handshake first? false)",
            server: ServerOptions::default,
            applies: always,
            run: server_restart,
        },
        Scenario {
            name: "server-close",
            about: "[:chsk/close] from the server: the client comes back (new handshake)",
            server: ServerOptions::default,
            applies: always,
            run: server_close,
        },
        Scenario {
            name: "auto-downgrade",
            about: "Auto falls back to Ajax when the WebSocket upgrade is refused",
            server: || ServerOptions {
                refuse_ws_upgrades: true,
                ..ServerOptions::default()
            },
            applies: |combo, _| combo.kind == Kind::Auto,
            run: auto_downgrade,
        },
        Scenario {
            name: "csrf-rejected",
            about: "a wrong or missing CSRF token never opens (rejected 403)",
            server: ServerOptions::default,
            applies: always,
            run: csrf_rejected,
        },
        Scenario {
            name: "origin-rejected",
            about: "a foreign Origin never opens (rejected 403); an allowed one does",
            server: || ServerOptions {
                allowed_origins: AllowedOrigins::list(["http://good.example"]),
                ..ServerOptions::default()
            },
            applies: |_, f| f.can_set_headers(),
            run: origin_rejected,
        },
        Scenario {
            name: "oversize",
            about: "a message over the server's limit fails; the client recovers",
            server: || ServerOptions {
                max_message_bytes: 16 * 1024,
                ..ServerOptions::default()
            },
            applies: always,
            run: oversize,
        },
        Scenario {
            name: "bad-event",
            about: "an invalid event reaches the app as chsk/bad-event; clients are unaffected",
            server: ServerOptions::default,
            applies: always,
            run: bad_event,
        },
    ]
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// Server adapters.
    pub adapters: Vec<Adapter>,
    /// Transports.
    pub kinds: Vec<Kind>,
    /// Packer names.
    pub packers: Vec<String>,
    /// Scenario names to run (empty: all).
    pub only: Vec<String>,
    /// How many scenarios run at once.
    pub parallel: usize,
}

impl Default for Matrix {
    fn default() -> Self {
        Matrix {
            adapters: vec![Adapter::Axum],
            kinds: vec![Kind::Ws, Kind::Ajax, Kind::Auto],
            packers: [
                "edn",
                "transit",
                "json",
                "msgpack",
                "edn+gzip",
                "msgpack+gzip",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            only: Vec::new(),
            parallel: 4,
        }
    }
}

/// One failed cell.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Client implementation.
    pub client: String,
    /// The cell.
    pub combo: Combo,
    /// Scenario name.
    pub scenario: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[client={} adapter={} transport={} packer={}] {}: {}",
            self.client,
            self.combo.adapter,
            self.combo.kind,
            self.combo.packer,
            self.scenario,
            self.message
        )
    }
}

/// The outcome of a matrix run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Cells that passed.
    pub passed: usize,
    /// Cells that failed.
    pub failures: Vec<Failure>,
}

impl Report {
    /// `Ok(passed)`, or every failure listed: a `#[test]` returning this result prints the list
    /// as its last words, where a panic would bury it above a backtrace.
    pub fn check(&self) -> Result<usize, Failed> {
        if self.failures.is_empty() {
            return Ok(self.passed);
        }
        let list = self.failures.iter().map(ToString::to_string);
        Err(Failed(format!(
            "{} passed, {} failed:\n{}",
            self.passed,
            self.failures.len(),
            list.collect::<Vec<_>>().join("\n")
        )))
    }
}

/// The failures of a matrix run, as text; its `Debug` is that text verbatim (a test's
/// `Error: ...` line), newlines included.
pub struct Failed(pub String);

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

static RUN: AtomicU64 = AtomicU64::new(0);

/// Runs one scenario in one cell with a fresh server.
pub async fn run_one(
    factory: Arc<dyn ClientFactory>,
    combo: Combo,
    scenario: &Scenario,
) -> Result<(), String> {
    let server = TestServer::spawn_on(combo.adapter, (scenario.server)())
        .await
        .map_err(|e| format!("server ({}): {e}", combo.adapter))?;
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let tag = format!(
        "{}-{}-{}-{}-{n}",
        scenario.name, combo.adapter, combo.kind, combo.packer
    );
    let mut ctx = Ctx {
        server,
        factory,
        combo,
        tag,
    };
    match tokio::time::timeout(Duration::from_secs(90), (scenario.run)(&mut ctx)).await {
        Ok(r) => r,
        Err(_) => Err("scenario did not finish within 90 s".to_owned()),
    }
}

/// Runs the matrix for one client implementation.
pub async fn run_matrix(factory: Arc<dyn ClientFactory>, matrix: &Matrix) -> Report {
    let all = scenarios();
    let mut cells = Vec::new();
    for adapter in &matrix.adapters {
        for kind in &matrix.kinds {
            for packer in &matrix.packers {
                let combo = Combo {
                    adapter: *adapter,
                    kind: *kind,
                    packer: packer.clone(),
                };
                for s in &all {
                    if (matrix.only.is_empty() || matrix.only.iter().any(|o| o == s.name))
                        && (s.applies)(&combo, &*factory)
                    {
                        cells.push((combo.clone(), s));
                    }
                }
            }
        }
    }
    let results: Vec<_> = futures_util::stream::iter(cells)
        .map(|(combo, s)| {
            let factory = factory.clone();
            async move {
                let r = run_one(factory.clone(), combo.clone(), s).await;
                (combo, s.name, r, factory.name().to_owned())
            }
        })
        .buffer_unordered(matrix.parallel.max(1))
        .collect()
        .await;
    let mut report = Report::default();
    for (combo, scenario, r, client) in results {
        match r {
            Ok(()) => report.passed += 1,
            Err(message) => report.failures.push(Failure {
                client,
                combo,
                scenario,
                message,
            }),
        }
    }
    report
}
