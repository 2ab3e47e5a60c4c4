//! This node's own numbered pushes when the receiving side fails between the engine's
//! acknowledgement and the push coming back: applied here (unnumbered, in order), never lost,
//! and not applied twice if they come back after all.

use sente_backplane_kit::{Job, MailboxConfig, Shared, Side};
use sente_proto::backplane::cluster::ClusterConfig;
use sente_proto::backplane::{BackplaneMsg, codec};
use sente_proto::{Event, EventId, Uid, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

struct Node {
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<Job>,
    got: Arc<Mutex<Vec<BackplaneMsg>>>,
}

fn node() -> Node {
    let node = starting_node();
    node.shared.set_seq_ready(true);
    node
}

/// A node whose engine is up and whose numbering consumer is still being made.
fn starting_node() -> Node {
    let mailbox = MailboxConfig::default().enabled(false);
    let (shared, jobs, _ops) = Shared::new("test", ClusterConfig::default(), 64, mailbox);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let _ = shared
        .sink
        .set(Arc::new(move |m| g.lock().expect("sink").push(m)));
    shared.set_sequencing(true);
    shared.set_up(Side::Publisher, true, None);
    shared.set_up(Side::Subscriber, true, None);
    Node { shared, jobs, got }
}

fn push(n: i64) -> BackplaneMsg {
    BackplaneMsg::Push {
        uid: Uid::from("u"),
        event: Arc::new(Event::new(EventId::from_static("app/n"), Value::Int(n))),
        estimate: 8,
        flush: true,
    }
}

/// The numbers of the pushes the sink got, and whether each came numbered.
fn got(node: &Node) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    for m in node.got.lock().expect("sink").iter() {
        let (m, numbered) = match m {
            BackplaneMsg::Sequenced { msg, .. } => (&**msg, true),
            m => (m, false),
        };
        if let BackplaneMsg::Push { event, .. } = m
            && let Value::Int(n) = event.data()
        {
            out.push((*n, numbered));
        }
    }
    out
}

impl Node {
    /// Publishes `n` and takes its job from the engine's queue: its id.
    fn publish(&mut self, n: i64) -> (u64, Job) {
        self.shared.publish(push(n));
        let job = self.jobs.try_recv().expect("queued for the engine");
        let Job::Seq { id, .. } = &job else {
            panic!("a numbered job")
        };
        (*id, job)
    }

    /// The engine acknowledged `job` as number `seq` of `epoch`.
    fn ack(&self, (id, job): (u64, Job), epoch: u64, seq: u64) {
        self.shared.numbered(id, Some((epoch, seq)));
        self.shared.count_sent(std::slice::from_ref(&job));
    }

    /// The push `n` comes back numbered `seq` of `epoch`, as the engine delivers it.
    fn comes_back(&self, n: i64, epoch: u64, seq: u64) {
        let mut payload = codec::encode_msg(self.shared.origin, &push(n)).expect("frame");
        payload.push(codec::SEQ_TAG);
        payload.extend_from_slice(&epoch.to_le_bytes());
        payload.extend_from_slice(seq.to_string().as_bytes());
        self.shared.receive(&payload);
    }
}

#[test]
fn a_numbered_push_that_did_not_come_back_is_applied_when_the_receiving_side_fails() {
    let mut node = node();
    let one = node.publish(1);
    node.ack(one, 7, 1);
    let two = node.publish(2);
    node.ack(two, 7, 2);
    node.comes_back(1, 7, 1);
    assert_eq!(got(&node), vec![(1, true)]);
    // The engine goes away with push 2 numbered but not delivered here.
    node.shared
        .set_up(Side::Subscriber, false, Some("gone".to_owned()));
    assert_eq!(got(&node), vec![(1, true), (2, false)]);
    // Later pushes are applied here at once, after it.
    node.shared.publish(push(3));
    assert_eq!(got(&node), vec![(1, true), (2, false), (3, false)]);
    // Had the engine kept it, it comes back after the reconnect: not applied twice.
    node.shared.set_up(Side::Subscriber, true, None);
    node.comes_back(2, 7, 2);
    assert_eq!(got(&node), vec![(1, true), (2, false), (3, false)]);
}

#[test]
fn a_consumer_that_stops_applies_what_it_did_not_bring_back_before_what_waits() {
    let mut node = node();
    let one = node.publish(1);
    node.ack(one, 7, 1);
    // Push 2 is not numbered yet when the engine's consumer stops.
    let (two, _) = node.publish(2);
    node.shared.set_seq_ready(false);
    assert_eq!(got(&node), vec![(1, false)]);
    assert!(node.shared.waits_for_number(two));
    node.shared.publish(push(3));
    assert_eq!(got(&node), vec![(1, false), (2, false), (3, false)]);
    assert!(!node.shared.waits_for_number(two));
}

#[test]
fn a_push_back_before_its_acknowledgement_is_not_applied_again() {
    let mut node = node();
    let one = node.publish(1);
    // The engine delivered it before the publishing task handled the acknowledgement.
    node.comes_back(1, 7, 1);
    node.ack(one, 7, 1);
    node.shared
        .set_up(Side::Subscriber, false, Some("gone".to_owned()));
    assert_eq!(got(&node), vec![(1, true)]);
}

#[test]
fn one_applied_here_before_its_number_that_comes_back_after_all_takes_no_other_place() {
    let mut node = node();
    let (one, _) = node.publish(1);
    // The publisher connection fails before the acknowledgement: push 1 is applied here.
    node.shared
        .set_up(Side::Publisher, false, Some("gone".to_owned()));
    node.shared.publish(push(2));
    assert!(!node.shared.waits_for_number(one));
    node.shared.set_up(Side::Publisher, true, None);
    let _ = node.jobs.try_recv();
    let (three, _) = node.publish(3);
    // The engine had stored push 1 after all: it comes back (applied again, as documented),
    // and push 3 still waits for its number.
    node.comes_back(1, 7, 1);
    assert!(node.shared.waits_for_number(three));
    node.shared
        .set_up(Side::Publisher, false, Some("gone".to_owned()));
    node.shared.publish(push(4));
    assert_eq!(
        got(&node),
        vec![(1, false), (2, false), (1, true), (3, false), (4, false)]
    );
}

/// Another node's push `n`, as its frame arrives here: numbered `(epoch, seq)`, or plain and
/// marked after its node's last numbered push `after`.
fn from_other(node: &Node, n: i64, numbered: Option<(u64, u64)>, after: Option<(u64, u64)>) {
    let msg = push(n);
    let frame = match (numbered, after) {
        (Some((epoch, seq)), _) => codec::Frame::Msg(BackplaneMsg::Sequenced {
            epoch,
            seq,
            msg: Box::new(msg),
        }),
        (None, Some((epoch, seq))) => codec::Frame::After { epoch, seq, msg },
        (None, None) => codec::Frame::Msg(msg),
    };
    node.shared
        .receive(&codec::encode(42, &frame).expect("frame"));
}

/// A consumer-based engine (NATS) whose consumer started at number 1 of epoch 7.
fn consuming_node() -> Node {
    let node = node();
    node.shared.set_seq_epoch(7);
    node.shared.seq_starts_at(7, 1);
    node
}

#[test]
fn a_push_published_plain_after_numbered_ones_waits_for_them() {
    let node = consuming_node();
    // Pushes 1 and 2 were numbered 1 and 2; push 3 went plain and arrives first, then push 4.
    from_other(&node, 3, None, Some((7, 2)));
    from_other(&node, 4, None, Some((7, 2)));
    assert_eq!(got(&node), vec![]);
    from_other(&node, 1, Some((7, 1)), None);
    assert_eq!(got(&node), vec![(1, true)]);
    from_other(&node, 2, Some((7, 2)), None);
    assert_eq!(
        got(&node),
        vec![(1, true), (2, true), (3, false), (4, false)]
    );
    // With nothing ahead of it, a marked push whose number was applied goes at once.
    from_other(&node, 5, None, Some((7, 2)));
    // And a plain push without the mark is never held.
    from_other(&node, 6, None, None);
    assert_eq!(got(&node).len(), 6);
}

#[test]
fn a_held_push_goes_when_its_number_cannot_come() {
    // Another epoch (the stream was made anew), or numbers the consumer never brings.
    let node = consuming_node();
    from_other(&node, 1, None, Some((8, 5)));
    assert_eq!(got(&node), vec![(1, false)]);
    let node = self::node();
    from_other(&node, 1, None, Some((7, 5)));
    assert_eq!(
        got(&node),
        vec![(1, false)],
        "no number of the epoch applied yet"
    );
    // The consumer stops.
    let node = consuming_node();
    from_other(&node, 1, None, Some((7, 5)));
    assert_eq!(got(&node), vec![]);
    node.shared.set_seq_ready(false);
    assert_eq!(got(&node), vec![(1, false)]);
    // Made again, from where NATS says (not said here): nothing is held until a number comes.
    node.shared.set_seq_ready(true);
    from_other(&node, 2, None, Some((7, 5)));
    assert_eq!(got(&node), vec![(1, false), (2, false)]);
    from_other(&node, 3, Some((7, 9)), None);
    from_other(&node, 4, None, Some((7, 10)));
    assert_eq!(got(&node), vec![(1, false), (2, false), (3, true)]);
    // The number never comes: the timer lets it go after the longest wait.
    let node = consuming_node();
    node.shared
        .set_after_wait(std::time::Duration::from_millis(20));
    from_other(&node, 1, None, Some((7, 5)));
    node.shared.tick();
    assert_eq!(got(&node), vec![]);
    std::thread::sleep(std::time::Duration::from_millis(30));
    node.shared.tick();
    assert_eq!(got(&node), vec![(1, false)]);
}

#[test]
fn a_push_published_plain_is_marked_after_the_last_numbered_one() {
    let mut node = node();
    let mut plain = codec::encode_msg(node.shared.origin, &push(9)).expect("frame");
    let unmarked = plain.clone();
    node.shared.mark_after(&mut plain);
    assert_eq!(plain, unmarked, "nothing numbered yet");
    let one = node.publish(1);
    node.ack(one, 7, 41);
    node.shared.mark_after(&mut plain);
    match codec::decode(&plain, &sente_proto::Limits::default()).expect("decodes") {
        codec::Decoded::Frame {
            frame: codec::Frame::After {
                epoch: 7, seq: 41, ..
            },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

/// While the engine's first consumer is being made, a push waits for its number (queued as a
/// numbered job, not applied here yet) instead of going out unnumbered: its first numbered
/// pushes would otherwise overtake its last unnumbered ones on the other nodes. Once the
/// consumer failed, an unready consumer means unnumbered pushes at once.
#[test]
fn pushes_wait_for_the_first_consumer_then_go_unnumbered_once_it_failed() {
    let Node {
        shared,
        mut jobs,
        got,
    } = starting_node();
    assert!(shared.numbering_soon());
    shared.publish(push(1));
    assert!(matches!(jobs.try_recv(), Ok(Job::Seq { .. })));
    assert!(
        got.lock().expect("sink").is_empty(),
        "applied when it comes back"
    );
    // The consumer fails: push 2 goes out unnumbered, applied here at once, after push 1.
    shared.set_seq_ready(false);
    assert!(!shared.numbering_soon());
    shared.publish(push(2));
    assert!(matches!(jobs.try_recv(), Ok(Job::Frame(_))));
    let applied: Vec<BackplaneMsg> = got.lock().expect("sink").clone();
    assert_eq!(applied, vec![push(1), push(2)]);
}
