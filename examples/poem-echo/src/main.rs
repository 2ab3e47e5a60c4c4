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
    poem::Server::new_with_acceptor(acceptor)
        .run(poem_echo::app()?)
        .await?;
    Ok(())
}
