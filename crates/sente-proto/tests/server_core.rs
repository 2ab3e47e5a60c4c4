//! The server core in virtual time: batching windows, fan-out, presence with grace periods,
//! uidport events, the Ajax poll hold, queues between polls and reconnects, limits.
#![allow(clippy::too_many_lines)]

use sente_proto::server::{
    Action, ConnectError, Core, CoreConfig, CoreEvent, PollAnswer, PushBatch, ServerLimits,
    Transport,
};
use sente_proto::{ClientId, Event, EventId, Uid, Value};
use std::sync::Arc;

type C = Core<u32, u32, &'static str>;

fn core() -> C {
    Core::new(CoreConfig::default())
}

fn uid(s: &str) -> Uid {
    Uid::from(s)
}

fn cid(s: &str) -> ClientId {
    ClientId::new(s).unwrap()
}

fn ev(n: i64) -> Arc<Event> {
    Arc::new(Event::new(EventId::new("my-app/a").unwrap(), Value::Int(n)))
}

fn pr(uid: &Uid) -> String {
    sente_proto::edn::to_edn_string(&uid.to_value())
        .trim_matches('"')
        .to_owned()
}

fn nums(b: &PushBatch) -> Vec<i64> {
    b.events()
        .iter()
        .map(|e| e.data().as_i64().unwrap())
        .collect()
}

/// `(conn, event numbers)` of every WebSocket delivery.
fn ws_deliveries(actions: Vec<Action<u32, u32>>) -> Vec<(u32, Vec<i64>)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::WsDeliver { conn, batch, .. } => Some((conn, nums(&batch))),
            _ => None,
        })
        .collect()
}

fn uidport(events: &[CoreEvent<&'static str>]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::UidportOpen { uid, .. } => Some(format!("open {}", pr(uid))),
            CoreEvent::UidportClose { uid, .. } => Some(format!("close {}", pr(uid))),
            _ => None,
        })
        .collect()
}

#[test]
fn ws_pushes_within_the_window_form_one_batch() {
    let mut c = core();
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.take_actions();
    for n in 1..=3 {
        c.send(&uid("u1"), &ev(n), 10, false, 5 + n as u64);
    }
    c.poll(35);
    assert!(c.take_actions().is_empty(), "window not over yet");
    assert_eq!(c.next_deadline(), Some(36));
    c.poll(36);
    assert_eq!(ws_deliveries(c.take_actions()), vec![(1, vec![1, 2, 3])]);
}

#[test]
fn flush_sends_the_buffer_at_once_and_order_is_kept_across_batches() {
    let mut c = core();
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.take_actions();
    c.send(&uid("u1"), &ev(1), 10, false, 100);
    c.send(&uid("u1"), &ev(2), 10, true, 101);
    c.send(&uid("u1"), &ev(3), 10, false, 102);
    c.poll(200);
    assert_eq!(
        ws_deliveries(c.take_actions()),
        vec![(1, vec![1, 2]), (1, vec![3])]
    );
}

#[test]
fn every_client_of_the_uid_gets_the_same_batch() {
    let mut c = core();
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.handle_ws_open(&uid("u1"), &cid("b"), 2, "req", 0)
        .unwrap();
    c.handle_ws_open(&uid("u2"), &cid("c"), 3, "req", 0)
        .unwrap();
    c.take_actions();
    c.send(&uid("u1"), &ev(1), 10, true, 10);
    let batches: Vec<_> = c
        .take_actions()
        .into_iter()
        .map(|a| match a {
            Action::WsDeliver { conn, batch, .. } => (conn, batch),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(batches.len(), 2);
    assert!(
        Arc::ptr_eq(&batches[0].1, &batches[1].1),
        "packed once, shared"
    );
    let mut conns: Vec<u32> = batches.iter().map(|b| b.0).collect();
    conns.sort_unstable();
    assert_eq!(conns, vec![1, 2]);
}

#[test]
fn a_broadcast_flushed_in_one_round_shares_one_batch_across_uids() {
    let mut c = core();
    for i in 0..10u32 {
        c.handle_ws_open(&uid(&format!("u{i}")), &cid(&format!("c{i}")), i, "req", 0)
            .unwrap();
    }
    c.take_actions();
    let e = ev(7);
    for i in 0..10 {
        c.send(&uid(&format!("u{i}")), &e, 10, false, 1);
    }
    c.poll(31);
    let batches: Vec<Arc<PushBatch>> = c
        .take_actions()
        .into_iter()
        .map(|a| match a {
            Action::WsDeliver { batch, .. } => batch,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| Arc::ptr_eq(b, &batches[0])));
}

#[test]
fn batch_length_bound_flushes_early() {
    let mut cfg = CoreConfig::default();
    cfg.limits.message.max_batch_len = 2;
    let mut c: C = Core::new(cfg);
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.take_actions();
    for n in 1..=5 {
        c.send(&uid("u1"), &ev(n), 10, false, 0);
    }
    c.poll(30);
    assert_eq!(
        ws_deliveries(c.take_actions()),
        vec![(1, vec![1, 2]), (1, vec![3, 4]), (1, vec![5])]
    );
}

#[test]
fn batch_size_bound_flushes_early() {
    let mut c = core();
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.take_actions();
    let half = (1 << 20) / 2;
    c.send(&uid("u1"), &ev(1), half - 10, false, 0);
    c.send(&uid("u1"), &ev(2), 100, false, 0);
    assert_eq!(ws_deliveries(c.take_actions()), vec![(1, vec![1])]);
    c.poll(30);
    assert_eq!(ws_deliveries(c.take_actions()), vec![(1, vec![2])]);
}

#[test]
fn ws_presence_grace_period_and_uidport_events() {
    let mut c = core();
    let u = uid("u1");
    let conn = c.handle_ws_open(&u, &cid("a"), 1, "req-a", 0).unwrap();
    let evs = c.take_events();
    assert_eq!(uidport(&evs), vec!["open u1"]);
    assert!(evs.contains(&CoreEvent::Presence {
        uid: u.clone(),
        ws: true,
        ajax: false
    }));
    // A second tab: no event.
    let conn_b = c.handle_ws_open(&u, &cid("b"), 2, "req-b", 10).unwrap();
    assert!(c.take_events().is_empty());
    // Closing one tab: still connected.
    c.handle_ws_closed(&u, &cid("b"), conn_b, 100);
    c.poll(100 + 2_500);
    assert!(uidport(&c.take_events()).is_empty());
    // Closing the last tab: uidport-close exactly after the grace period.
    c.handle_ws_closed(&u, &cid("a"), conn, 5_000);
    c.poll(7_499);
    assert!(c.take_events().is_empty());
    assert_eq!(
        c.connected().count(),
        1,
        "still connected during the grace period"
    );
    c.poll(7_500);
    let evs = c.take_events();
    assert_eq!(uidport(&evs), vec!["close u1"]);
    assert!(matches!(
        &evs[..],
        [
            CoreEvent::Presence {
                ws: false,
                ajax: false,
                ..
            },
            CoreEvent::UidportClose { ctx: "req-a", .. }
        ]
    ));
    assert_eq!(c.connected().count(), 0);
    assert_eq!(c.client_count(&u), 0);
}

#[test]
fn ws_reconnect_within_grace_gets_the_pushes_made_meanwhile_in_order() {
    let mut c = core();
    let u = uid("u1");
    let conn = c.handle_ws_open(&u, &cid("a"), 1, "req", 0).unwrap();
    c.take_events();
    c.handle_ws_closed(&u, &cid("a"), conn, 100);
    c.send(&u, &ev(1), 10, true, 200);
    c.send(&u, &ev(2), 10, true, 300);
    assert!(ws_deliveries(c.take_actions()).is_empty());
    c.handle_ws_open(&u, &cid("a"), 9, "req", 2_000).unwrap();
    assert_eq!(
        ws_deliveries(c.take_actions()),
        vec![(9, vec![1]), (9, vec![2])]
    );
    c.poll(10_000);
    assert!(
        uidport(&c.take_events()).is_empty(),
        "no close/open pair for a reload"
    );
    // A stale close of the old socket is ignored.
    c.handle_ws_closed(&u, &cid("a"), conn, 10_001);
    c.poll(20_000);
    assert_eq!(c.connected().count(), 1);
}

#[test]
fn ws_same_client_id_replaces_and_closes_the_old_socket() {
    let mut c = core();
    c.handle_ws_open(&uid("u1"), &cid("a"), 1, "req", 0)
        .unwrap();
    c.handle_ws_open(&uid("u1"), &cid("a"), 2, "req", 5)
        .unwrap();
    let a = c.take_actions();
    assert!(matches!(&a[..], [Action::WsClose { conn: 1, .. }]));
    c.send(&uid("u1"), &ev(1), 10, true, 10);
    assert_eq!(ws_deliveries(c.take_actions()), vec![(2, vec![1])]);
}

fn ajax_answers(actions: Vec<Action<u32, u32>>) -> Vec<(u32, String)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::AjaxAnswer {
                responder, answer, ..
            } => Some((
                responder,
                match answer {
                    PollAnswer::Batch(b) => format!("{:?}", nums(&b)),
                    PollAnswer::Numbered(b, n) => format!("#{n} {:?}", nums(&b)),
                    PollAnswer::Timeout => "timeout".into(),
                    PollAnswer::Closed => "closed".into(),
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn ajax_handshake_poll_hold_flush_timeout_and_grace() {
    let mut c = core();
    let (u, a) = (Uid::Nil, cid("a"));
    assert!(!c.ajax_knows(&u, &a));
    c.handle_ajax_handshake(&u, &a, "hs", 0).unwrap();
    assert!(c.ajax_knows(&u, &a));
    assert!(
        c.take_events().is_empty(),
        "a handshake alone does not connect"
    );
    // First long-poll: connected.
    c.handle_ajax_poll(&u, &a, 1, "poll", 10).unwrap();
    assert_eq!(uidport(&c.take_events()), vec!["open :sente/nil-uid"]);
    // Pushes are held for 100 ms, then answer the poll.
    c.send(&u, &ev(1), 10, false, 20);
    c.send(&u, &ev(2), 10, false, 30);
    c.poll(119);
    assert!(c.take_actions().is_empty());
    c.poll(120);
    assert_eq!(ajax_answers(c.take_actions()), vec![(1, "[1, 2]".into())]);
    // The client polls again; nothing comes: timeout after lp_timeout_ms.
    c.handle_ajax_poll(&u, &a, 2, "poll", 130).unwrap();
    c.poll(20_129);
    assert!(c.take_actions().is_empty());
    c.poll(20_130);
    assert_eq!(ajax_answers(c.take_actions()), vec![(2, "timeout".into())]);
    // It does not poll again: gone after the 5 s grace.
    c.poll(25_129);
    assert!(c.take_events().is_empty());
    c.poll(25_130);
    assert_eq!(uidport(&c.take_events()), vec!["close :sente/nil-uid"]);
    assert!(!c.ajax_knows(&u, &a));
}

#[test]
fn ajax_pushes_between_polls_wait_for_the_next_poll() {
    let mut c = core();
    let (u, a) = (uid("u"), cid("a"));
    c.handle_ajax_handshake(&u, &a, "hs", 0).unwrap();
    c.handle_ajax_poll(&u, &a, 1, "poll", 0).unwrap();
    c.send(&u, &ev(1), 10, true, 10);
    assert_eq!(ajax_answers(c.take_actions()), vec![(1, "[1]".into())]);
    c.send(&u, &ev(2), 10, true, 11);
    c.send(&u, &ev(3), 10, true, 12);
    assert!(c.take_actions().is_empty());
    // Everything that waited goes in the next poll's answer, in order.
    c.handle_ajax_poll(&u, &a, 2, "poll", 20).unwrap();
    assert_eq!(ajax_answers(c.take_actions()), vec![(2, "[2, 3]".into())]);
    c.handle_ajax_poll(&u, &a, 3, "poll", 21).unwrap();
    assert!(c.take_actions().is_empty(), "held");
}

#[test]
fn one_poll_answer_carries_at_most_max_batch_len_waiting_events() {
    let mut cfg = CoreConfig::default();
    cfg.limits.message.max_batch_len = 3;
    let mut c: C = Core::new(cfg);
    let (u, a) = (uid("u"), cid("a"));
    c.handle_ajax_handshake(&u, &a, "hs", 0).unwrap();
    c.handle_ajax_poll(&u, &a, 1, "poll", 0).unwrap();
    c.send(&u, &ev(0), 10, true, 1);
    c.take_actions();
    for n in 1..=5 {
        c.send(&u, &ev(n), 10, true, 10);
    }
    c.handle_ajax_poll(&u, &a, 2, "poll", 20).unwrap();
    assert_eq!(
        ajax_answers(c.take_actions()),
        vec![(2, "[1, 2, 3]".into())]
    );
    c.handle_ajax_poll(&u, &a, 3, "poll", 21).unwrap();
    assert_eq!(ajax_answers(c.take_actions()), vec![(3, "[4, 5]".into())]);
}

#[test]
fn ajax_undeliverable_answer_goes_back_to_the_queue() {
    let mut c = core();
    let (u, a) = (uid("u"), cid("a"));
    let conn = c.handle_ajax_poll(&u, &a, 1, "poll", 0).unwrap();
    c.send(&u, &ev(1), 10, true, 10);
    let Some(Action::AjaxAnswer { answer, .. }) = c.take_actions().pop() else {
        panic!()
    };
    c.handle_poll_undeliverable(&u, &a, conn, answer, 11);
    c.handle_ajax_poll(&u, &a, 2, "poll", 20).unwrap();
    assert_eq!(ajax_answers(c.take_actions()), vec![(2, "[1]".into())]);
}

#[test]
fn ajax_a_newer_poll_supersedes_the_held_one() {
    let mut c = core();
    let (u, a) = (uid("u"), cid("a"));
    for i in 1..=1000 {
        c.handle_ajax_poll(&u, &a, i, "poll", u64::from(i)).unwrap();
    }
    let answers = ajax_answers(c.take_actions());
    assert_eq!(answers.len(), 999);
    assert!(answers.iter().all(|(_, a)| a == "timeout"));
    c.send(&u, &ev(1), 10, true, 2000);
    assert_eq!(ajax_answers(c.take_actions()), vec![(1000, "[1]".into())]);
}

/// A client polling hundreds of times a second adds no timer per poll: its entry keeps one
/// deadline, checked by a timer added about once per grace period. Its held poll still times
/// out after `lp_timeout_ms`, and it is still gone `ms_allow_reconnect_before_close_ajax`
/// after its last answer.
#[test]
fn a_client_polling_fast_keeps_few_timers_and_still_times_out_and_leaves() {
    let mut c = core();
    let (u, a) = (uid("u"), cid("a"));
    c.handle_ajax_handshake(&u, &a, "hs", 0).unwrap();
    // 10 000 polls, each answered by a push, 2 ms apart: 20 s of a busy client.
    for i in 0..10_000u32 {
        let now = u64::from(i) * 2;
        c.poll(now);
        c.handle_ajax_poll(&u, &a, i, "poll", now).unwrap();
        c.send(&u, &ev(i64::from(i)), 10, true, now + 1);
        assert_eq!(ajax_answers(c.take_actions()), vec![(i, format!("[{i}]"))]);
        assert!(c.pending_timers() <= 4, "{} timers", c.pending_timers());
    }
    c.take_events();
    let at = 20_000;
    c.handle_ajax_poll(&u, &a, 10_000, "poll", at).unwrap();
    c.poll(at + 19_999);
    assert!(c.take_actions().is_empty(), "held for lp_timeout_ms");
    c.poll(at + 20_000);
    assert_eq!(
        ajax_answers(c.take_actions()),
        vec![(10_000, "timeout".into())]
    );
    c.poll(at + 24_999);
    assert!(c.take_events().is_empty(), "within its grace period");
    c.poll(at + 25_000);
    assert_eq!(uidport(&c.take_events()), vec!["close u"]);
    assert!(!c.ajax_knows(&u, &a));
}

#[test]
fn ajax_aborted_poll_starts_the_grace_period() {
    let mut c = core();
    let (u, a) = (uid("u"), cid("a"));
    let conn = c.handle_ajax_poll(&u, &a, 1, "poll", 0).unwrap();
    c.take_events();
    c.handle_poll_ended(&u, &a, conn, 1_000);
    c.poll(5_999);
    assert!(c.take_events().is_empty());
    c.poll(6_000);
    assert_eq!(uidport(&c.take_events()), vec!["close u"]);
}

#[test]
fn close_uid_closes_every_connection_after_flushing() {
    let mut c = core();
    let u = uid("u");
    c.handle_ws_open(&u, &cid("a"), 1, "req", 0).unwrap();
    c.handle_ajax_poll(&u, &cid("b"), 7, "poll", 0).unwrap();
    c.take_actions();
    c.send(&u, &ev(1), 10, false, 1);
    c.close_uid(&u, 2);
    let actions = c.take_actions();
    let kinds: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::WsDeliver { conn, .. } => format!("deliver {conn}"),
            Action::WsClose { conn, .. } => format!("close {conn}"),
            Action::AjaxAnswer {
                responder, answer, ..
            } => format!("answer {responder} {answer:?}")
                .chars()
                .take(15)
                .collect(),
            Action::AjaxWake { conn, .. } => format!("wake {conn:?}"),
        })
        .collect();
    assert_eq!(kinds, vec!["deliver 1", "answer 7 Batch(", "close 1"]);
}

#[test]
fn release_uid_answers_a_held_poll_empty_where_close_uid_answers_closed() {
    for (release, want) in [(true, "Timeout"), (false, "Closed")] {
        let mut c = core();
        let u = uid("u");
        c.handle_ws_open(&u, &cid("a"), 1, "req", 0).unwrap();
        c.handle_ajax_poll(&u, &cid("b"), 7, "poll", 0).unwrap();
        c.take_actions();
        if release {
            c.release_uid(&u, 2);
        } else {
            c.close_uid(&u, 2);
        }
        let actions = c.take_actions();
        assert!(
            matches!(actions.first(), Some(Action::WsClose { conn: 1, .. })),
            "{actions:?}"
        );
        assert!(
            matches!(
                actions.get(1),
                Some(Action::AjaxAnswer { responder: 7, answer, .. }) if format!("{answer:?}") == want
            ),
            "release {release}: {actions:?}"
        );
    }
}

#[test]
fn connected_uids_has_ws_and_ajax_membership() {
    let mut c = core();
    c.handle_ws_open(&uid("w"), &cid("a"), 1, "req", 0).unwrap();
    c.handle_ajax_poll(&uid("x"), &cid("b"), 1, "req", 0)
        .unwrap();
    c.handle_ajax_handshake(&uid("y"), &cid("c"), "req", 0)
        .unwrap();
    let mut got: Vec<(String, bool, bool)> = c
        .connected()
        .map(|(u, w, a)| (u.to_string(), w, a))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("w".into(), true, false), ("x".into(), false, true)]
    );
}

#[test]
fn connection_limits() {
    let cfg = CoreConfig::default().limits(
        ServerLimits::default()
            .max_connections_per_uid(2)
            .max_anonymous_connections(3),
    );
    let mut c: C = Core::new(cfg);
    c.handle_ws_open(&uid("u"), &cid("a"), 1, "req", 0).unwrap();
    c.handle_ajax_poll(&uid("u"), &cid("b"), 1, "req", 0)
        .unwrap();
    assert_eq!(
        c.handle_ws_open(&uid("u"), &cid("c"), 3, "req", 0),
        Err(ConnectError::TooManyConnections { limit: 2 })
    );
    // The same client reconnecting is fine.
    c.handle_ws_open(&uid("u"), &cid("a"), 4, "req", 0).unwrap();
    for i in 0..3 {
        c.handle_ws_open(&Uid::Nil, &cid(&format!("n{i}")), 10, "req", 0)
            .unwrap();
    }
    assert!(
        c.handle_ajax_handshake(&Uid::Nil, &cid("n9"), "req", 0)
            .is_err()
    );
}

#[test]
fn a_client_with_too_many_waiting_pushes_is_dropped() {
    let mut cfg = CoreConfig::default();
    cfg.limits.max_pending_events_per_client = 3;
    let mut c: C = Core::new(cfg);
    let (u, a) = (uid("u"), cid("a"));
    let conn = c.handle_ws_open(&u, &a, 1, "req", 0).unwrap();
    c.handle_ws_open(&u, &cid("b"), 2, "req", 0).unwrap();
    c.handle_ws_closed(&u, &a, conn, 1);
    c.take_events();
    for n in 0..4 {
        c.send(&u, &ev(n), 10, true, 2);
    }
    let evs = c.take_events();
    assert!(evs.iter().any(|e| matches!(
        e,
        CoreEvent::ClientDropped {
            transport: Transport::Ws,
            ..
        }
    )));
    assert_eq!(c.client_count(&u), 1, "the other client is unaffected");
    assert_eq!(ws_deliveries(c.take_actions()).len(), 4);
}

#[test]
fn pushes_to_a_uid_without_clients_are_dropped() {
    let mut c = core();
    c.send(&uid("nobody"), &ev(1), 10, true, 0);
    c.poll(1000);
    assert!(c.take_actions().is_empty());
    assert_eq!(c.next_deadline(), None);
}

/// Mailbox mode with the cluster's numbers: a poll naming a position of the cluster's epoch
/// gets a numbered answer without what the position says it has (a batch re-sent after a
/// node died, pushes a WebSocket delivered) nor any overlap within the take; a take left empty
/// by that holds the poll again. A plain client, an unnumbered entry or another epoch's
/// position get the plain batch of everything taken.
#[test]
fn mailbox_answers_are_numbered_from_the_polls_position() {
    use sente_proto::backplane::Taken;
    use sente_proto::server::WakeDone;
    use sente_proto::server::replay::Resume;
    let mut c: C = Core::new(CoreConfig::default().ajax_mailbox(true));
    let (u, b) = (uid("u"), cid("b"));
    let taken = |ns: &[(i64, Option<u64>)]| -> Vec<Taken> {
        ns.iter()
            .map(|(n, seq)| Taken {
                event: ev(*n),
                seq: seq.map(|s| (0xab, s)),
            })
            .collect()
    };
    let answer = |c: &mut C, at: &str, r: u32, t: Vec<Taken>| {
        let asked = Resume::parse(Some(at));
        let conn = c
            .handle_ajax_poll_resume(&u, &b, r, "poll", &asked, 0)
            .unwrap();
        c.take_actions();
        let responder = c.take_poll_for_wake(&u, &b, conn).expect("held");
        assert!(matches!(
            c.wake_done_taken(&u, &b, conn, responder, t, 1),
            WakeDone::Done
        ));
        let acts = c.take_actions();
        match acts.as_slice() {
            [] => None,
            [Action::AjaxAnswer { answer, .. }] => Some(match answer {
                PollAnswer::Numbered(b, n) => (nums(b), Some(*n)),
                PollAnswer::Batch(b) => (nums(b), None),
                other => panic!("{other:?}"),
            }),
            other => panic!("{other:?}"),
        }
    };
    let entries = [
        (4, Some(4)),
        (5, Some(5)),
        (7, Some(7)),
        (6, Some(6)),
        (9, Some(9)),
    ];
    assert_eq!(
        answer(&mut c, "ab:5", 1, taken(&entries)),
        Some((vec![7, 9], Some(9))),
        "what the position has, and the overlap, are left out"
    );
    assert_eq!(
        answer(&mut c, "ab:9", 2, taken(&entries)),
        None,
        "everything taken is had already: held again"
    );
    assert_eq!(
        answer(&mut c, "ff:5", 3, taken(&entries[..2])),
        Some((vec![4, 5], None)),
        "another epoch: the plain batch"
    );
    assert_eq!(
        answer(&mut c, "ab:4", 4, taken(&[(5, Some(5)), (6, None)])),
        Some((vec![5, 6], None)),
        "an unnumbered entry: a plain batch"
    );
    // A plain client (no `resume` parameter).
    let conn = c.handle_ajax_poll(&u, &b, 5, "poll", 2).unwrap();
    c.take_actions();
    let r = c.take_poll_for_wake(&u, &b, conn).unwrap();
    c.wake_done_taken(&u, &b, conn, r, taken(&entries[..2]), 3);
    let acts = c.take_actions();
    assert!(
        matches!(acts.as_slice(), [Action::AjaxAnswer { answer: PollAnswer::Batch(b), .. }] if nums(b) == vec![4, 5]),
        "{acts:?}"
    );
}

/// Mailbox mode (a cluster backplane): a flush wakes the held poll instead of answering it;
/// the poll is taken for the wake, a flush meanwhile asks for another take, an empty mailbox
/// holds the poll again, a batch answers it, and a poll timeout during a wake answers it
/// `[:chsk/timeout nil]` once the wake is done.
#[test]
fn mailbox_mode_wakes_held_polls() {
    use sente_proto::server::WakeDone;
    let mut c: C = Core::new(CoreConfig::default().ajax_mailbox(true));
    let (u, b) = (uid("u"), cid("b"));
    let conn = c.handle_ajax_poll(&u, &b, 7, "poll", 0).unwrap();
    assert!(c.take_actions().is_empty(), "held: nothing queued here");
    c.send(&u, &ev(1), 10, true, 1);
    let acts = c.take_actions();
    assert!(
        matches!(acts.as_slice(), [Action::AjaxWake { conn: k, .. }] if *k == conn),
        "{acts:?}"
    );
    let r = c.take_poll_for_wake(&u, &b, conn).expect("the held poll");
    assert_eq!(r, 7);
    // A flush while the mailbox is read: the wake takes again.
    c.send(&u, &ev(2), 10, true, 2);
    assert!(c.take_actions().is_empty());
    assert!(c.take_poll_for_wake(&u, &b, conn).is_none());
    let again = c.wake_done(&u, &b, conn, r, None, 3);
    let WakeDone::Again(r) = again else {
        panic!("{again:?}")
    };
    // Nothing either time: held again.
    assert!(matches!(
        c.wake_done(&u, &b, conn, r, None, 4),
        WakeDone::Done
    ));
    assert!(c.take_actions().is_empty());
    // A batch answers it.
    let r = c.take_poll_for_wake(&u, &b, conn).unwrap();
    let batch = Arc::new(PushBatch::new(vec![ev(1), ev(2)]));
    assert!(matches!(
        c.wake_done(&u, &b, conn, r, Some(batch), 5),
        WakeDone::Done
    ));
    let acts = c.take_actions();
    assert!(
        matches!(acts.as_slice(), [Action::AjaxAnswer { responder: 7, answer: PollAnswer::Batch(b), .. }] if nums(b) == vec![1, 2])
    );
    // Timeout during a wake.
    let conn = c.handle_ajax_poll(&u, &b, 8, "poll", 10).unwrap();
    let r = c.take_poll_for_wake(&u, &b, conn).unwrap();
    c.poll(10 + CoreConfig::default().lp_timeout_ms);
    assert!(c.take_actions().is_empty());
    assert!(matches!(
        c.wake_done(&u, &b, conn, r, None, 20_011),
        WakeDone::Done
    ));
    let acts = c.take_actions();
    assert!(matches!(
        acts.as_slice(),
        [Action::AjaxAnswer {
            responder: 8,
            answer: PollAnswer::Timeout,
            ..
        }]
    ));
    // A newer poll supersedes a poll being woken: what was taken goes back.
    let conn = c.handle_ajax_poll(&u, &b, 9, "poll", 30_000).unwrap();
    let r = c.take_poll_for_wake(&u, &b, conn).unwrap();
    let newer = c.handle_ajax_poll(&u, &b, 10, "poll", 30_001).unwrap();
    let batch = Arc::new(PushBatch::new(vec![ev(3)]));
    assert!(matches!(
        c.wake_done(&u, &b, conn, r, Some(batch), 30_002),
        WakeDone::PutBack(_)
    ));
    assert_ne!(conn, newer);
    // close_uid during a wake: the poll ends 410 once the wake is done, what was taken goes
    // back.
    let r = c.take_poll_for_wake(&u, &b, newer).unwrap();
    c.take_actions();
    c.close_uid(&u, 30_003);
    assert!(c.take_actions().is_empty());
    let batch = Arc::new(PushBatch::new(vec![ev(4)]));
    assert!(matches!(
        c.wake_done(&u, &b, newer, r, Some(batch), 30_004),
        WakeDone::PutBack(_)
    ));
    let acts = c.take_actions();
    assert!(matches!(
        acts.as_slice(),
        [Action::AjaxAnswer {
            responder: 10,
            answer: PollAnswer::Closed,
            ..
        }]
    ));
}

/// Resume over Ajax: a resuming client's answers are numbered (`#n` is the marker's number);
/// one that comes back after its grace period with its position gets exactly what it
/// missed, numbered, before the live pushes; one that comes back within it (its entry is
/// known) gets its numbered waiting batches replaced by the replay from its position, and the
/// poll still held for it ends empty; a position the log no longer covers is not recovered.
#[test]
fn ajax_resume_numbers_answers_and_replays_what_was_missed() {
    use sente_proto::server::replay::{Position, ReplayConfig, Resume};
    let mut c: C = Core::new(CoreConfig::default().replay(ReplayConfig::default().max_events(8)));
    let (u, a) = (uid("u"), cid("a"));
    let info = c
        .handle_ajax_handshake_resume(&u, &a, "hs", &Resume::New, 0)
        .unwrap()
        .unwrap();
    assert!(!info.recovered);
    assert_eq!(info.position.seq, 0);
    let epoch = info.position.epoch.clone();
    let at = |seq| {
        Resume::From(Position {
            epoch: epoch.clone(),
            seq,
        })
    };
    c.handle_ajax_poll(&u, &a, 1, "poll", 1).unwrap();
    c.send(&u, &ev(1), 10, true, 2);
    assert_eq!(ajax_answers(c.take_actions()), vec![(1, "#1 [1]".into())]);
    // Between polls: waiting batches merge into one numbered answer.
    c.send(&u, &ev(2), 10, true, 3);
    c.send(&u, &ev(3), 10, true, 4);
    c.handle_ajax_poll(&u, &a, 2, "poll", 5).unwrap();
    assert_eq!(
        ajax_answers(c.take_actions()),
        vec![(2, "#3 [2, 3]".into())]
    );

    // Held poll 3 takes push 4, but the answer never reaches the client (its position stays
    // 3); it comes back within the grace period: poll 3 is not the one to answer any more.
    c.handle_ajax_poll(&u, &a, 3, "poll", 6).unwrap();
    c.send(&u, &ev(4), 10, true, 7);
    c.take_actions();
    c.handle_ajax_poll(&u, &a, 4, "poll", 8).unwrap();
    c.send(&u, &ev(5), 10, false, 9);
    let got = c
        .handle_ajax_handshake_resume(&u, &a, "hs", &at(3), 10)
        .unwrap()
        .unwrap();
    assert!(got.recovered);
    assert_eq!(got.position.seq, 3);
    assert_eq!(ajax_answers(c.take_actions()), vec![(4, "timeout".into())]);
    c.send(&u, &ev(6), 10, true, 11);
    c.handle_ajax_poll(&u, &a, 5, "poll", 12).unwrap();
    assert_eq!(
        ajax_answers(c.take_actions()),
        vec![(5, "#6 [4, 5, 6]".into())]
    );

    // Gone past its grace period; pushes meanwhile wait in the log only.
    c.poll(20_000);
    assert!(!c.ajax_knows(&u, &a));
    c.send(&u, &ev(7), 10, true, 20_001);
    let got = c
        .handle_ajax_handshake_resume(&u, &a, "hs", &at(6), 20_002)
        .unwrap()
        .unwrap();
    assert!(got.recovered);
    c.send(&u, &ev(8), 10, true, 20_003);
    c.handle_ajax_poll(&u, &a, 6, "poll", 20_004).unwrap();
    assert_eq!(
        ajax_answers(c.take_actions()),
        vec![(6, "#8 [7, 8]".into())]
    );

    // A position older than the log keeps (8 pushes): not recovered, no replay.
    for n in 9..=20 {
        c.send(&u, &ev(n), 10, true, 20_010);
    }
    c.take_actions();
    let got = c
        .handle_ajax_handshake_resume(&u, &a, "hs", &at(2), 20_020)
        .unwrap()
        .unwrap();
    assert!(!got.recovered);
    assert_eq!(got.position.seq, 20);
    c.handle_ajax_poll(&u, &a, 7, "poll", 20_021).unwrap();
    assert!(c.take_actions().is_empty(), "nothing replayed: held");

    // A plain client (no `resume`) and the anonymous uid get no numbers.
    let b = cid("b");
    assert_eq!(
        c.handle_ajax_handshake_resume(&u, &b, "hs", &Resume::Off, 20_030)
            .unwrap(),
        None
    );
    assert_eq!(
        c.handle_ajax_handshake_resume(&Uid::Nil, &b, "hs", &Resume::New, 20_030)
            .unwrap(),
        None
    );
    c.handle_ajax_poll(&u, &b, 8, "poll", 20_031).unwrap();
    c.send(&u, &ev(21), 10, true, 20_032);
    let mut got = ajax_answers(c.take_actions());
    got.sort();
    assert_eq!(got, vec![(7, "#21 [21]".into()), (8, "[21]".into())]);
}
