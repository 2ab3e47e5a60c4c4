//! A wake-up filter for one branch of a task's `select!`.
//!
//! A WebSocket connection's task waits on several things at once: its send queue, its socket's
//! read side, its timer. Every wake-up re-polls every branch, and most wake-ups are pushes: a
//! fan-out tick wakes each connection to write one batch, and re-polling the read side then
//! walks the frame reader, hyper's upgraded stream and tokio's registration only to learn again
//! that nothing arrived (about 1 100 instructions per delivered event, a seventh of the total,
//! in `sente-load fanout --callgrind` when connections still read through tungstenite).
//!
//! A [`Gate`] gives the branch a waker of its own. The branch's future registers that waker
//! wherever it waits; when it fires, the gate opens and wakes the task. While the gate is
//! closed, polling the branch returns `Pending` at once. That is sound because a future that
//! returned `Pending` need not be polled again until a waker it registered was woken: here, the
//! gate's.
//!
//! The gate is open at first, stays open after the branch returned `Ready` (the next item may
//! already be buffered), and must be [opened](Gate::open) whenever the branch's future is
//! replaced, reset or polled outside the gate (it then registered another waker).

use futures_util::task::AtomicWaker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Polls one branch only after the branch's own waker fired (see the module docs).
pub(crate) struct Gate {
    flag: Arc<Flag>,
    /// The branch's waker, made once: the branch's registrations see the same waker on every
    /// poll and keep it instead of cloning a new one.
    waker: Waker,
    /// The task's waker as last registered in `flag.task`, while that registration still
    /// holds: only the branch's waker firing uses it up, and that leaves the gate open.
    registered: Option<Waker>,
}

impl Gate {
    /// An open gate.
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Gate {
            waker: Waker::from(flag.clone()),
            flag,
            registered: None,
        }
    }

    /// The branch will be polled on the next [`Gate::poll`] whatever woke the task.
    pub(crate) fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// Polls the branch `f` with the gate's waker if the gate is open; `Pending` otherwise.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake-up in between wakes the task again. A
        // registration still held (the gate stayed closed since) need not be made again.
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.flag.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if !self.flag.woken.load(Ordering::Acquire)
            || !self.flag.woken.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        // The branch's waker may have fired and used the registration up.
        self.registered = None;
        let r = f(&mut Context::from_waker(&self.waker));
        if r.is_ready() {
            self.open();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_closed_gate_skips_the_branch_until_its_waker_fires() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut gate = Gate::new();
        let stored = std::cell::RefCell::<Option<Waker>>::default();
        let polls = std::cell::Cell::new(0);
        let branch = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *stored.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };
        assert!(gate.poll(&mut cx, branch).is_pending());
        // Woken by something else: the branch is not polled.
        assert!(gate.poll(&mut cx, branch).is_pending());
        assert_eq!(polls.get(), 1);
        // The branch's waker fires: the task is woken and the branch polled again.
        stored.take().expect("registered").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(gate.poll(&mut cx, branch).is_pending());
        assert_eq!(polls.get(), 2);
        // Opened by hand (the branch was reset): polled again.
        gate.open();
        assert!(gate.poll(&mut cx, branch).is_pending());
        assert_eq!(polls.get(), 3);
    }

    #[test]
    fn a_ready_branch_is_polled_again() {
        let task_waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&task_waker);
        let mut gate = Gate::new();
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(1)), Poll::Ready(1));
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(2)), Poll::Ready(2));
    }
}
