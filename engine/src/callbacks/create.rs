//! IRP_MJ_CREATE: the rule lookup at pre-create (write-through at create) and
//! post-create (the stream-handle context that caches the rule).

use super::*;

impl<F: FilterManager> Filter<F> {
    // ---- IRP_MJ_CREATE ---------------------------------------------------

    /// Pre-create (PASSIVE_LEVEL): looks up the rule; a write-through rule adds
    /// `FILE_WRITE_THROUGH` to `Parameters.Create.Options` (+ dirty). A handle under a
    /// rule whose mode is not `pass`, or whose redirector is not known yet, gets a
    /// post-create.
    ///
    /// The MUP provider is known only once the file object is open, so a rule that
    /// names a provider cannot add `FILE_WRITE_THROUGH` at create time on a network
    /// volume: it governs the handle from post-create on (`SL_WRITE_THROUGH` on every
    /// write). Provider-agnostic rules apply at create time too.
    pub fn pre_create(&self, data: &mut F::Data) -> PreOp {
        if !self.running() || self.own_io() || self.fm.current_irql() != Irql::PASSIVE_LEVEL {
            return PreOp::pass();
        }
        let Some(policy) = self.policy() else {
            return PreOp::pass();
        };
        let reach = policy.reach();
        if !reach.governs {
            // Nothing in the policy acts on any file: no name, image or provider
            // query, no post-create, no context (issue 9 finding 5).
            return PreOp::pass();
        }
        if !reach.at_create {
            // No rule can act before the file object is open: the post-create
            // classifies the file, once, with the provider known.
            return PreOp::with_callback(CompletionContext::Create {
                generation: policy.generation(),
                slot: UNCLASSIFIED_SLOT,
            });
        }
        let Some(c) = self.classify(data, &policy, false) else {
            return PreOp::pass();
        };
        let mut view = self.view(data, Phase::Pre);
        view.provider = c.provider;
        let d = crate::decision::decide(&c.action, &view);
        d.record(self.state.stats(), policy.counters(c.slot));
        if d.set_create_write_through {
            data.set_create_options(data.create_options() | FILE_WRITE_THROUGH);
            self.fm.set_callback_data_dirty(data);
            self.counters().bump(Counter::CreateWriteThroughSet);
        }
        if c.action.mode == crate::policy::Mode::Pass && c.provider_known {
            PreOp::pass()
        } else {
            PreOp::with_callback(CompletionContext::Create {
                generation: policy.generation(),
                slot: c.slot,
            })
        }
    }

    /// Post-create (PASSIVE_LEVEL): on success looks the rule up (again, if the
    /// pre-create did and a rule names a provider) now that the file object is open
    /// (the MUP provider is known) and, unless it is `pass`,
    /// attaches a [`StreamContext`] caching the rule and the policy generation. If
    /// that lookup fails the pre-create's rule is kept. Draining: nothing to clean up.
    pub fn post_create(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::Create { generation, slot }) = ctx else {
            return PostOpStatus::FinishedProcessing;
        };
        if flags.draining() {
            return PostOpStatus::FinishedProcessing;
        }
        let status = data.io_status();
        if !status.is_success() || status == STATUS_REPARSE {
            return PostOpStatus::FinishedProcessing;
        }
        let Some(policy) = self.policy() else {
            return PostOpStatus::FinishedProcessing;
        };
        let classified = slot != UNCLASSIFIED_SLOT && generation == policy.generation();
        // Audit: the pre-create's rule would have opened the file write-through (so
        // the audited mode would force nothing on its writes).
        let audited_write_through = classified
            && policy.action(slot).is_some_and(|a| {
                crate::decision::decide(&a, &self.view(data, Phase::Pre))
                    .counts
                    .contains(flushguard_protocol::stats::Counter::AuditWouldWriteThrough)
            });
        let (generation, slot, action) = if classified && !policy.reach().provider_specific {
            // The pre-create's lookup cannot change now that the provider is known
            // (no rule names one): one name query per create.
            (generation, slot, policy.action(slot))
        } else {
            match self.classify(data, &policy, true) {
                Some(c) => (policy.generation(), c.slot, Some(c.action)),
                None if classified => (generation, slot, policy.action(slot)),
                None => return PostOpStatus::FinishedProcessing,
            }
        };
        drop(policy);
        if action.is_none_or(|a| a.mode == crate::policy::Mode::Pass) {
            return PostOpStatus::FinishedProcessing;
        }
        let context = match self.fm.allocate_stream_handle_context(
            StreamContext::new(generation, slot).with_audited_write_through(audited_write_through),
        ) {
            Ok(c) => c,
            Err(_) => {
                self.counters().bump(Counter::ContextFailed);
                return PostOpStatus::FinishedProcessing;
            }
        };
        match self.fm.set_stream_handle_context(data, &context) {
            Ok(()) => self.counters().bump(Counter::ContextAttached),
            Err(_) => self.counters().bump(Counter::ContextFailed),
        }
        self.fm.release_context(context);
        PostOpStatus::FinishedProcessing
    }
}
