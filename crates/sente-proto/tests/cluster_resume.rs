//! Cross-node resume in the sans-IO core (cluster mode, `CoreConfig::cluster_resume`): pushes
//! numbered by the cluster's global sequence, sparse per uid; gap and epoch tracking; a
//! replay and the live batches never overlap; two cores fed the same sequence resume each
//! other's clients; the anonymous uid never resumes.

use sente_proto::server::replay::{Position, Resume};
use sente_proto::server::{Action, Core, CoreConfig, PushBatch, SeqCheck};
use sente_proto::{ClientId, Event, EventId, Uid, Value};
use std::sync::Arc;

type C = Core<u32, u32, &'static str>;

fn cluster_core() -> C {
    Core::new(CoreConfig::default().cluster_resume(true))
}

fn uid(s: &str) -> Uid {
    Uid::from(s)
}

fn cid(s: &str) -> ClientId {
    ClientId::new(s).unwrap()
}

fn ev(n: i64) -> Arc<Event> {
    Arc::new(Event::new(EventId::new("t/n").unwrap(), Value::Int(n)))
}

fn nums(b: &PushBatch) -> Vec<i64> {
    b.events()
        .iter()
        .map(|e| e.data().as_i64().unwrap())
        .collect()
}

/// `(conn, marker, numbers)` of every WebSocket delivery.
fn deliveries(actions: Vec<Action<u32, u32>>) -> Vec<(u32, Option<u64>, Vec<i64>)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::WsDeliver { conn, batch, seq } => Some((conn, seq, nums(&batch))),
            _ => None,
        })
        .collect()
}

const EPOCH: u64 = 0xabc;

/// Applies push `seq` (data = `seq`) to `u`, flushed, as the registry does.
fn push(c: &mut C, u: &str, seq: u64, now: u64) -> SeqCheck {
    let check = c.sequenced(EPOCH, seq);
    if check.apply() {
        let n = i64::try_from(seq).unwrap();
        c.send_many_seq(std::iter::once(&uid(u)), &ev(n), 10, true, now, Some(seq));
    }
    check
}

fn broadcast(c: &mut C, seq: u64, now: u64) {
    assert!(c.sequenced(EPOCH, seq).apply());
    let n = i64::try_from(seq).unwrap();
    c.broadcast_seq(&ev(n), 10, true, now, Some(seq));
}

fn open(c: &mut C, u: &str, client: &str, conn: u32, asked: &Resume, now: u64) -> (bool, u64) {
    let (_, info) = c
        .handle_ws_open_resume(&uid(u), &cid(client), conn, "ctx", asked, now)
        .unwrap();
    let info = info.expect("a resume answer");
    (info.recovered, info.position.seq)
}

fn at(seq: u64) -> Resume {
    Resume::From(Position {
        epoch: format!("{EPOCH:x}"),
        seq,
    })
}

#[test]
fn gaps_duplicates_and_epochs_are_tracked() {
    let mut c = cluster_core();
    assert_eq!(c.global_position(), None);
    assert_eq!(push(&mut c, "a", 5, 0), SeqCheck::Gap, "first message");
    assert_eq!(push(&mut c, "a", 6, 0), SeqCheck::Next);
    assert_eq!(push(&mut c, "a", 6, 0), SeqCheck::Duplicate);
    assert_eq!(push(&mut c, "a", 3, 0), SeqCheck::Duplicate);
    assert_eq!(push(&mut c, "b", 9, 0), SeqCheck::Gap, "7 and 8 missed");
    assert_eq!(c.global_position(), Some((EPOCH, 9)));
    // A new epoch starts over.
    assert_eq!(c.sequenced(EPOCH + 1, 1), SeqCheck::Gap);
    assert_eq!(c.global_position(), Some((EPOCH + 1, 1)));
    assert!(c.replay_log(&uid("a")).is_none(), "old logs dropped");
}

#[test]
fn sparse_numbers_replay_exactly_what_was_missed_without_overlap() {
    let mut c = cluster_core();
    push(&mut c, "other", 1, 0);
    let (recovered, pos) = open(&mut c, "u", "c1", 1, &Resume::New, 0);
    assert_eq!(
        (recovered, pos),
        (false, 1),
        "a new client stands at the node's position"
    );
    push(&mut c, "u", 2, 0);
    push(&mut c, "other", 3, 0);
    broadcast(&mut c, 4, 0);
    push(&mut c, "u", 5, 0);
    // Live: each batch carries its last global number.
    let live = deliveries(c.take_actions());
    assert_eq!(
        live,
        vec![
            (1, Some(2), vec![2]),
            (1, Some(4), vec![4]),
            (1, Some(5), vec![5])
        ]
    );
    // The client saw 2 and 4, then dropped; 5 was missed. Pushes go on meanwhile, one of
    // them buffered (not flushed) when the client comes back.
    c.sequenced(EPOCH, 6);
    c.send_many_seq(std::iter::once(&uid("u")), &ev(6), 10, false, 0, Some(6));
    let (recovered, pos) = open(&mut c, "u", "c1", 2, &at(4), 1);
    assert_eq!((recovered, pos), (true, 4));
    let got = deliveries(c.take_actions());
    // The buffer went to the old (closed-over) socket's uid first; the replay covers 5 and
    // 6, and nothing after it repeats them.
    let replay: Vec<_> = got.iter().filter(|(conn, _, _)| *conn == 2).collect();
    assert_eq!(replay, vec![&(2, Some(6), vec![5, 6])]);
    push(&mut c, "u", 7, 2);
    assert_eq!(deliveries(c.take_actions()), vec![(2, Some(7), vec![7])]);
}

#[test]
fn a_client_resumes_on_another_node_that_saw_the_same_sequence() {
    let (mut a, mut b) = (cluster_core(), cluster_core());
    for c in [&mut a, &mut b] {
        push(c, "z", 1, 0);
    }
    let (_, pos) = open(&mut a, "u", "c1", 1, &Resume::New, 0);
    assert_eq!(pos, 1);
    for seq in 2..=4 {
        for c in [&mut a, &mut b] {
            push(c, if seq == 3 { "z" } else { "u" }, seq, 0);
        }
    }
    a.take_actions();
    // The client got 2 (position 2) on node a, which dies; it resumes on node b.
    let (recovered, pos) = open(&mut b, "u", "c1", 7, &at(2), 5);
    assert_eq!((recovered, pos), (true, 2));
    assert_eq!(deliveries(b.take_actions()), vec![(7, Some(4), vec![4])]);
}

#[test]
fn a_node_that_started_after_the_position_refuses_it() {
    let mut late = cluster_core();
    // Its first message is 10: it never saw 9.
    push(&mut late, "u", 10, 0);
    let (recovered, pos) = open(&mut late, "u", "c1", 1, &at(8), 0);
    assert_eq!((recovered, pos), (false, 10));
    assert!(
        deliveries(late.take_actions()).is_empty(),
        "no partial replay"
    );
    // From 9 on it has everything.
    let (recovered, _) = open(&mut late, "u", "c2", 2, &at(9), 0);
    assert!(recovered);
    assert_eq!(
        deliveries(late.take_actions()),
        vec![(2, Some(10), vec![10])]
    );
}

#[test]
fn a_gap_or_an_unnumbered_push_refuses_older_positions() {
    let mut c = cluster_core();
    push(&mut c, "u", 1, 0);
    push(&mut c, "u", 2, 0);
    push(&mut c, "u", 5, 0); // 3 and 4 missed
    let (recovered, _) = open(&mut c, "u", "c1", 1, &at(2), 0);
    assert!(!recovered, "3 and 4 may have been for u");
    let (recovered, _) = open(&mut c, "u", "c2", 2, &at(4), 0);
    assert!(recovered);
    c.take_actions();
    // The engine unreachable: a push applied without a number.
    c.send_many_seq(std::iter::once(&uid("u")), &ev(100), 10, true, 0, None);
    let (recovered, _) = open(&mut c, "u", "c3", 3, &at(5), 0);
    assert!(!recovered, "the client may have missed the unnumbered push");
}

#[test]
fn a_log_pruned_past_the_position_refuses_it() {
    let cfg = CoreConfig::default()
        .cluster_resume(true)
        .replay(sente_proto::server::replay::ReplayConfig::default().max_events(2));
    let mut c: C = Core::new(cfg);
    for seq in 1..=4 {
        push(&mut c, "u", seq, 0);
    }
    assert!(!open(&mut c, "u", "c1", 1, &at(1), 0).0, "2 was dropped");
    assert!(open(&mut c, "u", "c2", 2, &at(2), 0).0);
}

#[test]
fn the_anonymous_uid_never_resumes() {
    for mut c in [cluster_core(), Core::new(CoreConfig::default())] {
        let nil = Uid::Nil;
        let _ = c.handle_ws_open(&nil, &cid("early"), 1, "ctx", 0).unwrap();
        c.sequenced(EPOCH, 1);
        c.send_many_seq(std::iter::once(&nil), &ev(1), 10, true, 0, Some(1));
        c.take_actions();
        // A late anonymous client forges a position before that push.
        for asked in [at(0), Resume::New] {
            let (_, info) = c
                .handle_ws_open_resume(&nil, &cid("late"), 2, "ctx", &asked, 0)
                .unwrap();
            assert_eq!(info, None, "no resume for the nil uid");
            assert!(deliveries(c.take_actions()).is_empty(), "nothing replayed");
        }
        assert!(c.replay_log(&nil).is_none());
    }
}

/// A resuming Ajax handshake with the cluster's mailboxes: what the client missed up to the
/// numbering read after its mailbox registration (`upto`) comes from this node's logs, as a
/// fill for the front of the mailbox (later pushes are in the mailbox); without that number,
/// or with this node behind it, only a kept mailbox is trusted, and a new one gets
/// `recovered: false`.
#[test]
fn an_ajax_handshake_fills_the_new_mailbox_from_the_logs() {
    let cfg = CoreConfig::default()
        .cluster_resume(true)
        .ajax_mailbox(true);
    let mut c: C = Core::new(cfg);
    push(&mut c, "u", 1, 0);
    broadcast(&mut c, 2, 0);
    push(&mut c, "other", 3, 0);
    push(&mut c, "u", 4, 0);
    push(&mut c, "u", 5, 0);
    let mut hs = |client: &str, asked: &Resume, kept: bool, upto: Option<u64>| {
        let upto = upto.map(|n| (EPOCH, n));
        c.handle_ajax_handshake_mailbox(&uid("u"), &cid(client), "ctx", asked, (kept, upto), 0)
            .unwrap()
    };
    // Numbered up to 4 when the mailbox existed: 2 (a broadcast) and 4 go in front; 5 is in
    // the mailbox.
    let r = hs("a", &at(1), false, Some(4));
    let filled: Vec<(i64, Option<(u64, u64)>)> = r
        .fill
        .iter()
        .map(|t| (t.event.data().as_i64().unwrap(), t.seq))
        .collect();
    assert_eq!(filled, [(2, Some((EPOCH, 2))), (4, Some((EPOCH, 4)))]);
    let info = r.info.clone().unwrap();
    assert!(info.recovered);
    assert_eq!(
        info.position.seq, 1,
        "resumed from the client's own position"
    );
    assert_eq!(r.unfilled.as_ref().map(|i| i.recovered), Some(false));
    assert_eq!(r.clone().answer(false), r.unfilled.clone());
    // Nothing missed before the mailbox: recovered with nothing to fill.
    let r = hs("b", &at(5), false, Some(5));
    assert!(r.fill.is_empty() && r.info.unwrap().recovered);
    // No number read, or this node behind it: a new mailbox is not trusted, a kept one is.
    for upto in [None, Some(9)] {
        let r = hs("c", &at(1), false, upto);
        assert!(r.fill.is_empty());
        let info = r.info.unwrap();
        assert!(!info.recovered);
        assert_eq!(info.position.seq, 5, "at the node's current position");
        let r = hs("d", &at(1), true, upto);
        assert!(r.fill.is_empty() && r.info.unwrap().recovered);
    }
    // A position of another epoch is never resumed.
    let other = Resume::From(Position {
        epoch: "ffff".to_owned(),
        seq: 1,
    });
    assert!(!hs("e", &other, true, Some(5)).info.unwrap().recovered);
}

/// A push to one client, numbered by the cluster, is logged by every node for that client
/// alone: the client resumes it on a node that never knew it; the uid's other clients do not.
#[test]
fn a_push_to_one_client_resumes_on_another_node() {
    let mut c: C = cluster_core();
    push(&mut c, "u", 1, 0);
    assert!(c.sequenced(EPOCH, 2).apply());
    assert!(!c.send_to_client_seq(&uid("u"), &cid("a"), &ev(2), 10, 0, Some(2)));
    push(&mut c, "u", 3, 0);
    // What client `client` gets resuming from 1 (recovered).
    let mut replayed = |client: &str, conn: u32| -> Vec<i64> {
        let (recovered, _) = open(&mut c, "u", client, conn, &at(1), 0);
        assert!(recovered, "{client}");
        deliveries(c.take_actions())
            .into_iter()
            .flat_map(|(_, _, n)| n)
            .collect()
    };
    assert_eq!(replayed("a", 1), [2, 3], "its own push in its place");
    assert_eq!(replayed("b", 2), [3], "not another client's");
}
