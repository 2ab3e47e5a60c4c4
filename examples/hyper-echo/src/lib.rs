//! sente-rs on a bare hyper 1 server, with sente's tower service: `echo/req` is answered with its
//! own data, and `echo/push-me` makes the server push `[:echo/pushed n]` three times to the
//! caller's uid.
//!
//! No session, no cookies: the CSRF check is skipped, and the Origin check (same origin as the
//! request's Host, the default) stays on.

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sente::{CsrfToken, Event, EventMsg, Router, ServeConfig, Server, Value, event_id};
use tower_service::Service;

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

/// Serves Sente at `/chsk` (and the JavaScript client at `/chsk/client.js`) on `listener`,
/// one task per connection, until the task is dropped: `sente::serve` runs hyper with safe
/// settings (head and keep-alive timeouts, head size and connection caps).
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let svc = sente_server()
        .map_err(std::io::Error::other)?
        .service_at("/chsk");
    sente::serve(listener, svc, ServeConfig::default()).await
}

/// The same with hyper's connection builder by hand, for connections you accept yourself
/// (TLS, Unix sockets...): `ServeConfig::http1()` gives hyper's builder with the same timer,
/// timeouts and head limit. (A connection cap is then yours to add.)
pub async fn serve_by_hand(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let svc = sente_server()
        .map_err(std::io::Error::other)?
        .service_at("/chsk");
    let http1 = ServeConfig::default().http1();
    loop {
        let (tcp, _) = listener.accept().await?;
        let (svc, http1) = (svc.clone(), http1.clone());
        tokio::spawn(async move {
            let handler = service_fn(move |req| svc.clone().call(req));
            // `with_upgrades` lets sente take the connection over for WebSockets.
            let _ = http1
                .serve_connection(TokioIo::new(tcp), handler)
                .with_upgrades()
                .await;
        });
    }
}
