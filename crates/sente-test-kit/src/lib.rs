//! sente-test-kit (in progress).
