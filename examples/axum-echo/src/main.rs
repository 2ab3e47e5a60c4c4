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
    axum::serve(listener, axum_echo::app()?).await?;
    Ok(())
}
