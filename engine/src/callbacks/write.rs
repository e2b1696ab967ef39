//! IRP_MJ_WRITE: write-through, fast I/O, written-since-flush bookkeeping, and
//! the flush after a write (inline when synchronized, else FlushGuard's flush worker).

use super::*;

impl<F: FilterManager> Filter<F> {
    // ---- IRP_MJ_WRITE ----------------------------------------------------

    /// Pre-write (IRQL <= APC_LEVEL; IRP, fast I/O and paging I/O): applies the
    /// engine's decision: `SL_WRITE_THROUGH` (+ dirty), `FLT_PREOP_DISALLOW_FASTIO`,
    /// or a post-write for the flush / written-since-flush bookkeeping
    /// (`FLT_PREOP_SYNCHRONIZE` only when `FltIsOperationSynchronous`).
    pub fn pre_write(&self, data: &mut F::Data) -> PreOp {
        self.with_handle_context(data, Self::pre_write_governed)
    }

    fn pre_write_governed(&self, data: &mut F::Data, ctx: &StreamContext) -> PreOp {
        let Some((_, action, d)) = self.decide_pre(data, ctx) else {
            return PreOp::pass();
        };
        if d.pre_op == EnginePreOp::DisallowFastIo && data.is_fast_io() {
            self.counters().bump(Counter::FastIoDisallowed);
            return PreOp::disallow_fast_io();
        }
        if d.set_sl_write_through && data.operation_flags() & SL_WRITE_THROUGH == 0 {
            data.set_operation_flags(data.operation_flags() | SL_WRITE_THROUGH);
            self.fm.set_callback_data_dirty(data);
            self.counters().bump(Counter::WriteThroughSet);
        }
        let wants_post = matches!(
            d.pre_op,
            EnginePreOp::Synchronize | EnginePreOp::SuccessWithCallback
        );
        if !wants_post && !d.mark_written_since_flush {
            return PreOp::pass();
        }
        // The post-write records the write only once it succeeded (its data is then
        // in the cache) and, when the engine asked for a post-write, asks it again
        // with the completion status (the rule's flush travels along as a marker).
        // A native-method rule's flush runs in the flush worker on FlushGuard's own
        // handle: its writes are pended there, never synchronized.
        let synchronize = d.pre_op == EnginePreOp::Synchronize
            && !data.is_fast_io()
            && action.method != crate::policy::FlushMethod::Native
            && self.fm.is_operation_synchronous(data);
        // Classed here, in the issuing thread: only the flushing thread's own cache
        // write-back may count as covered by that flush (WriteClass).
        // Only a synchronous paging write can be one: the top-level IRP and thread id
        // are asked for those alone, not on every governed write.
        let write_back = d.mark_written_since_flush
            && WriteClass::may_be_write_back(data.irp_flags())
            && WriteClass::classify(
                data.irp_flags(),
                self.fm.top_level_irp(),
                ctx.flush_in_progress_by(self.fm.current_thread_id()),
            ) == WriteClass::WriteBack;
        let completion = CompletionContext::Write {
            record_write: d.mark_written_since_flush,
            write_back,
            flush: wants_post.then_some(FlushOrder {
                native: action.method == crate::policy::FlushMethod::Native,
                flags: action.flags,
            }),
            synchronized: synchronize,
            audit: action.mode == crate::policy::Mode::Audit,
        };
        if synchronize {
            self.counters().bump(Counter::WriteSynchronized);
            PreOp::synchronize(completion)
        } else {
            PreOp::with_callback(completion)
        }
    }

    /// Post-write (any IRQL <= DISPATCH_LEVEL, arbitrary thread; <= APC_LEVEL in the
    /// originating thread after `FLT_PREOP_SYNCHRONIZE`). Draining: clean up only
    /// (nothing is held). On success records the write (context atomics only: no
    /// policy lock above APC_LEVEL); when the pre-write asked for a flush decision:
    ///
    /// - a synchronized write (the issuing thread, before its system service
    ///   returns) is flushed here, inline (flush placement rule (a), DESIGN §1);
    /// - an asynchronous write is pended to FlushGuard's flush worker
    ///   ([`FilterManager::queue_deferred_flush`]: the driver's own worker threads,
    ///   `FLT_POSTOP_MORE_PROCESSING_REQUIRED`), which flushes at PASSIVE_LEVEL and
    ///   only then lets the write complete to the application (rule (c)). Never
    ///   flushed inline in the completing thread, never through
    ///   `FltDoCompletionProcessingWhenSafe` (its DDI page excludes IRP_MJ_WRITE).
    ///   When the worker cannot take it (fast I/O, posting refused, or
    ///   [`MAX_PENDED_WRITES`] in flight) the write completes at once and the flush is
    ///   skipped, counted; the handle stays marked written for the cleanup flush.
    pub fn post_write(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Write {
            record_write,
            write_back,
            flush,
            synchronized,
            audit,
        }) = ctx
        else {
            return PostOpStatus::FinishedProcessing;
        };
        if flags.draining() {
            if flush.is_some() {
                self.skip(Counter::FlushSkippedDraining);
            }
            return PostOpStatus::FinishedProcessing;
        }
        if !data.io_status().is_success() {
            self.counters().bump(Counter::WriteFailed);
            return PostOpStatus::FinishedProcessing;
        }
        if record_write {
            if let Some(c) = self.handle_context(data) {
                // The flushing thread's own write-back is covered by its flush if it
                // completes first; every other write only by a later flush.
                c.record_write(if write_back {
                    WriteClass::WriteBack
                } else {
                    WriteClass::User
                });
                self.fm.release_context(c);
            }
        }
        let Some(order) = flush else {
            return PostOpStatus::FinishedProcessing;
        };
        let decision = CompletionContext::Write {
            record_write: false,
            write_back: false,
            flush: Some(order),
            synchronized,
            audit,
        };
        // An audit rule only counts what the audited mode would do, here, whatever the
        // IRQL (counters and context atomics; the policy lock works up to
        // DISPATCH_LEVEL): its writes are never held for the flush worker.
        if audit {
            // Where the enforcing mode would flush: in the issuing thread of a
            // synchronized write at PASSIVE_LEVEL, or in the flush worker for an
            // asynchronous IRP write it could pend (no top-level IRP).
            let enforcing_would_flush = if synchronized {
                self.fm.current_irql() == Irql::PASSIVE_LEVEL
            } else {
                !data.is_fast_io() && !self.fm.top_level_irp_set()
            };
            if enforcing_would_flush {
                self.audit_after_write(data);
            }
            return PostOpStatus::FinishedProcessing;
        }
        if synchronized && self.fm.current_irql() <= Irql::APC_LEVEL {
            self.flush_after_write(data, Some(decision));
            return PostOpStatus::FinishedProcessing;
        }
        if data.is_fast_io() {
            self.skip(Counter::FlushSkippedNotDeferrable);
            return PostOpStatus::FinishedProcessing;
        }
        if self.pended_writes.fetch_add(1, Ordering::AcqRel) >= MAX_PENDED_WRITES {
            self.pended_writes.fetch_sub(1, Ordering::AcqRel);
            self.counters().bump(Counter::FlushWorkerFull);
            self.skip(Counter::FlushSkippedNotDeferrable);
            return PostOpStatus::FinishedProcessing;
        }
        if self.fm.queue_deferred_flush(data, decision) {
            self.counters().bump(Counter::FlushDeferred);
            PostOpStatus::MoreProcessingRequired
        } else {
            self.pended_writes.fetch_sub(1, Ordering::AcqRel);
            self.skip(Counter::FlushSkippedNotDeferrable);
            PostOpStatus::FinishedProcessing
        }
    }

    /// FlushGuard's flush worker (PASSIVE_LEVEL, a thread of FlushGuard's with no
    /// top-level IRP): flushes the asynchronous write [`Filter::post_write`] pended
    /// with `ctx`, as the engine decides with its completion status. The caller then
    /// completes the pended post-operation (`FltCompletePendedPostOperation`), so the
    /// application sees its write complete only after the flush (or a counted failure;
    /// the write's own status is never changed). Call exactly once per pended write.
    pub fn flush_pended_write(&self, data: &mut F::Data, ctx: Option<CompletionContext>) {
        self.flush_after_write(data, ctx);
        self.pended_writes.fetch_sub(1, Ordering::AcqRel);
    }

    /// Asynchronous writes pended to the flush worker and not yet flushed.
    pub fn pended_writes(&self) -> u32 {
        self.pended_writes.load(Ordering::Acquire)
    }

    /// Audit after a successful write (IRQL <= DISPATCH_LEVEL): counts what the
    /// audited mode would do after it (`audit_would_flush`) and takes that flush as
    /// done for the written-since-flush bookkeeping; issues nothing.
    fn audit_after_write(&self, data: &mut F::Data) {
        // Counters and context atomics only; the policy lock works up to
        // DISPATCH_LEVEL (crate::locks), so no Filter::policy() IRQL gate here.
        let policy = PolicySnapshot::new(self.state.policy());
        if let Some((_, d)) = self.decide_after_write(data, &policy) {
            drop(policy);
            self.taken_as_flushed(data, &d);
        }
    }

    /// The flush after a successful write: at PASSIVE_LEVEL asks the engine
    /// (post-write phase, with the completion status) and issues the flush it orders;
    /// above PASSIVE_LEVEL counts the flush skipped.
    fn flush_after_write(&self, data: &mut F::Data, ctx: Option<CompletionContext>) {
        let Some(CompletionContext::Write {
            flush: Some(_),
            synchronized,
            ..
        }) = ctx
        else {
            return;
        };
        if self.fm.current_irql() != Irql::PASSIVE_LEVEL {
            self.skip(Counter::FlushSkippedIrql);
            return;
        }
        let Some(policy) = self.policy() else {
            return;
        };
        let Some((rule, d)) = self.decide_after_write(data, &policy) else {
            return;
        };
        drop(policy);
        match issue::flush_order(&d) {
            Some((order, FlushPlace::GroupCommit(options))) => {
                self.group_commit_after_write(data, order, options, rule, synchronized);
            }
            Some((order, place)) => {
                self.flush_now(data, order, place, rule, synchronized);
            }
            None => {}
        }
        self.taken_as_flushed(data, &d);
    }

    /// The engine's post-write decision for the handle's cached rule under `policy`,
    /// recorded in the statistics: `(rule, decision)`. `None` when the handle has no
    /// context, or its rule was cached under an older policy (counted: the changed
    /// policy applies from the next operation on, no re-lookup after the write).
    fn decide_after_write(
        &self,
        data: &F::Data,
        policy: &PolicySnapshot,
    ) -> Option<(DecidedRule, Decision)> {
        let context = self.handle_context(data)?;
        let (generation, slot) = context.rule();
        let written = context.written_since_flush();
        self.fm.release_context(context);
        if generation != policy.generation() {
            self.counters().bump(Counter::StaleRulePassedThrough);
            return None;
        }
        let action = policy.action(slot)?;
        let mut view = self.view(data, Phase::Post);
        view.written_since_flush = written;
        let d = crate::decision::decide(&action, &view);
        d.record(self.state.stats(), policy.counters(slot));
        Some((DecidedRule { generation, slot }, d))
    }
}
