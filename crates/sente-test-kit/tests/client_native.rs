//! The conformance matrix for the native Rust client: every scenario x transport x packer
//! against the axum-mounted server.

use sente_test_kit::{Failed, Matrix, RustClient, run_matrix};
use std::sync::Arc;

fn matrix_from_env() -> Matrix {
    let mut m = Matrix::default();
    if let Ok(only) = std::env::var("SENTE_SCENARIOS") {
        m.only = only.split(',').map(str::to_owned).collect();
    }
    if let Ok(p) = std::env::var("SENTE_PACKERS") {
        m.packers = p.split(',').map(str::to_owned).collect();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_conformance() -> Result<(), Failed> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let report = run_matrix(Arc::new(RustClient), &matrix_from_env()).await;
    println!("{} scenario runs passed", report.passed);
    report.check().map(drop)
}
