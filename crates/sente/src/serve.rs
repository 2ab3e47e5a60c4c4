//! [`serve`]: an HTTP/1.1 server (hyper) with safe settings for a public port: every wait is
//! bounded (request head, keep-alive idle time; the Ajax body has
//! [`ServerLimits::body_read_timeout_ms`](crate::ServerLimits::body_read_timeout_ms)), the
//! request head is bounded in bytes before it is buffered, and so is the number of connections.

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The service's answer to hyper. The error is `io::Error` (a concrete type: hyper's bounds on a
/// boxed error trip the compiler's `Send` check of the spawned connection).
type ServeFuture<B> =
    Pin<Box<dyn std::future::Future<Output = Result<Response<B>, io::Error>> + Send>>;

/// The settings of [`serve`], with defaults safe for a public port. Every setting has a setter;
/// `ServeConfig::default()` is the recommended start.
///
/// | Setting | Default | What it bounds |
/// |---|---|---|
/// | [`header_read_timeout`](Self::header_read_timeout) | 10 s | time to receive a whole request head, and the idle time of a keep-alive connection between two requests (slowloris) |
/// | [`max_head_bytes`](Self::max_head_bytes) | 16 KiB | bytes buffered for one request head (over it: `431`), instead of hyper's ~400 KB |
/// | [`max_connections`](Self::max_connections) | 10 000 | open TCP connections, WebSockets included; at the cap the server stops accepting until one closes (new clients wait in the listen backlog) |
/// | [`keep_alive`](Self::keep_alive) | on | HTTP/1.1 connection reuse |
/// | [`tcp_nodelay`](Self::tcp_nodelay) | on | Nagle's algorithm off: small pushes go out at once |
///
/// The Ajax POST body is bounded by the [`Server`](crate::Server)'s own limits
/// ([`ServerLimits::body_read_timeout_ms`](crate::ServerLimits::body_read_timeout_ms), 10 s, and
/// the size limit) whatever the HTTP server, and is read only after the request passed the
/// Origin / CSRF / `reject_fn` / `authorized_fn` checks.
#[derive(Clone, Debug)]
#[must_use]
pub struct ServeConfig {
    header_read_timeout: Duration,
    max_head_bytes: usize,
    max_connections: usize,
    keep_alive: bool,
    tcp_nodelay: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            max_connections: 10_000,
            keep_alive: true,
            tcp_nodelay: true,
        }
    }
}

/// hyper's smallest read buffer.
const MIN_HEAD_BYTES: usize = 8192;

impl ServeConfig {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a client has to send a whole request head, from its first byte, or from the end
    /// of the previous response on a keep-alive connection (so it is also the keep-alive idle
    /// timeout). Past it the connection is closed. Default 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most bytes buffered for one request head (request line and headers); a larger head
    /// gets `431 Request Header Fields Too Large` and the connection is closed. Default 16 KiB
    /// (the server's [`ServerLimits::max_header_bytes`](crate::ServerLimits::max_header_bytes));
    /// at least 8 KiB (hyper's smallest buffer).
    pub fn max_head_bytes(mut self, bytes: usize) -> Self {
        self.max_head_bytes = bytes.max(MIN_HEAD_BYTES);
        self
    }

    /// The most open connections (HTTP and WebSocket, counted until the TCP connection closes).
    /// At the cap the server accepts no more until one closes: new clients wait in the OS's
    /// listen backlog (and time out there if it lasts). Default 10 000; keep it under the
    /// process's file-descriptor limit (`ulimit -n`).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// HTTP/1.1 keep-alive (connection reuse). Default on; an idle kept-alive connection is
    /// closed after [`header_read_timeout`](Self::header_read_timeout).
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// `TCP_NODELAY` on accepted connections. Default on: a reply or a push goes out at once
    /// instead of waiting for the client to acknowledge what was sent before it.
    ///
    /// Off, the kernel gathers a connection's small writes while earlier data is unacknowledged
    /// (Nagle's algorithm). That costs latency (up to the client's delayed-ACK time, tens of
    /// milliseconds) but far less CPU per event when a server pushes to many clients faster
    /// than it can write each one separately: in `sente-load`'s fan-out to 1 000 clients at
    /// 1 709 pushes per client and second, each flushed at once, one server CPU kept up with it
    /// off (p99 122–186 ms) and fell behind with it on (p99 ~0.5 s, clients dropped for
    /// exceeding their send queue; BENCHMARKS.md, "the knee's tail"). Sente's send window (the
    /// default of [`ServerHandle::send`](crate::ServerHandle::send) and
    /// [`ServerHandle::broadcast`](crate::ServerHandle::broadcast)) gathers a client's pushes
    /// before they are written, so fewer, larger writes reach the kernel either way.
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// A hyper HTTP/1 connection builder with these settings (timer, head timeout, head size,
    /// keep-alive), for serving connections you accept yourself (TLS, Unix sockets): use it
    /// with `.serve_connection(io, svc).with_upgrades()`, or call
    /// [`ServeConfig::serve_connection`]. The connection cap is [`serve`]'s own.
    pub fn http1(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_head_bytes.max(MIN_HEAD_BYTES))
            .keep_alive(self.keep_alive);
        b
    }

    /// Serves one connection (any `AsyncRead + AsyncWrite`, e.g. a TLS stream) with these
    /// settings and WebSocket upgrades on, until it closes. Errors of the connection (a client
    /// gone, a head timeout) end it and are not returned.
    pub async fn serve_connection<I, S, B>(&self, io: I, app: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        serve_io(&self.http1(), io, app, None).await;
    }
}

/// Serves one connection; once `stop` turns true, it ends gracefully (a request in progress is
/// answered with `Connection: close`; an idle keep-alive connection is closed at once).
async fn serve_io<I, S, B>(
    builder: &http1::Builder,
    io: I,
    app: S,
    stop: Option<watch::Receiver<bool>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| -> ServeFuture<B> {
        let mut app = app.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| app.poll_ready(cx))
                .await
                .map_err(|e| io::Error::other(e.into()))?;
            app.call(req).await.map_err(|e| io::Error::other(e.into()))
        })
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let r = match stop {
        None => conn.await,
        Some(mut stop) => {
            let stopping = async move {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                // Held until the connection ends: the server waits for the receivers.
                stop
            };
            tokio::select! {
                r = conn.as_mut() => r,
                _stop = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `app` (an `axum::Router`, [`Server::service_at`](crate::Server::service_at), or any
/// tower service over hyper's requests) on `listener` with `config`: HTTP/1.1 with WebSocket
/// upgrades, one task per connection. Runs until the future is dropped; errors of one
/// connection end that connection only, and accept errors (e.g. out of file descriptors) are
/// retried after a pause.
///
/// ```no_run
/// # async fn run(server: sente::Server) -> std::io::Result<()> {
/// use sente::ServeConfig;
/// use std::time::Duration;
/// let app = server.router::<()>("/chsk"); // merge your own routes in
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// let config = ServeConfig::default()
///     .header_read_timeout(Duration::from_secs(10))
///     .max_connections(10_000);
/// sente::serve(listener, app, config).await
/// # }
/// ```
pub async fn serve<S, B>(listener: TcpListener, app: S, config: ServeConfig) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_with_shutdown(listener, app, config, std::future::pending()).await
}

/// [`serve`] until `signal` resolves, then a graceful stop: the listener is closed (a load
/// balancer sends new connections elsewhere), idle keep-alive connections are closed, requests
/// in progress are answered (with `Connection: close`), and the future resolves once every
/// HTTP connection has ended. Upgraded WebSockets are not waited for: end them with
/// [`ServerHandle::shutdown`](crate::ServerHandle::shutdown), which answers held Ajax polls
/// too. See "Deploying" in the crate docs for the whole `SIGTERM` sequence.
pub async fn serve_with_shutdown<S, B>(
    listener: TcpListener,
    app: S,
    config: ServeConfig,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (stop, stopped) = watch::channel(false);
    let accepting = async {
        let stop = Some(stopped);
        let builder = Arc::new(config.http1());
        let slots = Arc::new(Semaphore::new(config.max_connections));
        loop {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(io::Error::other)?;
            let tcp = loop {
                match listener.accept().await {
                    Ok((tcp, _)) => break tcp,
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // Out of file descriptors or memory: wait, as axum::serve and hyper do.
                        tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            if config.tcp_nodelay {
                let _ = tcp.set_nodelay(true);
            }
            let (builder, app, stop) = (builder.clone(), app.clone(), stop.clone());
            tokio::spawn(async move {
                let io = Counted {
                    tcp,
                    _permit: permit,
                };
                serve_io(&builder, io, app, stop).await;
            });
        }
    };
    tokio::select! {
        r = accepting => return r,
        () = signal => {}
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection task holds a receiver: closed once the last one ended.
    stop.closed().await;
    Ok(())
}

/// Resolves on `SIGTERM` or `SIGINT` (Ctrl-C) on Unix, on Ctrl-C elsewhere: the signal an
/// orchestrator (Kubernetes, systemd, docker stop) sends before it kills the process. For
/// [`serve_with_shutdown`] and [`ServerHandle::shutdown`](crate::ServerHandle::shutdown).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection holding its slot of the connection cap until it is dropped (after a WebSocket
/// upgrade too: the upgraded connection owns it).
struct Counted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
