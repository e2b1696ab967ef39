//! IRP_MJ_CLEANUP: flush-on-close.

use super::*;

impl<F: FilterManager> Filter<F> {
    // ---- IRP_MJ_CLEANUP -----------------------------------------------------

    /// Pre-cleanup (PASSIVE_LEVEL): flush-on-close for a handle written since its
    /// last flush. Always `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    pub fn pre_cleanup(&self, data: &mut F::Data) -> PreOp {
        if !self.running() || self.own_io() {
            return PreOp::pass();
        }
        let Some(ctx) = self.handle_context(data) else {
            return PreOp::pass();
        };
        // The context and the policy snapshot are given back before the flush.
        let decided = self.decide_pre(data, &ctx);
        self.fm.release_context(ctx);
        if let Some((_, _, d)) = &decided {
            self.taken_as_flushed(data, d);
        }
        if let Some((rule, order)) =
            decided.and_then(|(rule, _, d)| issue::flush_order(&d).map(|o| (rule, o)))
        {
            if self.fm.current_irql() != Irql::PASSIVE_LEVEL {
                self.skip(Counter::FlushSkippedIrql);
            } else {
                self.flush_now(data, order.0, order.1, rule, false);
            }
        }
        PreOp::pass()
    }
}
