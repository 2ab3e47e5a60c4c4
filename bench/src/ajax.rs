//! A minimal long-polling client for Sente's Ajax transport and engine.io's polling
//! transport, over plain hyper HTTP/1.1 keep-alive connections.
//!
//! Like a browser, every client holds two connections: one that always has a long-poll
//! GET pending (run by a background task that forwards response bodies) and one for POSTs.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::peers::FanoutCfg;
use crate::wire::{Incoming, Proto, url_encode};
use crate::{Res, err, net};

/// One HTTP/1.1 keep-alive connection.
pub struct Http {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    /// Opens a connection to `addr` from source address `src`.
    pub async fn connect(addr: SocketAddr, src: Option<Ipv4Addr>) -> Res<Self> {
        let stream = net::connect(addr, src).await?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            tx,
            host: addr.to_string(),
        })
    }

    /// Sends one request and returns the body of a 2xx response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, String)>,
    ) -> Res<Bytes> {
        self.tx.ready().await?;
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host)
            .header("x-csrf-token", "bench")
            .header("x-requested-with", "XMLHTTPRequest");
        let body = match body {
            Some((content_type, text)) => {
                b = b.header(CONTENT_TYPE, content_type);
                Full::new(Bytes::from(text))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.tx.send_request(b.body(body)?).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(bytes)
    }
}

fn udt() -> u64 {
    crate::wire::now_us() / 1000
}

/// A long-polling client that has completed its protocol's handshake.
pub struct AjaxClient {
    proto: Proto,
    idx: u64,
    post: Http,
    /// engine.io session id (socket.io only).
    sid: String,
    rx: mpsc::Receiver<Bytes>,
    poll: JoinHandle<()>,
    pending: VecDeque<String>,
    /// The push [`AjaxClient::next_push`] returned last.
    push: String,
}

impl Drop for AjaxClient {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

fn sente_poll_path(idx: u64, handshake: bool) -> String {
    let hs = if handshake { "&handshake%3F=1" } else { "" };
    format!(
        "/chsk?udt={}&client-id=bench-{idx}{hs}&packer=json&uid=u{idx}",
        udt()
    )
}

fn eio_path(idx: u64, sid: &str) -> String {
    if sid.is_empty() {
        format!("/socket.io/?EIO=4&transport=polling&uid=u{idx}")
    } else {
        format!("/socket.io/?EIO=4&transport=polling&uid=u{idx}&sid={sid}")
    }
}

const TEXT_PLAIN: &str = "text/plain;charset=UTF-8";
const FORM: &str = "application/x-www-form-urlencoded;charset=UTF-8";

impl AjaxClient {
    /// Connects client number `idx` and performs the handshake.
    pub async fn connect(
        proto: Proto,
        addr: SocketAddr,
        src: Option<Ipv4Addr>,
        idx: u64,
    ) -> Res<Self> {
        let mut poll_http = Http::connect(addr, src).await?;
        let mut post = Http::connect(addr, src).await?;
        let sid = match proto {
            Proto::Sente => {
                let body = poll_http
                    .request(Method::GET, &sente_poll_path(idx, true), None)
                    .await?;
                let text = std::str::from_utf8(&body)?;
                if proto.classify(text) != Incoming::Handshake {
                    return Err(err(format!("expected a handshake, got {text}")));
                }
                String::new()
            }
            Proto::SocketIo => {
                let body = poll_http
                    .request(Method::GET, &eio_path(idx, ""), None)
                    .await?;
                let text = std::str::from_utf8(&body)?;
                let sid = text
                    .split("\"sid\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .ok_or_else(|| err(format!("no sid in {text}")))?
                    .to_owned();
                let path = eio_path(idx, &sid);
                post.request(Method::POST, &path, Some((TEXT_PLAIN, "40".to_owned())))
                    .await?;
                // The connect ack may come after a ping (socketioxide pings early).
                let mut acked = false;
                for _ in 0..5 {
                    let body = poll_http.request(Method::GET, &path, None).await?;
                    for p in std::str::from_utf8(&body)?.split('\x1e') {
                        match proto.classify(p) {
                            Incoming::Handshake => acked = true,
                            Incoming::Ping => {
                                let pong = Some((TEXT_PLAIN, proto.pong().to_owned()));
                                post.request(Method::POST, &path, pong).await?;
                            }
                            _ => {}
                        }
                    }
                    if acked {
                        break;
                    }
                }
                if !acked {
                    return Err(err("no socket.io connect ack within 5 polls"));
                }
                sid
            }
            Proto::Raw => return Err(err("the raw protocol has no long-polling transport")),
        };
        let (tx, rx) = mpsc::channel(64);
        let poll = tokio::spawn(poll_loop(proto, idx, sid.clone(), poll_http, tx));
        Ok(Self {
            proto,
            idx,
            post,
            sid,
            rx,
            poll,
            pending: VecDeque::new(),
            push: String::new(),
        })
    }

    async fn post_text(&mut self, text: &str) -> Res<Bytes> {
        if self.proto == Proto::Sente {
            let body = format!(
                "udt={}&client-id=bench-{}&ppstr={}",
                udt(),
                self.idx,
                url_encode(text)
            );
            let path = format!("/chsk?packer=json&uid=u{}", self.idx);
            self.post
                .request(Method::POST, &path, Some((FORM, body)))
                .await
        } else {
            let path = eio_path(self.idx, &self.sid);
            self.post
                .request(Method::POST, &path, Some((TEXT_PLAIN, text.to_owned())))
                .await
        }
    }

    /// The next packet from the long-poll (engine.io payloads are split on `\x1e`).
    async fn next_packet(&mut self) -> Res<String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Ok(p);
            }
            let body = self.rx.recv().await.ok_or_else(|| err("long-poll ended"))?;
            if body.is_empty() {
                return Err(err("long-poll failed"));
            }
            let text = std::str::from_utf8(&body)?;
            self.pending.extend(
                text.split('\x1e')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        }
    }

    async fn wait_reply(&mut self, seq: u64) -> Res<()> {
        loop {
            let p = self.next_packet().await?;
            match self.proto.classify(&p) {
                Incoming::Reply(id) if id == seq => return Ok(()),
                Incoming::Ping => {
                    self.post_text(self.proto.pong()).await?;
                }
                _ => {}
            }
        }
    }

    /// Sends echo request `seq` and waits for its reply.
    pub async fn request(&mut self, seq: u64, data: &str) -> Res<()> {
        if self.proto == Proto::Sente {
            let env = format!("[[\":demo/echo\",{data}],\":ajax\"]");
            let body = self.post_text(&env).await?;
            if body.starts_with(b"[{") {
                Ok(())
            } else {
                Err(err(format!(
                    "unexpected reply {}",
                    String::from_utf8_lossy(&body)
                )))
            }
        } else {
            let mut buf = String::new();
            self.proto.encode_echo(&mut buf, seq, data);
            self.post_text(&buf).await?;
            self.wait_reply(seq).await
        }
    }

    /// Asks the server to start its push loop and waits for the acknowledgement.
    pub async fn start_fanout(&mut self, seq: u64, cfg: &FanoutCfg) -> Res<()> {
        if self.proto == Proto::Sente {
            let env = format!("[[\":bench/fanout\",{}],\":ajax\"]", cfg.to_json());
            self.post_text(&env).await?;
            Ok(())
        } else {
            let mut buf = String::new();
            self.proto.encode_fanout(&mut buf, seq, cfg);
            self.post_text(&buf).await?;
            self.wait_reply(seq).await
        }
    }

    /// Waits for the next push, answering pings meanwhile.
    pub async fn next_push(&mut self) -> Res<&str> {
        loop {
            let p = self.next_packet().await?;
            match self.proto.classify(&p) {
                Incoming::Push => {
                    self.push = p;
                    return Ok(&self.push);
                }
                Incoming::Ping => {
                    self.post_text(self.proto.pong()).await?;
                }
                _ => {}
            }
        }
    }
}

async fn poll_loop(proto: Proto, idx: u64, sid: String, mut http: Http, tx: mpsc::Sender<Bytes>) {
    loop {
        let path = match proto {
            Proto::Sente => sente_poll_path(idx, false),
            _ => eio_path(idx, &sid),
        };
        let body = http
            .request(Method::GET, &path, None)
            .await
            .unwrap_or_default();
        let failed = body.is_empty();
        if tx.send(body).await.is_err() || failed {
            return;
        }
    }
}
