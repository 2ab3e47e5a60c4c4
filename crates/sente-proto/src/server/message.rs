//! The server's per-message protocol decisions, shared by every transport shell: what one client
//! message means (deliver, answer a ping, `chsk/bad-package`, `chsk/bad-event`, a reply to
//! wait for), what a push is (an event or `[:chsk/close]`), the bookkeeping of replies a client
//! waits for, and the packing of the handshake and of answers within the message limit. The
//! shells only move the bytes and keep the time.

use super::batch::{PackedBytes, estimate_event_size};
use super::core::SendError;
use super::replay::ResumeInfo;
use crate::envelope::{ClientMsg, Envelope, EnvelopeError, server_msg};
use crate::event::{ClientId, Event, Uid, ids};
use crate::limits::Limits;
use crate::packer::{PackError, Packer, UnpackError};
use sente_edn::Value;
use std::collections::HashMap;

/// What the server does with one message a client sent.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Inbound {
    /// An answer to send the client right away: the pong of a WebSocket ping; for an Ajax POST,
    /// its whole response when it is known now (`"pong"`, or `:chsk/dummy-cb-200` for an event
    /// that asks for no reply).
    pub answer: Option<Envelope>,
    /// The event for the application's handlers, if any.
    pub event: Option<Event>,
    /// The client waits for a reply to `event`: the WebSocket callback id, or the Ajax marker
    /// (the POST's response is the reply; see [`ajax_reply`]).
    pub reply_to: Option<Value>,
    /// A WebSocket text message that is not UTF-8: the connection must be closed with code
    /// 1007 (RFC 6455 8.1), and nothing is delivered.
    pub invalid_text: bool,
}

/// Why an Ajax POST's message was refused (the shell answers `413` or `400` with the text).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboundError {
    /// The message is over [`Limits::max_message_bytes`].
    #[error("{0}")]
    TooLarge(UnpackError),
    /// The message could not be unpacked.
    #[error("The message could not be unpacked: {0}")]
    Unpack(EnvelopeError),
}

/// The ids of events only the server or the client library make: a client that sends one of
/// them (such as a forged `[:chsk/uidport-open "admin"]`) has it delivered as
/// `[:chsk/bad-event original]`, so nothing a client sends passes for the server's own events.
/// `chsk/ws-ping` and `chsk/ws-pong` are the client's keepalive; other `chsk/*` ids are delivered
/// as they are, as Sente does.
const SERVER_MADE: [&str; 12] = [
    ids::HANDSHAKE,
    ids::STATE,
    ids::UIDPORT_OPEN,
    ids::UIDPORT_CLOSE,
    ids::BAD_EVENT,
    ids::BAD_PACKAGE,
    ids::CLOSE,
    ids::DUMMY_CB_200,
    ids::TIMEOUT,
    ids::CLOSED,
    ids::ERROR,
    ids::RECV,
];

fn client_may_send(event: &Event) -> bool {
    !SERVER_MADE.contains(&event.id().as_str())
}

/// The event handlers see for a classified message, and the reply it asks for.
fn deliverable(msg: ClientMsg) -> (Event, Option<Value>) {
    match msg {
        ClientMsg::Event { event, cb } if !client_may_send(&event) => {
            (Event::bad_event(event.into_value()), cb)
        }
        msg => msg.into_event(),
    }
}

fn unpack(packer: &dyn Packer, data: &[u8], limits: &Limits) -> Result<Envelope, EnvelopeError> {
    if data.is_empty() {
        Ok(Envelope::new(Value::Nil))
    } else {
        Envelope::unpack(packer, data, limits)
    }
}

/// One WebSocket data frame (`binary`: a binary frame). A ping with a callback is answered with
/// a pong and delivered as `[:chsk/ws-ping]`; a frame that cannot be unpacked (or of the wrong
/// kind for the packer) is delivered as `[:chsk/bad-package text-or-byte-length]` and the
/// connection stays usable.
pub fn ws_message(packer: &dyn Packer, data: &[u8], binary: bool, limits: &Limits) -> Inbound {
    // A frame of the other kind than the packer's (text for a binary packer, or the reverse)
    // cannot be unpacked either.
    let unpacked = (binary == packer.is_binary())
        .then(|| unpack(packer, data, limits).ok())
        .flatten();
    let Some(env) = unpacked else {
        return ws_undecodable(data, binary);
    };
    let msg = ClientMsg::classify(env);
    let answer = match &msg {
        ClientMsg::Ping { cb } => Some(server_msg::pong(cb.clone())),
        _ => None,
    };
    let (event, reply_to) = deliverable(msg);
    Inbound {
        answer,
        event: Some(event),
        reply_to,
        invalid_text: false,
    }
}

/// A WebSocket data frame that was not unpacked: [`undecodable`], or, for a text message
/// that is not UTF-8, [`Inbound::invalid_text`]. A reader may leave the UTF-8 check of text
/// messages to a packer that makes it ([`Packer::checks_utf8`]); this is where a failed
/// unpack finds out which it was.
pub fn ws_undecodable(data: &[u8], binary: bool) -> Inbound {
    if !binary && std::str::from_utf8(data).is_err() {
        return Inbound {
            answer: None,
            event: None,
            reply_to: None,
            invalid_text: true,
        };
    }
    undecodable(data, binary)
}

/// A WebSocket frame that could not be unpacked: `[:chsk/bad-package text-or-byte-length]` for
/// the handlers.
pub fn undecodable(data: &[u8], binary: bool) -> Inbound {
    let data = if binary {
        Value::Int(data.len() as i64)
    } else {
        Value::Str(String::from_utf8_lossy(data).into_owned())
    };
    Inbound {
        answer: None,
        event: Some(Event::bad_package(data)),
        reply_to: None,
        invalid_text: false,
    }
}

/// The packed message of one Ajax POST. A ping is answered `"pong"` and not delivered; an event
/// without a callback is delivered and answered `:chsk/dummy-cb-200` at once; an event with one
/// is delivered and its reply is the POST's response ([`ajax_reply`]).
pub fn ajax_post(
    packer: &dyn Packer,
    packed: &[u8],
    limits: &Limits,
) -> Result<Inbound, InboundError> {
    let env = unpack(packer, packed, limits).map_err(|e| match e {
        EnvelopeError::Unpack(e @ UnpackError::TooLarge { .. }) => InboundError::TooLarge(e),
        e => InboundError::Unpack(e),
    })?;
    let msg = ClientMsg::classify(env);
    if let ClientMsg::Ping { .. } = msg {
        return Ok(Inbound {
            answer: Some(server_msg::ajax_reply(Value::from("pong"))),
            event: None,
            reply_to: None,
            invalid_text: false,
        });
    }
    let (event, reply_to) = deliverable(msg);
    Ok(Inbound {
        answer: reply_to.is_none().then(server_msg::dummy_cb_200),
        event: Some(event),
        reply_to,
        invalid_text: false,
    })
}

/// The response of an Ajax POST that asked for a reply: the reply, or `[:chsk/timeout nil]`
/// when the handler dropped it or `lp_timeout_ms` passed.
pub fn ajax_reply(reply: Option<Value>) -> Envelope {
    match reply {
        Some(v) => server_msg::ajax_reply(v),
        None => server_msg::timeout(),
    }
}

/// The answer of a WebSocket request: `[reply cb]`.
pub fn ws_reply(reply: Value, cb: Value) -> Envelope {
    server_msg::ws_reply(reply, cb)
}

/// Packs a message for one connection, refusing it over `max_bytes`.
pub fn pack(
    env: Envelope,
    packer: &dyn Packer,
    max_bytes: usize,
) -> Result<PackedBytes, PackError> {
    let p = env.into_packed(packer)?;
    let size = p.as_bytes().len();
    if size > max_bytes {
        return Err(PackError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    Ok(p.into())
}

/// The handshake `[:chsk/handshake [uid nil handshake-data]]`, packed within `max_bytes` (the
/// first message of a WebSocket, the answer of an Ajax handshake).
pub fn handshake(
    uid: &Uid,
    handshake_data: Value,
    resume: Option<&ResumeInfo>,
    packer: &dyn Packer,
    max_bytes: usize,
) -> Result<PackedBytes, PackError> {
    handshake_ext(uid, handshake_data, resume, false, packer, max_bytes)
}

/// [`handshake`], acknowledging the `idem` extension when `idem` ([`crate::idem`]).
pub fn handshake_ext(
    uid: &Uid,
    handshake_data: Value,
    resume: Option<&ResumeInfo>,
    idem: bool,
    packer: &dyn Packer,
    max_bytes: usize,
) -> Result<PackedBytes, PackError> {
    let env = server_msg::handshake_ext(uid, handshake_data, resume, idem);
    pack(env, packer, max_bytes)
}

/// The marker `[:chsk/seq n]` sent to a resuming client before a batch (see
/// [`super::replay`]).
pub fn seq_marker(seq: u64, packer: &dyn Packer) -> Result<PackedBytes, PackError> {
    Ok(server_msg::seq_marker(seq).into_packed(packer)?.into())
}

/// The server's keepalive ping, as sent on a WebSocket.
pub fn ws_ping(packer: &dyn Packer) -> Result<PackedBytes, PackError> {
    Ok(server_msg::ws_ping().into_packed(packer)?.into())
}

/// What a push asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Deliver the event; `estimate` is its estimated packed size (for batching).
    Event {
        /// The estimated packed size.
        estimate: usize,
    },
    /// `[:chsk/close]`: close the uid's connections (Sente's way to kick a user).
    Close,
}

/// Checks an event the application pushes: `[:chsk/close]` closes; any other reserved `chsk/*`
/// event is refused (clients would take it for the server's own); an event whose estimated
/// packed size is over the message limit is refused.
pub fn push(event: &Event, limits: &Limits) -> Result<Push, SendError> {
    if event.id().as_str() == ids::CLOSE {
        return Ok(Push::Close);
    }
    if event.id().is_reserved() {
        return Err(SendError::Reserved(event.id().clone()));
    }
    let limit = limits.max_message_bytes;
    let estimate = estimate_event_size(event, limit);
    if estimate > limit {
        return Err(SendError::TooLarge { estimate, limit });
    }
    Ok(Push::Event { estimate })
}

/// The Ajax POSTs each client waits on for a reply, bounded per client
/// ([`ServerLimits::max_pending_replies_per_client`](super::ServerLimits)).
#[derive(Debug, Default)]
pub struct PendingReplies {
    counts: HashMap<ClientId, usize>,
}

impl PendingReplies {
    /// An empty book.
    pub fn new() -> Self {
        PendingReplies::default()
    }

    /// Counts one more reply for `cid`; `false` (nothing counted) when it already waits for
    /// `limit` of them.
    pub fn acquire(&mut self, cid: &ClientId, limit: usize) -> bool {
        if let Some(n) = self.counts.get_mut(cid) {
            if *n >= limit {
                return false;
            }
            *n += 1;
            return true;
        }
        if limit == 0 {
            return false;
        }
        self.counts.insert(cid.clone(), 1);
        true
    }

    /// One reply of `cid` was answered (or given up).
    pub fn release(&mut self, cid: &ClientId) {
        if let Some(n) = self.counts.get_mut(cid) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(cid);
            }
        }
    }

    /// How many replies `cid` waits for.
    pub fn pending(&self, cid: &ClientId) -> usize {
        self.counts.get(cid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packer::EdnPacker;

    fn ws(text: &str) -> Inbound {
        ws_message(&EdnPacker, text.as_bytes(), false, &Limits::default())
    }

    #[test]
    fn text_that_is_not_utf8_is_invalid_not_a_bad_package() {
        let limits = Limits::default();
        for p in ["edn", "json", "transit"]
            .into_iter()
            .filter_map(crate::packer::by_name)
        {
            assert!(p.checks_utf8(), "{}", p.name());
            let bad = ws_message(&*p, b"[[\":a/b\" \"\xc3\"] nil]", false, &limits);
            assert!(bad.invalid_text && bad.event.is_none(), "{}", p.name());
            // A binary frame's bytes are not text: a bad package, as before.
            let bin = ws_message(&*p, b"\xc3", true, &limits);
            assert!(!bin.invalid_text && bin.event.is_some(), "{}", p.name());
        }
        // A text frame that is UTF-8 but not a message stays a bad package.
        let not_edn = ws("[[");
        assert!(!not_edn.invalid_text);
        assert_eq!(pr(not_edn.event.as_ref()), "[:chsk/bad-package \"[[\"]");
    }

    fn pr(e: Option<&Event>) -> String {
        sente_edn::to_edn_string(&e.unwrap().to_value())
    }

    #[test]
    fn ws_ping_is_answered_and_delivered() {
        let i = ws("[[:chsk/ws-ping] \"cb1\"]");
        assert_eq!(i.answer, Some(server_msg::pong(Value::from("cb1"))));
        assert_eq!(pr(i.event.as_ref()), "[:chsk/ws-ping]");
        assert_eq!(i.reply_to, None);
    }

    #[test]
    fn forged_server_events_become_bad_events() {
        for forged in [
            "chsk/uidport-open",
            "chsk/uidport-close",
            "chsk/handshake",
            "chsk/close",
        ] {
            let i = ws(&format!("[[:{forged} \"admin\"] nil]"));
            assert_eq!(
                pr(i.event.as_ref()),
                format!("[:chsk/bad-event [:{forged} \"admin\"]]")
            );
        }
        let i = ws("[[:chsk/ws-pong] nil]");
        assert_eq!(pr(i.event.as_ref()), "[:chsk/ws-pong]");
        // Other reserved ids pass as Sente passes them (recorded in transcript 7).
        let i = ws("[[:chsk/foo] \"cb1\"]");
        assert_eq!(pr(i.event.as_ref()), "[:chsk/foo]");
    }

    #[test]
    fn bad_package_and_wrong_frame_kind() {
        let i = ws("[[:a/b");
        assert_eq!(pr(i.event.as_ref()), "[:chsk/bad-package \"[[:a/b\"]");
        let i = ws_message(&EdnPacker, b"[[:a/b] nil]", true, &Limits::default());
        assert_eq!(pr(i.event.as_ref()), "[:chsk/bad-package 12]");
    }

    #[test]
    fn ajax_post_answers() {
        let l = Limits::default();
        let ping = ajax_post(&EdnPacker, b"[[:chsk/ws-ping] \"x\"]", &l).unwrap();
        assert_eq!(ping.event, None);
        assert_eq!(
            ping.answer,
            Some(server_msg::ajax_reply(Value::from("pong")))
        );
        let no_cb = ajax_post(&EdnPacker, b"[[:a/b 1] nil]", &l).unwrap();
        assert_eq!(no_cb.answer, Some(server_msg::dummy_cb_200()));
        let cb = ajax_post(&EdnPacker, b"[[:a/b 1] :ajax-cb]", &l).unwrap();
        assert_eq!(cb.answer, None);
        assert!(cb.reply_to.is_some());
        assert!(matches!(
            ajax_post(&EdnPacker, b"[[:a/b", &l),
            Err(InboundError::Unpack(_))
        ));
        let small = Limits::default().max_message_bytes(4);
        assert!(matches!(
            ajax_post(&EdnPacker, b"[[:a/b 1] nil]", &small),
            Err(InboundError::TooLarge(_))
        ));
    }

    #[test]
    fn pushes() {
        let l = Limits::default();
        let close = Event::new(crate::EventId::from_static("chsk/close"), Value::Nil);
        assert_eq!(push(&close, &l), Ok(Push::Close));
        let forged = Event::uidport(true, &Uid::from("u"));
        assert!(matches!(push(&forged, &l), Err(SendError::Reserved(_))));
        let ok = Event::new(crate::event_id!("a/b"), Value::Int(1));
        assert!(matches!(push(&ok, &l), Ok(Push::Event { .. })));
    }

    #[test]
    fn pending_replies_are_bounded_per_client() {
        let mut book = PendingReplies::new();
        let (a, b) = (ClientId::new("a").unwrap(), ClientId::new("b").unwrap());
        assert!(book.acquire(&a, 2));
        assert!(book.acquire(&a, 2));
        assert!(!book.acquire(&a, 2));
        assert!(book.acquire(&b, 2));
        book.release(&a);
        assert!(book.acquire(&a, 2));
        assert_eq!(book.pending(&a), 2);
    }
}
