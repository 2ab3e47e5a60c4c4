//! The smallest sente-rs server: `echo/req` is answered with its own data, and `echo/push-me`
//! makes the server push `[:echo/pushed n]` three times to the caller's uid.
//!
//! No session, no cookies: the CSRF check is skipped, and the Origin check (same origin as the
//! request's Host, the default) stays on.

use sente::{CsrfToken, Event, EventMsg, Router, Server, Value, event_id};

/// The app: an axum router serving Sente at `/chsk` (and the JavaScript client at
/// `/chsk/client.js`), with its event handlers running. Call inside a tokio runtime.
pub fn app() -> Result<axum::Router, sente::BuildError> {
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
    Ok(server.router("/chsk"))
}
