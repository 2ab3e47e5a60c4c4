//! `cargo run -p actix-echo [-- ADDR]` (default 127.0.0.1:3000).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = std::net::TcpListener::bind(&addr)?;
    println!(
        "actix-echo listening on http://{}/chsk",
        listener.local_addr()?
    );
    actix_echo::app(listener)?.await
}
