//! The conformance suite against every other server adapter (hyper, actix-web, poem): every
//! scenario x transport (WebSocket, Ajax, Auto) with the edn, json and msgpack packers. The full
//! packer matrix runs on axum (`client_native.rs`). Packers are framework-independent (adapters
//! only move bytes); what an adapter can get wrong is text vs binary, so the suite keeps two
//! text packers (edn, the default, and json) and one binary (msgpack: binary frames, binary
//! POST bodies). Measured on 2 cores: this run 333 cells in about 65 s; all six packers 666+
//! cells in about 140 s (mostly waiting on scenario timeouts, little CPU).
//!
//! `SENTE_ADAPTERS=hyper,actix`, `SENTE_SCENARIOS=echo,...` and
//! `SENTE_PACKERS=edn,transit,json,msgpack,edn+gzip,msgpack+gzip` (the full matrix) narrow or
//! widen it.

use sente_test_kit::{Adapter, Failed, Matrix, RustClient, run_matrix};
use std::sync::Arc;

fn matrix_from_env() -> Matrix {
    let mut m = Matrix {
        adapters: vec![Adapter::Hyper, Adapter::Actix, Adapter::Poem],
        packers: ["edn", "json", "msgpack"].map(str::to_owned).to_vec(),
        ..Matrix::default()
    };
    if let Ok(a) = std::env::var("SENTE_ADAPTERS") {
        m.adapters = Adapter::ALL
            .into_iter()
            .filter(|ad| a.split(',').any(|n| n == ad.to_string()))
            .collect();
    }
    if let Ok(only) = std::env::var("SENTE_SCENARIOS") {
        m.only = only.split(',').map(str::to_owned).collect();
    }
    if let Ok(p) = std::env::var("SENTE_PACKERS") {
        m.packers = p.split(',').map(str::to_owned).collect();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_conformance() -> Result<(), Failed> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let matrix = matrix_from_env();
    let report = run_matrix(Arc::new(RustClient), &matrix).await;
    println!(
        "{} scenario runs passed on {:?}",
        report.passed, matrix.adapters
    );
    report.check().map(drop)
}
