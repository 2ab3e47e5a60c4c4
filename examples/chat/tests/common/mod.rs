//! The chat binary on a free port and plain HTTP/1.1 requests written by hand (so every header
//! is the test's choice), shared by the tests of this directory.
// Each test crate uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The demo binary, killed on drop.
pub(crate) struct Demo {
    child: Child,
    pub(crate) addr: String,
}

impl Demo {
    pub(crate) fn start() -> Demo {
        Demo::start_with(&[])
    }

    /// The demo with `args` after `--addr 127.0.0.1:0`.
    pub(crate) fn start_with(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the chat binary");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Demo { child, addr }
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `head` (request line and headers, without the blank line) and `body`; returns the
    /// status, the head and the body (read up to `Content-Length`; none for a `101`).
    pub(crate) fn request(&self, head: &str, body: &str) -> Response {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let form = if !body.is_empty() || head.starts_with("POST") {
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            )
        } else {
            String::new()
        };
        let req = format!("{head}\r\nHost: {}\r\n{form}\r\n{body}", self.addr);
        s.write_all(req.as_bytes()).expect("write");
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).expect("read head") == 0 {
                break;
            }
            if line == "\r\n" {
                break;
            }
            head += &line;
        }
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response head {head:?}"));
        let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        let mut body = vec![0; if status == 101 { 0 } else { len }];
        r.read_exact(&mut body).expect("read body");
        Response {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A new session: its cookie and the CSRF token embedded in its page.
    pub(crate) fn session(&self) -> Session {
        let r = self.request("GET / HTTP/1.1\r\nConnection: close", "");
        assert_eq!(r.status, 200);
        let cookie = header(&r.head, "set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned();
        let token = r
            .body
            .split(r#"<meta name="csrf-token" content=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a token in the page")
            .to_owned();
        assert_eq!(token.len(), 32, "token {token:?}");
        Session { cookie, token }
    }

    /// Signs `s` in as `name`.
    pub(crate) fn login(&self, s: &mut Session, name: &str) {
        let r = self.post(
            "/login",
            &s.cookie,
            &format!("name={name}&csrf-token={}", s.token),
        );
        assert_eq!(r.status, 303, "login: {}", r.body);
        // The session id changes on login.
        if let Some(c) = header(&r.head, "set-cookie").and_then(|c| c.split(';').next()) {
            c.clone_into(&mut s.cookie);
        }
    }

    pub(crate) fn post(&self, path: &str, cookie: &str, body: &str) -> Response {
        let head = format!(
            "POST {path} HTTP/1.1\r\nConnection: close\r\nCookie: {cookie}\r\nOrigin: {}",
            self.origin()
        );
        self.request(&head, body)
    }

    /// A WebSocket upgrade of `/chsk`.
    pub(crate) fn ws(&self, cookie: &str, token: &str, origin: &str) -> Response {
        let head = format!(
            "GET /chsk?client-id=ws-{}&csrf-token={token} HTTP/1.1\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {cookie}\r\nOrigin: {origin}",
            unique()
        );
        self.request(&head, "")
    }

    /// An Ajax handshake (`GET /chsk?handshake?=true`).
    pub(crate) fn ajax_get(&self, cookie: &str, token: &str, origin: &str) -> Response {
        let head = format!(
            "GET /chsk?client-id=ajax-{}&csrf-token={token}&handshake%3F=true HTTP/1.1\r\n\
             Connection: close\r\nCookie: {cookie}\r\nOrigin: {origin}",
            unique()
        );
        self.request(&head, "")
    }

    /// An Ajax event (`POST /chsk`).
    pub(crate) fn ajax_post(&self, cookie: &str, token: &str, origin: &str) -> Response {
        let head = format!(
            "POST /chsk HTTP/1.1\r\nConnection: close\r\nCookie: {cookie}\r\nOrigin: {origin}"
        );
        let body = format!(
            "client-id=ajax-{}&csrf-token={token}&udt=1&ppstr=%2B%5B%3Achat%2Fsay+%7B%3Atext+%22hi%22%7D%5D",
            unique()
        );
        self.request(&head, &body)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

pub(crate) struct Session {
    pub(crate) cookie: String,
    pub(crate) token: String,
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
