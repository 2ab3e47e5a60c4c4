//! The server core: clients of every uid on both transports, send buffers, presence, the Ajax
//! poll hold and the per-client queues. Sans-IO: the caller passes `now` and executes the
//! returned [`Action`]s; nothing here blocks, sleeps or allocates without bound.

use super::batch::{PushBatch, estimate_event_size};
use super::clients::{ClientMap, HashMap};
use super::limits::ServerLimits;
use super::replay::{Position, ReplayConfig, ReplayLog, Resume, ResumeInfo};
use crate::backplane::Taken;
use crate::event::{ClientId, Event, EventId, Uid};
pub use crate::transport::Transport;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Identifies one WebSocket connection or one Ajax poll request (Sente's conn-id): stale close
/// events and timers of a replaced connection are ignored by comparing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Timing of the core, in milliseconds (spec 7.1 names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Batching window of WebSocket pushes. Default 30.
    pub send_buf_ms_ws: u64,
    /// Batching window of Ajax pushes. Default 100.
    pub send_buf_ms_ajax: u64,
    /// Grace after a WebSocket closes before its client counts as gone. Default 2 500.
    pub ms_allow_reconnect_before_close_ws: u64,
    /// Grace after an Ajax poll ends before its client counts as gone. Default 5 000.
    pub ms_allow_reconnect_before_close_ajax: u64,
    /// How long an Ajax poll is held. Default 20 000.
    pub lp_timeout_ms: u64,
    /// Pushes for Ajax clients wait in the backplane's per-client mailboxes, not in this core
    /// (a cluster without sticky sessions): a flush wakes the held polls
    /// ([`Action::AjaxWake`]) instead of answering or queueing. Default `false`.
    pub ajax_mailbox: bool,
    /// Bounds.
    pub limits: ServerLimits,
    /// Resume after a reconnect (see [`super::replay`]).
    pub replay: ReplayConfig,
    /// Pushes are numbered by the cluster's backplane (a global sequence, see
    /// [`super::replay`], "In a cluster"), not by this core: every push to a uid is logged under
    /// its global number, so a client may resume on any node. Set by the server when its
    /// backplane sequences pushes. Default `false`.
    pub cluster_resume: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            send_buf_ms_ws: 30,
            send_buf_ms_ajax: 100,
            ms_allow_reconnect_before_close_ws: 2_500,
            ms_allow_reconnect_before_close_ajax: 5_000,
            lp_timeout_ms: 20_000,
            ajax_mailbox: false,
            limits: ServerLimits::default(),
            replay: ReplayConfig::default(),
            cluster_resume: false,
        }
    }
}

/// Setters, for building a configuration from the defaults.
impl CoreConfig {
    /// Sets [`CoreConfig::replay`].
    pub fn replay(mut self, value: ReplayConfig) -> Self {
        self.replay = value;
        self
    }

    /// Sets [`CoreConfig::cluster_resume`].
    pub fn cluster_resume(mut self, value: bool) -> Self {
        self.cluster_resume = value;
        self
    }

    /// Sets [`CoreConfig::send_buf_ms_ws`].
    pub fn send_buf_ms_ws(mut self, value: u64) -> Self {
        self.send_buf_ms_ws = value;
        self
    }

    /// Sets [`CoreConfig::send_buf_ms_ajax`].
    pub fn send_buf_ms_ajax(mut self, value: u64) -> Self {
        self.send_buf_ms_ajax = value;
        self
    }

    /// Sets [`CoreConfig::ms_allow_reconnect_before_close_ws`].
    pub fn ms_allow_reconnect_before_close_ws(mut self, value: u64) -> Self {
        self.ms_allow_reconnect_before_close_ws = value;
        self
    }

    /// Sets [`CoreConfig::ms_allow_reconnect_before_close_ajax`].
    pub fn ms_allow_reconnect_before_close_ajax(mut self, value: u64) -> Self {
        self.ms_allow_reconnect_before_close_ajax = value;
        self
    }

    /// Sets [`CoreConfig::lp_timeout_ms`].
    pub fn lp_timeout_ms(mut self, value: u64) -> Self {
        self.lp_timeout_ms = value;
        self
    }

    /// Sets [`CoreConfig::ajax_mailbox`].
    pub fn ajax_mailbox(mut self, value: bool) -> Self {
        self.ajax_mailbox = value;
        self
    }

    /// Sets [`CoreConfig::limits`].
    pub fn limits(mut self, value: ServerLimits) -> Self {
        self.limits = value;
        self
    }
}

/// A connection was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The uid already has as many clients as allowed.
    #[error("too many connections for this user (limit {limit})")]
    TooManyConnections {
        /// The limit in force.
        limit: usize,
    },
}

/// Why `send` refused an event.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The event is larger than the message limit (estimated before packing).
    #[error("event is about {estimate} bytes, over the message limit of {limit}")]
    TooLarge {
        /// The estimated packed size.
        estimate: usize,
        /// [`crate::Limits::max_message_bytes`].
        limit: usize,
    },
    /// Events in the reserved `chsk` namespace cannot be pushed (clients reject them), except
    /// `[:chsk/close]`, which closes the uid's connections.
    #[error("cannot push reserved event {0}")]
    Reserved(EventId),
}

/// Pushes with their cluster numbers, in order.
type Numbered = Vec<(u64, Arc<Event>)>;

/// What a mailbox-mode Ajax handshake answers ([`Core::handle_ajax_handshake_mailbox`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MailboxResume {
    /// The resume answer for the handshake (`None`: the client did not ask for resume).
    pub info: Option<ResumeInfo>,
    /// Pushes the client missed before its mailbox existed, numbered, oldest first: put them
    /// in front of its mailbox ([`crate::backplane::Mailbox::fill`]) before answering; if
    /// that fails, answer [`MailboxResume::unfilled`] instead.
    pub fill: Vec<Taken>,
    /// The answer when the fill could not be stored: not recovered.
    pub unfilled: Option<ResumeInfo>,
}

impl MailboxResume {
    /// A plain answer (no fill).
    pub fn of(info: Option<ResumeInfo>) -> Self {
        MailboxResume {
            info,
            ..MailboxResume::default()
        }
    }

    fn recovered(position: Position) -> Self {
        MailboxResume::of(Some(ResumeInfo {
            position,
            recovered: true,
        }))
    }

    fn not_recovered(position: Position) -> Self {
        MailboxResume::of(Some(ResumeInfo {
            position,
            recovered: false,
        }))
    }

    /// The answer once the fill was tried: `filled` says it was stored, or there was none.
    pub fn answer(self, filled: bool) -> Option<ResumeInfo> {
        if filled { self.info } else { self.unfilled }
    }
}

/// How a held Ajax poll is answered.
#[derive(Clone, Debug)]
pub enum PollAnswer {
    /// `[[ev ...] nil]`.
    Batch(Arc<PushBatch>),
    /// For a resuming client (see [`super::replay`]): `[[[:chsk/seq n] ev ...] nil]`, the
    /// batch after the marker numbering its last event `n`.
    Numbered(Arc<PushBatch>, u64),
    /// `[:chsk/timeout nil]`: nothing to deliver within `lp_timeout_ms`, or the poll was
    /// superseded by a newer poll of the same client.
    Timeout,
    /// The server closed the uid's connections (`close_uid`): the poll ends with an error status,
    /// so the client reconnects with a new handshake.
    Closed,
}

impl PollAnswer {
    /// The answer carrying `batch`: numbered with `seq`, or plain.
    fn of(batch: Arc<PushBatch>, seq: Option<u64>) -> Self {
        match seq {
            Some(n) => PollAnswer::Numbered(batch, n),
            None => PollAnswer::Batch(batch),
        }
    }

    /// The batch it carries, if any.
    pub fn batch(&self) -> Option<&Arc<PushBatch>> {
        match self {
            PollAnswer::Batch(b) | PollAnswer::Numbered(b, _) => Some(b),
            PollAnswer::Timeout | PollAnswer::Closed => None,
        }
    }
}

/// Something the IO layer must do now, in order, before releasing the core.
#[derive(Debug)]
pub enum Action<W, A> {
    /// Queue a batch on a WebSocket connection.
    WsDeliver {
        /// The connection.
        conn: W,
        /// The batch.
        batch: Arc<PushBatch>,
        /// For a resuming client: the sequence number of the batch's last event, sent before
        /// the batch as `[:chsk/seq n]` (see [`super::replay`]).
        seq: Option<u64>,
    },
    /// Close a WebSocket connection (code 1000) after what is already queued on it.
    WsClose {
        /// The connection.
        conn: W,
        /// Why (for logs).
        reason: &'static str,
    },
    /// Answer a held Ajax poll. If the request is gone, give the batch back with
    /// [`Core::handle_poll_undeliverable`].
    AjaxAnswer {
        /// The uid.
        uid: Uid,
        /// The client.
        client_id: ClientId,
        /// The poll request.
        conn: ConnId,
        /// The responder of the held request.
        responder: A,
        /// The answer.
        answer: PollAnswer,
    },
    /// Mailbox mode ([`CoreConfig::ajax_mailbox`]): pushes may wait in the mailbox of a client
    /// whose poll is held. Take the poll with [`Core::take_poll_for_wake`], take from the
    /// mailbox, then report with [`Core::wake_done`].
    AjaxWake {
        /// The uid.
        uid: Uid,
        /// The client.
        client_id: ClientId,
        /// The poll request.
        conn: ConnId,
    },
}

/// What to do after [`Core::wake_done`].
#[derive(Debug)]
pub enum WakeDone<A> {
    /// Nothing more: the poll was answered, or is held again.
    Done,
    /// Another wake arrived meanwhile: take from the mailbox again with this responder, then
    /// call [`Core::wake_done`] again.
    Again(A),
    /// The poll was superseded or ended meanwhile: put these events back in the mailbox.
    PutBack(Arc<PushBatch>),
}

/// What the core reports to the application side.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent<C> {
    /// `[:chsk/uidport-open uid]`: the uid got its first connection.
    UidportOpen {
        /// The uid.
        uid: Uid,
        /// The client whose connection triggered it.
        client_id: ClientId,
        /// The context stored with that client.
        ctx: C,
    },
    /// `[:chsk/uidport-close uid]`: the uid's last connection is gone (after the grace period).
    UidportClose {
        /// The uid.
        uid: Uid,
        /// The client whose departure triggered it.
        client_id: ClientId,
        /// The context stored with that client.
        ctx: C,
    },
    /// The uid's membership of the `ws` / `ajax` connected-uid sets changed.
    Presence {
        /// The uid.
        uid: Uid,
        /// Member of `ws`.
        ws: bool,
        /// Member of `ajax`.
        ajax: bool,
    },
    /// A client was forgotten because too many pushes were waiting for it.
    ClientDropped {
        /// The uid.
        uid: Uid,
        /// The client.
        client_id: ClientId,
        /// Its transport.
        transport: Transport,
    },
}

/// Batches waiting for a client, each with the sequence number of its last event for a
/// resuming client (`None`: unnumbered).
#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<(Arc<PushBatch>, Option<u64>)>,
    events: usize,
}

impl Queue {
    fn push(&mut self, b: Arc<PushBatch>, seq: Option<u64>, limit: usize) -> bool {
        if self.events + b.len() > limit {
            return false;
        }
        self.events += b.len();
        self.batches.push_back((b, seq));
        true
    }
    fn push_front(&mut self, b: Arc<PushBatch>, seq: Option<u64>) {
        self.events += b.len();
        self.batches.push_front((b, seq));
    }
    fn pop(&mut self) -> Option<(Arc<PushBatch>, Option<u64>)> {
        let (b, seq) = self.batches.pop_front()?;
        self.events -= b.len();
        Some((b, seq))
    }

    /// Replaces the numbered batches (pushes of the uid, in its replay log) with `replay`,
    /// which goes first; the unnumbered ones (pushes to this client alone) follow it.
    fn replace_numbered(&mut self, replay: Vec<(Arc<PushBatch>, u64)>) {
        let kept: Vec<_> = std::mem::take(&mut self.batches)
            .into_iter()
            .filter(|(_, seq)| seq.is_none())
            .collect();
        self.events = 0;
        for (b, seq) in replay {
            self.events += b.len();
            self.batches.push_back((b, Some(seq)));
        }
        for (b, seq) in kept {
            self.events += b.len();
            self.batches.push_back((b, seq));
        }
    }

    /// The first waiting batch, merged with the batches behind it up to `max_events` events and
    /// about `max_bytes` (estimated): what one Ajax poll answer carries. A client that polls
    /// less often than pushes arrive gets them all in one response instead of one poll round
    /// trip per push. A single batch is returned as is (packed once for all its clients).
    /// Numbered batches merge with numbered ones only (the merged batch is numbered up to the
    /// last one's number), unnumbered with unnumbered.
    fn pop_merged(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<(Arc<PushBatch>, Option<u64>)> {
        let (first, mut seq) = self.pop()?;
        if self.batches.is_empty() {
            return Some((first, seq));
        }
        let size = |b: &PushBatch| -> usize {
            b.events()
                .iter()
                .map(|e| estimate_event_size(e, max_bytes))
                .sum()
        };
        let mut bytes = size(&first);
        let mut events = first.events().to_vec();
        while let Some((next, next_seq)) = self.batches.front() {
            let more = size(next);
            if events.len() + next.len() > max_events
                || bytes + more > max_bytes
                || next_seq.is_some() != seq.is_some()
            {
                break;
            }
            bytes += more;
            events.extend(next.events().iter().cloned());
            seq = *next_seq;
            self.pop();
        }
        Some((Arc::new(PushBatch::new(events)), seq))
    }
}

#[derive(Debug)]
enum WsState<W> {
    Open(W),
    Closed,
}

#[derive(Debug)]
struct WsEntry<W, C> {
    conn: ConnId,
    state: WsState<W>,
    ctx: C,
    /// Pushes for the client while its socket is closed (a resuming client gets them from the
    /// uid's replay log instead).
    queue: Queue,
    /// The client resumes (its batches carry sequence numbers).
    resume: bool,
}

#[derive(Debug)]
enum AjaxState<A> {
    /// Handshake done, no poll yet: not counted as connected.
    Known,
    /// A poll is held.
    Polling { responder: A },
    /// Between two polls.
    Idle,
    /// Mailbox mode: the held poll's responder is out, taking from the mailbox. `again`: a
    /// wake arrived meanwhile; `timed_out`: `lp_timeout_ms` passed meanwhile; `closed`: the
    /// uid was closed meanwhile.
    Waking {
        again: bool,
        timed_out: bool,
        closed: bool,
    },
}

#[derive(Debug)]
struct AjaxEntry<A, C> {
    conn: ConnId,
    state: AjaxState<A>,
    ctx: C,
    queue: Queue,
    /// The client resumes (its batches carry sequence numbers).
    resume: bool,
    /// Mailbox mode: what the client's last poll named as its position (its mailbox answers
    /// are numbered and leave out what it has, see [`Core::wake_done_taken`]).
    asked: Resume,
    /// When the entry's time is up: the held poll's `lp_timeout_ms` while a poll is held (or
    /// being woken), else the end of its grace period (`ms_allow_reconnect_before_close_ajax`).
    /// Checked by [`Timer::Ajax`], which fires at or before it.
    due: u64,
    /// The earliest [`Timer::Ajax`] of this entry waiting in the core's timer map, if any. A
    /// new `due` adds a timer only when none waits that fires by then: a client polling many
    /// times a second adds one every grace period or so, not two per poll (timers are not
    /// removed from the map before they fire).
    armed: Option<u64>,
}

impl<A, C> AjaxEntry<A, C> {
    /// A new entry: known (handshook), not polling, its time not set yet.
    fn new(conn: ConnId, ctx: C) -> Self {
        AjaxEntry {
            conn,
            state: AjaxState::Known,
            ctx,
            queue: Queue::default(),
            resume: false,
            asked: Resume::Off,
            due: 0,
            armed: None,
        }
    }

    /// Sets [`AjaxEntry::due`] to `at`; the [`Timer::Ajax`] to add to the core's timers when
    /// none waits that fires by then, else `None`.
    #[must_use]
    fn deadline(&mut self, at: u64, uid: &Uid, cid: &ClientId) -> Option<(u64, Timer)> {
        self.due = at;
        if self.armed.is_some_and(|a| a <= at) {
            return None;
        }
        self.armed = Some(at);
        Some((at, Timer::Ajax(uid.clone(), cid.clone())))
    }

    /// Takes the held poll's responder, leaving the entry idle (between polls); `None` when no
    /// poll is held.
    fn take_poll(&mut self) -> Option<A> {
        if !matches!(self.state, AjaxState::Polling { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.state, AjaxState::Idle) {
            AjaxState::Polling { responder } => Some(responder),
            _ => unreachable!("checked above"),
        }
    }

    /// Answers the held poll (if one is held) with `answer`, leaving the entry idle; whether
    /// one was held.
    fn answer_held<W>(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        actions: &mut Vec<Action<W, A>>,
        answer: impl FnOnce() -> PollAnswer,
    ) -> bool {
        let Some(responder) = self.take_poll() else {
            return false;
        };
        actions.push(Action::AjaxAnswer {
            uid: uid.clone(),
            client_id: cid.clone(),
            conn: self.conn,
            responder,
            answer: answer(),
        });
        true
    }
}

/// Mailbox mode: the poll held for Ajax entry `e` is woken ([`Action::AjaxWake`]); a wake in
/// progress goes again.
/// The two transports, in the order a uid's buffers are handled.
const TRANSPORTS: [Transport; 2] = [Transport::Ws, Transport::Ajax];

/// One push, as [`push_state`] applies it to a uid.
struct Push<'a> {
    event: &'a Arc<Event>,
    estimate: usize,
    flush: bool,
    now: u64,
    seq: Option<u64>,
}

/// What [`push_state`] leaves to its caller, made on first use like [`Flushed`]: a push that
/// went out at once leaves nothing, and a broadcast makes, checks and drops one per uid.
#[derive(Default)]
struct Pushed(Option<Box<PushedLeft>>);

/// What a push left, in this order: what the flushes of full batches left, the window timers
/// to set, what the flushes of due batches left.
#[derive(Default)]
struct PushedLeft {
    full: [Option<Box<Flushed>>; 2],
    windows: [Option<u64>; 2],
    due: [Option<Box<Flushed>>; 2],
}

impl Pushed {
    fn at(&mut self) -> &mut PushedLeft {
        self.0.get_or_insert_with(Box::default)
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// Buffers a push for every client of the uid whose state is `s` (spec 7.5): a batch that
/// would grow past the size bound goes out first; the push goes out now with `flush` or at
/// the batch bound, else after the transport's window.
fn push_state<W: Clone, A, C>(
    s: &mut UidState<W, A, C>,
    uid: &Uid,
    push: &Push<'_>,
    round: &mut Round,
    cfg: &CoreConfig,
    actions: &mut Vec<Action<W, A>>,
) -> Pushed {
    let max_batch = cfg.limits.message.max_batch_len.max(1);
    let max_bytes = cfg.limits.message.max_message_bytes / 2;
    let now = push.now;
    let mut left = Pushed::default();
    for (i, t) in TRANSPORTS.into_iter().enumerate() {
        let b = s.buf(t);
        if !b.events.is_empty() && b.bytes + push.estimate > max_bytes {
            if let Some(f) = flush_state(s, uid, t, now, Some(&mut *round), cfg, actions) {
                left.at().full[i] = Some(f);
            }
        }
    }
    let mut due = [false; 2];
    for (i, t) in TRANSPORTS.into_iter().enumerate() {
        if !s.has(t) {
            // Nobody to send to: what waits is dropped, so a batch stays consecutive pushes.
            let buf = s.buf(t);
            buf.events.clear();
            buf.bytes = 0;
            continue;
        }
        let window = match t {
            Transport::Ws => cfg.send_buf_ms_ws,
            Transport::Ajax => cfg.send_buf_ms_ajax,
        };
        let buf = s.buf(t);
        let go = push.flush || buf.events.len() + 1 >= max_batch;
        // A batch that goes out now needs no window timer.
        if buf.events.is_empty() && !go {
            buf.deadline = Some(now + window);
            left.at().windows[i] = Some(now + window);
        }
        buf.events.push(push.event.clone());
        buf.bytes += push.estimate;
        buf.last_seq = push.seq;
        due[i] = go;
    }
    for (i, t) in TRANSPORTS.into_iter().enumerate() {
        if due[i] {
            if let Some(f) = flush_state(s, uid, t, now, Some(&mut *round), cfg, actions) {
                left.at().due[i] = Some(f);
            }
        }
    }
    left
}

/// What [`flush_state`] leaves to its caller: timers to set and clients to drop.
#[derive(Default)]
struct Flushed {
    timers: Vec<(u64, Timer)>,
    dropped: Vec<ClientId>,
}

impl Flushed {
    /// What a flush leaves, made on first use: most flushes leave nothing, and a [`Pushed`]
    /// made once per uid of a broadcast stays small, cheap to return, check and drop.
    fn at(left: &mut Option<Box<Flushed>>) -> &mut Flushed {
        left.get_or_insert_with(Box::default)
    }
}

/// Sends what the uid's `t` buffer holds: to its open WebSocket clients, or queued for the
/// closed ones, or to the Ajax polls held (woken, with mailboxes). Takes the uid's state and
/// the core's parts it needs, so a push that just looked the state up does not look it up again.
fn flush_state<W: Clone, A, C>(
    s: &mut UidState<W, A, C>,
    uid: &Uid,
    t: Transport,
    now: u64,
    round: Option<&mut Round>,
    cfg: &CoreConfig,
    actions: &mut Vec<Action<W, A>>,
) -> Option<Box<Flushed>> {
    let limit = cfg.limits.max_pending_events_per_client;
    let grace = cfg.ms_allow_reconnect_before_close_ajax;
    let mut left = None;
    let buf = s.buf(t);
    buf.deadline = None;
    buf.bytes = 0;
    let seq = buf.last_seq.take();
    if buf.events.is_empty() {
        return left;
    }
    let batch = match round {
        Some(round) => round.batch(&mut buf.events),
        None => Arc::new(PushBatch::new(std::mem::take(&mut buf.events))),
    };
    match t {
        Transport::Ws => {
            for (cid, e) in s.ws.iter_mut() {
                match &e.state {
                    WsState::Open(w) => actions.push(Action::WsDeliver {
                        conn: w.clone(),
                        batch: batch.clone(),
                        seq: if e.resume { seq } else { None },
                    }),
                    // Its reconnect replays from the log.
                    WsState::Closed if e.resume => {}
                    WsState::Closed => {
                        if !e.queue.push(batch.clone(), None, limit) {
                            Flushed::at(&mut left).dropped.push(cid.clone());
                        }
                    }
                }
            }
        }
        Transport::Ajax if cfg.ajax_mailbox => {
            // The events are in the mailboxes already: wake the polls held here.
            for (cid, e) in s.ajax.iter_mut() {
                wake_entry(uid, cid, e, actions);
            }
        }
        Transport::Ajax => {
            for (cid, e) in s.ajax.iter_mut() {
                let seq = if e.resume { seq } else { None };
                if e.answer_held(uid, cid, actions, || PollAnswer::of(batch.clone(), seq)) {
                    if let Some(t) = e.deadline(now + grace, uid, cid) {
                        Flushed::at(&mut left).timers.push(t);
                    }
                } else if !e.queue.push(batch.clone(), seq, limit) {
                    Flushed::at(&mut left).dropped.push(cid.clone());
                }
            }
        }
    }
    left
}

/// The Ajax entry of client `cid` of `uid`, made (known, not polling) if missing.
fn ajax_entry<'a, W, A, C>(
    uids: &'a mut HashMap<Uid, Box<UidState<W, A, C>>>,
    uid: &Uid,
    cid: &ClientId,
    conn: ConnId,
    ctx: C,
) -> &'a mut AjaxEntry<A, C> {
    // Usually the uid is known (the client handshook): looked up without cloning it.
    if !uids.contains_key(uid) {
        uids.insert(uid.clone(), Box::new(UidState::new()));
    }
    let Some(s) = uids.get_mut(uid) else {
        unreachable!("inserted above")
    };
    s.ajax.get_or_insert_with(cid, || AjaxEntry::new(conn, ctx))
}

fn wake_entry<W, A, C>(
    uid: &Uid,
    cid: &ClientId,
    e: &mut AjaxEntry<A, C>,
    actions: &mut Vec<Action<W, A>>,
) {
    match &mut e.state {
        AjaxState::Polling { .. } => actions.push(Action::AjaxWake {
            uid: uid.clone(),
            client_id: cid.clone(),
            conn: e.conn,
        }),
        AjaxState::Waking { again, .. } => *again = true,
        AjaxState::Known | AjaxState::Idle => {}
    }
}

#[derive(Debug, Default)]
struct SendBuffer {
    events: Vec<Arc<Event>>,
    bytes: usize,
    deadline: Option<u64>,
    /// The replay-log sequence number of the last event (the events are consecutive pushes of
    /// the uid, so a batch is numbered up to it).
    last_seq: Option<u64>,
}

#[derive(Debug)]
struct UidState<W, A, C> {
    ws: ClientMap<WsEntry<W, C>>,
    ajax: ClientMap<AjaxEntry<A, C>>,
    ws_buf: SendBuffer,
    ajax_buf: SendBuffer,
    in_ws: bool,
    in_ajax: bool,
    /// Ajax entries past their handshake (polling or between polls): they count as connected.
    ajax_live: usize,
}

impl<W, A, C> UidState<W, A, C> {
    fn new() -> Self {
        UidState {
            ws: ClientMap::default(),
            ajax: ClientMap::default(),
            ws_buf: SendBuffer::default(),
            ajax_buf: SendBuffer::default(),
            in_ws: false,
            in_ajax: false,
            ajax_live: 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.ws.is_empty() && self.ajax.is_empty()
    }
    /// Removes an Ajax client, keeping `ajax_live` in step.
    fn remove_ajax(&mut self, cid: &ClientId) -> Option<AjaxEntry<A, C>> {
        let e = self.ajax.remove(cid)?;
        if !matches!(e.state, AjaxState::Known) {
            self.ajax_live -= 1;
        }
        Some(e)
    }
    fn buf(&mut self, t: Transport) -> &mut SendBuffer {
        match t {
            Transport::Ws => &mut self.ws_buf,
            Transport::Ajax => &mut self.ajax_buf,
        }
    }
    fn has(&self, t: Transport) -> bool {
        match t {
            Transport::Ws => !self.ws.is_empty(),
            Transport::Ajax => !self.ajax.is_empty(),
        }
    }
}

/// The batches flushed in one round (one timer poll, or one `send_many`): uids whose buffers
/// hold the same events (compared by address) share one batch. The batches keep their events
/// alive, so an address cannot be reused within the round.
#[derive(Debug, Default)]
struct Round {
    /// The batch made or reused last: a broadcast hits it for every uid without a lookup.
    last: Option<Arc<PushBatch>>,
    /// The other batches of the round, keyed by their events' addresses (used once a round has
    /// more than one distinct batch).
    others: HashMap<Vec<usize>, Arc<PushBatch>>,
}

impl Round {
    /// The round's batch of `events` (taken; left empty with its capacity when a batch is
    /// reused, so the uid's buffer does not reallocate for its next push).
    fn batch(&mut self, events: &mut Vec<Arc<Event>>) -> Arc<PushBatch> {
        let same = |b: &PushBatch| {
            b.len() == events.len()
                && b.events()
                    .iter()
                    .zip(events.iter())
                    .all(|(a, e)| Arc::ptr_eq(a, e))
        };
        if let Some(last) = &self.last
            && same(last)
        {
            events.clear();
            return last.clone();
        }
        let key = |evs: &[Arc<Event>]| -> Vec<usize> {
            evs.iter().map(|e| Arc::as_ptr(e) as usize).collect()
        };
        let batch = if let Some(b) = self.others.get(&key(events)) {
            events.clear();
            b.clone()
        } else {
            Arc::new(PushBatch::new(std::mem::take(events)))
        };
        if let Some(last) = self.last.replace(batch.clone()) {
            self.others.entry(key(last.events())).or_insert(last);
        }
        batch
    }
}

#[derive(Debug, Clone)]
enum Timer {
    Flush(Uid, Transport),
    WsGrace(Uid, ClientId, ConnId),
    /// The Ajax entry's [`AjaxEntry::due`] may have come: its held poll times out, or its
    /// grace period ends.
    Ajax(Uid, ClientId),
    /// The uid's replay log may have outlived its clients.
    LogExpiry(Uid),
}

/// The most actions whose list [`Core::recycle_actions`] keeps for the next round (a few hundred
/// KiB per core at most; a broadcast to more connections grows a list of its own).
pub const RECYCLED_ACTIONS: usize = 8192;

/// The server core, generic over the IO layer's WebSocket handle `W` (cloned into actions), Ajax
/// poll responder `A` (moved into the action that answers it) and per-client context `C` (handed
/// back with uidport events, e.g. the request that opened the connection).
#[derive(Debug)]
pub struct Core<W, A, C> {
    cfg: CoreConfig,
    /// Boxed: the table then holds a key and a pointer per uid, not the whole state.
    uids: HashMap<Uid, Box<UidState<W, A, C>>>,
    timers: BTreeMap<(u64, u64), Timer>,
    seq: u64,
    next_conn: u64,
    actions: Vec<Action<W, A>>,
    /// An emptied action list kept for the next round (see [`Core::recycle_actions`]).
    spare_actions: Vec<Action<W, A>>,
    events: Vec<CoreEvent<C>>,
    /// The replay logs of uids with resuming clients (see [`super::replay`]).
    logs: HashMap<Uid, ReplayLog>,
    /// This core's part of every log epoch (see [`Core::set_epoch_seed`]).
    epoch_seed: u64,
    /// Logs created so far (the other part of an epoch).
    log_gen: u64,
    /// Cluster mode ([`CoreConfig::cluster_resume`]): where this node stands in the cluster's
    /// sequence (`None` until its first sequenced message).
    global: Option<GlobalState>,
    /// Cluster mode: the broadcasts, under their global numbers (one log for every uid).
    broadcasts: Option<ReplayLog>,
    /// Cluster mode: the epoch the backplane announced (see [`Core::set_cluster_epoch`]).
    announced: Option<u64>,
}

/// Where a node stands in the cluster's global sequence of pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GlobalState {
    /// The sequence's epoch.
    epoch: u64,
    /// The last number applied.
    applied: u64,
    /// Positions from this one on are resumable here: this node applied every sequenced
    /// message after it (it started, or missed some, or applied a push without a number just
    /// before it).
    complete_from: u64,
    /// The highest number a dropped log held: a log created later starts after it.
    dropped: u64,
}

impl GlobalState {
    /// Where a log created now starts (see [`ReplayLog::starting`]).
    fn base(&self) -> u64 {
        self.complete_from.max(self.dropped)
    }
}

/// What [`Core::sequenced`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeqCheck {
    /// The next number: apply the message.
    Next,
    /// Numbers were skipped (missed messages) or the epoch changed: apply the message; older
    /// positions are no longer resumable on this node.
    Gap,
    /// Already applied (a duplicate): skip the message.
    Duplicate,
}

impl SeqCheck {
    /// Whether the message is to be applied.
    pub fn apply(self) -> bool {
        !matches!(self, SeqCheck::Duplicate)
    }
}

impl<W: Clone, A, C: Clone> Core<W, A, C> {
    /// An empty core.
    pub fn new(cfg: CoreConfig) -> Self {
        Core {
            cfg,
            uids: HashMap::default(),
            timers: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            actions: Vec::new(),
            spare_actions: Vec::new(),
            events: Vec::new(),
            logs: HashMap::default(),
            epoch_seed: 0,
            log_gen: 0,
            global: None,
            broadcasts: None,
            announced: None,
        }
    }

    /// Cluster mode: the epoch of the cluster's sequence, as the backplane read it from its
    /// engine. Before the first numbered message, a resuming client gets position 0 of this
    /// epoch: resumable here once the first message applied is number 1 (nothing was
    /// missed), and on any node that saw every message.
    pub fn set_cluster_epoch(&mut self, epoch: u64) {
        self.announced = Some(epoch);
    }

    /// Cluster mode: a message numbered `seq` in the cluster's sequence of epoch `epoch` is
    /// about to be applied (see [`super::replay`], "In a cluster"). Tracks gaps (a gap, or a
    /// new epoch, makes older positions unresumable here: never a partial replay) and tells
    /// duplicates apart. Without [`CoreConfig::cluster_resume`], every message is applied.
    pub fn sequenced(&mut self, epoch: u64, seq: u64) -> SeqCheck {
        if !self.cfg.cluster_resume {
            return SeqCheck::Next;
        }
        match &mut self.global {
            Some(g) if g.epoch == epoch => {
                if seq <= g.applied {
                    return SeqCheck::Duplicate;
                }
                let gap = seq != g.applied + 1;
                if gap {
                    g.complete_from = g.complete_from.max(seq - 1);
                }
                g.applied = seq;
                if gap {
                    // This node missed numbers, so its open clients missed those pushes too.
                    self.forget_open_positions();
                    SeqCheck::Gap
                } else {
                    SeqCheck::Next
                }
            }
            _ => {
                // First message, or the engine's sequence started anew: nothing logged so far
                // belongs to it. Open clients whose positions are in another epoch must not
                // take the new numbers for theirs.
                let stale = match &self.global {
                    Some(_) => true,
                    None => self.announced.is_some_and(|a| a != epoch),
                };
                if stale {
                    self.forget_open_positions();
                }
                self.logs.clear();
                self.broadcasts = None;
                self.global = Some(GlobalState {
                    epoch,
                    applied: seq,
                    complete_from: seq - 1,
                    dropped: 0,
                });
                SeqCheck::Gap
            }
        }
    }

    /// Cluster mode: the open resuming WebSocket and Ajax clients stop resuming here (their
    /// next batches go out unnumbered, so each client drops its position and its next
    /// reconnect asks for no replay): after a gap or a new epoch their positions would skip or
    /// miss pushes.
    fn forget_open_positions(&mut self) {
        for s in self.uids.values_mut() {
            for (_, e) in s.ws.iter_mut() {
                if matches!(e.state, WsState::Open(_)) {
                    e.resume = false;
                }
            }
            for (_, e) in s.ajax.iter_mut() {
                e.resume = false;
            }
        }
    }

    /// Cluster mode: a push is applied without a global number (the engine was unreachable):
    /// the clients that missed it must not resume past it, so positions up to now become
    /// unresumable here.
    fn unsequenced(&mut self) {
        if let Some(g) = &mut self.global {
            g.complete_from = g.complete_from.max(g.applied + 1);
        }
    }

    /// Cluster mode: the last global number applied, with its epoch (`None` before the first).
    pub fn global_position(&self) -> Option<(u64, u64)> {
        self.global.map(|g| (g.epoch, g.applied))
    }

    fn global_epoch(epoch: u64) -> String {
        format!("{epoch:x}")
    }

    /// Sets the random part of the replay logs' epochs: give each server start its own (e.g.
    /// from the OS's random source), so positions of an earlier run are never resumed.
    pub fn set_epoch_seed(&mut self, seed: u64) {
        self.epoch_seed = seed;
    }

    /// The replay log of `uid`, if it has one (see [`super::replay`]).
    pub fn replay_log(&self, uid: &Uid) -> Option<&ReplayLog> {
        self.logs.get(uid)
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Actions to execute now, in order. Give the emptied list back with
    /// [`Core::recycle_actions`] so the next round does not grow a new one (a broadcast
    /// makes an action per connection).
    pub fn take_actions(&mut self) -> Vec<Action<W, A>> {
        let spare = std::mem::take(&mut self.spare_actions);
        std::mem::replace(&mut self.actions, spare)
    }

    /// Keeps `list`, emptied, for the actions of a later round (at most
    /// [`RECYCLED_ACTIONS`] entries' worth of memory).
    pub fn recycle_actions(&mut self, mut list: Vec<Action<W, A>>) {
        list.clear();
        if list.capacity() <= RECYCLED_ACTIONS && list.capacity() > self.spare_actions.capacity() {
            self.spare_actions = list;
        }
    }

    /// Events for the application, in order.
    pub fn take_events(&mut self) -> Vec<CoreEvent<C>> {
        std::mem::take(&mut self.events)
    }

    /// When [`Core::poll`] next has something to do (may be early; never late).
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// How many timers wait (batch windows, poll timeouts, grace periods, log expiries; a
    /// timer whose moment has passed by the time it fires does nothing).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The connected uids right now: `(ws, ajax)` membership per uid.
    pub fn connected(&self) -> impl Iterator<Item = (&Uid, bool, bool)> {
        self.uids
            .iter()
            .filter(|(_, s)| s.in_ws || s.in_ajax)
            .map(|(u, s)| (u, s.in_ws, s.in_ajax))
    }

    /// The context stored with Ajax client `cid` of `uid` (from its handshake or last poll).
    pub fn ajax_ctx(&self, uid: &Uid, cid: &ClientId) -> Option<&C> {
        self.uids.get(uid)?.ajax.get(cid).map(|e| &e.ctx)
    }

    /// Every uid the core knows (with a client, or in its grace period).
    pub fn uids(&self) -> impl Iterator<Item = &Uid> {
        self.uids.keys()
    }

    /// Number of clients (entries, on both transports) of a uid.
    pub fn client_count(&self, uid: &Uid) -> usize {
        self.uids.get(uid).map_or(0, |s| s.ws.len() + s.ajax.len())
    }

    fn timer(&mut self, at: u64, t: Timer) {
        self.seq += 1;
        self.timers.insert((at, self.seq), t);
    }

    /// Adds the timer an entry's new deadline asks for, if any (see [`AjaxEntry::deadline`]).
    fn add_timer(&mut self, t: Option<(u64, Timer)>) {
        if let Some((at, t)) = t {
            self.timer(at, t);
        }
    }

    fn conn_id(&mut self) -> ConnId {
        let c = ConnId(self.next_conn);
        self.next_conn += 1;
        c
    }

    fn check_limit(&self, uid: &Uid, cid: &ClientId) -> Result<(), ConnectError> {
        let limit = if uid.is_nil() {
            self.cfg.limits.max_anonymous_connections
        } else {
            self.cfg.limits.max_connections_per_uid
        };
        let Some(s) = self.uids.get(uid) else {
            return Ok(());
        };
        // O(1): a client with both a WebSocket and an Ajax entry (a downgrade) counts twice.
        let n = s.ws.len() - usize::from(s.ws.contains_key(cid)) + s.ajax.len()
            - usize::from(s.ajax.contains_key(cid));
        if n >= limit {
            Err(ConnectError::TooManyConnections { limit })
        } else {
            Ok(())
        }
    }

    /// Recomputes the uid's presence after a change made by client `cid` with context `ctx`.
    fn update_presence(&mut self, uid: &Uid, cid: &ClientId, ctx: &C, now: u64) {
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        let ws = !s.ws.is_empty();
        let ajax = s.ajax_live > 0;
        let (was_any, now_any) = (s.in_ws || s.in_ajax, ws || ajax);
        let changed = ws != s.in_ws || ajax != s.in_ajax;
        s.in_ws = ws;
        s.in_ajax = ajax;
        if s.is_empty() {
            self.uids.remove(uid);
            if let Some(log) = self.logs.get_mut(uid) {
                log.seen = now;
            }
        }
        if changed {
            self.events.push(CoreEvent::Presence {
                uid: uid.clone(),
                ws,
                ajax,
            });
        }
        if now_any && !was_any {
            let ev = CoreEvent::UidportOpen {
                uid: uid.clone(),
                client_id: cid.clone(),
                ctx: ctx.clone(),
            };
            self.events.push(ev);
        } else if was_any && !now_any {
            let ev = CoreEvent::UidportClose {
                uid: uid.clone(),
                client_id: cid.clone(),
                ctx: ctx.clone(),
            };
            self.events.push(ev);
        }
    }

    // ---------------------------------------------------------------------------------------
    // WebSocket

    /// A WebSocket of client `cid` opened (after its handshake frame was queued). Replaces any
    /// earlier socket of the same client (which is closed) and hands it the pushes that were
    /// waiting for the client.
    pub fn handle_ws_open(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn_handle: W,
        ctx: C,
        now: u64,
    ) -> Result<ConnId, ConnectError> {
        self.handle_ws_open_resume(uid, cid, conn_handle, ctx, &Resume::Off, now)
            .map(|(conn, _)| conn)
    }

    /// [`Core::handle_ws_open`] for a client that may resume (its `resume` parameter; see
    /// [`super::replay`]). Returns the connection and, for a resuming client (when replay is
    /// enabled), what its handshake must tell it; what it missed is delivered first.
    pub fn handle_ws_open_resume(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn_handle: W,
        ctx: C,
        asked: &Resume,
        now: u64,
    ) -> Result<(ConnId, Option<ResumeInfo>), ConnectError> {
        self.check_limit(uid, cid)?;
        let conn = self.conn_id();
        // Anonymous clients share the nil uid: none of them may read the others' pushes.
        let resume = asked.is_on() && self.cfg.replay.enabled && !uid.is_nil();
        let info = resume.then(|| {
            let (info, replay) = self.resume_from(uid, cid, asked, usize::MAX, now);
            for (batch, seq) in replay {
                self.actions.push(Action::WsDeliver {
                    conn: conn_handle.clone(),
                    batch,
                    seq: Some(seq),
                });
            }
            info
        });
        let s = self
            .uids
            .entry(uid.clone())
            .or_insert_with(|| Box::new(UidState::new()));
        let mut queue = Queue::default();
        if let Some(old) = s.ws.remove(cid) {
            if let WsState::Open(w) = old.state {
                self.actions.push(Action::WsClose {
                    conn: w,
                    reason: "replaced by a newer connection",
                });
            }
            queue = old.queue;
        }
        // A resuming client's queue holds only pushes to it alone (`send_to_client`): they
        // follow the replay, unnumbered.
        while let Some((batch, _)) = queue.pop() {
            self.actions.push(Action::WsDeliver {
                conn: conn_handle.clone(),
                batch,
                seq: None,
            });
        }
        let entry = WsEntry {
            conn,
            state: WsState::Open(conn_handle),
            ctx: ctx.clone(),
            queue: Queue::default(),
            resume,
        };
        s.ws.insert(cid.clone(), entry);
        self.update_presence(uid, cid, &ctx, now);
        Ok((conn, info))
    }

    /// The uid's replay log (created if it has none), and what a client that asked `asked`
    /// gets: its handshake's answer, and the pushes it missed, in numbered batches to deliver
    /// before anything else (at most `max_replay` pushes: more is `recovered: false`).
    fn resume_from(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        asked: &Resume,
        max_replay: usize,
        now: u64,
    ) -> (ResumeInfo, Vec<(Arc<PushBatch>, u64)>) {
        // What is buffered goes out now (to the uid's other clients): the replay then ends
        // where the live batches start, so the two never overlap.
        self.flush(uid, now);
        if self.cfg.cluster_resume {
            return self.resume_global(uid, cid, asked, max_replay, now);
        }
        if !self.logs.contains_key(uid) {
            self.log_gen += 1;
            let epoch = format!("{:x}-{:x}", self.epoch_seed, self.log_gen);
            self.logs.insert(uid.clone(), ReplayLog::new(epoch, now));
            self.timer(
                now + self.cfg.replay.max_age_ms,
                Timer::LogExpiry(uid.clone()),
            );
        }
        let Some(log) = self.logs.get_mut(uid) else {
            unreachable!("inserted above");
        };
        log.prune(now, &self.cfg.replay);
        let upto = log.last();
        let missed = match asked {
            Resume::From(p) if p.epoch == log.epoch() => log.numbered_after(p.seq, upto, cid),
            _ => None,
        };
        let position = Position {
            epoch: log.epoch().to_owned(),
            seq: upto,
        };
        self.answer_resume(asked, position, missed, max_replay)
    }

    /// Cluster mode: creates `uid`'s log if it has none (holding what follows `g`'s base).
    fn global_log(&mut self, uid: &Uid, g: GlobalState, now: u64) {
        if !self.logs.contains_key(uid) {
            let log = ReplayLog::starting(Self::global_epoch(g.epoch), g.base(), now);
            self.logs.insert(uid.clone(), log);
            let at = now + self.cfg.replay.max_age_ms;
            self.timer(at, Timer::LogExpiry(uid.clone()));
        }
    }

    /// Cluster mode: resumes from the uid's log and the broadcast log, under the cluster's
    /// global numbers. A position is resumed only if this node applied every sequenced
    /// message after it and still keeps every push to the uid after it.
    fn resume_global(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        asked: &Resume,
        max_replay: usize,
        now: u64,
    ) -> (ResumeInfo, Vec<(Arc<PushBatch>, u64)>) {
        let (position, missed) = self.global_missed(uid, cid, asked, now);
        self.answer_resume(asked, position, missed, max_replay)
    }

    /// Cluster mode: this node's position, and the pushes to `uid` (its own and broadcasts)
    /// numbered after the client's position, in order, when this node applied every sequenced
    /// message after it and still keeps every push to the uid after it (else `None`).
    fn global_missed(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        asked: &Resume,
        now: u64,
    ) -> (Position, Option<Numbered>) {
        let Some(g) = self.global else {
            // No sequenced message seen yet: nothing to resume from; a position no epoch has.
            let epoch = match self.announced {
                Some(e) => Self::global_epoch(e),
                None => format!("{:x}-0", self.epoch_seed),
            };
            return (Position { epoch, seq: 0 }, None);
        };
        let epoch = Self::global_epoch(g.epoch);
        self.global_log(uid, g, now);
        let cfg = &self.cfg.replay;
        let bcast = self
            .broadcasts
            .get_or_insert_with(|| ReplayLog::starting(epoch.clone(), g.base(), now));
        bcast.prune(now, cfg);
        let missed = match (asked, self.logs.get_mut(uid)) {
            (Resume::From(p), Some(log)) if p.epoch == epoch && p.seq >= g.complete_from => {
                log.prune(now, cfg);
                log.numbered_after(p.seq, g.applied, cid)
                    .zip(bcast.numbered_after(p.seq, g.applied, cid))
                    .map(|(mut own, all)| {
                        own.extend(all);
                        own.sort_by_key(|(n, _)| *n);
                        own
                    })
            }
            _ => None,
        };
        let position = Position {
            epoch,
            seq: g.applied,
        };
        (position, missed)
    }

    /// Splits `missed` (numbered pushes after the client's position) into batches, each with
    /// its last number, and answers: recovered from the client's own position, or (`missed`
    /// is `None`, or longer than `max_replay`) not, standing at `current`.
    fn answer_resume(
        &self,
        asked: &Resume,
        current: Position,
        missed: Option<Vec<(u64, Arc<Event>)>>,
        max_replay: usize,
    ) -> (ResumeInfo, Vec<(Arc<PushBatch>, u64)>) {
        let missed = missed.filter(|m| m.len() <= max_replay);
        let (Resume::From(from), Some(missed)) = (asked, missed) else {
            let info = ResumeInfo {
                position: current,
                recovered: false,
            };
            return (info, Vec::new());
        };
        let mut out = Vec::new();
        let max_batch = self.cfg.limits.message.max_batch_len.max(1);
        let max_bytes = self.cfg.limits.message.max_message_bytes / 2;
        let mut seq = from.seq;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (n, event) in missed {
            let size = estimate_event_size(&event, max_bytes);
            if !batch.is_empty() && (batch.len() >= max_batch || bytes + size > max_bytes) {
                out.push((Arc::new(PushBatch::new(std::mem::take(&mut batch))), seq));
                bytes = 0;
            }
            bytes += size;
            seq = n;
            batch.push(event);
        }
        if !batch.is_empty() {
            out.push((Arc::new(PushBatch::new(batch)), seq));
        }
        let info = ResumeInfo {
            position: from.clone(),
            recovered: true,
        };
        (info, out)
    }

    /// A WebSocket closed. If it is still the client's current one, the client is kept for the
    /// grace period (pushes meanwhile are queued for a reconnect).
    pub fn handle_ws_closed(&mut self, uid: &Uid, cid: &ClientId, conn: ConnId, now: u64) {
        let grace = self.cfg.ms_allow_reconnect_before_close_ws;
        let Some(e) = self.uids.get_mut(uid).and_then(|s| s.ws.get_mut(cid)) else {
            return;
        };
        if e.conn != conn || matches!(e.state, WsState::Closed) {
            return;
        }
        e.state = WsState::Closed;
        self.timer(now + grace, Timer::WsGrace(uid.clone(), cid.clone(), conn));
    }

    // ---------------------------------------------------------------------------------------
    // Ajax

    /// Whether the server has an Ajax entry for the client (else a GET gets a handshake,
    /// spec 6.1: this covers a server restart).
    pub fn ajax_knows(&self, uid: &Uid, cid: &ClientId) -> bool {
        self.uids.get(uid).is_some_and(|s| s.ajax.contains_key(cid))
    }

    /// An Ajax handshake GET was answered: the client becomes known (but not connected until its
    /// first long-poll, spec 7.4).
    pub fn handle_ajax_handshake(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        ctx: C,
        now: u64,
    ) -> Result<(), ConnectError> {
        self.handle_ajax_handshake_resume(uid, cid, ctx, &Resume::Off, now)
            .map(|_| ())
    }

    /// [`Core::handle_ajax_handshake`] for a client that may resume (its `resume` parameter;
    /// see [`super::replay`]). Returns, for a resuming client (when replay is enabled and the
    /// Ajax pushes are not in a backplane's mailboxes), what its handshake must tell it; the
    /// pushes it missed wait for its next poll, numbered, before anything else. A client the
    /// core knows already (it comes back within its grace period) gets them again from its
    /// position: its numbered waiting batches are replaced by the replay, and a poll still
    /// held for it is ended (the client has given it up: a batch answered there would be lost).
    pub fn handle_ajax_handshake_resume(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        ctx: C,
        asked: &Resume,
        now: u64,
    ) -> Result<Option<ResumeInfo>, ConnectError> {
        if self.cfg.ajax_mailbox {
            return self
                .handle_ajax_handshake_mailbox(uid, cid, ctx, asked, (false, None), now)
                .map(|r| {
                    let filled = r.fill.is_empty();
                    r.answer(filled)
                });
        }
        let resume = asked.is_on() && self.cfg.replay.enabled && !uid.is_nil();
        let known = self.ajax_knows(uid, cid);
        if known && !resume {
            return Ok(None);
        }
        if !known {
            self.check_limit(uid, cid)?;
        }
        // A poll still held for a known client ends before the replay's flush, which would
        // answer it.
        if let Some(e) = self.uids.get_mut(uid).and_then(|s| s.ajax.get_mut(cid)) {
            e.answer_held(uid, cid, &mut self.actions, || PollAnswer::Timeout);
        }
        // Before the entry exists (as for a WebSocket): what the flush sends goes to the
        // uid's other clients; the replay ends where the live batches start.
        let limit = self.cfg.limits.max_pending_events_per_client;
        let replayed = resume.then(|| self.resume_from(uid, cid, asked, limit, now));
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let conn = self.conn_id();
        let e = ajax_entry(&mut self.uids, uid, cid, conn, ctx);
        e.conn = conn;
        let info = replayed.map(|(info, replay)| {
            e.resume = true;
            e.queue.replace_numbered(replay);
            info
        });
        let t = e.deadline(now + grace, uid, cid);
        self.add_timer(t);
        Ok(info)
    }

    /// A long-poll GET arrived. It is answered at once if pushes are waiting for the client, else
    /// held until a flush or `lp_timeout_ms`. A poll still held for the same client is answered
    /// `[:chsk/timeout nil]` (one held poll per client).
    pub fn handle_ajax_poll(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        responder: A,
        ctx: C,
        now: u64,
    ) -> Result<ConnId, ConnectError> {
        self.handle_ajax_poll_resume(uid, cid, responder, ctx, &Resume::Off, now)
    }

    /// [`Core::handle_ajax_poll`] of a poll that names the client's position (its `resume`
    /// parameter). Mailbox mode with cluster numbers: what the mailbox gives this poll is
    /// numbered and leaves out what the position says the client has (see
    /// [`Core::wake_done_taken`]); else the same as [`Core::handle_ajax_poll`].
    pub fn handle_ajax_poll_resume(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        responder: A,
        ctx: C,
        asked: &Resume,
        now: u64,
    ) -> Result<ConnId, ConnectError> {
        self.handle_ajax_poll_with(uid, cid, responder, || ctx, asked, now)
    }

    /// [`Core::handle_ajax_poll_resume`], its context made by `ctx` only if the poll creates
    /// the client's entry (a poll that lands on a node the client did not handshake with, in
    /// mailbox mode). A known client keeps the context its entry was made with (its
    /// handshake's), so a poll need not keep its own request.
    pub fn handle_ajax_poll_with(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        responder: A,
        ctx: impl FnOnce() -> C,
        asked: &Resume,
        now: u64,
    ) -> Result<ConnId, ConnectError> {
        self.check_limit(uid, cid)?;
        let conn = self.conn_id();
        let (lp, grace) = (
            self.cfg.lp_timeout_ms,
            self.cfg.ms_allow_reconnect_before_close_ajax,
        );
        // One lookup (a uid's copy is a reference count).
        let s = self
            .uids
            .entry(uid.clone())
            .or_insert_with(|| Box::new(UidState::new()));
        let e = s
            .ajax
            .get_or_insert_with(cid, || AjaxEntry::new(conn, ctx()));
        if self.cfg.ajax_mailbox {
            e.asked = asked.clone();
        }
        let old_conn = e.conn;
        e.conn = conn;
        let ctx = e.ctx.clone();
        let old = std::mem::replace(&mut e.state, AjaxState::Idle);
        // (Empty in mailbox mode: nothing is queued here.)
        let first = e.queue.pop_merged(
            self.cfg.limits.message.max_batch_len.max(1),
            self.cfg.limits.message.max_message_bytes / 2,
        );
        if matches!(old, AjaxState::Known) {
            s.ajax_live += 1;
        }
        let due;
        if let AjaxState::Polling { responder: old } = old {
            self.actions.push(Action::AjaxAnswer {
                uid: uid.clone(),
                client_id: cid.clone(),
                conn: old_conn,
                responder: old,
                answer: PollAnswer::Timeout,
            });
        }
        if let Some((batch, seq)) = first {
            self.actions.push(Action::AjaxAnswer {
                uid: uid.clone(),
                client_id: cid.clone(),
                conn,
                responder,
                answer: PollAnswer::of(batch, seq),
            });
            due = now + grace;
        } else {
            e.state = AjaxState::Polling { responder };
            due = now + lp;
        }
        let t = e.deadline(due, uid, cid);
        self.add_timer(t);
        self.update_presence(uid, cid, &ctx, now);
        Ok(conn)
    }

    /// The poll request `conn` ended without being answered by the core (the client went away).
    pub fn handle_poll_ended(&mut self, uid: &Uid, cid: &ClientId, conn: ConnId, now: u64) {
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let Some(e) = self.uids.get_mut(uid).and_then(|s| s.ajax.get_mut(cid)) else {
            return;
        };
        if e.conn == conn
            && matches!(
                e.state,
                AjaxState::Polling { .. } | AjaxState::Waking { .. }
            )
        {
            e.state = AjaxState::Idle;
            let t = e.deadline(now + grace, uid, cid);
            self.add_timer(t);
        }
    }

    /// An [`Action::AjaxAnswer`] could not be delivered (the request was gone): a batch goes back
    /// to the front of the client's queue for its next poll.
    pub fn handle_poll_undeliverable(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn: ConnId,
        answer: PollAnswer,
        now: u64,
    ) {
        self.handle_poll_ended(uid, cid, conn, now);
        let (batch, seq) = match answer {
            PollAnswer::Batch(b) => (b, None),
            PollAnswer::Numbered(b, n) => (b, Some(n)),
            PollAnswer::Timeout | PollAnswer::Closed => return,
        };
        if let Some(e) = self.uids.get_mut(uid).and_then(|s| s.ajax.get_mut(cid)) {
            e.queue.push_front(batch, seq);
        }
    }

    /// Mailbox mode ([`CoreConfig::ajax_mailbox`]): [`Core::handle_ajax_handshake_resume`].
    /// With cluster numbers ([`CoreConfig::cluster_resume`]) a resuming client's handshake
    /// resumes from the client's own position (of the cluster's epoch) when:
    ///
    /// - this node's logs hold every push to the client numbered after its position, up to
    ///   `upto` (the cluster's numbering read after the client's mailbox registration,
    ///   [`crate::backplane::Mailbox::sequence_now`], applied here); every later push is in
    ///   the mailbox. Those pushes are returned in [`MailboxResume::fill`], to put in front of
    ///   the mailbox before answering: they cover what the client missed before its mailbox
    ///   existed (it was on a WebSocket, or its mailbox expired) and an answer lost on its
    ///   way after its lease was marked delivered (its polls leave out what they have); or
    /// - without that, `kept`: the client's mailbox was registered before this request, so it
    ///   holds the pushes to the client since the position (which came from answers numbered
    ///   by the cluster), except such a lost answer.
    ///
    /// Otherwise `recovered: false` at the node's current position (never a partial replay).
    /// Nothing is queued in the core.
    pub fn handle_ajax_handshake_mailbox(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        ctx: C,
        asked: &Resume,
        (kept, upto): (bool, Option<(u64, u64)>),
        now: u64,
    ) -> Result<MailboxResume, ConnectError> {
        let known = self.ajax_knows(uid, cid);
        if !known {
            self.check_limit(uid, cid)?;
        }
        let resume =
            asked.is_on() && self.cfg.replay.enabled && self.cfg.cluster_resume && !uid.is_nil();
        let answer = if resume {
            self.mailbox_resume(uid, cid, asked, kept, upto, now)
        } else {
            MailboxResume::default()
        };
        if known && answer.info.is_none() {
            return Ok(answer);
        }
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let conn = self.conn_id();
        let e = ajax_entry(&mut self.uids, uid, cid, conn, ctx);
        if known {
            // A poll still held for the client ends: the client has given it up.
            e.answer_held(uid, cid, &mut self.actions, || PollAnswer::Timeout);
        }
        e.conn = conn;
        let t = e.deadline(now + grace, uid, cid);
        self.add_timer(t);
        Ok(answer)
    }

    /// Mailbox mode: what a resuming Ajax handshake tells the client (see
    /// [`Core::handle_ajax_handshake_mailbox`]).
    fn mailbox_resume(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        asked: &Resume,
        kept: bool,
        upto: Option<(u64, u64)>,
        now: u64,
    ) -> MailboxResume {
        let (position, missed) = self.global_missed(uid, cid, asked, now);
        let (Resume::From(p), Some(g)) = (asked, self.global) else {
            return MailboxResume::not_recovered(position);
        };
        if p.epoch != position.epoch || p.seq > g.applied {
            return MailboxResume::not_recovered(position);
        }
        // Without a fill: a kept mailbox is trusted to hold what follows the position.
        let fallback = if kept {
            MailboxResume::recovered(p.clone())
        } else {
            MailboxResume::not_recovered(position)
        };
        // What was numbered after `upto` is in the mailbox (appended once it existed).
        let fill: Vec<Taken> = match (missed, upto) {
            (Some(missed), Some((epoch, n))) if epoch == g.epoch && n <= g.applied => missed
                .into_iter()
                .take_while(|(seq, _)| *seq <= n)
                .map(|(seq, event)| Taken {
                    event,
                    seq: Some((g.epoch, seq)),
                })
                .collect(),
            (Some(missed), _) if missed.is_empty() => Vec::new(),
            _ => return fallback,
        };
        if fill.len() > self.cfg.limits.max_pending_events_per_client {
            return fallback;
        }
        MailboxResume {
            fill,
            unfilled: fallback.info,
            ..MailboxResume::recovered(p.clone())
        }
    }

    /// Mailbox mode: the answer of what a poll's take returned (see
    /// [`crate::backplane::Mailbox::take`]). For a client whose poll named a position of the
    /// cluster's epoch, the events numbered at or before it are left out (it has them: an
    /// answer re-sent after a node died, or pushes its WebSocket delivered), as is any event
    /// numbered at or before one kept before it; if every event left is numbered, the answer
    /// is numbered with the last one's number (as on one node). Otherwise the answer is a plain
    /// batch of every event. `None`: nothing is left.
    fn mailbox_batch(asked: &Resume, taken: Vec<Taken>) -> Option<(Arc<PushBatch>, Option<u64>)> {
        let mut last = match asked {
            Resume::From(p) => taken
                .iter()
                .find_map(|t| t.seq)
                .filter(|(epoch, _)| Self::global_epoch(*epoch) == p.epoch)
                .map(|_| p.seq),
            Resume::Off | Resume::New => None,
        };
        let numbering = last.is_some();
        let mut numbered = numbering;
        let mut events = Vec::with_capacity(taken.len());
        for t in taken {
            match (t.seq, last) {
                (Some((_, n)), Some(l)) if n <= l => continue,
                (Some((_, n)), Some(_)) => last = Some(n),
                _ => numbered = false,
            }
            events.push(t.event);
        }
        if events.is_empty() {
            return None;
        }
        let seq = last.filter(|_| numbered);
        Some((Arc::new(PushBatch::new(events)), seq))
    }

    /// [`Core::wake_done`] with what the mailbox gave as [`Taken`] events: for a client whose
    /// poll named a position, numbered and without what it has (see
    /// [`crate::backplane::Mailbox::take`]). A take left empty by that holds the poll again.
    pub fn wake_done_taken(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn: ConnId,
        responder: A,
        taken: Vec<Taken>,
        now: u64,
    ) -> WakeDone<A> {
        let asked = self
            .uids
            .get(uid)
            .and_then(|s| s.ajax.get(cid))
            .filter(|e| e.conn == conn)
            .map(|e| e.asked.clone());
        let answer = match asked {
            Some(asked) => Self::mailbox_batch(&asked, taken),
            // Superseded or gone: everything taken goes back.
            None => Self::mailbox_batch(&Resume::Off, taken),
        };
        self.wake_done_numbered(uid, cid, conn, responder, answer, now)
    }

    /// Mailbox mode: the responder of the poll `conn`, if it is still held, to answer it with
    /// what the client's mailbox holds (the entry is marked as waking; a flush meanwhile sets
    /// its `again` flag). `None` when the poll is gone, or already being woken (then it is
    /// woken again after that).
    pub fn take_poll_for_wake(&mut self, uid: &Uid, cid: &ClientId, conn: ConnId) -> Option<A> {
        let e = self.uids.get_mut(uid)?.ajax.get_mut(cid)?;
        if e.conn != conn {
            return None;
        }
        match &mut e.state {
            AjaxState::Polling { .. } => {}
            AjaxState::Waking { again, .. } => {
                *again = true;
                return None;
            }
            AjaxState::Known | AjaxState::Idle => return None,
        }
        match std::mem::replace(
            &mut e.state,
            AjaxState::Waking {
                again: false,
                timed_out: false,
                closed: false,
            },
        ) {
            AjaxState::Polling { responder } => Some(responder),
            _ => None,
        }
    }

    /// Mailbox mode: what the mailbox gave for a poll taken with [`Core::take_poll_for_wake`]
    /// (`None`: nothing waited). A batch answers the poll; nothing holds it again (or answers
    /// it `[:chsk/timeout nil]` if `lp_timeout_ms` passed meanwhile).
    pub fn wake_done(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn: ConnId,
        responder: A,
        batch: Option<Arc<PushBatch>>,
        now: u64,
    ) -> WakeDone<A> {
        let batch = batch.map(|b| (b, None));
        self.wake_done_numbered(uid, cid, conn, responder, batch, now)
    }

    /// [`Core::wake_done`] of a batch that may be numbered.
    fn wake_done_numbered(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        conn: ConnId,
        responder: A,
        batch: Option<(Arc<PushBatch>, Option<u64>)>,
        now: u64,
    ) -> WakeDone<A> {
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let entry = self
            .uids
            .get_mut(uid)
            .and_then(|s| s.ajax.get_mut(cid))
            .filter(|e| e.conn == conn && matches!(e.state, AjaxState::Waking { .. }));
        let Some(e) = entry else {
            // Superseded by a newer poll, ended, or forgotten: this request gets nothing.
            self.actions.push(Action::AjaxAnswer {
                uid: uid.clone(),
                client_id: cid.clone(),
                conn,
                responder,
                answer: PollAnswer::Timeout,
            });
            return match batch {
                Some((b, _)) => WakeDone::PutBack(b),
                None => WakeDone::Done,
            };
        };
        let (again, timed_out, closed) = match e.state {
            AjaxState::Waking {
                again,
                timed_out,
                closed,
            } => (again, timed_out, closed),
            _ => (false, false, false),
        };
        let (answer, done) = if closed {
            // Closed by the server meanwhile: the poll ends 410; what was taken waits in the
            // mailbox for the client's next handshake and poll.
            let done = match batch {
                Some((b, _)) => WakeDone::PutBack(b),
                None => WakeDone::Done,
            };
            (PollAnswer::Closed, done)
        } else if let Some((b, seq)) = batch {
            (PollAnswer::of(b, seq), WakeDone::Done)
        } else if again {
            e.state = AjaxState::Waking {
                again: false,
                timed_out,
                closed: false,
            };
            return WakeDone::Again(responder);
        } else if timed_out {
            (PollAnswer::Timeout, WakeDone::Done)
        } else {
            e.state = AjaxState::Polling { responder };
            return WakeDone::Done;
        };
        e.state = AjaxState::Idle;
        let t = e.deadline(now + grace, uid, cid);
        self.actions.push(Action::AjaxAnswer {
            uid: uid.clone(),
            client_id: cid.clone(),
            conn,
            responder,
            answer,
        });
        self.add_timer(t);
        done
    }

    /// Mailbox mode: wakes the polls held for `uids` (every uid with `None`): their mailboxes
    /// got pushes.
    pub fn wake_ajax(&mut self, uids: Option<&[Uid]>) {
        let wake = |uid: &Uid, s: &mut UidState<W, A, C>, actions: &mut Vec<Action<W, A>>| {
            for (cid, e) in s.ajax.iter_mut() {
                wake_entry(uid, cid, e, actions);
            }
        };
        match uids {
            Some(uids) => {
                for uid in uids {
                    if let Some(s) = self.uids.get_mut(uid) {
                        wake(uid, s, &mut self.actions);
                    }
                }
            }
            None => {
                for (uid, s) in &mut self.uids {
                    wake(uid, s, &mut self.actions);
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Pushes

    /// Buffers `event` for every client of `uid` (spec 7.5). The batch goes out after the
    /// transport's window, or now with `flush`, or early when it reaches the batch or size
    /// bound. `estimate` is the event's estimated packed size. Pushes to a uid with no client are
    /// dropped (as in Sente).
    pub fn send(&mut self, uid: &Uid, event: &Arc<Event>, estimate: usize, flush: bool, now: u64) {
        self.send_many(std::iter::once(uid), event, estimate, flush, now);
    }

    /// [`Core::send_many`] of a push numbered `seq` by the cluster (cluster mode; call
    /// [`Core::sequenced`] first): logged under that number for each uid. `None`: a push
    /// without a number (see [`Core::sequenced`]).
    pub fn send_many_seq<'a>(
        &mut self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: &Arc<Event>,
        estimate: usize,
        flush: bool,
        now: u64,
        seq: Option<u64>,
    ) {
        if self.cfg.cluster_resume && seq.is_none() {
            self.unsequenced();
        }
        let mut round = Round::default();
        for uid in uids {
            let n = self.number(uid, None, event, estimate, now, seq);
            self.send_one(uid, event, estimate, flush, now, &mut round, n);
        }
    }

    /// The number of a push to `uid`, logging it: the uid's log's next number on one node, the
    /// global `seq` in cluster mode (logged in the uid's log, created if needed).
    fn number(
        &mut self,
        uid: &Uid,
        only: Option<&ClientId>,
        event: &Arc<Event>,
        estimate: usize,
        now: u64,
        seq: Option<u64>,
    ) -> Option<u64> {
        if !self.cfg.cluster_resume {
            let cfg = &self.cfg.replay;
            return self
                .logs
                .get_mut(uid)
                .map(|log| log.append_for(only, event, estimate, now, cfg));
        }
        let (seq, g) = (seq?, self.global?);
        if self.cfg.replay.enabled && !uid.is_nil() {
            self.global_log(uid, g, now);
            if let Some(log) = self.logs.get_mut(uid) {
                log.append_at_for(seq, only, event, estimate, now, &self.cfg.replay);
                log.seen = now;
            }
        }
        Some(seq)
    }

    /// [`Core::send`] for each of `uids`, in order. Batches flushed by this call that hold the
    /// same events (e.g. just `event`, for every uid with nothing else buffered) are one shared
    /// [`PushBatch`], so they are packed once per packer.
    pub fn send_many<'a>(
        &mut self,
        uids: impl IntoIterator<Item = &'a Uid>,
        event: &Arc<Event>,
        estimate: usize,
        flush: bool,
        now: u64,
    ) {
        self.send_many_seq(uids, event, estimate, flush, now, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_one(
        &mut self,
        uid: &Uid,
        event: &Arc<Event>,
        estimate: usize,
        flush: bool,
        now: u64,
        round: &mut Round,
        seq: Option<u64>,
    ) {
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        let push = Push {
            event,
            estimate,
            flush,
            now,
            seq,
        };
        let left = push_state(s, uid, &push, round, &self.cfg, &mut self.actions);
        self.after_push(uid, now, left);
    }

    /// What a push left to do once the uid's state is no longer borrowed, in order.
    fn after_push(&mut self, uid: &Uid, now: u64, left: Pushed) {
        let Some(left) = left.0 else {
            return;
        };
        for (t, f) in TRANSPORTS.into_iter().zip(left.full) {
            if let Some(f) = f {
                self.after_flush(uid, t, now, *f);
            }
        }
        for (t, at) in TRANSPORTS.into_iter().zip(left.windows) {
            if let Some(at) = at {
                self.timer(at, Timer::Flush(uid.clone(), t));
            }
        }
        for (t, f) in TRANSPORTS.into_iter().zip(left.due) {
            if let Some(f) = f {
                self.after_flush(uid, t, now, *f);
            }
        }
    }

    /// Pushes `event` to every connected uid: straight over the uid map, with no list of uids
    /// cloned and no lookup per uid. Each push is numbered by its uid's replay log on one node,
    /// `global` in cluster mode.
    fn push_connected(
        &mut self,
        event: &Arc<Event>,
        estimate: usize,
        flush: bool,
        now: u64,
        global: Option<u64>,
    ) {
        let mut round = Round::default();
        let mut left = Vec::new();
        let local_logs = !self.cfg.cluster_resume;
        for (uid, s) in &mut self.uids {
            if !(s.in_ws || s.in_ajax) {
                continue;
            }
            let seq = if local_logs {
                self.logs
                    .get_mut(uid)
                    .map(|log| log.append(event, estimate, now, &self.cfg.replay))
            } else {
                global
            };
            let push = Push {
                event,
                estimate,
                flush,
                now,
                seq,
            };
            let l = push_state(s, uid, &push, &mut round, &self.cfg, &mut self.actions);
            if !l.is_empty() {
                left.push((uid.clone(), l));
            }
        }
        for (uid, l) in left {
            self.after_push(&uid, now, l);
        }
    }

    /// [`Core::send_many`] to every connected uid (those of [`Core::connected`]), and to the
    /// uids whose replay logs wait for a client to come back.
    pub fn broadcast(&mut self, event: &Arc<Event>, estimate: usize, flush: bool, now: u64) {
        self.broadcast_seq(event, estimate, flush, now, None);
    }

    /// [`Core::broadcast`] of a push numbered `seq` by the cluster (cluster mode; call
    /// [`Core::sequenced`] first): logged once, in the broadcast log every resume also reads,
    /// and sent to the uids connected here.
    pub fn broadcast_seq(
        &mut self,
        event: &Arc<Event>,
        estimate: usize,
        flush: bool,
        now: u64,
        seq: Option<u64>,
    ) {
        if self.cfg.cluster_resume {
            let g = self.global;
            let n = match (seq, g) {
                (Some(n), Some(g)) if self.cfg.replay.enabled => {
                    let epoch = Self::global_epoch(g.epoch);
                    let log = self
                        .broadcasts
                        .get_or_insert_with(|| ReplayLog::starting(epoch, g.base(), now));
                    log.append_at(n, event, estimate, now, &self.cfg.replay);
                    Some(n)
                }
                (Some(n), _) => Some(n),
                (None, _) => {
                    self.unsequenced();
                    None
                }
            };
            self.push_connected(event, estimate, flush, now, n);
            return;
        }
        // The uids whose logs wait for a client to come back log the push too.
        let waiting: Vec<Uid> = self
            .logs
            .keys()
            .filter(|u| !self.uids.get(*u).is_some_and(|s| s.in_ws || s.in_ajax))
            .cloned()
            .collect();
        self.push_connected(event, estimate, flush, now, None);
        self.send_many(&waiting, event, estimate, flush, now);
    }

    /// Pushes `event` to client `cid` of `uid` alone (`send_to_client`). What is buffered for
    /// the uid goes out first, so the push keeps its place among the uid's pushes. It takes
    /// the uid's next number and waits in the uid's replay log for that client alone (see
    /// [`super::replay::ReplayLog::numbered_after`]), so the client resumes it like any push
    /// to its uid (also after the grace period, and on another node of a cluster). Then it
    /// goes to the client's open WebSocket, else to its Ajax poll (held, or queued for the
    /// next one; in mailbox mode the event is in the client's mailbox already and its poll is
    /// woken), else, for a closed WebSocket without resume, to its queue, delivered when it
    /// reconnects within the grace period. Returns whether this core knows the client
    /// (`false`: it was only logged).
    pub fn send_to_client(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        event: &Arc<Event>,
        now: u64,
    ) -> bool {
        let estimate = estimate_event_size(event, self.cfg.limits.message.max_message_bytes / 2);
        self.send_to_client_seq(uid, cid, event, estimate, now, None)
    }

    /// [`Core::send_to_client`] of a push of estimated size `estimate`, numbered `seq` by the
    /// cluster (cluster mode; call [`Core::sequenced`] first; `None`: the engine was
    /// unreachable, so older positions become unresumable here). Logged on every node, so the
    /// client resumes it wherever it reconnects.
    pub fn send_to_client_seq(
        &mut self,
        uid: &Uid,
        cid: &ClientId,
        event: &Arc<Event>,
        estimate: usize,
        now: u64,
        seq: Option<u64>,
    ) -> bool {
        self.flush(uid, now);
        if self.cfg.cluster_resume && seq.is_none() {
            self.unsequenced();
        }
        let n = self.number(uid, Some(cid), event, estimate, now, seq);
        let limit = self.cfg.limits.max_pending_events_per_client;
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let mailbox = self.cfg.ajax_mailbox;
        let Some(s) = self.uids.get_mut(uid) else {
            return false;
        };
        if !s.ws.contains_key(cid) && !s.ajax.contains_key(cid) {
            return false;
        }
        let batch = Arc::new(PushBatch::new(vec![event.clone()]));
        let mut dropped = None;
        let ws_open =
            s.ws.get(cid)
                .is_some_and(|e| matches!(e.state, WsState::Open(_)));
        if let (false, Some(e)) = (ws_open, s.ajax.get_mut(cid)) {
            let seq = n.filter(|_| e.resume);
            if mailbox {
                // The event is in the client's mailbox already.
                wake_entry(uid, cid, e, &mut self.actions);
            } else if e.answer_held(uid, cid, &mut self.actions, || {
                PollAnswer::of(batch.clone(), seq)
            }) {
                let t = e.deadline(now + grace, uid, cid);
                self.add_timer(t);
            } else if !e.queue.push(batch, seq, limit) {
                dropped = Some(Transport::Ajax);
            }
        } else if let Some(e) = s.ws.get_mut(cid) {
            let seq = n.filter(|_| e.resume);
            match &e.state {
                WsState::Open(w) => self.actions.push(Action::WsDeliver {
                    conn: w.clone(),
                    batch,
                    seq,
                }),
                // Its reconnect replays it from the log.
                WsState::Closed if seq.is_some() => {}
                WsState::Closed => {
                    if !e.queue.push(batch, None, limit) {
                        dropped = Some(Transport::Ws);
                    }
                }
            }
        }
        if let Some(t) = dropped {
            self.drop_client(uid, cid, t, now);
        }
        true
    }

    /// The clients of `uid` with their transport and context (a client with both a WebSocket
    /// and an Ajax entry is listed once, with its WebSocket).
    pub fn clients(&self, uid: &Uid) -> Vec<(ClientId, Transport, C)> {
        let Some(s) = self.uids.get(uid) else {
            return Vec::new();
        };
        let ws =
            s.ws.iter()
                .map(|(c, e)| (c.clone(), Transport::Ws, e.ctx.clone()));
        let ajax = s
            .ajax
            .iter()
            .filter(|(c, _)| !s.ws.contains_key(c))
            .map(|(c, e)| (c.clone(), Transport::Ajax, e.ctx.clone()));
        ws.chain(ajax).collect()
    }

    /// Flushes both buffers of `uid` now.
    pub fn flush(&mut self, uid: &Uid, now: u64) {
        self.flush_transport(uid, Transport::Ws, now, None);
        self.flush_transport(uid, Transport::Ajax, now, None);
    }

    /// Closes every connection of `uid` (Sente's `[:chsk/close]`), after flushing what is
    /// buffered. WebSockets get a close frame after their queued pushes; a held Ajax poll is
    /// answered [`PollAnswer::Closed`]. The clients reconnect, as with Sente.
    pub fn close_uid(&mut self, uid: &Uid, now: u64) {
        self.end_uid(uid, now, true);
    }

    /// Lets go of every connection of `uid` for a server that is draining: like
    /// [`close_uid`](Self::close_uid) (flushed first, WebSockets closed after their queued
    /// pushes), but a held Ajax poll is answered [`PollAnswer::Timeout`] (an empty answer, as
    /// at `lp_timeout_ms`), so the client polls again, elsewhere behind a load balancer,
    /// without a new handshake. A poll being answered from a mailbox finishes with what it took.
    pub fn release_uid(&mut self, uid: &Uid, now: u64) {
        self.end_uid(uid, now, false);
    }

    fn end_uid(&mut self, uid: &Uid, now: u64, gone: bool) {
        self.flush(uid, now);
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        for e in s.ws.values() {
            if let WsState::Open(w) = &e.state {
                self.actions.push(Action::WsClose {
                    conn: w.clone(),
                    reason: "closed by the server",
                });
            }
        }
        let mut timers = Vec::new();
        for (cid, e) in s.ajax.iter_mut() {
            if let AjaxState::Waking {
                closed, timed_out, ..
            } = &mut e.state
            {
                if gone {
                    *closed = true;
                } else {
                    *timed_out = true;
                }
                continue;
            }
            let answer = if gone {
                PollAnswer::Closed
            } else {
                PollAnswer::Timeout
            };
            if e.answer_held(uid, cid, &mut self.actions, || answer) {
                timers.extend(e.deadline(now + grace, uid, cid));
            }
        }
        for (at, t) in timers {
            self.timer(at, t);
        }
    }

    fn flush_transport(&mut self, uid: &Uid, t: Transport, now: u64, round: Option<&mut Round>) {
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        if let Some(left) = flush_state(s, uid, t, now, round, &self.cfg, &mut self.actions) {
            self.after_flush(uid, t, now, *left);
        }
    }

    /// What a flush left to do once the uid's state is no longer borrowed.
    fn after_flush(&mut self, uid: &Uid, t: Transport, now: u64, left: Flushed) {
        for (at, tm) in left.timers {
            self.timer(at, tm);
        }
        for cid in left.dropped {
            self.drop_client(uid, &cid, t, now);
        }
    }

    fn drop_client(&mut self, uid: &Uid, cid: &ClientId, t: Transport, now: u64) {
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        let ctx = match t {
            Transport::Ws => s.ws.remove(cid).map(|e| e.ctx),
            Transport::Ajax => s.remove_ajax(cid).map(|e| e.ctx),
        };
        if let Some(ctx) = ctx {
            self.events.push(CoreEvent::ClientDropped {
                uid: uid.clone(),
                client_id: cid.clone(),
                transport: t,
            });
            self.update_presence(uid, cid, &ctx, now);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Time

    /// Runs everything due at `now`: batch windows, poll timeouts, grace-period expiries.
    pub fn poll(&mut self, now: u64) {
        let mut round = Round::default();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), timer) = entry.remove_entry();
            self.fire(at, timer, now, &mut round);
        }
    }

    /// [`Timer::Ajax`] added at `at` fires: when the entry's time has come, its held poll
    /// times out (answered empty; its grace period starts), a poll being woken is marked timed
    /// out, or its grace period ends (the client is gone); otherwise the timer is added again
    /// for the entry's `due`, unless one waits that fires by then.
    fn fire_ajax(&mut self, at: u64, uid: &Uid, cid: &ClientId, now: u64) {
        let grace = self.cfg.ms_allow_reconnect_before_close_ajax;
        let Some(s) = self.uids.get_mut(uid) else {
            return;
        };
        let Some(e) = s.ajax.get_mut(cid) else {
            return;
        };
        if e.armed == Some(at) {
            e.armed = None;
        }
        if e.due > now {
            let t = e.deadline(e.due, uid, cid);
            self.add_timer(t);
            return;
        }
        match &mut e.state {
            AjaxState::Waking { timed_out, .. } => *timed_out = true,
            AjaxState::Polling { .. } => {
                e.answer_held(uid, cid, &mut self.actions, || PollAnswer::Timeout);
                let t = e.deadline(now + grace, uid, cid);
                self.add_timer(t);
            }
            AjaxState::Idle | AjaxState::Known => {
                if let Some(e) = s.remove_ajax(cid) {
                    self.update_presence(uid, cid, &e.ctx, now);
                }
            }
        }
    }

    fn fire(&mut self, at: u64, timer: Timer, now: u64, round: &mut Round) {
        match timer {
            Timer::Flush(uid, t) => {
                let due = self
                    .uids
                    .get_mut(&uid)
                    .is_some_and(|s| s.buf(t).deadline == Some(at));
                if due {
                    self.flush_transport(&uid, t, now, Some(round));
                }
            }
            Timer::WsGrace(uid, cid, conn) => {
                let Some(s) = self.uids.get_mut(&uid) else {
                    return;
                };
                let expired =
                    s.ws.get(&cid)
                        .is_some_and(|e| e.conn == conn && matches!(e.state, WsState::Closed));
                if expired && let Some(e) = s.ws.remove(&cid) {
                    self.update_presence(&uid, &cid, &e.ctx, now);
                }
            }
            Timer::Ajax(uid, cid) => self.fire_ajax(at, &uid, &cid, now),
            Timer::LogExpiry(uid) => {
                let max_age = self.cfg.replay.max_age_ms;
                let clients = self.uids.contains_key(&uid);
                let Some(log) = self.logs.get_mut(&uid) else {
                    return;
                };
                if clients {
                    log.seen = now;
                }
                if now.saturating_sub(log.seen) >= max_age {
                    let last = log.last();
                    if let Some(g) = &mut self.global {
                        g.dropped = g.dropped.max(last);
                    }
                    self.logs.remove(&uid);
                } else {
                    let at = log.seen + max_age;
                    self.timer(at, Timer::LogExpiry(uid));
                }
            }
        }
    }
}
