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
//! covers a whole batch; at most `max_batch` writers hold the ticket of any one flush
//! (a writer whose own flush failed is acknowledged by the next one that succeeds, so
//! that flush may acknowledge more).
//!
//! # How
//!
//! Flushes are numbered 1, 2, ... in the order they start; at most one is in flight.
//! A writer takes a *ticket* when it registers: the number of the first flush that has
//! not started yet (or a later one, when `max_batch` writers already hold that number).
//! A flush numbered `k` covers every ticket `<= k`. A writer whose ticket is not covered
//! yet either starts the next flush itself (when none is in flight: it becomes the
//! batch's leader) or waits on the event of the flush in flight, then looks again (the
//! two-event scheme below: no wake-up is lost).
//!
//! Two notification events per coordinator alternate: flush `k` uses event `k % 2`
//! (fixed when its leader claims it), cleared at the claim and set when the flush
//! completes, both under the lock, so an event's state always matches its flush's. A
//! waiter re-checks the state after every wake-up. A waiter that read "flush `k` in
//! flight" but sleeps only after `k` completed and the claim of `k + 2` cleared the same
//! event sleeps until `k + 2` completes: late by at most one flush and its batch wait,
//! never lost (whoever clears an event sets it again after its flush). No allocation
//! happens per flush or per writer: the events live with the coordinator (a `KEVENT`
//! pair in non-paged pool in a driver).
//!
//! [`GroupTable`] maps streams (a key such as `FILE_OBJECT::FsContext`, the same for
//! every handle of the stream) to coordinators from a fixed set allocated once.
//!
//! The state lives behind the [`CommitSync::lock`] lock of the implementation (an
//! `EX_SPIN_LOCK` taken exclusively in a driver: held for a few instructions, never
//! across the flush or a wait), with an inner `spin` lock for memory safety in safe Rust
//! that the outer lock keeps uncontended. Everything is safe Rust; `flush`, the events and
//! the lock come from the caller, so the same code runs in the driver, in the host tests
//! and under `loom` (engine/tests/loom_group_commit.rs).

use alloc::vec::Vec;

use flushguard_protocol::NtStatus;

/// A notification event: [`BatchEvent::set`] wakes every past and future
/// [`BatchEvent::wait`] until [`BatchEvent::reset`] (a `KEVENT` of `NotificationEvent`
/// type in a driver).
pub trait BatchEvent: Send + Sync {
    /// Blocks the calling thread until the event is set (PASSIVE_LEVEL in a driver:
    /// `KeWaitForSingleObject`).
    fn wait(&self);
    /// Sets the event, waking every waiter (`KeSetEvent`; IRQL <= DISPATCH_LEVEL).
    fn set(&self);
    /// Clears the event (`KeClearEvent`; IRQL <= DISPATCH_LEVEL).
    fn reset(&self);
}

/// What one coordinator needs from its environment: a lock and two events.
pub trait CommitSync: Send + Sync {
    /// The event type.
    type Event: BatchEvent;
    /// Event `index` (0 or 1; any other index is reduced modulo 2), initially clear.
    fn event(&self, index: usize) -> &Self::Event;
    /// The guard of the coordinator's lock: released when dropped.
    type Guard<'a>
    where
        Self: 'a;
    /// Takes the coordinator's lock (held for a few field updates and an event
    /// set/clear: never across a wait or a flush). A driver raises to DISPATCH_LEVEL
    /// (`EX_SPIN_LOCK` exclusive).
    fn lock(&self) -> Self::Guard<'_>;
    /// Sleeps `us` microseconds (PASSIVE_LEVEL): the leader's wait for more writers
    /// (`max-batch-wait-us`; not called when it is 0).
    fn sleep_us(&self, us: u64);
}

/// How one writer's commit ended.
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
    /// [`GroupTable::commit`] only: every coordinator was busy with other streams, so
    /// the writer was not batched; the caller flushes on its own (fail open, counted).
    Unbatched,
}

/// Group-commit options of a rule (`max-batch`, `max-batch-wait-us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupOptions {
    /// Most writers one flush acknowledges (policy: 1..=`MAX_GROUP_BATCH`, 4096;
    /// default 64; 0 is taken as 1 here).
    pub max_batch: u32,
    /// Microseconds the leader waits for more writers before flushing (policy:
    /// 0..=`MAX_GROUP_BATCH_WAIT_US`, 50 000; default 0: no added delay, only the
    /// natural batching of writers arriving during a flush).
    pub max_batch_wait_us: u32,
}

impl GroupOptions {
    /// `max-batch = 64`, `max-batch-wait-us = 0`.
    pub const DEFAULT: GroupOptions = GroupOptions {
        max_batch: 64,
        max_batch_wait_us: 0,
    };
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions::DEFAULT
    }
}

struct State {
    /// Flushes started so far (the number of the last one started).
    started: u64,
    /// A leader has claimed the next flush (gathering or flushing).
    claimed: bool,
    /// The event of the claimed flush (its number modulo 2, fixed at the claim: the
    /// number is `started + 1` until the leader starts it, `started` after).
    claimed_event: usize,
    /// Highest ticket handed out, and how many writers hold it.
    assigned: u64,
    assigned_count: u32,
    /// Highest flush number completed, and highest completed with success.
    completed: u64,
    succeeded: u64,
    /// Status of the last failed flush (for the writers it fails open).
    last_failure: NtStatus,
}

/// The coordinator of one stream.
pub struct GroupCommit<S: CommitSync> {
    sync: S,
    state: spin::Mutex<State>,
}

/// What a writer does next, decided under the lock.
enum Step {
    Done(Committed),
    Lead(usize),
    Wait(usize),
}

impl<S: CommitSync> GroupCommit<S> {
    /// A coordinator with no flush yet, around `sync` (its events clear).
    pub fn new(sync: S) -> Self {
        GroupCommit {
            sync,
            state: spin::Mutex::new(State {
                started: 0,
                claimed: false,
                claimed_event: 0,
                assigned: 0,
                assigned_count: 0,
                completed: 0,
                succeeded: 0,
                last_failure: NtStatus::SUCCESS,
            }),
        }
    }

    /// Runs `f` on the state under the implementation's lock.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, &S) -> R) -> R {
        let _outer = self.sync.lock();
        let mut state = self.state.lock();
        f(&mut state, &self.sync)
    }

    /// Registers a writer whose write has completed and returns when a flush that
    /// started after this call began has completed (see the module docs):
    /// [`Committed::Flushed`] or [`Committed::NotFlushed`], never `Unbatched`.
    /// `flush(batch)` is called by the writer that leads a batch, with no lock held,
    /// `batch` being the number of writers (>= 1) this flush acknowledges; it returns
    /// the flush's status. PASSIVE_LEVEL in a driver (it may wait).
    pub fn commit(
        &self,
        options: GroupOptions,
        mut flush: impl FnMut(u32) -> NtStatus,
    ) -> Committed {
        let max_batch = options.max_batch.max(1);
        let ticket = self.with_state(|s, _| {
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
            let step = self.with_state(|s, sync| {
                if s.succeeded >= ticket {
                    return Step::Done(Committed::Flushed);
                }
                if s.completed >= ticket {
                    return Step::Done(Committed::NotFlushed {
                        status: s.last_failure,
                    });
                }
                if s.claimed {
                    return Step::Wait(s.claimed_event);
                }
                // No flush in flight: the next one is number started + 1.
                let index = event_index(s.started + 1);
                s.claimed = true;
                s.claimed_event = index;
                sync.event(index).reset();
                Step::Lead(index)
            });
            match step {
                Step::Done(c) => return c,
                Step::Wait(index) => self.sync.event(index).wait(),
                Step::Lead(index) => {
                    // Gather more writers, unless the batch is full already.
                    let full = self.with_state(|s, _| {
                        s.assigned > s.started + 1 || s.assigned_count >= max_batch
                    });
                    if options.max_batch_wait_us > 0 && !full {
                        self.sync.sleep_us(u64::from(options.max_batch_wait_us));
                    }
                    let (number, batch) = self.with_state(|s, _| {
                        s.started += 1;
                        // Tickets below `started` are covered already; the ticket equal
                        // to it holds `assigned_count` writers, or `max_batch` if later
                        // tickets were opened because it was full.
                        let batch = if s.assigned == s.started {
                            s.assigned_count
                        } else {
                            max_batch
                        };
                        (s.started, batch)
                    });
                    let status = flush(batch.max(1));
                    let mine = self.with_state(|s, sync| {
                        s.completed = number;
                        if status.is_success() {
                            s.succeeded = number;
                        } else {
                            s.last_failure = status;
                        }
                        s.claimed = false;
                        sync.event(index).set();
                        number >= ticket
                    });
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

/// The event of flush number `n`.
const fn event_index(n: u64) -> usize {
    (n & 1) as usize
}

/// Which stream each coordinator serves and how many writers are inside it.
#[derive(Clone, Copy)]
struct Owner<K> {
    key: Option<K>,
    members: u32,
}

/// Coordinators for many streams from a fixed set allocated once: a stream (its
/// `key`, e.g. `FILE_OBJECT::FsContext` with the flush type, the same for every
/// handle of the stream) holds a coordinator while at least one of its writers is
/// committing, and gives it back when the last one returns. A key is only compared,
/// never dereferenced; it stays valid while a member holds it (the writer's file
/// object references the stream).
pub struct GroupTable<S: CommitSync, K: Copy + Eq = usize> {
    coordinators: Vec<GroupCommit<S>>,
    /// Owner of each coordinator, under `lock`'s lock.
    owners: spin::Mutex<Vec<Owner<K>>>,
    lock: S,
}

impl<S: CommitSync, K: Copy + Eq> GroupTable<S, K> {
    /// A table of `count` coordinators, each around a `make()`, plus one `make()` for
    /// the table's own lock. `None` if `make` fails or the vectors cannot be allocated
    /// (fallible: `try_reserve_exact`).
    pub fn try_new(count: usize, mut make: impl FnMut() -> Option<S>) -> Option<Self> {
        let lock = make()?;
        let mut coordinators = Vec::new();
        coordinators.try_reserve_exact(count).ok()?;
        let mut owners = Vec::new();
        owners.try_reserve_exact(count).ok()?;
        for _ in 0..count {
            coordinators.push(GroupCommit::new(make()?));
            owners.push(Owner {
                key: None,
                members: 0,
            });
        }
        Some(GroupTable {
            coordinators,
            owners: spin::Mutex::new(owners),
            lock,
        })
    }

    /// Commits one writer of stream `key` (see [`GroupCommit::commit`]):
    /// [`Committed::Unbatched`] without calling `flush` when every coordinator serves
    /// another stream. PASSIVE_LEVEL in a driver.
    pub fn commit(
        &self,
        key: K,
        options: GroupOptions,
        flush: impl FnMut(u32) -> NtStatus,
    ) -> Committed {
        let Some(index) = self.join(key) else {
            return Committed::Unbatched;
        };
        let committed = match self.coordinators.get(index) {
            Some(coordinator) => coordinator.commit(options, flush),
            None => Committed::Unbatched,
        };
        self.leave(index);
        committed
    }

    /// Coordinators serving a stream now.
    pub fn in_use(&self) -> usize {
        let _outer = self.lock.lock();
        let owners = self.owners.lock();
        owners.iter().filter(|o| o.members > 0).count()
    }

    fn join(&self, key: K) -> Option<usize> {
        let _outer = self.lock.lock();
        let mut owners = self.owners.lock();
        let index = owners
            .iter()
            .position(|o| o.members > 0 && o.key == Some(key))
            .or_else(|| owners.iter().position(|o| o.members == 0))?;
        let owner = owners.get_mut(index)?;
        owner.key = Some(key);
        owner.members += 1;
        Some(index)
    }

    fn leave(&self, index: usize) {
        let _outer = self.lock.lock();
        let mut owners = self.owners.lock();
        if let Some(owner) = owners.get_mut(index) {
            owner.members = owner.members.saturating_sub(1);
        }
    }
}

/// What [`BatchModel`] predicts for one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelFigures {
    /// Writes modelled.
    pub writes: u64,
    /// Flushes the coordinator would issue.
    pub flushes: u64,
    /// Sum over writes of the time from the write's completion to its batch flush's
    /// end, microseconds.
    pub total_wait_us: u64,
    /// The longest such time, microseconds.
    pub max_wait_us: u64,
}

impl ModelFigures {
    /// Adds `o` (figures of another stream).
    pub fn add(&mut self, o: &ModelFigures) {
        self.writes += o.writes;
        self.flushes += o.flushes;
        self.total_wait_us += o.total_wait_us;
        self.max_wait_us = self.max_wait_us.max(o.max_wait_us);
    }
}

/// The coordinator's batching on one stream, replayed on a time line instead of
/// threads (`flushctl replay`): writes complete at given times (microseconds,
/// non-decreasing; an earlier time is taken as the latest one seen) and every flush
/// takes `latency_us`. The rules are [`GroupCommit::commit`]'s: a write that completes
/// while no flush is in flight leads the next one, which starts after
/// `max_batch_wait_us`; a flush acknowledges the writes that completed up to its start
/// (at most `max_batch`, in order); writes completing while it is in flight wait, and
/// when it ends the first of them leads the next flush at once (plus the batch wait).
/// Memory: the writes not yet in a started flush.
#[derive(Clone, Debug)]
pub struct BatchModel {
    options: GroupOptions,
    latency_us: u64,
    /// Completion times of writes not yet in a started flush.
    pending: alloc::collections::VecDeque<u64>,
    /// End of the last started flush.
    free_at: u64,
    last: u64,
    figures: ModelFigures,
}

impl BatchModel {
    /// A stream with no write yet.
    pub fn new(options: GroupOptions, latency_us: u64) -> Self {
        BatchModel {
            options: GroupOptions {
                max_batch: options.max_batch.max(1),
                ..options
            },
            latency_us,
            pending: alloc::collections::VecDeque::new(),
            free_at: 0,
            last: 0,
            figures: ModelFigures::default(),
        }
    }

    /// A write completed at `time_us`.
    pub fn write(&mut self, time_us: u64) {
        let t = time_us.max(self.last);
        self.last = t;
        self.settle(Some(t));
        self.pending.push_back(t);
    }

    /// Every write so far acknowledged: the figures.
    pub fn finish(mut self) -> ModelFigures {
        self.settle(None);
        self.figures
    }

    /// Starts (and accounts) every flush that starts before `now` (all of them when
    /// `None`).
    fn settle(&mut self, now: Option<u64>) {
        while let Some(&first) = self.pending.front() {
            let start = first
                .max(self.free_at)
                .saturating_add(u64::from(self.options.max_batch_wait_us));
            if now.is_some_and(|now| start >= now) {
                return;
            }
            let end = start.saturating_add(self.latency_us);
            let mut taken = 0u32;
            while taken < self.options.max_batch {
                match self.pending.front() {
                    Some(&a) if a <= start => {
                        self.pending.pop_front();
                        let wait = end - a;
                        self.figures.writes += 1;
                        self.figures.total_wait_us += wait;
                        self.figures.max_wait_us = self.figures.max_wait_us.max(wait);
                        taken += 1;
                    }
                    _ => break,
                }
            }
            self.figures.flushes += 1;
            self.free_at = end;
        }
    }
}

/// [`CommitSync`] for hosts (feature `std`): a `Mutex` and two `Condvar` events, and
/// `thread::sleep` for the batch wait. Used by flushctl's replay, the host tests and
/// the group-commit benchmark (the driver has its `KEVENT` pair, the fake its IRQL
/// checks).
#[cfg(feature = "std")]
pub mod host {
    use std::sync::{Condvar, Mutex, MutexGuard};

    use super::{BatchEvent, CommitSync};

    /// Locks `m`, ignoring poisoning (a panic elsewhere fails its own thread).
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A notification event over a `Mutex<bool>` and a `Condvar`.
    #[derive(Debug, Default)]
    pub struct HostEvent {
        set: Mutex<bool>,
        cv: Condvar,
    }

    impl BatchEvent for HostEvent {
        fn wait(&self) {
            let mut set = lock(&self.set);
            while !*set {
                set = self.cv.wait(set).unwrap_or_else(|e| e.into_inner());
            }
        }
        fn set(&self) {
            *lock(&self.set) = true;
            self.cv.notify_all();
        }
        fn reset(&self) {
            *lock(&self.set) = false;
        }
    }

    /// A coordinator's lock and events on the host.
    #[derive(Debug, Default)]
    pub struct HostCommitSync {
        lock: Mutex<()>,
        events: [HostEvent; 2],
        /// The batch wait is skipped (a replay's single thread: nobody could join).
        no_sleep: bool,
    }

    impl HostCommitSync {
        /// One whose batch wait returns at once: for a single-threaded replay, where
        /// no other writer could join the batch meanwhile.
        pub fn without_batch_wait() -> Self {
            HostCommitSync {
                no_sleep: true,
                ..HostCommitSync::default()
            }
        }
    }

    impl CommitSync for HostCommitSync {
        type Event = HostEvent;
        fn event(&self, index: usize) -> &HostEvent {
            &self.events[index % 2]
        }
        type Guard<'a> = MutexGuard<'a, ()>;
        fn lock(&self) -> MutexGuard<'_, ()> {
            lock(&self.lock)
        }
        fn sleep_us(&self, us: u64) {
            if !self.no_sleep {
                std::thread::sleep(std::time::Duration::from_micros(us));
            }
        }
    }
}
