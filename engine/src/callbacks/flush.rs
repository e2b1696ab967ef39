//! IRP_MJ_FLUSH_BUFFERS: application flushes (upgrade, and what they cover).

use super::*;

impl<F: FilterManager> Filter<F> {
    // ---- IRP_MJ_FLUSH_BUFFERS ---------------------------------------------

    /// Pre-flush (IRQL <= APC_LEVEL): our own flushes pass through untouched; an
    /// application flush on a governed handle may be upgraded (`Iopb->MinorFunction`
    /// = `IRP_MN_FLUSH_*`, + dirty) and, under a flushing rule, gets a post-flush
    /// that records it.
    pub fn pre_flush(&self, data: &mut F::Data) -> PreOp {
        self.with_handle_context(data, Self::pre_flush_governed)
    }

    fn pre_flush_governed(&self, data: &mut F::Data, ctx: &StreamContext) -> PreOp {
        let Some((_, _, d)) = self.decide_pre(data, ctx) else {
            return PreOp::pass();
        };
        if let Some(target) = d.upgrade_flush {
            let minor = target.to_flush_minor();
            if data.minor_function() != minor {
                data.set_minor_function(minor);
                self.fm.set_callback_data_dirty(data);
                self.counters().bump(Counter::AppFlushUpgraded);
            }
        }
        if matches!(
            d.pre_op,
            EnginePreOp::SuccessWithCallback | EnginePreOp::Synchronize
        ) {
            // This thread's synchronous paging writes until the post-flush are the
            // flush's own write-back (WriteClass::WriteBack).
            ctx.begin_flush(self.fm.current_thread_id());
            PreOp::with_callback(CompletionContext::Flush {
                observed_write_seq: ctx.write_seq(),
            })
        } else {
            PreOp::pass()
        }
    }

    /// Post-flush (<= DISPATCH_LEVEL): a successful application flush on a handle
    /// under a flushing rule (the pre-flush asked for this callback) covers the user
    /// writes completed before it began and the write-back (synchronous paging)
    /// writes completed by now, its own write-back included
    /// ([`StreamContext::record_flush`]). Context atomics only (no policy lock).
    /// Draining or failed: covers nothing, nothing to clean up.
    pub fn post_flush(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Flush { observed_write_seq }) = ctx else {
            return PostOpStatus::FinishedProcessing;
        };
        let Some(c) = self.handle_context(data) else {
            return PostOpStatus::FinishedProcessing;
        };
        c.end_flush();
        if !flags.draining() && data.io_status().is_success() {
            c.record_flush(observed_write_seq);
        }
        self.fm.release_context(c);
        PostOpStatus::FinishedProcessing
    }
}
