//! The group-commit coordinator (issue 11 item 4): "durable when the write returns" for
//! several writers of one stream at the cost of one flush per batch.
//!
//! # The guarantee
//!
//! A writer calls [`GroupCommit::commit`] after its write completed. `commit` returns
//! only after a flush that **started after that call began** has completed: with its
//! success ([`Committed::Flushed`]) or, if every such flush that completed first failed,
//! with the failure ([`Committed::NotFlushed`]: fail open; the writer's own write status
//! stays what it was). `flush` is called once per flush, by the writer leading it, so a
//! failure is counted once where the caller's `flush` counts it.
//! Writers that arrive while a flush is in flight wait for the next one, so one flush
//! covers a whole batch; at most `max_batch` writers are acknowledged by any one flush.
//!
//! # How
//!
//! Flushes are numbered 1, 2, ... in the order they start; at most one is in flight.
//! A writer takes a *ticket* when it registers: the number of the first flush that has
//! not started yet (or a later one, when `max_batch` writers already hold that number).
//! A flush numbered `k` covers every ticket `<= k`. A writer whose ticket is not covered
//! yet either starts the next flush itself (when none is in flight: it becomes the
//! batch's leader) or waits on the event of the flush in flight, then looks again. Each
//! flush has a fresh event (notification semantics: set once, every past and future
//! waiter returns), so no wake-up can be lost.
//!
//! The state lives behind the [`CommitSync::locked`] lock of the implementation (an
//! `EX_SPIN_LOCK` taken exclusively in a driver: held for a few instructions, never
//! across the flush or a wait), with an inner `spin` lock for memory safety in safe Rust
//! that the outer lock keeps uncontended. Everything is safe Rust; `flush`, the events and
//! the lock come from the caller, so the same code runs in the driver, in the host tests
//! and under `loom` (engine/tests/loom_group_commit.rs).

use alloc::sync::Arc;

use flushguard_protocol::NtStatus;

/// A notification event: [`BatchEvent::set`] once, every past and future
/// [`BatchEvent::wait`] returns (a `KEVENT` of `NotificationEvent` type in a driver).
pub trait BatchEvent: Send + Sync {
    /// Blocks the calling thread until the event is set (PASSIVE_LEVEL in a driver).
    fn wait(&self);
    /// Sets the event, waking every waiter. Any IRQL <= DISPATCH_LEVEL in a driver.
    fn set(&self);
}

/// What the coordinator needs from its environment.
pub trait CommitSync: Send + Sync {
    /// The per-flush event type.
    type Event: BatchEvent;
    /// A fresh, unset event; `None` when it cannot be allocated (the coordinator then
    /// fails open for that writer: [`Committed::Unbatched`]).
    fn new_event(&self) -> Option<Self::Event>;
    /// The guard of the coordinator's lock: released when dropped.
    type Guard<'a>
    where
        Self: 'a;
    /// Takes the coordinator's lock (held for a few field updates: never across a wait
    /// or a flush). A driver raises to DISPATCH_LEVEL (`EX_SPIN_LOCK` exclusive).
    fn lock(&self) -> Self::Guard<'_>;
    /// Sleeps `us` microseconds (PASSIVE_LEVEL): the leader's wait for more writers
    /// (`max-batch-wait-us`; not called when it is 0).
    fn sleep_us(&self, us: u64);
}

/// How one writer's [`GroupCommit::commit`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// A flush that started after the writer registered succeeded.
    Flushed,
    /// Every flush that started after the writer registered (covering its ticket) and
    /// completed before it returned failed, the last with `status`: not flushed.
    NotFlushed {
        /// The last such flush's status.
        status: NtStatus,
    },
    /// No event could be allocated for a new flush: the writer was not batched; the
    /// caller should flush on its own (or count the skip).
    Unbatched,
}

/// Group-commit options of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupOptions {
    /// Most writers one flush acknowledges (>= 1; the policy default is 64).
    pub max_batch: u32,
    /// Microseconds the leader waits for more writers before flushing (0: none, only
    /// the natural batching of writers arriving during a flush).
    pub max_batch_wait_us: u64,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            max_batch: 64,
            max_batch_wait_us: 0,
        }
    }
}

struct State<E> {
    /// Flushes started so far (the number of the last one started).
    started: u64,
    /// A leader has claimed the next flush (gathering or flushing).
    claimed: bool,
    /// Highest ticket handed out, and how many writers hold it.
    assigned: u64,
    assigned_count: u32,
    /// Highest flush number completed, and highest completed with success.
    completed: u64,
    succeeded: u64,
    /// Status of the last failed flush (for the writers it fails open).
    last_failure: NtStatus,
    /// Event of the claimed flush, set when it completes.
    event: Option<Arc<E>>,
}

/// The coordinator of one stream (one per file in a driver's stream context).
pub struct GroupCommit<S: CommitSync> {
    sync: S,
    options: GroupOptions,
    state: spin::Mutex<State<S::Event>>,
}

/// What a writer does next, decided under the lock.
enum Step<E> {
    Done(Committed),
    Lead(Arc<E>),
    Wait(Arc<E>),
    NoEvent,
}

impl<S: CommitSync> GroupCommit<S> {
    /// A coordinator with no flush yet.
    pub fn new(sync: S, options: GroupOptions) -> Self {
        GroupCommit {
            sync,
            options: GroupOptions {
                max_batch: options.max_batch.max(1),
                ..options
            },
            state: spin::Mutex::new(State {
                started: 0,
                claimed: false,
                assigned: 0,
                assigned_count: 0,
                completed: 0,
                succeeded: 0,
                last_failure: NtStatus::SUCCESS,
                event: None,
            }),
        }
    }

    /// Runs `f` on the state under the implementation's lock.
    fn with_state<R>(&self, f: impl FnOnce(&mut State<S::Event>) -> R) -> R {
        let _outer = self.sync.lock();
        let mut state = self.state.lock();
        f(&mut state)
    }

    /// Registers a writer whose write has completed and returns when a flush that
    /// started after this call began has completed (see the module docs). `flush` is
    /// called by the writer that leads a batch, with no lock held; it returns the
    /// flush's status. PASSIVE_LEVEL in a driver.
    pub fn commit(&self, mut flush: impl FnMut() -> NtStatus) -> Committed {
        let max_batch = self.options.max_batch;
        let ticket = self.with_state(|s| {
            let mut t = (s.started + 1).max(s.assigned);
            if t == s.assigned && s.assigned_count >= max_batch {
                t += 1;
            }
            if t != s.assigned {
                s.assigned = t;
                s.assigned_count = 0;
            }
            s.assigned_count += 1;
            t
        });
        loop {
            let step = self.with_state(|s| {
                if s.succeeded >= ticket {
                    return Step::Done(Committed::Flushed);
                }
                if s.completed >= ticket {
                    return Step::Done(Committed::NotFlushed {
                        status: s.last_failure,
                    });
                }
                if s.claimed {
                    return match &s.event {
                        Some(e) => Step::Wait(Arc::clone(e)),
                        None => Step::NoEvent,
                    };
                }
                match self.sync.new_event() {
                    Some(e) => {
                        let e = Arc::new(e);
                        s.claimed = true;
                        s.event = Some(Arc::clone(&e));
                        Step::Lead(e)
                    }
                    None => Step::NoEvent,
                }
            });
            match step {
                Step::Done(c) => return c,
                Step::NoEvent => return Committed::Unbatched,
                Step::Wait(e) => e.wait(),
                Step::Lead(e) => {
                    if self.options.max_batch_wait_us > 0 {
                        self.sync.sleep_us(self.options.max_batch_wait_us);
                    }
                    let number = self.with_state(|s| {
                        s.started += 1;
                        s.started
                    });
                    let status = flush();
                    let mine = self.with_state(|s| {
                        s.completed = number;
                        if status.is_success() {
                            s.succeeded = number;
                        } else {
                            s.last_failure = status;
                        }
                        s.claimed = false;
                        s.event = None;
                        number >= ticket
                    });
                    e.set();
                    if mine {
                        return if status.is_success() {
                            Committed::Flushed
                        } else {
                            Committed::NotFlushed { status }
                        };
                    }
                }
            }
        }
    }
}
