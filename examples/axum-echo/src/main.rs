//! `cargo run -p axum-echo [-- ADDR]` (default 127.0.0.1:3000).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "axum-echo listening on http://{}/chsk",
        listener.local_addr()?
    );
    // Safe settings for a public port: head and keep-alive timeouts, head size and connection
    // caps (see `sente::ServeConfig` for the defaults).
    sente::serve(listener, axum_echo::app()?, sente::ServeConfig::default()).await?;
    Ok(())
}
