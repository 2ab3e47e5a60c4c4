//! sente-rs on actix-web 4 through `sente-actix`: `echo/req` is answered with its own data, and
//! `echo/push-me` makes the server push `[:echo/pushed n]` three times to the caller's uid.
//!
//! No session, no cookies: the CSRF check is skipped, and the Origin check (same origin as the
//! request's Host, the default) stays on.

use sente::{CsrfToken, Event, EventMsg, Router, Server, Value, event_id};
use std::time::Duration;

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

/// The actix-web server: Sente at `/chsk` (and the JavaScript client at `/chsk/client.js`) on
/// `listener`. Await the returned server to run it (in a tokio or actix runtime).
///
/// Safe settings, as far as actix-web has them (the same bounds as `sente::ServeConfig`'s
/// defaults): a request head must arrive within 10 s, an idle keep-alive connection is closed
/// after 10 s, at most 5 000 connections per worker (10 000 in all). actix-http buffers at most
/// 128 KiB of head (fixed; sente answers `431` past 16 KiB after that); the Ajax body timeout and
/// size limit are sente's own (`ServerLimits`), since the adapter streams the body.
pub fn app(listener: std::net::TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let server = sente_server().map_err(std::io::Error::other)?;
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new().service(sente_actix::scope(&server, "/chsk"))
    })
    .workers(2)
    .client_request_timeout(Duration::from_secs(10))
    .keep_alive(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(5))
    .max_connections(5_000)
    .listen(listener)?
    .run())
}
