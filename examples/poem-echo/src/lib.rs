//! sente-rs on poem 3: `echo/req` is answered with its own data, and `echo/push-me` makes the
//! server push `[:echo/pushed n]` three times to the caller's uid.
//!
//! poem keeps hyper's upgrade out of the `http::Request` its tower compat layer builds, so
//! instead of `server.service_at("/chsk").compat()` (Ajax only) the [`Chsk`] endpoint below
//! serves both transports: [`ChskService::call_with_upgrade`], then the accepted WebSocket
//! over `Request::take_upgrade`.
//!
//! No session, no cookies: the CSRF check is skipped, and the Origin check (same origin as the
//! request's Host, the default) stays on.

use poem::{Endpoint, Request, Response, Route};
use sente::adapter::body_bytes;
use sente::{ChskService, CsrfToken, Event, EventMsg, Router, Server, Value, event_id};

/// The Sente server with its event handlers running. Call inside a tokio runtime.
pub fn sente_server() -> Result<Server, sente::BuildError> {
    let router = Router::new()
        .on("echo/req", |mut msg: EventMsg| async move {
            let data = msg.data_value().clone();
            msg.reply(data);
        })
        .on("echo/push-me", |msg: EventMsg| async move {
            for n in 1..=3 {
                let event = Event::new(event_id!("echo/pushed"), Value::Int(n));
                msg.server().send(&msg.uid, event)?;
            }
            Ok::<(), sente::BoxError>(())
        });
    let server = Server::builder()
        .csrf_token_fn(|_| CsrfToken::Skip)
        .handler(router)
        .build()?;
    Ok(server)
}

/// A poem endpoint serving sente's service (GET, POST, WebSocket upgrade).
#[derive(Clone, Debug)]
pub struct Chsk(pub ChskService);

impl Endpoint for Chsk {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let upgrade = req.take_upgrade().ok();
        let handled = self.0.call_with_upgrade(http::Request::from(req)).await;
        if let (Some(ws), Some(upgrade)) = (handled.websocket, upgrade) {
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    ws.serve(io).await;
                }
            });
        }
        let (parts, body) = handled.response.into_parts();
        let parts = poem::ResponseParts {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        };
        Ok(Response::from_parts(parts, body_bytes(body).into()))
    }
}

/// The app: Sente at `/chsk` and the JavaScript client at `/chsk/client.js`. Call inside a
/// tokio runtime.
pub fn app() -> Result<Route, sente::BuildError> {
    let chsk = Chsk(sente_server()?.service_at("/chsk"));
    Ok(Route::new()
        .at("/chsk", chsk.clone())
        .at("/chsk/client.js", chsk))
}
