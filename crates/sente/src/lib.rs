//! sente (in progress).
