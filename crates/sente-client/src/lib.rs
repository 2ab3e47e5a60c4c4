//! sente-client (in progress).
