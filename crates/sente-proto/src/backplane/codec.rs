//! The wire encoding of backplane messages: what cluster backplanes (`sente-redis`,
//! `sente-nats`) put in one pub/sub payload.
//!
//! # Layout (version 1)
//!
//! Every payload is one [`Frame`]:
//!
//! ```text
//! byte 0      version            (1; see VERSION)
//! bytes 1..9  origin             u64 little-endian: the publishing backplane instance
//! byte 9      kind               what follows (table below)
//! bytes 10..  body               the kind's fields, in order; trailing bytes are ignored
//! ```
//!
//! | kind | frame | body |
//! |---|---|---|
//! | 1 | `Push` | uid, flags (bit 0: flush), estimate, event |
//! | 2 | `PushMany` | count, count x uid, flags, estimate, event |
//! | 3 | `Broadcast` | flags, estimate, event |
//! | 4 | `Flush` | uid |
//! | 5 | `CloseUid` | uid |
//! | 6 | `Presence` | node (u64 LE), uid, flags (bit 0: ws, bit 1: ajax) |
//! | 7 | `AjaxWake` | flags (bit 0: every uid), count, count x uid |
//! | 10 | `PushClient` | uid, client id (length, UTF-8), estimate, event |
//! | 11 | `Request` | node (u64 LE), id, uid, timeout ms, event |
//! | 12 | `RequestAnswers` | node (u64 LE), id, from node (u64 LE), count, count x (client id, answer) |
//! | 13 | `RequestReply` | uid, client id, id, answer |
//! | 16 | `Heartbeat` | count of the sender's present uids, presence hash (u64 LE) |
//! | 17 | `SyncRequest` | target origin (u64 LE) |
//! | 18 | `Snapshot` | node (u64 LE), part, parts, count, count x (uid, flags) |
//!
//! **Sequenced** frames (kinds 1 to 5 numbered by the engine, [`BackplaneMsg::Sequenced`])
//! carry a trailer after the body, appended by the engine's atomic number-and-publish step:
//! the byte [`SEQ_TAG`] (`0xE5`), the epoch (u64 little-endian, 8 bytes) and the number as
//! ASCII decimal digits up to the end of the payload. A release without it ignores the
//! trailer (trailing bytes) and applies the message unnumbered.
//!
//! **Unnumbered after numbered** frames (kinds 1 to 5 and 10 published plain by a node whose
//! earlier pushes were numbered, [`Frame::After`]) carry the same trailer with the byte
//! [`AFTER_TAG`] (`0xE6`) and the last number this node's pushes got: a receiver whose engine
//! delivers numbered frames on another path than plain ones (NATS) holds the frame until it
//! has applied that number, so a push published plain never overtakes the numbered ones before
//! it. A release without it ignores the trailer.
//!
//! An **answer** (of `RequestAnswers` and `RequestReply`) is a status byte and its fields: `0` a reply (an
//! **event** `[:chsk/rep value]`), `1` unsupported, `2` timeout, `3` closed, `4` too many
//! (limit), `5` the client's error (length, UTF-8), `6` not sent (length, UTF-8).
//!
//! Integers written `count`, `estimate`, `part`, `parts`, `id`, `timeout ms`, `limit` and
//! lengths are unsigned LEB128 varints. A **uid** is a tag byte then: `0` nothing (`Uid::Nil`), `1` a string (length, UTF-8),
//! `2` any other value as edn text (length, text), `3` as Sente msgpack (length, bytes). An
//! **event** is an encoding byte, a length and the event's wire form `[id data]`: `0` edn text
//! (printed and read with [`EdnPacker`]: lossless for every value but
//! raw bytes), `1` Sente msgpack ([`MsgpackPacker`](crate::packer::MsgpackPacker), used only for
//! events that edn cannot print, i.e. that hold raw bytes; needs the `msgpack` feature).
//!
//! # Compatibility (rolling deploys)
//!
//! Within version 1, a later release may add **kinds** (older nodes skip them:
//! [`Decoded::Skipped`]) and **append fields** to a kind (older nodes ignore trailing bytes), so
//! nodes of two releases can share a cluster. An incompatible change bumps [`VERSION`]; a node
//! refuses a frame of another version with [`CodecError::UnsupportedVersion`] (counted and
//! logged by the backplane crates), never misreading it.

use super::{BackplaneMsg, NodeId, Taken};
use crate::event::{Event, Uid};
use crate::limits::Limits;
use crate::packer::{EdnPacker, PackError, Packer, UnpackError};
use std::sync::Arc;

/// The version byte written by this release.
pub const VERSION: u8 = 1;

/// The first byte of a sequenced frame's trailer (see the module docs).
pub const SEQ_TAG: u8 = 0xE5;

/// The first byte of an unnumbered-after-numbered frame's trailer (see the module docs).
pub const AFTER_TAG: u8 = 0xE6;

/// Kind bytes (see the module docs).
mod kind {
    pub(super) const PUSH: u8 = 1;
    pub(super) const PUSH_MANY: u8 = 2;
    pub(super) const BROADCAST: u8 = 3;
    pub(super) const FLUSH: u8 = 4;
    pub(super) const CLOSE_UID: u8 = 5;
    pub(super) const PRESENCE: u8 = 6;
    pub(super) const AJAX_WAKE: u8 = 7;
    pub(super) const PUSH_CLIENT: u8 = 10;
    pub(super) const REQUEST: u8 = 11;
    pub(super) const REQUEST_ANSWERS: u8 = 12;
    pub(super) const REQUEST_REPLY: u8 = 13;
    pub(super) const HEARTBEAT: u8 = 16;
    pub(super) const SYNC_REQUEST: u8 = 17;
    pub(super) const SNAPSHOT: u8 = 18;
    /// The kinds of the [`sequenceable`](super::sequenceable) messages.
    pub(super) const SEQUENCEABLE: [u8; 6] =
        [PUSH, PUSH_MANY, BROADCAST, FLUSH, CLOSE_UID, PUSH_CLIENT];
}

/// One payload on the backplane: a [`BackplaneMsg`] or the cluster's own bookkeeping.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Frame {
    /// What a server published.
    Msg(BackplaneMsg),
    /// A push (a [`sequenceable`] message) published unnumbered by a node whose earlier pushes
    /// were numbered, the last of them `(epoch, seq)`: apply it after that number.
    After {
        /// The epoch of the numbers.
        epoch: u64,
        /// The last number the publishing node's pushes got before this one.
        seq: u64,
        /// The push.
        msg: BackplaneMsg,
    },
    /// "I am alive": the sender's count of present uids and their hash
    /// ([`presence_hash`]), so receivers can tell whether their view of it is complete.
    Heartbeat {
        /// How many uids the sender has present.
        count: u64,
        /// The sum of [`presence_hash`] over them.
        hash: u64,
    },
    /// Asks the node with origin `target` for a [`Frame::Snapshot`] of its presence.
    SyncRequest {
        /// The origin asked.
        target: u64,
    },
    /// One part of a node's full presence (parts `0..parts`, published back to back).
    Snapshot {
        /// The sender's node id (the `node` of its `Presence` messages).
        node: NodeId,
        /// This part's index.
        part: u32,
        /// How many parts.
        parts: u32,
        /// `(uid, ws, ajax)` of present uids.
        entries: Vec<(Uid, bool, bool)>,
    },
}

/// A decoded payload.
#[derive(Clone, Debug)]
pub enum Decoded {
    /// A frame, with the origin that published it.
    Frame {
        /// The publishing backplane instance.
        origin: u64,
        /// The frame.
        frame: Frame,
    },
    /// A kind this release does not know (from a newer node): skip it.
    Skipped {
        /// The publishing backplane instance.
        origin: u64,
        /// The unknown kind byte.
        kind: u8,
    },
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload was written by an incompatible release.
    #[error("backplane frame version {version}, this node reads version {VERSION}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The payload ends early.
    #[error("backplane frame truncated at byte {offset}")]
    Truncated {
        /// Where more bytes were needed.
        offset: usize,
    },
    /// A field is invalid.
    #[error("malformed backplane frame at byte {offset}: {reason}")]
    Malformed {
        /// Where.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// An event or uid could not be read.
    #[error("backplane frame holds an unreadable value: {0}")]
    Value(#[from] UnpackError),
    /// An event or uid could not be written (raw bytes without the `msgpack` feature).
    #[error("cannot encode for the backplane: {0}")]
    Pack(#[from] PackError),
    /// A message that a backplane delivers to its own node only (never published).
    #[error("backplane message {0} is local to a node and never published")]
    LocalOnly(&'static str),
}

/// Encodes `frame` published by `origin`.
pub fn encode(origin: u64, frame: &Frame) -> Result<Vec<u8>, CodecError> {
    let mut w = Vec::with_capacity(64);
    w.push(VERSION);
    w.extend_from_slice(&origin.to_le_bytes());
    match frame {
        Frame::Msg(msg) => put_msg(&mut w, msg)?,
        Frame::After { epoch, seq, msg } => {
            if !sequenceable(msg) {
                return Err(CodecError::LocalOnly("After of this message"));
            }
            put_msg(&mut w, msg)?;
            put_trailer(&mut w, AFTER_TAG, *epoch, *seq);
        }
        Frame::Heartbeat { count, hash } => {
            w.push(kind::HEARTBEAT);
            put_varint(&mut w, *count);
            w.extend_from_slice(&hash.to_le_bytes());
        }
        Frame::SyncRequest { target } => {
            w.push(kind::SYNC_REQUEST);
            w.extend_from_slice(&target.to_le_bytes());
        }
        Frame::Snapshot {
            node,
            part,
            parts,
            entries,
        } => {
            w.push(kind::SNAPSHOT);
            w.extend_from_slice(&node.0.to_le_bytes());
            put_varint(&mut w, u64::from(*part));
            put_varint(&mut w, u64::from(*parts));
            put_varint(&mut w, entries.len() as u64);
            for (uid, ws, ajax) in entries {
                put_uid(&mut w, uid)?;
                w.push(presence_flags(*ws, *ajax));
            }
        }
    }
    Ok(w)
}

/// Encodes a [`BackplaneMsg`] published by `origin` (the same bytes as `encode(origin,
/// &Frame::Msg(msg))`, without cloning it).
pub fn encode_msg(origin: u64, msg: &BackplaneMsg) -> Result<Vec<u8>, CodecError> {
    let mut w = Vec::with_capacity(64);
    w.push(VERSION);
    w.extend_from_slice(&origin.to_le_bytes());
    put_msg(&mut w, msg)?;
    Ok(w)
}

fn put_msg(w: &mut Vec<u8>, msg: &BackplaneMsg) -> Result<(), CodecError> {
    match msg {
        BackplaneMsg::Sequenced { epoch, seq, msg } => {
            if !sequenceable(msg) {
                return Err(CodecError::LocalOnly("Sequenced of this message"));
            }
            put_msg(w, msg)?;
            put_trailer(w, SEQ_TAG, *epoch, *seq);
        }
        BackplaneMsg::Push {
            uid,
            event,
            estimate,
            flush,
        } => {
            w.push(kind::PUSH);
            put_uid(w, uid)?;
            w.push(u8::from(*flush));
            put_varint(w, *estimate as u64);
            put_event(w, event)?;
        }
        BackplaneMsg::PushMany {
            uids,
            event,
            estimate,
            flush,
        } => {
            w.push(kind::PUSH_MANY);
            put_varint(w, uids.len() as u64);
            for uid in uids.iter() {
                put_uid(w, uid)?;
            }
            w.push(u8::from(*flush));
            put_varint(w, *estimate as u64);
            put_event(w, event)?;
        }
        BackplaneMsg::Broadcast {
            event,
            estimate,
            flush,
        } => {
            w.push(kind::BROADCAST);
            w.push(u8::from(*flush));
            put_varint(w, *estimate as u64);
            put_event(w, event)?;
        }
        BackplaneMsg::Flush { uid } => {
            w.push(kind::FLUSH);
            put_uid(w, uid)?;
        }
        BackplaneMsg::CloseUid { uid } => {
            w.push(kind::CLOSE_UID);
            put_uid(w, uid)?;
        }
        BackplaneMsg::Presence {
            node,
            uid,
            ws,
            ajax,
        } => {
            w.push(kind::PRESENCE);
            w.extend_from_slice(&node.0.to_le_bytes());
            put_uid(w, uid)?;
            w.push(presence_flags(*ws, *ajax));
        }
        BackplaneMsg::PushClient {
            uid,
            client_id,
            event,
            estimate,
        } => {
            w.push(kind::PUSH_CLIENT);
            put_uid(w, uid)?;
            put_bytes(w, client_id.as_str().as_bytes());
            put_varint(w, *estimate as u64);
            put_event(w, event)?;
        }
        BackplaneMsg::Request {
            node,
            id,
            uid,
            event,
            timeout_ms,
        } => {
            w.push(kind::REQUEST);
            w.extend_from_slice(&node.0.to_le_bytes());
            put_varint(w, *id);
            put_uid(w, uid)?;
            put_varint(w, *timeout_ms);
            put_event(w, event)?;
        }
        BackplaneMsg::RequestAnswers {
            node,
            id,
            from,
            answers,
        } => {
            w.push(kind::REQUEST_ANSWERS);
            w.extend_from_slice(&node.0.to_le_bytes());
            put_varint(w, *id);
            w.extend_from_slice(&from.0.to_le_bytes());
            put_varint(w, answers.len() as u64);
            for (cid, answer) in answers {
                put_bytes(w, cid.as_str().as_bytes());
                put_answer(w, answer)?;
            }
        }
        BackplaneMsg::RequestReply {
            uid,
            client_id,
            id,
            answer,
        } => {
            w.push(kind::REQUEST_REPLY);
            put_uid(w, uid)?;
            put_bytes(w, client_id.as_str().as_bytes());
            put_varint(w, *id);
            put_answer(w, answer)?;
        }
        BackplaneMsg::UidportClose { .. } => return Err(CodecError::LocalOnly("UidportClose")),
        BackplaneMsg::AjaxWake { uids } => {
            w.push(kind::AJAX_WAKE);
            w.push(u8::from(uids.is_none()));
            let uids = uids.as_deref().unwrap_or_default();
            put_varint(w, uids.len() as u64);
            for uid in uids {
                put_uid(w, uid)?;
            }
        }
        BackplaneMsg::Epoch { .. } => return Err(CodecError::LocalOnly("Epoch")),
    }
    Ok(())
}

/// Whether `msg` is one of the kinds a sequencing backplane numbers (`Push`, `PushMany`,
/// `Broadcast`, `PushClient`, `Flush`, `CloseUid`): numbered, a push to one client keeps its
/// place among its uid's pushes on every node.
pub fn sequenceable(msg: &BackplaneMsg) -> bool {
    matches!(
        msg,
        BackplaneMsg::Push { .. }
            | BackplaneMsg::PushMany { .. }
            | BackplaneMsg::Broadcast { .. }
            | BackplaneMsg::PushClient { .. }
            | BackplaneMsg::Flush { .. }
            | BackplaneMsg::CloseUid { .. }
    )
}

/// A uid's encoding (the **uid** of the module docs): what cluster backplanes turn into key
/// names (with [`hex`]), so every uid value has one stable key.
pub fn uid_bytes(uid: &Uid) -> Result<Vec<u8>, CodecError> {
    let mut w = Vec::with_capacity(16);
    put_uid(&mut w, uid)?;
    Ok(w)
}

/// Encodes one event for storage (an Ajax mailbox entry): the [`VERSION`] byte, then the
/// **event** of the module docs.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    let mut w = Vec::with_capacity(32);
    w.push(VERSION);
    put_event(&mut w, event)?;
    Ok(w)
}

/// Reads an entry written by [`encode_event`], within `limits` (a numbered entry's trailer is
/// ignored: see [`decode_entry`]).
pub fn decode_event(input: &[u8], limits: &Limits) -> Result<Arc<Event>, CodecError> {
    let mut r = Reader { input, pos: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion { version });
    }
    r.event(limits)
}

/// Numbers a mailbox entry ([`encode_event`]) with the cluster's number of its push: appends
/// the trailer of a sequenced frame (the byte [`SEQ_TAG`], `epoch` as u64 little-endian and
/// `seq` as ASCII decimal digits). A release that does not know it reads the entry's event and
/// ignores the trailer (trailing bytes). The Redis backplane writes the same bytes from its
/// number-and-publish script.
pub fn number_entry(entry: &mut Vec<u8>, epoch: u64, seq: u64) {
    put_trailer(entry, SEQ_TAG, epoch, seq);
}

/// Marks an encoded frame ([`encode_msg`]) of a push published unnumbered as coming after the
/// numbered push `(epoch, seq)` (the [`Frame::After`] trailer); `false`, and the frame left as
/// it is, when it is not a push's frame of this version ([`sequenceable`] kinds only).
pub fn mark_after(frame: &mut Vec<u8>, epoch: u64, seq: u64) -> bool {
    // The version byte, the origin (8 bytes), then the kind.
    let push = frame.first() == Some(&VERSION)
        && frame.get(9).is_some_and(|k| kind::SEQUENCEABLE.contains(k));
    if push {
        put_trailer(frame, AFTER_TAG, epoch, seq);
    }
    push
}

/// Appends a number's trailer: `tag`, `epoch` as u64 little-endian, `seq` as ASCII decimal.
fn put_trailer(w: &mut Vec<u8>, tag: u8, epoch: u64, seq: u64) {
    w.push(tag);
    w.extend_from_slice(&epoch.to_le_bytes());
    w.extend_from_slice(seq.to_string().as_bytes());
}

/// Encodes a retried request's outcome for the engine ([`super::IdemStore`]): the
/// [`VERSION`] byte, then `0` (no reply) or `1` and the reply as a `[:chsk/rep value]`
/// event ([`encode_event`]).
pub fn encode_outcome(outcome: Option<&crate::Value>) -> Result<Vec<u8>, CodecError> {
    let Some(v) = outcome else {
        return Ok(vec![VERSION, 0]);
    };
    let mut out = vec![VERSION, 1];
    out.extend(encode_event(&reply_event(v))?);
    Ok(out)
}

/// Reads [`encode_outcome`]'s bytes within `limits`.
pub fn decode_outcome(input: &[u8], limits: &Limits) -> Result<Option<crate::Value>, CodecError> {
    match input {
        [VERSION, 0] => Ok(None),
        [VERSION, 1, rest @ ..] => Ok(Some(decode_event(rest, limits)?.data().clone())),
        [version, ..] if *version != VERSION => {
            Err(CodecError::UnsupportedVersion { version: *version })
        }
        _ => Err(CodecError::Malformed {
            offset: 1,
            reason: "not a request outcome",
        }),
    }
}

/// Reads a mailbox entry within `limits`: its event and, for an entry numbered with
/// [`number_entry`], the `(epoch, seq)` of its push.
pub fn decode_entry(input: &[u8], limits: &Limits) -> Result<Taken, CodecError> {
    let mut r = Reader { input, pos: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion { version });
    }
    let event = r.event(limits)?;
    Ok(Taken {
        event,
        seq: r
            .trailer()?
            .filter(|(tag, ..)| *tag == SEQ_TAG)
            .map(|(_, epoch, seq)| (epoch, seq)),
    })
}

/// Lowercase hexadecimal of `bytes` (key names made of any bytes).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Decodes one payload, reading events and uids within `limits`.
pub fn decode(input: &[u8], limits: &Limits) -> Result<Decoded, CodecError> {
    let mut r = Reader { input, pos: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion { version });
    }
    let origin = r.u64_le()?;
    let k = r.byte()?;
    let frame = match k {
        kind::PUSH => {
            let uid = r.uid(limits)?;
            let flush = r.byte()? & 1 != 0;
            let estimate = r.usize()?;
            let event = r.event(limits)?;
            Frame::Msg(BackplaneMsg::Push {
                uid,
                event,
                estimate,
                flush,
            })
        }
        kind::PUSH_MANY => {
            let n = r.len(limits.max_collection_len)?;
            let mut uids = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                uids.push(r.uid(limits)?);
            }
            let flush = r.byte()? & 1 != 0;
            let estimate = r.usize()?;
            let event = r.event(limits)?;
            Frame::Msg(BackplaneMsg::PushMany {
                uids: uids.into(),
                event,
                estimate,
                flush,
            })
        }
        kind::BROADCAST => {
            let flush = r.byte()? & 1 != 0;
            let estimate = r.usize()?;
            let event = r.event(limits)?;
            Frame::Msg(BackplaneMsg::Broadcast {
                event,
                estimate,
                flush,
            })
        }
        kind::AJAX_WAKE => {
            let every = r.byte()? & 1 != 0;
            let n = r.len(limits.max_collection_len)?;
            let mut uids = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                uids.push(r.uid(limits)?);
            }
            Frame::Msg(BackplaneMsg::AjaxWake {
                uids: (!every).then(|| uids.into()),
            })
        }
        kind::FLUSH => Frame::Msg(BackplaneMsg::Flush {
            uid: r.uid(limits)?,
        }),
        kind::CLOSE_UID => Frame::Msg(BackplaneMsg::CloseUid {
            uid: r.uid(limits)?,
        }),
        kind::PRESENCE => {
            let node = NodeId(r.u64_le()?);
            let uid = r.uid(limits)?;
            let f = r.byte()?;
            Frame::Msg(BackplaneMsg::Presence {
                node,
                uid,
                ws: f & 1 != 0,
                ajax: f & 2 != 0,
            })
        }
        kind::PUSH_CLIENT => {
            let uid = r.uid(limits)?;
            let client_id = r.client_id()?;
            let estimate = r.usize()?;
            let event = r.event(limits)?;
            Frame::Msg(BackplaneMsg::PushClient {
                uid,
                client_id,
                event,
                estimate,
            })
        }
        kind::REQUEST => {
            let node = NodeId(r.u64_le()?);
            let id = r.varint()?;
            let uid = r.uid(limits)?;
            let timeout_ms = r.varint()?;
            let event = r.event(limits)?;
            Frame::Msg(BackplaneMsg::Request {
                node,
                id,
                uid,
                event,
                timeout_ms,
            })
        }
        kind::REQUEST_ANSWERS => {
            let node = NodeId(r.u64_le()?);
            let id = r.varint()?;
            let from = NodeId(r.u64_le()?);
            let n = r.len(limits.max_collection_len)?;
            let mut answers = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let cid = r.client_id()?;
                answers.push((cid, r.answer(limits)?));
            }
            Frame::Msg(BackplaneMsg::RequestAnswers {
                node,
                id,
                from,
                answers,
            })
        }
        kind::REQUEST_REPLY => {
            let uid = r.uid(limits)?;
            let client_id = r.client_id()?;
            let id = r.varint()?;
            let answer = r.answer(limits)?;
            Frame::Msg(BackplaneMsg::RequestReply {
                uid,
                client_id,
                id,
                answer,
            })
        }
        kind::HEARTBEAT => {
            let count = r.varint()?;
            let hash = r.u64_le()?;
            Frame::Heartbeat { count, hash }
        }
        kind::SYNC_REQUEST => Frame::SyncRequest {
            target: r.u64_le()?,
        },
        kind::SNAPSHOT => {
            let node = NodeId(r.u64_le()?);
            let part = r.u32()?;
            let parts = r.u32()?;
            let n = r.len(limits.max_collection_len)?;
            let mut entries = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let uid = r.uid(limits)?;
                let f = r.byte()?;
                entries.push((uid, f & 1 != 0, f & 2 != 0));
            }
            Frame::Snapshot {
                node,
                part,
                parts,
                entries,
            }
        }
        other => {
            return Ok(Decoded::Skipped {
                origin,
                kind: other,
            });
        }
    };
    let frame = match frame {
        Frame::Msg(msg) if sequenceable(&msg) => match r.trailer()? {
            Some((SEQ_TAG, epoch, seq)) => Frame::Msg(BackplaneMsg::Sequenced {
                epoch,
                seq,
                msg: Box::new(msg),
            }),
            Some((_, epoch, seq)) => Frame::After { epoch, seq, msg },
            None => Frame::Msg(msg),
        },
        other => other,
    };
    Ok(Decoded::Frame { origin, frame })
}

/// The hash of one present uid, as summed (wrapping) into [`Frame::Heartbeat::hash`]: FNV-1a
/// (64 bit) of the uid's encoding (see the module docs) followed by its flags byte. Stable
/// across releases and platforms.
pub fn presence_hash(uid: &Uid, ws: bool, ajax: bool) -> u64 {
    let mut bytes = Vec::with_capacity(32);
    // A uid that cannot be encoded is not published either; hash what we have.
    let _ = put_uid(&mut bytes, uid);
    bytes.push(presence_flags(ws, ajax));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn presence_flags(ws: bool, ajax: bool) -> u8 {
    u8::from(ws) | (u8::from(ajax) << 1)
}

fn put_varint(w: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            w.push(b);
            return;
        }
        w.push(b | 0x80);
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_varint(w, b.len() as u64);
    w.extend_from_slice(b);
}

fn put_uid(w: &mut Vec<u8>, uid: &Uid) -> Result<(), CodecError> {
    match uid {
        Uid::Nil => w.push(0),
        Uid::Id(v) => match &**v {
            crate::Value::Str(s) => {
                w.push(1);
                put_bytes(w, s.as_bytes());
            }
            v => match sente_edn::try_to_edn_string(v) {
                Ok(text) => {
                    w.push(2);
                    put_bytes(w, text.as_bytes());
                }
                Err(e) => {
                    let packed = msgpack_pack(v, &e)?;
                    w.push(3);
                    put_bytes(w, &packed);
                }
            },
        },
    }
    Ok(())
}

fn put_event(w: &mut Vec<u8>, event: &Event) -> Result<(), CodecError> {
    let value = event.to_value();
    match sente_edn::try_to_edn_string(&value) {
        Ok(text) => {
            w.push(0);
            put_bytes(w, text.as_bytes());
        }
        Err(e) => {
            let packed = msgpack_pack(&value, &e)?;
            w.push(1);
            put_bytes(w, &packed);
        }
    }
    Ok(())
}

/// The event a request's reply travels as (`[:chsk/rep value]`).
fn reply_event(value: &crate::Value) -> Event {
    Event::new(
        crate::event::EventId::from_static(crate::event::ids::REP),
        value.clone(),
    )
}

fn put_answer(
    w: &mut Vec<u8>,
    answer: &Result<crate::Value, crate::s2c::RequestError>,
) -> Result<(), CodecError> {
    use crate::s2c::RequestError as E;
    match answer {
        Ok(v) => {
            w.push(0);
            put_event(w, &reply_event(v))?;
        }
        Err(E::Unsupported) => w.push(1),
        Err(E::Timeout) => w.push(2),
        Err(E::Closed) => w.push(3),
        Err(E::TooMany { limit }) => {
            w.push(4);
            put_varint(w, *limit as u64);
        }
        Err(E::Client(s)) => {
            w.push(5);
            put_bytes(w, s.as_bytes());
        }
        Err(E::Send(s)) => {
            w.push(6);
            put_bytes(w, s.as_bytes());
        }
    }
    Ok(())
}

#[cfg(feature = "msgpack")]
fn msgpack_pack(v: &crate::Value, _edn: &sente_edn::Error) -> Result<Vec<u8>, CodecError> {
    Ok(crate::packer::MsgpackPacker.pack(v)?.into_bytes())
}

#[cfg(not(feature = "msgpack"))]
fn msgpack_pack(_v: &crate::Value, edn: &sente_edn::Error) -> Result<Vec<u8>, CodecError> {
    Err(CodecError::Pack(PackError::Unsupported {
        packer: "edn",
        what: edn.to_string(),
    }))
}

#[cfg(feature = "msgpack")]
fn msgpack_unpack(b: &[u8], limits: &Limits) -> Result<crate::Value, CodecError> {
    Ok(crate::packer::MsgpackPacker.unpack(b, limits)?)
}

#[cfg(not(feature = "msgpack"))]
fn msgpack_unpack(_b: &[u8], _limits: &Limits) -> Result<crate::Value, CodecError> {
    Err(CodecError::Malformed {
        offset: 0,
        reason: "msgpack value, but this build has no msgpack packer",
    })
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The trailer of a sequenced or unnumbered-after-numbered frame (its tag, epoch and
    /// number), if the rest of the input is one.
    fn trailer(&mut self) -> Result<Option<(u8, u64, u64)>, CodecError> {
        let Some(&tag) = self
            .input
            .get(self.pos)
            .filter(|t| [SEQ_TAG, AFTER_TAG].contains(t))
        else {
            return Ok(None);
        };
        self.pos += 1;
        let epoch = self.u64_le()?;
        let at = self.pos;
        let digits = &self.input[self.pos..];
        self.pos = self.input.len();
        let seq = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or(CodecError::Malformed {
                offset: at,
                reason: "sequence number",
            })?;
        Ok(Some((tag, epoch, seq)))
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or(CodecError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.input.len())
            .ok_or(CodecError::Truncated {
                offset: self.input.len(),
            })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u64_le(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(CodecError::Malformed {
            offset: start,
            reason: "varint longer than 10 bytes",
        })
    }

    fn usize(&mut self) -> Result<usize, CodecError> {
        let at = self.pos;
        usize::try_from(self.varint()?).map_err(|_| CodecError::Malformed {
            offset: at,
            reason: "integer too large",
        })
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let at = self.pos;
        u32::try_from(self.varint()?).map_err(|_| CodecError::Malformed {
            offset: at,
            reason: "integer too large",
        })
    }

    /// A count, checked against `max` before anything is allocated.
    fn len(&mut self, max: usize) -> Result<usize, CodecError> {
        let at = self.pos;
        let n = self.usize()?;
        if n > max {
            return Err(CodecError::Malformed {
                offset: at,
                reason: "count over the collection limit",
            });
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.usize()?;
        self.take(n)
    }

    fn uid(&mut self, limits: &Limits) -> Result<Uid, CodecError> {
        let at = self.pos;
        match self.byte()? {
            0 => Ok(Uid::Nil),
            1 => {
                let b = self.bytes()?;
                let s = std::str::from_utf8(b).map_err(|_| CodecError::Malformed {
                    offset: at,
                    reason: "uid is not UTF-8",
                })?;
                Ok(Uid::from(s))
            }
            2 => Ok(Uid::from_value(EdnPacker.unpack(self.bytes()?, limits)?)),
            3 => Ok(Uid::from_value(msgpack_unpack(self.bytes()?, limits)?)),
            _ => Err(CodecError::Malformed {
                offset: at,
                reason: "unknown uid tag",
            }),
        }
    }

    fn client_id(&mut self) -> Result<crate::event::ClientId, CodecError> {
        let offset = self.pos;
        std::str::from_utf8(self.bytes()?)
            .ok()
            .and_then(|c| crate::event::ClientId::new(c).ok())
            .ok_or(CodecError::Malformed {
                offset,
                reason: "client id",
            })
    }

    fn text(&mut self) -> Result<String, CodecError> {
        let offset = self.pos;
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| CodecError::Malformed {
                offset,
                reason: "text",
            })
    }

    fn answer(
        &mut self,
        limits: &Limits,
    ) -> Result<Result<crate::Value, crate::s2c::RequestError>, CodecError> {
        use crate::s2c::RequestError as E;
        let at = self.pos;
        Ok(match self.byte()? {
            0 => Ok(self.event(limits)?.data().clone()),
            1 => Err(E::Unsupported),
            2 => Err(E::Timeout),
            3 => Err(E::Closed),
            4 => Err(E::TooMany {
                limit: self.usize()?,
            }),
            5 => Err(E::Client(self.text()?)),
            6 => Err(E::Send(self.text()?)),
            _ => {
                return Err(CodecError::Malformed {
                    offset: at,
                    reason: "unknown answer status",
                });
            }
        })
    }

    fn event(&mut self, limits: &Limits) -> Result<Arc<Event>, CodecError> {
        let at = self.pos;
        let enc = self.byte()?;
        let b = self.bytes()?;
        let value = match enc {
            0 => EdnPacker.unpack(b, limits)?,
            1 => msgpack_unpack(b, limits)?,
            _ => {
                return Err(CodecError::Malformed {
                    offset: at,
                    reason: "unknown event encoding",
                });
            }
        };
        Event::from_value(value)
            .map(Arc::new)
            .map_err(|_| CodecError::Malformed {
                offset: at,
                reason: "not an event",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventId, Value};

    fn ev(n: i64) -> Arc<Event> {
        Arc::new(Event::new(EventId::new("t/n").unwrap(), Value::Int(n)))
    }

    fn roundtrip(frame: &Frame) -> Frame {
        let bytes = encode(42, frame).unwrap();
        match decode(&bytes, &Limits::default()).unwrap() {
            Decoded::Frame { origin, frame } => {
                assert_eq!(origin, 42);
                frame
            }
            Decoded::Skipped { .. } => panic!("skipped"),
        }
    }

    /// A retried request's outcome round-trips (a reply, or none); other bytes are errors.
    #[test]
    fn outcomes_round_trip() {
        let limits = Limits::default();
        let reply = Value::Vector(vec![Value::kw("ran"), Value::Int(1)]);
        for outcome in [Some(reply), None] {
            let bytes = encode_outcome(outcome.as_ref()).unwrap();
            assert_eq!(decode_outcome(&bytes, &limits).unwrap(), outcome);
        }
        for bad in [
            &[][..],
            &[VERSION][..],
            &[VERSION, 7][..],
            &[VERSION + 1, 0][..],
        ] {
            assert!(decode_outcome(bad, &limits).is_err(), "{bad:?}");
        }
    }

    /// A numbered mailbox entry is the plain entry plus the sequenced trailer: read with its
    /// number, and as the plain event by `decode_event` (what an older release reads).
    #[test]
    fn numbered_entries_keep_their_event_readable() {
        let limits = Limits::default();
        let plain = encode_event(&ev(7)).unwrap();
        assert_eq!(decode_entry(&plain, &limits).unwrap().seq, None);
        let mut numbered = plain.clone();
        number_entry(&mut numbered, 0xAB, 1234);
        let taken = decode_entry(&numbered, &limits).unwrap();
        assert_eq!(taken.event, ev(7));
        assert_eq!(taken.seq, Some((0xAB, 1234)));
        assert_eq!(decode_event(&numbered, &limits).unwrap(), ev(7));
        let mut bad = plain;
        bad.extend_from_slice(&[SEQ_TAG, 1, 2]);
        assert!(decode_entry(&bad, &limits).is_err());
    }

    /// A push published unnumbered after numbered ones carries the after trailer: it reads
    /// back as [`Frame::After`], encodes to the same bytes, and only pushes are marked.
    #[test]
    fn unnumbered_after_numbered_frames() {
        let push = BackplaneMsg::PushClient {
            uid: Uid::from("u"),
            client_id: crate::ClientId::new("c").unwrap(),
            event: ev(4),
            estimate: 3,
        };
        let mut marked = encode_msg(7, &push).unwrap();
        assert!(mark_after(&mut marked, 0xbeef, 68));
        let frame = Frame::After {
            epoch: 0xbeef,
            seq: 68,
            msg: push,
        };
        assert_eq!(encode(7, &frame).unwrap(), marked);
        match decode(&marked, &Limits::default()).unwrap() {
            Decoded::Frame {
                origin: 7,
                frame:
                    Frame::After {
                        epoch: 0xbeef,
                        seq: 68,
                        msg: BackplaneMsg::PushClient { estimate: 3, .. },
                    },
            } => {}
            other => panic!("{other:?}"),
        }
        let wake = BackplaneMsg::AjaxWake { uids: None };
        let mut not_a_push = encode_msg(7, &wake).unwrap();
        let before = not_a_push.clone();
        assert!(!mark_after(&mut not_a_push, 1, 2));
        assert_eq!(not_a_push, before);
        assert!(matches!(
            encode(
                7,
                &Frame::After {
                    epoch: 1,
                    seq: 2,
                    msg: wake
                }
            ),
            Err(CodecError::LocalOnly(_))
        ));
        assert!(!mark_after(&mut Vec::new(), 1, 2));
        // Marked exactly when the message is sequenceable.
        let uid = Uid::from("u");
        let samples = [
            BackplaneMsg::Push {
                uid: uid.clone(),
                event: ev(1),
                estimate: 1,
                flush: false,
            },
            BackplaneMsg::PushMany {
                uids: Arc::from([uid.clone()]),
                event: ev(1),
                estimate: 1,
                flush: true,
            },
            BackplaneMsg::Broadcast {
                event: ev(1),
                estimate: 1,
                flush: false,
            },
            BackplaneMsg::Flush { uid: uid.clone() },
            BackplaneMsg::CloseUid { uid: uid.clone() },
            BackplaneMsg::Presence {
                node: NodeId(1),
                uid: uid.clone(),
                ws: true,
                ajax: false,
            },
            BackplaneMsg::AjaxWake {
                uids: Some(Arc::from([uid])),
            },
        ];
        for m in samples {
            let mut f = encode_msg(7, &m).unwrap();
            assert_eq!(mark_after(&mut f, 1, 2), sequenceable(&m), "{m:?}");
        }
        // An entry never carries the after trailer: read as unnumbered.
        let mut entry = encode_event(&ev(1)).unwrap();
        put_trailer(&mut entry, AFTER_TAG, 1, 2);
        assert_eq!(decode_entry(&entry, &Limits::default()).unwrap().seq, None);
    }

    /// A sequenced frame is the plain frame plus the trailer the engine appends (tag, epoch,
    /// decimal number); a bad number is a typed error, and a frame without the trailer (an
    /// older node's) reads as a plain message.
    #[test]
    fn sequenced_frames_carry_the_engines_trailer() {
        let push = BackplaneMsg::Push {
            uid: Uid::from("u"),
            event: ev(3),
            estimate: 9,
            flush: true,
        };
        let plain = encode_msg(7, &push).unwrap();
        let mut engine = plain.clone();
        engine.push(SEQ_TAG);
        engine.extend_from_slice(&0xfeed_u64.to_le_bytes());
        engine.extend_from_slice(b"1234");
        let seq = BackplaneMsg::Sequenced {
            epoch: 0xfeed,
            seq: 1234,
            msg: Box::new(push),
        };
        assert_eq!(
            encode_msg(7, &seq).unwrap(),
            engine,
            "the same bytes as the engine's"
        );
        match decode(&engine, &Limits::default()).unwrap() {
            Decoded::Frame {
                frame: Frame::Msg(BackplaneMsg::Sequenced { epoch, seq, msg }),
                ..
            } => {
                assert_eq!((epoch, seq), (0xfeed, 1234));
                assert!(matches!(*msg, BackplaneMsg::Push { estimate: 9, .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&plain, &Limits::default()).unwrap(),
            Decoded::Frame {
                frame: Frame::Msg(BackplaneMsg::Push { .. }),
                ..
            }
        ));
        for bad in [&b"12x"[..], b"", b"0", b"99999999999999999999999"] {
            let mut b = plain.clone();
            b.push(SEQ_TAG);
            b.extend_from_slice(&1u64.to_le_bytes());
            b.extend_from_slice(bad);
            assert!(
                matches!(
                    decode(&b, &Limits::default()),
                    Err(CodecError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        let mut short = plain;
        short.extend_from_slice(&[SEQ_TAG, 1, 2]);
        assert!(matches!(
            decode(&short, &Limits::default()),
            Err(CodecError::Truncated { .. })
        ));
        let presence = BackplaneMsg::Sequenced {
            epoch: 1,
            seq: 1,
            msg: Box::new(BackplaneMsg::AjaxWake { uids: None }),
        };
        assert!(
            encode_msg(7, &presence).is_err(),
            "only pushes, flushes and closes"
        );
    }

    #[test]
    fn messages_roundtrip() {
        let uids: Arc<[Uid]> = vec![Uid::from("a"), Uid::Nil, Uid::from(7)].into();
        let msgs = vec![
            BackplaneMsg::Push {
                uid: Uid::from("alice"),
                event: ev(1),
                estimate: 300,
                flush: true,
            },
            BackplaneMsg::PushMany {
                uids: uids.clone(),
                event: ev(2),
                estimate: 10,
                flush: false,
            },
            BackplaneMsg::Broadcast {
                event: ev(3),
                estimate: 5,
                flush: true,
            },
            BackplaneMsg::Flush { uid: Uid::Nil },
            BackplaneMsg::AjaxWake { uids: Some(uids) },
            BackplaneMsg::AjaxWake { uids: None },
            BackplaneMsg::CloseUid {
                uid: Uid::from_value(Value::kw("a/b")),
            },
            BackplaneMsg::Presence {
                node: NodeId(u64::MAX),
                uid: Uid::from("bob"),
                ws: false,
                ajax: true,
            },
            BackplaneMsg::PushClient {
                uid: Uid::from("carol"),
                client_id: crate::event::ClientId::new("tab-1").unwrap(),
                event: ev(4),
                estimate: 9,
            },
            BackplaneMsg::Request {
                node: NodeId(3),
                id: 77,
                uid: Uid::from("dave"),
                event: ev(5),
                timeout_ms: 1500,
            },
            BackplaneMsg::RequestReply {
                uid: Uid::from("erin"),
                client_id: crate::event::ClientId::new("tab-2").unwrap(),
                id: (5 << 32) | 9,
                answer: Ok(Value::from("fine")),
            },
            BackplaneMsg::RequestReply {
                uid: Uid::from("erin"),
                client_id: crate::event::ClientId::new("tab-2").unwrap(),
                id: 10,
                answer: Err(crate::s2c::RequestError::Client("no-handler".to_owned())),
            },
            BackplaneMsg::RequestAnswers {
                node: NodeId(3),
                id: 77,
                from: NodeId(u64::MAX),
                answers: {
                    use crate::s2c::RequestError as E;
                    let c = |s: &str| crate::event::ClientId::new(s).unwrap();
                    vec![
                        (c("a"), Ok(Value::kw("yes"))),
                        (c("b"), Err(E::Unsupported)),
                        (c("c"), Err(E::Timeout)),
                        (c("d"), Err(E::Closed)),
                        (c("e"), Err(E::TooMany { limit: 16 })),
                        (c("f"), Err(E::Client("no handler".to_owned()))),
                        (c("g"), Err(E::Send("too big".to_owned()))),
                    ]
                },
            },
        ];
        for m in msgs {
            let back = roundtrip(&Frame::Msg(m.clone()));
            assert_eq!(format!("{back:?}"), format!("{:?}", Frame::Msg(m)));
        }
    }

    #[test]
    fn cluster_frames_roundtrip() {
        for f in [
            Frame::Heartbeat {
                count: 3,
                hash: 0xdead_beef,
            },
            Frame::SyncRequest { target: 9 },
            Frame::Snapshot {
                node: NodeId(5),
                part: 1,
                parts: 2,
                entries: vec![(Uid::from("x"), true, false), (Uid::Nil, true, true)],
            },
        ] {
            assert_eq!(format!("{:?}", roundtrip(&f)), format!("{f:?}"));
        }
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn bytes_go_as_msgpack() {
        let e = Arc::new(Event::new(
            EventId::new("t/b").unwrap(),
            Value::Bytes(vec![1, 2, 3]),
        ));
        let m = BackplaneMsg::Broadcast {
            event: e,
            estimate: 1,
            flush: false,
        };
        let f = Frame::Msg(m.clone());
        let bytes = encode(1, &f).unwrap();
        assert_eq!(bytes[12], 1, "msgpack encoding byte");
        assert_eq!(format!("{:?}", roundtrip(&f)), format!("{f:?}"));
    }

    #[test]
    fn unknown_version_is_refused_and_unknown_kind_skipped() {
        let mut b = encode(1, &Frame::SyncRequest { target: 2 }).unwrap();
        b[0] = 2;
        assert_eq!(
            decode(&b, &Limits::default()).unwrap_err(),
            CodecError::UnsupportedVersion { version: 2 }
        );
        b[0] = VERSION;
        b[9] = 200;
        assert!(matches!(
            decode(&b, &Limits::default()).unwrap(),
            Decoded::Skipped {
                origin: 1,
                kind: 200
            }
        ));
    }

    #[test]
    fn trailing_bytes_are_ignored_and_truncation_is_an_error() {
        let f = Frame::Msg(BackplaneMsg::Flush {
            uid: Uid::from("u"),
        });
        let mut b = encode(1, &f).unwrap();
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], &Limits::default()).is_err(), "cut {cut}");
        }
        b.extend_from_slice(b"future fields");
        assert!(matches!(
            decode(&b, &Limits::default()).unwrap(),
            Decoded::Frame { .. }
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 1;
        for len in 0..200 {
            let mut b = vec![VERSION];
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = decode(&b, &Limits::default());
        }
    }

    #[test]
    fn presence_hash_is_stable() {
        // Pinned: other releases compute the same value.
        assert_eq!(
            presence_hash(&Uid::from("a"), true, false),
            0xb48a_a077_4b68_4539
        );
        assert_ne!(
            presence_hash(&Uid::from("a"), true, false),
            presence_hash(&Uid::from("a"), false, true)
        );
    }
}
