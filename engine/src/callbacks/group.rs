//! Group commit after a governed write (`mode = "group-commit"`, issue 11 item 4):
//! the writer registers with its stream's coordinator and returns once a flush of
//! that stream that started after the write completed has completed; one flush covers
//! every writer that registered before it started.

use super::*;

use crate::group_commit::{Committed, GroupOptions};
use flushguard_protocol::stats::Counter as RuleCounter;
use flushguard_protocol::FlushFlags;

/// What writers share a coordinator: one stream (`FILE_OBJECT::FsContext`) flushed
/// the same way, so a batch's flush is always the flush every member's rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GroupKey {
    stream: usize,
    flags: FlushFlags,
    native: bool,
}

impl<F: FilterManager> Filter<F> {
    /// The group-commit flush after a successful governed write, at PASSIVE_LEVEL in
    /// one of the two places a flush may run: batched in the issuing thread of a
    /// synchronized write; on its own (`GroupCommitNotBatched`) in the flush worker for
    /// a pended asynchronous one, or in a critical or guarded region.
    ///
    /// The writer's handle's writes completed so far are read first: a flush that
    /// starts after that covers them, so when the batch's flush succeeds the handle's
    /// written-since-flush mark is lowered to that point, whichever writer led.
    /// A writer whose stream finds no free coordinator is flushed on its own
    /// (`GroupCommitUnbatched`, the flush-after-write guarantee). A failed batch flush
    /// is counted once, by its leader; every member keeps its write's own status
    /// and flushes its own file object once more (`GroupCommitFallbackFlush`); if that
    /// fails too it stays marked for the cleanup flush (fail open). Per rule it counts
    /// `group_commit_flushes` (leader), `group_commit_writes` and
    /// `group_commit_wait_us` (every member), and globally the batch-size and wait
    /// histograms.
    pub(super) fn group_commit_after_write(
        &self,
        data: &F::Data,
        order: FlushOrder,
        options: GroupOptions,
        rule: DecidedRule,
        issuing_thread: bool,
    ) {
        // Only the issuing thread of a synchronized write waits for another writer's
        // flush. The flush worker's few threads serve every pended write: one waiting
        // for another writer's flush would hold up the rest, so a pended write is
        // flushed on its own there. A thread in a critical or guarded region
        // (KeAreApcsDisabled) may hold what another writer's flush needs (an
        // ERESOURCE, a guarded mutex): flushed on its own too.
        if !issuing_thread || self.fm.apcs_disabled() {
            self.counters().bump(Counter::GroupCommitNotBatched);
            self.flush_now(data, order, FlushPlace::AfterWrite, rule, issuing_thread);
            return;
        }
        let Some(table) = &self.group else {
            self.counters().bump(Counter::GroupCommitUnbatched);
            self.flush_now(data, order, FlushPlace::AfterWrite, rule, issuing_thread);
            return;
        };
        let observed = self.handle_context(data).map(|c| {
            let seq = c.write_seq();
            self.fm.release_context(c);
            seq
        });
        let key = GroupKey {
            stream: self.fm.stream_key(data),
            flags: order.flags,
            native: order.native,
        };
        let started = self.fm.now_us();
        // A writer may lead more than one flush: one that started before its ticket's
        // turn (its batch was full) and then its own.
        let mut led = 0u64;
        let committed = table.commit(key, options, |batch| {
            // A skipped flush (counted by flush_now; not expected here: the decision
            // already excluded paging I/O, a top-level IRP and IRQL above PASSIVE)
            // acknowledges nobody as flushed.
            let status = self.flush_now(
                data,
                order,
                FlushPlace::GroupCommit(options),
                rule,
                issuing_thread,
            );
            if status.is_some() {
                led += 1;
                self.state.stats().record_group_batch(batch);
            }
            status.unwrap_or(NtStatus::UNSUCCESSFUL)
        });
        let waited = self.fm.now_us().saturating_sub(started);
        match committed {
            Committed::Unbatched => {
                self.counters().bump(Counter::GroupCommitUnbatched);
                self.flush_now(data, order, FlushPlace::AfterWrite, rule, issuing_thread);
                return;
            }
            Committed::Flushed => {
                if let Some(seq) = observed {
                    if let Some(c) = self.handle_context(data) {
                        c.record_flush(seq);
                        self.fm.release_context(c);
                    }
                }
            }
            Committed::NotFlushed { .. } => {
                // The batch's flush went through another handle, possibly another
                // session (the stream is shared across users): that failure need not
                // be this writer's. It flushes its own file object once more.
                self.counters().bump(Counter::GroupCommitFallbackFlush);
                self.flush_now(data, order, FlushPlace::AfterWrite, rule, issuing_thread);
            }
        }
        // Per rule only while the deciding policy is still active (DecidedRule).
        let policy = self.state.policy();
        let counters = rule.counters(&policy);
        let stats = self.state.stats();
        if led > 0 {
            stats.add_to(counters, RuleCounter::GroupCommitFlushes, led);
        }
        stats.add_to(counters, RuleCounter::GroupCommitWrites, 1);
        stats.add_to(counters, RuleCounter::GroupCommitWaitUs, waited);
        stats.record_group_wait(waited);
    }
}
