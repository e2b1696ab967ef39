//! A `loom` model of the group-commit coordinator (issue 11 item 5): 2 and 3 writers,
//! flushes that succeed or fail, every interleaving loom explores (preemption bound 3
//! for 2 writers, 2 for 3).
//! Checked in each: no writer is acknowledged before a flush that started after it
//! registered has completed (with success for `Flushed`, failure for `NotFlushed`); no
//! lost wake-up (loom reports a deadlock if a waiter is never woken); one flush at a
//! time; at most `max_batch` writers per ticket (bounded batch).
//!
//! Run: `cargo test -p flushguard-engine --test loom_group_commit` (part of
//! `cargo test --workspace`).

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

use flushguard_engine::group_commit::{
    BatchEvent, CommitSync, Committed, GroupCommit, GroupOptions,
};
use flushguard_protocol::NtStatus;

struct Event {
    set: Mutex<bool>,
    cv: Condvar,
}

impl BatchEvent for Event {
    fn wait(&self) {
        let mut set = self.set.lock().unwrap();
        while !*set {
            set = self.cv.wait(set).unwrap();
        }
    }
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn reset(&self) {
        *self.set.lock().unwrap() = false;
    }
}

impl Event {
    fn new() -> Self {
        Event {
            set: Mutex::new(false),
            cv: Condvar::new(),
        }
    }
}

struct LoomSync {
    lock: Mutex<()>,
    events: [Event; 2],
}

impl CommitSync for LoomSync {
    type Event = Event;
    type Guard<'a> = MutexGuard<'a, ()>;
    fn event(&self, index: usize) -> &Event {
        &self.events[index % 2]
    }
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap()
    }
    fn sleep_us(&self, _us: u64) {
        thread::yield_now();
    }
}

/// Shared clock and flush log of one model run.
struct World {
    clock: AtomicU64,
    in_flight: AtomicU64,
    flushes: Mutex<Vec<(u64, u64, bool)>>,
    flush_number: AtomicU64,
}

fn model(writers: usize, fail: impl Fn(u64) -> bool + Send + Sync + 'static, max_batch: u32) {
    let fail = std::sync::Arc::new(fail);
    let mut builder = loom::model::Builder::new();
    // 3 preemptions for 2 writers, 2 for 3 writers: every interleaving within the
    // bound, in about a minute of CPU on these machines.
    builder.preemption_bound = Some(if writers > 2 { 2 } else { 3 });
    builder.check(move || {
        let gc = Arc::new(GroupCommit::new(LoomSync {
            lock: Mutex::new(()),
            events: [Event::new(), Event::new()],
        }));
        let options = GroupOptions {
            max_batch,
            max_batch_wait_us: 0,
        };
        let world = Arc::new(World {
            clock: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            flushes: Mutex::new(Vec::new()),
            flush_number: AtomicU64::new(0),
        });
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (gc, world, fail) = (gc.clone(), world.clone(), fail.clone());
                thread::spawn(move || {
                    let registered = world.clock.fetch_add(1, Ordering::SeqCst);
                    let outcome = gc.commit(options, |_batch| {
                        assert_eq!(
                            world.in_flight.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two flushes at once"
                        );
                        let n = world.flush_number.fetch_add(1, Ordering::SeqCst) + 1;
                        let start = world.clock.fetch_add(1, Ordering::SeqCst);
                        let ok = !fail(n);
                        let end = world.clock.fetch_add(1, Ordering::SeqCst);
                        world.flushes.lock().unwrap().push((start, end, ok));
                        world.in_flight.fetch_sub(1, Ordering::SeqCst);
                        if ok {
                            NtStatus::SUCCESS
                        } else {
                            NtStatus::IO_TIMEOUT
                        }
                    });
                    let returned = world.clock.fetch_add(1, Ordering::SeqCst);
                    (registered, returned, outcome)
                })
            })
            .collect();
        let acks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let flushes = world.flushes.lock().unwrap().clone();
        for (registered, returned, outcome) in acks {
            let covered_by = |want_ok: bool| {
                flushes
                    .iter()
                    .any(|&(s, e, ok)| ok == want_ok && s > registered && e < returned)
            };
            match outcome {
                Committed::Flushed => assert!(covered_by(true), "acknowledged too early"),
                Committed::NotFlushed { .. } => assert!(covered_by(false), "failed open early"),
                Committed::Unbatched => panic!("a coordinator never leaves a writer unbatched"),
            }
        }
        assert!(flushes.len() * max_batch as usize >= writers, "batch bound");
    });
}

#[test]
fn two_writers_all_flushes_succeed() {
    model(2, |_| false, 64);
}

#[test]
fn two_writers_first_flush_fails() {
    model(2, |n| n == 1, 64);
}

#[test]
fn three_writers_max_batch_one() {
    model(3, |_| false, 1);
}

#[test]
fn three_writers_every_other_flush_fails() {
    model(3, |n| n % 2 == 0, 64);
}
