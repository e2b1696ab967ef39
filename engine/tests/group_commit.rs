//! The group-commit coordinator with real threads (issue 11 item 5, host side): every
//! acknowledged writer is covered by a successful flush that started after it
//! registered and ended before it returned; concurrent writers share flushes; a
//! failed flush fails its writers open and is reported once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

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
}

#[derive(Default)]
struct StdSync {
    lock: Mutex<()>,
}

impl CommitSync for StdSync {
    type Event = Event;
    type Guard<'a> = MutexGuard<'a, ()>;
    fn new_event(&self) -> Option<Event> {
        Some(Event {
            set: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap()
    }
    fn sleep_us(&self, us: u64) {
        thread::sleep(std::time::Duration::from_micros(us));
    }
}

/// One flush: (start, end) on the shared clock and its status.
type FlushLog = Mutex<Vec<(u64, u64, NtStatus)>>;

fn run(writers: usize, per_writer: usize, fail_every: u64, options: GroupOptions) {
    let gc = Arc::new(GroupCommit::new(StdSync::default(), options));
    let clock = Arc::new(AtomicU64::new(0));
    let flushes: Arc<FlushLog> = Arc::default();
    let flush_count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (gc, clock, flushes, flush_count) = (
                gc.clone(),
                clock.clone(),
                flushes.clone(),
                flush_count.clone(),
            );
            thread::spawn(move || {
                let mut acks = Vec::new();
                for _ in 0..per_writer {
                    // The write completed; register.
                    let registered = clock.fetch_add(1, Ordering::SeqCst);
                    let outcome = gc.commit(|| {
                        let n = flush_count.fetch_add(1, Ordering::SeqCst) + 1;
                        let start = clock.fetch_add(1, Ordering::SeqCst);
                        thread::yield_now();
                        let status = if fail_every > 0 && n % fail_every == 0 {
                            NtStatus::IO_TIMEOUT
                        } else {
                            NtStatus::SUCCESS
                        };
                        let end = clock.fetch_add(1, Ordering::SeqCst);
                        flushes.lock().unwrap().push((start, end, status));
                        status
                    });
                    let returned = clock.fetch_add(1, Ordering::SeqCst);
                    acks.push((registered, returned, outcome));
                }
                acks
            })
        })
        .collect();
    let acks: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    let flushes = flushes.lock().unwrap().clone();
    for &(registered, returned, outcome) in &acks {
        match outcome {
            Committed::Flushed => assert!(
                flushes
                    .iter()
                    .any(|&(s, e, st)| st.is_success() && s > registered && e < returned),
                "acknowledged at {returned} without a successful flush started after {registered}: {flushes:?}"
            ),
            Committed::NotFlushed { status } => {
                assert!(!status.is_success());
                assert!(
                    flushes
                        .iter()
                        .any(|&(s, e, st)| !st.is_success() && s > registered && e < returned),
                    "failed open without a failed flush after it"
                );
            }
            Committed::Unbatched => panic!("events never fail here"),
        }
    }
    // Flushes never overlap (one in flight at a time).
    let mut spans: Vec<_> = flushes.iter().map(|f| (f.0, f.1)).collect();
    spans.sort_unstable();
    assert!(
        spans.windows(2).all(|w| w[0].1 < w[1].0),
        "overlapping flushes"
    );
    // Bounded batch: no flush acknowledges more than max_batch writers.
    assert!(
        flushes.len() * options.max_batch as usize >= acks.len(),
        "{} flushes acknowledged {} writes with max_batch {}",
        flushes.len(),
        acks.len(),
        options.max_batch
    );
    if writers > 1 && fail_every == 0 && options.max_batch > 1 {
        assert!(
            flushes.len() < acks.len(),
            "{} flushes for {} writes: no batching",
            flushes.len(),
            acks.len()
        );
    }
}

#[test]
fn one_writer_gets_one_flush_per_write() {
    run(1, 50, 0, GroupOptions::default());
}

#[test]
fn concurrent_writers_share_flushes_and_each_is_covered() {
    run(8, 200, 0, GroupOptions::default());
}

#[test]
fn failed_flushes_fail_their_writers_open_and_are_reported_once() {
    run(8, 200, 3, GroupOptions::default());
}

#[test]
fn max_batch_one_still_covers_every_writer() {
    run(
        4,
        100,
        0,
        GroupOptions {
            max_batch: 1,
            max_batch_wait_us: 0,
        },
    );
}

#[test]
fn a_batch_wait_gathers_writers() {
    run(
        4,
        50,
        0,
        GroupOptions {
            max_batch: 64,
            max_batch_wait_us: 200,
        },
    );
}
