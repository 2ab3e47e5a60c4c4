//! One flushed batch of pushed events, packed lazily and at most once per packer.

use crate::envelope::Envelope;
use crate::event::Event;
use crate::large::Offloaded;
use crate::packer::{PackError, Packed, Packer};
use bytes::Bytes;
use sente_edn::Value;
use std::sync::{Arc, Mutex, OnceLock};

/// A batch `[[ev1 ev2 ...] nil]` flushed for one uid and transport (spec 5.4, 6.2).
///
/// The same `Arc<PushBatch>` goes to every client that should receive it (all clients of the uid,
/// and every uid of a broadcast flushed in the same round), and [`PushBatch::packed`] packs it once
/// per packer, so a broadcast costs one pack per distinct batch and packer, not one per client.
#[derive(Debug)]
pub struct PushBatch {
    events: Vec<Arc<Event>>,
    /// The first packed form made: what every connection of a fan-out asks for (one packer,
    /// no marker), read without a lock.
    first: OnceLock<Packing>,
    /// The other packed forms, keyed by packer (address) and marker number.
    cache: Mutex<Vec<Packing>>,
    /// The batch as clients offloading large events get it (made once, see
    /// [`PushBatch::offloaded`]).
    offloaded: OnceLock<Option<Offloaded>>,
}

/// One packed form of a batch: the packer's address, the marker's number, the result.
type Packing = (usize, Option<u64>, Result<PackedBytes, PackError>);

/// A packed message as cheaply clonable bytes, shared by every connection it goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedBytes {
    /// The bytes: valid UTF-8 for a text packer (made only from [`Packed`], whose text is a
    /// `String`; the WebSocket layer relies on it and sends them as a text frame unchecked).
    pub bytes: Bytes,
    /// Whether the packer is binary (WebSocket binary frame, octet-stream body).
    pub binary: bool,
}

impl From<Packed> for PackedBytes {
    fn from(p: Packed) -> Self {
        match p {
            Packed::Text(s) => PackedBytes {
                bytes: Bytes::from(s),
                binary: false,
            },
            Packed::Binary(b) => PackedBytes {
                bytes: Bytes::from(b),
                binary: true,
            },
        }
    }
}

impl PushBatch {
    /// A batch of events, in order.
    pub fn new(events: Vec<Arc<Event>>) -> Self {
        PushBatch {
            events,
            first: OnceLock::new(),
            cache: Mutex::new(Vec::new()),
            offloaded: OnceLock::new(),
        }
    }

    /// The events, in order.
    pub fn events(&self) -> &[Arc<Event>] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The batch as a client that fetches large events by HTTP gets it ([`crate::large`]):
    /// `make` (e.g. [`LargeStore::offload`](crate::large::LargeStore::offload)) runs the first
    /// time any such client asks, and every later one shares its answer (`None`: nothing to
    /// offload, the batch goes as it is).
    pub fn offloaded(
        &self,
        make: impl FnOnce(&[Arc<Event>]) -> Option<Offloaded>,
    ) -> Option<&Offloaded> {
        self.offloaded.get_or_init(|| make(&self.events)).as_ref()
    }

    /// The envelope `[[ev1 ...] nil]`.
    pub fn envelope(&self) -> Envelope {
        self.envelope_numbered(None)
    }

    /// The envelope `[[[:chsk/seq n] ev1 ...] nil]` with `seq` (see
    /// [`super::replay`]), `[[ev1 ...] nil]` without.
    pub fn envelope_numbered(&self, seq: Option<u64>) -> Envelope {
        let marker = seq.map(super::replay::seq_marker);
        Envelope::new(crate::packer::batch_payload(marker.as_ref(), &self.events))
    }

    /// The batch packed with `packer`, packing it only the first time this packer asks.
    /// Fails with [`PackError::TooLarge`] over `max_bytes`.
    pub fn packed(&self, packer: &dyn Packer, max_bytes: usize) -> Result<PackedBytes, PackError> {
        self.packed_numbered(packer, max_bytes, None)
    }

    /// [`PushBatch::packed`] of [`PushBatch::envelope_numbered`]: a resuming Ajax client's
    /// poll answer, packed once per packer and number.
    pub fn packed_numbered(
        &self,
        packer: &dyn Packer,
        max_bytes: usize,
        seq: Option<u64>,
    ) -> Result<PackedBytes, PackError> {
        let key = std::ptr::from_ref(packer).cast::<()>() as usize;
        let hit = |p: &&Packing| p.0 == key && p.1 == seq;
        if let Some((_, _, r)) = self.first.get().filter(hit) {
            return r.clone();
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Made while this caller waited for the lock?
        if let Some((_, _, r)) = self
            .first
            .get()
            .filter(hit)
            .or_else(|| cache.iter().find(hit))
        {
            return r.clone();
        }
        let marker = seq.map(super::replay::seq_marker);
        let result = packer
            .pack_batch(marker.as_ref(), &self.events)
            .and_then(|p| {
                let size = p.as_bytes().len();
                if size > max_bytes {
                    Err(PackError::TooLarge {
                        size,
                        limit: max_bytes,
                    })
                } else {
                    Ok(p)
                }
            });
        let result = result.map(PackedBytes::from);
        // Set under the lock: only one caller makes a packing, and only the first goes there.
        if let Err(packing) = self.first.set((key, seq, result.clone())) {
            cache.push(packing);
        }
        result
    }
}

/// A quick estimate of the packed size of `event` (`[id data]`) in bytes, bounded like
/// [`estimate_size`]: what a push adds to a batch.
pub fn estimate_event_size(event: &Event, budget: usize) -> usize {
    estimate_size(event.data(), budget) + event.id().as_str().len() + 8
}

/// A quick estimate of the packed size of `value` in bytes (close to its edn text length), used
/// to bound batches before they are packed. Stops counting once `budget` is exceeded.
pub fn estimate_size(value: &Value, budget: usize) -> usize {
    fn walk(v: &Value, acc: &mut usize, budget: usize) {
        if *acc > budget {
            return;
        }
        *acc += match v {
            Value::Nil | Value::Bool(_) => 5,
            Value::Int(_) | Value::Float(_) | Value::Char(_) => 20,
            Value::BigInt(b) => b.as_str().len() + 1,
            Value::BigDec(b) => b.as_str().len() + 1,
            Value::Str(s) => s.len() + 2 + s.bytes().filter(|b| matches!(b, b'"' | b'\\')).count(),
            Value::Keyword(k) => k.as_str().len() + 1,
            Value::Symbol(s) => s.as_str().len(),
            Value::Inst(_) | Value::Ratio(_) => 40,
            Value::Uuid(_) => 45,
            Value::Bytes(b) => b.len() * 2 + 8,
            Value::Tagged(t) => t.tag.as_str().len() + 2,
            Value::Vector(_) | Value::List(_) | Value::Map(_) | Value::Set(_) => 2,
        };
        match v {
            Value::Vector(xs) | Value::List(xs) => {
                for x in xs {
                    *acc += 1;
                    walk(x, acc, budget);
                }
            }
            Value::Set(s) => {
                for x in s {
                    *acc += 1;
                    walk(x, acc, budget);
                }
            }
            Value::Map(m) => {
                for (k, x) in m.iter() {
                    *acc += 3;
                    walk(k, acc, budget);
                    walk(x, acc, budget);
                }
            }
            Value::Tagged(t) => walk(&t.value, acc, budget),
            Value::Ratio(r) => {
                walk(&r.numer, acc, budget);
                walk(&r.denom, acc, budget);
            }
            _ => {}
        }
    }
    let mut acc = 0;
    walk(value, &mut acc, budget);
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    #[test]
    fn estimate_grows_with_content_and_stops_at_budget() {
        let small = Value::Str("x".into());
        let big = Value::Vector(vec![Value::Str("y".repeat(1000)); 1000]);
        assert!(estimate_size(&small, 1 << 20) < 10);
        let e = estimate_size(&big, 10_000);
        assert!(e > 10_000 && e < 20_000);
    }

    #[test]
    fn envelope_shape() {
        let ev = Arc::new(Event::new(EventId::new("my-app/a").unwrap(), Value::Int(1)));
        let b = PushBatch::new(vec![ev.clone(), ev]);
        let v = b.envelope().into_value();
        let Value::Vector(items) = v else { panic!() };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], Value::Nil);
        assert_eq!(items[0].as_seq().unwrap().len(), 2);
    }

    /// Every packer's borrowed batch packing gives the bytes (or the error) of packing the
    /// envelope value, with and without a resume marker.
    #[test]
    fn pack_batch_matches_the_envelope() {
        let id = |s: &str| EventId::new(s).unwrap();
        let mut m = sente_edn::Map::new();
        m.insert(Value::kw("t"), Value::Int(-7));
        m.insert(
            Value::Str(":looks-like-kw".into()),
            Value::Str("~tilde \"q\" \u{e9}".into()),
        );
        let events = [
            Arc::new(Event::new(id("demo/tick"), Value::Map(m))),
            Arc::new(Event::bare(id("a/bare"))),
            Arc::new(Event::new(
                id("x/nested"),
                Value::Vector(vec![Value::Nil, Value::Float(1.5)]),
            )),
        ];
        let with_bytes = [Arc::new(Event::new(
            id("b/bytes"),
            Value::Bytes(vec![1, 2]),
        ))];
        for name in ["edn", "json", "transit", "msgpack", "edn+gzip", "json+gzip"] {
            // The optional packers exist only with their features.
            let Some(packer) = crate::packer::by_name(name) else {
                assert!(!["edn", "json"].contains(&name), "{name} is always built");
                continue;
            };
            for evs in [&events[..], &events[..1], &[][..], &with_bytes[..]] {
                for seq in [None, Some(42)] {
                    let b = PushBatch::new(evs.to_vec());
                    let marker = seq.map(super::super::replay::seq_marker);
                    let borrowed = packer.pack_batch(marker.as_ref(), evs);
                    let built = b.envelope_numbered(seq).into_packed(&*packer);
                    assert_eq!(borrowed, built, "{name} {seq:?} {} events", evs.len());
                }
            }
        }
    }
}
