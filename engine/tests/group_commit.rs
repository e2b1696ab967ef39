//! The group-commit coordinator with real threads (issue 11 item 5, host side): every
//! acknowledged writer is covered by a successful flush that started after it
//! registered and ended before it returned; concurrent writers share flushes; a
//! failed flush fails its writers open and is reported once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use flushguard_engine::group_commit::host::HostCommitSync;
use flushguard_engine::group_commit::{Committed, GroupOptions, GroupTable};
use flushguard_protocol::NtStatus;

type StdSync = HostCommitSync;

/// One flush: (start, end) on the shared clock and its status.
type FlushLog = Mutex<Vec<(u64, u64, NtStatus)>>;

fn run(writers: usize, per_writer: usize, fail_every: u64, options: GroupOptions) {
    // Every writer writes one stream (key 7) through a table of 4 coordinators.
    let gc = Arc::new(GroupTable::try_new(4, || Some(StdSync::default())).expect("table"));
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
                    let outcome = gc.commit(7, options, |_batch| {
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
    assert_eq!(
        gc.in_use(),
        0,
        "a coordinator still held after every writer returned"
    );
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
            Committed::Unbatched => panic!("one stream never fills the table"),
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

#[test]
fn a_full_table_leaves_other_streams_unbatched_and_frees_the_coordinator() {
    let table = Arc::new(GroupTable::try_new(1, || Some(StdSync::default())).expect("table"));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let leader = {
        let table = table.clone();
        thread::spawn(move || {
            table.commit(1, GroupOptions::default(), |batch| {
                assert_eq!(batch, 1);
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                NtStatus::SUCCESS
            })
        })
    };
    entered_rx.recv().unwrap();
    assert_eq!(table.in_use(), 1);
    let mut flushed = false;
    let other = table.commit(2, GroupOptions::default(), |_| {
        flushed = true;
        NtStatus::SUCCESS
    });
    assert_eq!(other, Committed::Unbatched);
    assert!(
        !flushed,
        "an unbatched writer's flush is the caller's to issue"
    );
    release_tx.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), Committed::Flushed);
    assert_eq!(table.in_use(), 0);
    // The coordinator serves the other stream now.
    assert_eq!(
        table.commit(2, GroupOptions::default(), |_| NtStatus::SUCCESS),
        Committed::Flushed
    );
}

#[test]
fn the_leader_is_told_how_many_writers_its_flush_acknowledges() {
    let table = Arc::new(GroupTable::try_new(1, || Some(StdSync::default())).expect("table"));
    let batches: Arc<Mutex<Vec<u32>>> = Arc::default();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (table, batches) = (table.clone(), batches.clone());
            thread::spawn(move || {
                for _ in 0..40 {
                    let c = table.commit(
                        9,
                        GroupOptions {
                            max_batch: 3,
                            max_batch_wait_us: 50,
                        },
                        |batch| {
                            batches.lock().unwrap().push(batch);
                            NtStatus::SUCCESS
                        },
                    );
                    assert_eq!(c, Committed::Flushed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let batches = batches.lock().unwrap();
    assert!(batches.iter().all(|&b| (1..=3).contains(&b)), "{batches:?}");
    // Every writer is acknowledged by exactly one flush's batch count.
    assert_eq!(batches.iter().map(|&b| b as usize).sum::<usize>(), 6 * 40);
}

mod model {
    use flushguard_engine::group_commit::{BatchModel, GroupOptions, ModelFigures};
    use proptest::prelude::*;

    fn run(times: &[u64], options: GroupOptions, latency: u64) -> ModelFigures {
        let mut m = BatchModel::new(options, latency);
        for &t in times {
            m.write(t);
        }
        m.finish()
    }

    #[test]
    fn worked_examples() {
        let o = GroupOptions::DEFAULT;
        // Far apart: one flush each, each waits the latency.
        assert_eq!(
            run(&[0, 5_000, 10_000], o, 1_000),
            ModelFigures {
                writes: 3,
                flushes: 3,
                total_wait_us: 3_000,
                max_wait_us: 1_000
            }
        );
        // 0 leads (flush 0..1000); 100, 200, 900 wait and share the flush 1000..2000.
        assert_eq!(
            run(&[0, 100, 200, 900], o, 1_000),
            ModelFigures {
                writes: 4,
                flushes: 2,
                total_wait_us: 1_000 + 1_900 + 1_800 + 1_100,
                max_wait_us: 1_900
            }
        );
        // max-batch 2: the third waiter needs a third flush.
        let two = GroupOptions {
            max_batch: 2,
            max_batch_wait_us: 0,
        };
        assert_eq!(run(&[0, 100, 200, 300], two, 1_000).flushes, 3);
        // A batch wait gathers: 0 leads, waits 500 µs, 100 and 400 join.
        let gather = GroupOptions {
            max_batch: 64,
            max_batch_wait_us: 500,
        };
        assert_eq!(run(&[0, 100, 400], gather, 1_000).flushes, 1);
    }

    /// An independent computation of the same rules: time advances in 1 µs steps and
    /// the coordinator's state (in flight until, waiting writers) is kept explicitly.
    fn tick_by_tick(times: &[u64], o: GroupOptions, latency: u64) -> ModelFigures {
        let mut f = ModelFigures::default();
        let mut waiting: Vec<u64> = Vec::new();
        let mut next = 0usize;
        let mut busy_until: Option<u64> = None; // flush in flight until
        let mut gather_until: Option<u64> = None; // leader gathering until
        let horizon = times.last().copied().unwrap_or(0)
            + (times.len() as u64 + 2) * (latency + u64::from(o.max_batch_wait_us) + 1);
        for now in 0..=horizon {
            if busy_until == Some(now) {
                busy_until = None;
            }
            while next < times.len() && times[next] == now {
                waiting.push(times[next]);
                next += 1;
            }
            if busy_until.is_none() && gather_until.is_none() && !waiting.is_empty() {
                gather_until = Some(now + u64::from(o.max_batch_wait_us));
            }
            if gather_until == Some(now) {
                gather_until = None;
                let n = waiting.len().min(o.max_batch as usize);
                let end = now + latency;
                for a in waiting.drain(..n) {
                    f.writes += 1;
                    f.total_wait_us += end - a;
                    f.max_wait_us = f.max_wait_us.max(end - a);
                }
                f.flushes += 1;
                busy_until = Some(end);
            }
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn matches_a_tick_by_tick_simulation(
            gaps in prop::collection::vec(0u64..40, 0..25),
            max_batch in 1u32..5,
            wait in 0u32..15,
            latency in 1u64..30,
        ) {
            let mut t = 0;
            let times: Vec<u64> = gaps.iter().map(|g| { t += g; t }).collect();
            let o = GroupOptions { max_batch, max_batch_wait_us: wait };
            prop_assert_eq!(run(&times, o, latency), tick_by_tick(&times, o, latency));
        }
    }
}
