//! Replays the server side of a recorded real-Sente transcript to one client in another process
//! (node, a browser) and prints one JSON line:
//!
//! ```text
//! $ sente-replay-server 1-ws A [cutoff_ms]
//! {"url":"http://127.0.0.1:41234/chsk","log_url":"http://127.0.0.1:41234/replay-log",
//!  "actions":[...],"expected":{"states":[...],"recv":[...],"replies":[...]},"expected_sent":[...]}
//! ```
//!
//! - `actions`: what the test must make its client do (`send`, `disconnect`), `at_ms` after
//!   creating it, as the recording's driver did with Sente's client in tab `tab`;
//! - `expected`: what Sente's client observed (see `sente_test_kit::replay::Observed`);
//! - `expected_sent`: what Sente's client sent, in the form `GET log_url` returns for ours.
//!
//! It serves until stdin closes.

use sente_test_kit::replay::{
    Action, Replay, actions, client_ids, expected, expected_client_log, load_transcript,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(tab)) = (args.first(), args.get(1)) else {
        eprintln!("usage: sente-replay-server <transcript> <tab A|B|C> [cutoff_ms]");
        std::process::exit(2);
    };
    let cutoff = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(f64::MAX);
    let records = load_transcript(name);
    let index = usize::from(tab.as_bytes()[0].saturating_sub(b'A'));
    let client_id = client_ids(&records)[index].clone();
    let replay = Replay::start_records(&records, &client_id).await?;
    let acts: Vec<_> = actions(&records, tab, cutoff)
        .into_iter()
        .map(|a| match a {
            Action::Send {
                at,
                label,
                event,
                timeout,
            } => json!({"kind": "send", "at_ms": at.as_millis() as u64, "label": label,
                        "event": event, "timeout_ms": timeout.map(|t| t.as_millis() as u64)}),
            Action::Disconnect { at } => {
                json!({"kind": "disconnect", "at_ms": at.as_millis() as u64})
            }
        })
        .collect();
    let want = expected(&records, tab, cutoff);
    let line = json!({
        "url": replay.url,
        "log_url": replay.url.replace("/chsk", "/replay-log"),
        "actions": acts,
        "expected": {"states": want.states, "recv": want.recv, "replies": want.replies},
        "expected_sent": expected_client_log(&records, &client_id, cutoff),
    });
    println!("{line}");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
