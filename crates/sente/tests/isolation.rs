//! One client's costly input costs that client only: while attackers send large messages that
//! are expensive to decode (the worst cases of the edn reader), a healthy client's
//! request/reply keeps working on the same 2 workers.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A ~1 MB edn message built to be costly: a set of two equal maps with their entries in
/// opposite orders (equal collections in different orders defeat naive equality checks).
fn costly(n: usize) -> String {
    let entries: Vec<String> = (0..n).map(|i| format!("{i} {i}")).collect();
    let rev: Vec<String> = entries.iter().rev().cloned().collect();
    format!(
        "[[:test/ignored #{{{{{}}} {{{}}}}}] nil]",
        entries.join(" "),
        rev.join(" ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_messages_do_not_stall_other_clients() {
    let h = start(transcript_builder()).await;
    let addr = h.addr;
    let msg = costly(40_000);
    assert!(msg.len() > 500_000, "{}", msg.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..3 {
        let (msg, stop) = (msg.clone(), stop.clone());
        attackers.push(tokio::spawn(async move {
            let mut ws = ws_connect(addr, &format!("client-id=a{i}&csrf-token=tok-123")).await;
            ws_text(&mut ws).await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The socket may be closed by the server: the attack just stops then.
                if futures::SinkExt::send(
                    &mut ws,
                    tokio_tungstenite::tungstenite::Message::text(msg.clone()),
                )
                .await
                .is_err()
                {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = ws_connect(addr, "client-id=healthy&csrf-token=tok-123").await;
    ws_text(&mut ws).await;
    let mut times = Vec::new();
    for n in 0..20 {
        let t = Instant::now();
        ws_send(&mut ws, &format!("[[:test/echo {n}] \"cb{n}\"]")).await;
        let reply = tokio::time::timeout(Duration::from_secs(10), ws_text(&mut ws))
            .await
            .expect("the healthy client is answered while the attack runs");
        assert_eq!(reply, format!("[{{:echo {n}}} \"cb{n}\"]"));
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    times.sort();
    println!(
        "healthy request/reply under attack: median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    for a in attackers {
        a.abort();
    }
}
