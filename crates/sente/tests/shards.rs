//! The registry split into many shards (`Builder::core_shards`): clients of many uids, spread
//! over 8 shards, get every push in order; broadcasts from several threads at once reach every
//! client in one and the same order; presence (connected uids) follows connections of every
//! shard; a shutdown lets go of the clients of every shard.

mod common;

use common::*;
use sente::Uid;
use sente_proto::Value;
use std::collections::HashSet;
use std::time::Duration;

const CLIENTS: usize = 40;

fn builder() -> sente::Builder {
    transcript_builder()
        .core_shards(8)
        .allow_reconnect_before_close_ws(Duration::from_millis(50))
}

/// The numbers of the events of a pushed batch frame `[[[:t/n 1] ...] nil]`, with their ids.
fn batch(text: &str) -> Vec<(String, i64)> {
    let v = read(text);
    v.as_seq().unwrap()[0]
        .as_seq()
        .unwrap()
        .iter()
        .map(|e| {
            let e = e.as_seq().unwrap();
            (e[0].to_string(), e[1].as_i64().unwrap())
        })
        .collect()
}

async fn open_all(h: &Harness) -> Vec<Ws> {
    let mut out = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = ws_connect(
            h.addr,
            &format!("uid=u{i}&client-id=c{i}&csrf-token={TOKEN}"),
        )
        .await;
        let hs = ws_text(&mut ws).await;
        assert!(hs.starts_with("[[:chsk/handshake "), "{hs}");
        out.push(ws);
    }
    out
}

async fn wait_connected(h: &Harness, n: usize) -> HashSet<Uid> {
    let mut rx = h.server.connected_uids();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let any = rx.borrow_and_update().any.clone();
            if any.len() == n {
                return any;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    got.unwrap_or_else(|_| panic!("connected uids never reached {n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_of_every_shard_gets_its_pushes_and_the_broadcasts_in_one_order() {
    let h = start(builder()).await;
    let mut socks = open_all(&h).await;
    let uids = wait_connected(&h, CLIENTS).await;
    assert_eq!(uids.len(), CLIENTS);

    // 4 threads broadcast 50 events each at once; meanwhile each uid gets 20 events of its own.
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let server = h.server.clone();
            std::thread::spawn(move || {
                for k in 0..50i64 {
                    server
                        .broadcast(ev("b/n", Value::Int(t * 1000 + k)))
                        .unwrap();
                }
            })
        })
        .collect();
    for k in 0..20i64 {
        for i in 0..CLIENTS {
            h.server
                .send(&Uid::from(format!("u{i}")), ev("own/n", Value::Int(k)))
                .unwrap();
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut orders = Vec::new();
    for ws in &mut socks {
        let mut got = Vec::new();
        while got.len() < 220 {
            got.extend(batch(&ws_text(ws).await));
        }
        assert_eq!(got.len(), 220, "{got:?}");
        let own: Vec<i64> = got
            .iter()
            .filter(|(id, _)| id == ":own/n")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(own, (0..20).collect::<Vec<_>>());
        let bcast: Vec<i64> = got
            .iter()
            .filter(|(id, _)| id == ":b/n")
            .map(|(_, n)| *n)
            .collect();
        // Each thread's broadcasts in its order.
        for t in 0..4 {
            let mine: Vec<i64> = bcast.iter().copied().filter(|n| n / 1000 == t).collect();
            assert_eq!(mine, (0..50).map(|k| t * 1000 + k).collect::<Vec<_>>());
        }
        orders.push(bcast);
    }
    // One order of the broadcasts for every client, whatever its shard.
    for o in &orders[1..] {
        assert_eq!(o, &orders[0]);
    }

    // Presence follows the closes of every shard.
    for ws in socks.drain(CLIENTS / 2..) {
        drop(ws);
    }
    let left = wait_connected(&h, CLIENTS / 2).await;
    let expected: HashSet<Uid> = (0..CLIENTS / 2)
        .map(|i| Uid::from(format!("u{i}")))
        .collect();
    assert_eq!(left, expected);

    // A shutdown closes the clients of every shard.
    h.server.shutdown().await;
    for ws in &mut socks {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(m) = futures_util::StreamExt::next(ws).await {
                if m.is_err() || m.unwrap().is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a client was not closed by the shutdown");
    }
}
