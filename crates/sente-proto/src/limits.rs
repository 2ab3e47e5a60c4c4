//! Size and shape limits enforced by every decoder and transport.

/// Limits on what a peer may send. Every decoder checks them before allocating, so a hostile
/// message costs at most `max_message_bytes` of input and bounded work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest packed message accepted, in bytes (WebSocket frame, POST body). Default 1 MiB.
    pub max_message_bytes: usize,
    /// Deepest nesting of collections. Default 64.
    pub max_depth: usize,
    /// Most elements in one collection (vector, list, set; map entries). Default 100 000.
    pub max_collection_len: usize,
    /// Most events in one pushed batch. Default 1 000.
    pub max_batch_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_depth: 64,
            max_collection_len: 100_000,
            max_batch_len: 1_000,
        }
    }
}

/// Setters, for building limits from the defaults:
/// `Limits::default().max_message_bytes(..)`.
impl Limits {
    /// Sets [`Limits::max_message_bytes`].
    pub fn max_message_bytes(mut self, value: usize) -> Self {
        self.max_message_bytes = value;
        self
    }

    /// Sets [`Limits::max_depth`].
    pub fn max_depth(mut self, value: usize) -> Self {
        self.max_depth = value;
        self
    }

    /// Sets [`Limits::max_collection_len`].
    pub fn max_collection_len(mut self, value: usize) -> Self {
        self.max_collection_len = value;
        self
    }

    /// Sets [`Limits::max_batch_len`].
    pub fn max_batch_len(mut self, value: usize) -> Self {
        self.max_batch_len = value;
        self
    }
}
