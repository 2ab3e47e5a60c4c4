//! The browser shell: `WebSocket` and `fetch` (with `AbortController`), timers via
//! `setTimeout`. Works in windows and workers (everything is looked up on the global object).

use crate::shared::Shared;
use futures_util::future::{Either, select};
use js_sys::{Function, Promise, Reflect, Uint8Array};
use sente_proto::Packed;
use sente_proto::client::{Action, ConnId, HttpFailure, HttpId, HttpRequest, WsClosed, WsFailure};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{AbortController, BinaryType, CloseEvent, MessageEvent, WebSocket};

fn global() -> JsValue {
    js_sys::global().into()
}

fn global_fn(name: &str) -> Option<Function> {
    Reflect::get(&global(), &JsValue::from_str(name))
        .ok()?
        .dyn_into::<Function>()
        .ok()
}

/// Milliseconds since the client started, from `performance.now()` (monotonic), falling back
/// to `Date.now()`.
pub(crate) struct Clock {
    origin: f64,
}

fn js_now() -> f64 {
    let perf = Reflect::get(&global(), &JsValue::from_str("performance")).ok();
    perf.and_then(|p| {
        let f = Reflect::get(&p, &JsValue::from_str("now"))
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        f.call0(&p).ok()?.as_f64()
    })
    .unwrap_or_else(js_sys::Date::now)
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock { origin: js_now() }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        (js_now() - self.origin).max(0.0) as u64
    }
}

pub(crate) fn unix_ms() -> u64 {
    js_sys::Date::now() as u64
}

struct Socket {
    ws: WebSocket,
    _handlers: Vec<Closure<dyn FnMut(JsValue)>>,
}

struct Fetch {
    controller: AbortController,
    aborted: Rc<RefCell<bool>>,
}

/// Settings of the IO layer (none in the browser: it does TLS, origin and cookies itself).
#[derive(Default)]
pub(crate) struct IoConfig {}

/// Live browser objects, keyed by the machine's ids (single-threaded: the mutexes never block).
pub(crate) struct Io {
    sockets: Mutex<HashMap<ConnId, Socket>>,
    fetches: Mutex<HashMap<HttpId, Fetch>>,
}

impl Io {
    pub(crate) fn new(_config: IoConfig) -> Self {
        Io {
            sockets: Mutex::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `setTimeout` future, cleared when dropped.
struct Sleep {
    promise: JsFuture,
    handle: Option<JsValue>,
}

fn sleep_ms(ms: u64) -> Sleep {
    let mut handle = None;
    let promise = Promise::new(&mut |resolve, _reject| {
        if let Some(set_timeout) = global_fn("setTimeout") {
            let ms = JsValue::from_f64(ms.min(2_000_000_000) as f64);
            handle = set_timeout.call2(&global(), &resolve, &ms).ok();
        }
    });
    Sleep {
        promise: JsFuture::from(promise),
        handle,
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.promise).poll(cx) {
            Poll::Ready(_) => {
                self.handle = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(h), Some(clear)) = (self.handle.take(), global_fn("clearTimeout")) {
            let _ = clear.call1(&global(), &h);
        }
    }
}

pub(crate) fn spawn_driver(shared: Arc<Shared>) {
    spawn_local(drive(shared));
}

/// Listeners on the page that bring a pending reconnect forward: the network came back
/// (`online`, windows and workers) or the tab became visible (`visibilitychange`). Removed when
/// dropped.
struct RetrySignals {
    listeners: Vec<(JsValue, &'static str, Handler)>,
}

type Handler = Closure<dyn FnMut(JsValue)>;

impl RetrySignals {
    fn new(shared: &Arc<Shared>) -> Self {
        let mut listeners = Vec::new();
        let document = Reflect::get(&global(), &JsValue::from_str("document"))
            .ok()
            .filter(JsValue::is_object);
        let targets = [(Some(global()), "online"), (document, "visibilitychange")];
        for (target, name) in targets {
            let Some(target) = target else { continue };
            let s = shared.clone();
            let doc = target.clone();
            let handler = Handler::new(move |_: JsValue| {
                let hidden = name == "visibilitychange"
                    && Reflect::get(&doc, &JsValue::from_str("visibilityState"))
                        .ok()
                        .and_then(|v| v.as_string())
                        .is_some_and(|v| v != "visible");
                if !hidden {
                    s.with(sente_proto::client::ClientMachine::retry_now);
                }
            });
            if call_method(&target, "addEventListener", name, &handler) {
                listeners.push((target, name, handler));
            }
        }
        RetrySignals { listeners }
    }
}

/// `target[method](name, handler)`; whether it could be called.
fn call_method(target: &JsValue, method: &str, name: &str, handler: &Handler) -> bool {
    Reflect::get(target, &JsValue::from_str(method))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .is_some_and(|f| {
            f.call2(target, &JsValue::from_str(name), handler.as_ref())
                .is_ok()
        })
}

impl Drop for RetrySignals {
    fn drop(&mut self) {
        for (target, name, handler) in &self.listeners {
            call_method(target, "removeEventListener", name, handler);
        }
    }
}

async fn drive(shared: Arc<Shared>) {
    let _signals = RetrySignals::new(&shared);
    loop {
        let drained = shared.drain();
        for action in drained.actions {
            perform(&shared, action);
        }
        if drained.shutdown {
            return;
        }
        let notified = pin!(shared.notify.notified());
        let timer = match drained.deadline {
            Some(at) => Either::Left(sleep_ms(at.saturating_sub(shared.now()))),
            None => Either::Right(std::future::pending::<()>()),
        };
        if let Either::Right(_) = select(notified, pin!(timer)).await {
            let mut inner = shared.lock();
            let now = shared.now();
            inner.machine.handle_timeout(now);
        }
    }
}

fn perform(shared: &Arc<Shared>, action: Action) {
    match action {
        Action::WsOpen {
            conn,
            url,
            headers: _,
        } => open_ws(shared, conn, &url),
        Action::WsSend { conn, frame } => {
            let result = lock(&shared.io.sockets).get(&conn).map(|s| match &frame {
                Packed::Text(t) => s.ws.send_with_str(t),
                Packed::Binary(b) => s.ws.send_with_u8_array(b),
            });
            if !matches!(result, Some(Ok(()))) {
                shared.with(|m, now| m.handle_ws_send_failed(conn, "WebSocket send failed", now));
            }
        }
        Action::WsClose { conn, code, reason } => {
            if let Some(s) = lock(&shared.io.sockets).get(&conn) {
                let _ = s.ws.close_with_code_and_reason(code, &reason);
            }
        }
        Action::Http { id, request } => {
            let s = shared.clone();
            spawn_local(async move { fetch(s, id, request).await });
        }
        Action::HttpAbort { id } => {
            if let Some(f) = lock(&shared.io.fetches).remove(&id) {
                *f.aborted.borrow_mut() = true;
                f.controller.abort();
            }
        }
        other => tracing::debug!(target: "sente_client", "ignoring action {other:?}"),
    }
}

fn open_ws(shared: &Arc<Shared>, conn: ConnId, url: &str) {
    let ws = match WebSocket::new(url) {
        Ok(ws) => ws,
        Err(e) => {
            let message = format!("cannot create WebSocket: {e:?}");
            shared.with(|m, now| {
                m.handle_ws_connect_failed(conn, WsFailure::new(message), now);
            });
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let s = shared.clone();
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        s.with(|m, now| m.handle_ws_open(conn, now));
    });
    let s = shared.clone();
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let Ok(e) = e.dyn_into::<MessageEvent>() else {
            return;
        };
        let data = e.data();
        let bytes = match data.as_string() {
            Some(text) => text.into_bytes(),
            None => Uint8Array::new(&data).to_vec(),
        };
        s.with(|m, now| m.handle_ws_message(conn, &bytes, now));
    });
    let s = shared.clone();
    let on_error = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        let failure = WsFailure::new("WebSocket error");
        s.with(|m, now| m.handle_ws_error(conn, failure, now));
    });
    let s = shared.clone();
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
        let close = match e.dyn_into::<CloseEvent>() {
            Ok(e) => WsClosed {
                code: e.code(),
                reason: e.reason(),
                clean: e.was_clean(),
            },
            Err(_) => WsClosed::abnormal(),
        };
        s.with(|m, now| m.handle_ws_closed(conn, close, now));
        // Drop the handlers after this callback has returned.
        let s2 = s.clone();
        spawn_local(async move {
            lock(&s2.io.sockets).remove(&conn);
        });
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    lock(&shared.io.sockets).insert(
        conn,
        Socket {
            ws,
            _handlers: vec![on_open, on_message, on_error, on_close],
        },
    );
}

async fn fetch(shared: Arc<Shared>, id: HttpId, request: HttpRequest) {
    let result = fetch_inner(&shared, id, request).await;
    let aborted = lock(&shared.io.fetches)
        .remove(&id)
        .is_none_or(|f| *f.aborted.borrow());
    if aborted {
        return;
    }
    shared.with(|m, now| match result {
        Ok((status, body)) => m.handle_http_response(id, status, &body, now),
        Err(failure) => m.handle_http_failure(id, failure, now),
    });
}

async fn fetch_inner(
    shared: &Arc<Shared>,
    id: HttpId,
    request: HttpRequest,
) -> Result<(u16, Vec<u8>), HttpFailure> {
    let net = |e: JsValue| HttpFailure::Network(format!("{e:?}"));
    let invalid = |e: JsValue| HttpFailure::InvalidRequest(format!("{e:?}"));
    let controller = AbortController::new().map_err(net)?;
    let timed_out = Rc::new(RefCell::new(false));
    lock(&shared.io.fetches).insert(
        id,
        Fetch {
            controller: controller.clone(),
            aborted: Rc::new(RefCell::new(false)),
        },
    );
    let init = web_sys::RequestInit::new();
    init.set_method(request.method.as_str());
    let headers = web_sys::Headers::new().map_err(net)?;
    for (k, v) in &request.headers {
        headers.append(k, v).map_err(invalid)?;
    }
    init.set_headers(&headers);
    if let Some(body) = &request.body {
        init.set_body(&Uint8Array::from(body.as_slice()));
    }
    init.set_signal(Some(&controller.signal()));
    let req = web_sys::Request::new_with_str_and_init(&request.url, &init).map_err(invalid)?;
    let fetch_fn = global_fn("fetch")
        .ok_or_else(|| HttpFailure::InvalidRequest("fetch is not available".into()))?;
    let promise: Promise = fetch_fn
        .call1(&global(), &req)
        .map_err(net)?
        .unchecked_into();
    let t = timed_out.clone();
    let c = controller.clone();
    let timer = async move {
        sleep_ms(request.timeout_ms).await;
        *t.borrow_mut() = true;
        c.abort();
    };
    let work = async {
        let resp: web_sys::Response = JsFuture::from(promise).await?.unchecked_into();
        let status = resp.status();
        let buf = JsFuture::from(resp.array_buffer()?).await?;
        Ok::<_, JsValue>((status, Uint8Array::new(&buf).to_vec()))
    };
    let result = match select(pin!(work), pin!(timer)).await {
        Either::Left((r, _)) => r,
        Either::Right(((), work)) => work.await,
    };
    match result {
        Ok(ok) => Ok(ok),
        Err(_) if *timed_out.borrow() => Err(HttpFailure::Timeout),
        Err(e) => Err(net(e)),
    }
}
