//! `cargo run -p hyper-echo [-- ADDR]` (default 127.0.0.1:3000).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "hyper-echo listening on http://{}/chsk",
        listener.local_addr()?
    );
    hyper_echo::serve(listener).await
}
