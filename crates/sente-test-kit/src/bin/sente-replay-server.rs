//! Replays the server side of recorded real-Sente transcripts to clients in other processes
//! (node, a browser), until stdin closes. Two modes:
//!
//! ```text
//! $ sente-replay-server 1-ws A [cutoff_ms]
//! {"url":"http://127.0.0.1:41234/chsk","log_url":"http://127.0.0.1:41234/replay-log",
//!  "actions":[...],"expected":{"states":[...],"recv":[...],"replies":[...]},"expected_sent":[...]}
//! $ sente-replay-server --control
//! {"control_url":"http://127.0.0.1:41235"}
//! ```
//!
//! The first replays one recorded tab and prints its description
//! (see `sente_test_kit::replay::start_case`); the second serves
//! `GET <control_url>/start?transcript=1-ws&tab=A[&cutoff=12000]`, which starts a replay and
//! answers the same description (see `sente_test_kit::replay::serve_control`).

use sente_test_kit::replay::{serve_control, start_case};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _keep = match (args.first().map(String::as_str), args.get(1)) {
        (Some("--control"), _) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!(
                "{}",
                json!({"control_url": format!("http://{}", listener.local_addr()?)})
            );
            tokio::spawn(serve_control(listener));
            None
        }
        (Some(name), Some(tab)) => {
            let cutoff = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(f64::MAX);
            let (replay, info) = start_case(name, tab, cutoff).await?;
            println!("{info}");
            Some(replay)
        }
        _ => {
            eprintln!(
                "usage: sente-replay-server <transcript> <tab A|B|C> [cutoff_ms]\n       \
                 sente-replay-server --control"
            );
            std::process::exit(2);
        }
    };
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
