//! `cargo run -p poem-echo [-- ADDR]` (default 127.0.0.1:3000).

use poem::listener::TcpAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "poem-echo listening on http://{}/chsk",
        listener.local_addr()?
    );
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    // poem's only connection timeout: a connection with no traffic for 30 s is closed (above
    // the 20 s an Ajax long-poll is held). poem sets no request-head timeout and buffers up to
    // hyper's ~400 KB of head: on a public port put a proxy in front or serve with
    // `sente::serve` (see README, "Limits and guarantees"). The Ajax body timeout and size limit
    // are sente's own (`ServerLimits`).
    poem::Server::new_with_acceptor(acceptor)
        .idle_timeout(std::time::Duration::from_secs(30))
        .run(poem_echo::app()?)
        .await?;
    Ok(())
}
