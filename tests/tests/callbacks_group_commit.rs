//! `mode = "group-commit"` on the fake Filter Manager with real threads (issue 11
//! item 5): every synchronous writer is acknowledged only after a successful flush
//! that started after its write reached the file system (from the fake's flush
//! timeline); concurrent writers of one stream share flushes; asynchronous writes are
//! pended to the flush worker and completed after their batch's flush; a failed batch
//! flush fails its writers open and leaves the cleanup flush due; without coordinators
//! (allocation failed at load) every write is flushed on its own.

use std::sync::{Arc, Mutex};
use std::thread;

use flushguard_engine::callbacks::{Counter, Irql};
use flushguard_engine::policy::{Action, FlushMethod, GroupOptions, Mode};
use flushguard_protocol::stats::Counter as StatsCounter;
use flushguard_protocol::FlushFlags;
use flushguard_tests::fake::{self, CallSite, Fake, FakeOptions};
use flushguard_tests::harness::{Harness, WriteSpec};
use flushguard_tests::scenario::{action, policy_blob};

fn group_action(max_batch: u32, max_batch_wait_us: u32) -> Action {
    let mut a = action(
        Mode::GroupCommit,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    );
    a.group = Some(GroupOptions {
        max_batch,
        max_batch_wait_us,
    });
    a
}

fn fake_for(a: Action) -> Fake {
    Fake::new(FakeOptions {
        registry: Some(policy_blob(a)),
        ..FakeOptions::default()
    })
}

fn open(h: &Harness) -> u64 {
    flushguard_tests::scenario::open_share(h)
}

fn rule_count(h: &Harness, c: StatsCounter) -> u64 {
    h.filter.state().stats().global().get(c)
}

/// `writers` threads, each with its own handle on one file, `per_writer` synchronous
/// writes each: returns per write (reached the file system, write returned) ticks.
fn synchronous_writers(h: &Arc<Harness>, writers: usize, per_writer: usize) -> Vec<(u64, u64)> {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (h, acks) = (h.clone(), acks.clone());
            thread::spawn(move || {
                fake::new_thread_id();
                let file = open(&h);
                for _ in 0..per_writer {
                    h.write(file, WriteSpec::default()).expect("write");
                    let returned = fake::tick();
                    acks.lock()
                        .unwrap()
                        .push((fake::last_write_done(), returned));
                }
                h.close(file);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    Arc::try_unwrap(acks).unwrap().into_inner().unwrap()
}

#[test]
fn every_synchronous_writer_is_acknowledged_after_a_flush_that_started_after_its_write() {
    for (max_batch, wait) in [(64, 0), (64, 300), (2, 100)] {
        let h = Arc::new(Harness::on(fake_for(group_action(max_batch, wait))));
        let acks = synchronous_writers(&h, 6, 40);
        let spans = h.fake.flush_spans();
        for &(done, returned) in &acks {
            assert!(
                spans
                    .iter()
                    .any(|s| s.ok && s.start > done && s.end < returned),
                "a write done at {done} returned at {returned} without a flush that \
                 started after it: {spans:?}"
            );
        }
        // Flushes of the stream never overlap: one batch at a time.
        let mut sorted: Vec<_> = spans.iter().map(|s| (s.start, s.end)).collect();
        sorted.sort_unstable();
        assert!(
            sorted.windows(2).all(|w| w[0].1 < w[1].0),
            "overlapping flushes"
        );
        let writes = acks.len() as u64;
        let flushes = rule_count(&h, StatsCounter::GroupCommitFlushes);
        assert_eq!(rule_count(&h, StatsCounter::GroupCommitWrites), writes);
        assert_eq!(
            flushes,
            spans.len() as u64,
            "every flush was a batch's (none at close)"
        );
        assert!(
            flushes * u64::from(max_batch) >= writes,
            "{flushes} flushes for {writes} writes beyond max-batch {max_batch}"
        );
        if wait > 0 && max_batch > 2 {
            // The leader waits for more writers: batches form.
            assert!(
                flushes < writes,
                "no batching: {flushes} flushes for {writes} writes"
            );
        }
        // Every write was covered by a flush: no close needed one.
        assert_eq!(h.filter.counters().get(Counter::GroupCommitUnbatched), 0);
        h.unload();
        h.assert_clean();
        eprintln!("max-batch {max_batch}, wait {wait} us: {writes} writes, {flushes} flushes");
    }
}

/// Asynchronous writes are pended to the flush worker and complete after their flush,
/// but the worker (system worker threads) never waits for another writer's flush:
/// each is flushed on its own there (`GroupCommitNotBatched`).
#[test]
fn asynchronous_writes_are_flushed_on_their_own_in_the_flush_worker() {
    let fake = fake_for(group_action(64, 0));
    fake.log_calls();
    let h = Arc::new(Harness::on(fake));
    let file = open(&h);
    let writes = 24;
    for _ in 0..writes {
        // Asynchronous: the post-write runs at DISPATCH_LEVEL in the completing thread
        // and pends the write to the flush worker.
        h.write(file, WriteSpec::asynchronous()).expect("write");
    }
    assert_eq!(h.filter.pended_writes(), writes);
    // Four system worker threads serve the pended writes concurrently.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            thread::spawn(move || while h.complete_one(Irql::PASSIVE_LEVEL) {})
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(
        h.filter.pended_writes(),
        0,
        "a pended write was not completed"
    );
    assert_eq!(rule_count(&h, StatsCounter::GroupCommitWrites), 0);
    assert_eq!(
        h.filter.counters().get(Counter::GroupCommitNotBatched),
        u64::from(writes)
    );
    let flushes = h.fake.flush_spans().len();
    assert_eq!(flushes, writes as usize, "one flush per pended write");
    assert!(
        !h.fake
            .call_log()
            .iter()
            .any(|c| c.routine == "KeWaitForSingleObject"),
        "a worker waited"
    );
    // The handle's writes are covered: its cleanup issues no flush.
    h.close(file);
    assert_eq!(h.fake.flush_spans().len(), flushes, "cleanup flushed again");
    h.unload();
    h.assert_clean();
}

/// A failed batch flush is counted once; the writer keeps its write's status and
/// flushes its own file object once more (the batch's flush may have gone through
/// another handle or session), which covers it: no flush is due at close.
#[test]
fn a_failed_batch_flush_is_followed_by_the_writers_own_flush() {
    let fake = fake_for(group_action(64, 0));
    let h = Arc::new(Harness::on(fake));
    let file = open(&h);
    h.fake.inject(CallSite::FltFlushBuffers2, 0);
    let seen = h.write(file, WriteSpec::default());
    assert!(seen.is_some(), "the write itself proceeds");
    assert_eq!(rule_count(&h, StatsCounter::FlushFailures), 1);
    assert_eq!(rule_count(&h, StatsCounter::GroupCommitFlushes), 1);
    assert_eq!(rule_count(&h, StatsCounter::GroupCommitWrites), 1);
    assert_eq!(
        h.filter.counters().get(Counter::GroupCommitFallbackFlush),
        1
    );
    // Covered by its own flush: the close flushes nothing.
    h.close(file);
    let spans = h.fake.flush_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(!spans[0].ok && spans[1].ok);
    h.unload();
    h.assert_clean();
}

#[test]
fn without_coordinators_every_write_is_flushed_on_its_own() {
    let fake = fake_for(group_action(64, 0));
    // The fourth coordinator block cannot be allocated at load: no table at all.
    fake.inject(CallSite::AllocateCommitSync, 3);
    let h = Arc::new(Harness::on(fake));
    let acks = synchronous_writers(&h, 3, 10);
    let spans = h.fake.flush_spans();
    assert_eq!(spans.len(), acks.len(), "one flush per write");
    for &(done, returned) in &acks {
        assert!(spans
            .iter()
            .any(|s| s.ok && s.start > done && s.end < returned));
    }
    assert_eq!(
        h.filter.counters().get(Counter::GroupCommitUnbatched),
        acks.len() as u64
    );
    assert_eq!(rule_count(&h, StatsCounter::GroupCommitFlushes), 0);
    h.unload();
    h.assert_clean();
}

#[test]
fn group_commit_waits_only_at_passive_level_and_logs_its_event_calls() {
    let fake = fake_for(group_action(64, 50));
    fake.log_calls();
    let h = Harness::on(fake);
    let file = open(&h);
    h.write(file, WriteSpec::default()).expect("write");
    let calls: Vec<&str> = h
        .fake
        .call_log()
        .iter()
        .map(|c| c.routine)
        .filter(|r| {
            matches!(
                *r,
                "KeClearEvent" | "KeDelayExecutionThread" | "FltFlushBuffers2" | "KeSetEvent"
            )
        })
        .collect();
    // One writer leads its own batch: claim (clear), gather (delay), flush, set.
    assert_eq!(
        calls,
        [
            "KeClearEvent",
            "KeDelayExecutionThread",
            "FltFlushBuffers2",
            "KeSetEvent"
        ]
    );
    h.close(file);
    h.unload();
    h.assert_clean();
}

/// A writer whose thread is in a critical region (normal kernel APCs disabled, as with
/// an `ERESOURCE` held: `KeAreApcsDisabled`) does not wait for another writer's flush,
/// which might need what it holds: it is flushed on its own, and covered.
#[test]
fn a_writer_in_a_critical_region_is_flushed_on_its_own() {
    let fake = fake_for(group_action(64, 50));
    fake.log_calls();
    let h = Harness::on(fake);
    let file = open(&h);
    fake::set_critical_region(true);
    h.write(file, WriteSpec::default()).expect("write");
    fake::set_critical_region(false);
    assert_eq!(h.filter.counters().get(Counter::GroupCommitNotBatched), 1);
    let routines: Vec<&str> = h.fake.call_log().iter().map(|c| c.routine).collect();
    assert!(routines.contains(&"KeAreApcsDisabled"));
    assert!(
        !routines.iter().any(|r| matches!(
            *r,
            "KeClearEvent" | "KeDelayExecutionThread" | "KeWaitForSingleObject"
        )),
        "{routines:?}"
    );
    assert_eq!(h.fake.flush_spans().len(), 1);
    h.close(file);
    assert_eq!(h.fake.flush_spans().len(), 1, "covered: no flush at close");
    h.unload();
    h.assert_clean();
}
