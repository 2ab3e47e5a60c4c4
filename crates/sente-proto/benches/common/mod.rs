//! What the server benches share.

use sente_edn::{Map, Value};
use sente_proto::{Event, EventId};
use std::sync::Arc;

/// The benches' pushed event: `[:demo/tick {:t t :p "<70 bytes>"}]`.
pub(crate) fn tick(t: i64) -> Arc<Event> {
    let mut m = Map::new();
    m.insert(Value::kw("t"), Value::Int(t));
    m.insert(Value::kw("p"), Value::Str("x".repeat(70)));
    Arc::new(Event::new(
        EventId::new("demo/tick").unwrap(),
        Value::Map(m),
    ))
}
