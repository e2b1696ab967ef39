//! Operations that change a file's data without an IRP_MJ_WRITE (issue 9 finding 2):
//! the data-changing FSCTLs (server-side copy `FSCTL_SRV_COPYCHUNK(_WRITE)`, what
//! CopyFile uses within a share; `FSCTL_OFFLOAD_WRITE`;
//! `FSCTL_DUPLICATE_EXTENTS_TO_FILE(_EX)`) and end-of-file / allocation changes
//! (IRP_MJ_SET_INFORMATION with `FileEndOfFileInformation` /
//! `FileAllocationInformation`).
//!
//! A successful one marks the handle written (a user write, [`WriteClass::User`]), so
//! flush-on-close (and the cleanup flush of flush-after-write) covers it. Under
//! flush-after-write and write-through a synchronous data-changing FSCTL is also
//! flushed right after it, in the issuing thread's synchronized post-operation, like a
//! synchronized write; an asynchronous one has no safe place for that flush here
//! (counted `DataChangeFlushLeftToCleanup`) and is flushed at cleanup under a flushing
//! rule. Size changes are only recorded.

use flushguard_protocol::nt::{
    DATA_CHANGING_FSCTLS, FILE_ALLOCATION_INFORMATION, FILE_END_OF_FILE_INFORMATION,
    IRP_MN_USER_FS_REQUEST,
};

use super::context::{CompletionContext, FlushOrder, StreamContext, WriteClass};
use super::fltmgr::{CallbackData, FilterManager, Irql, PostOpFlags, PostOpStatus};
use super::{Counter, DecidedRule, Filter, FlushPlace, PreOp};
use crate::policy::{FlushMethod, Mode};

impl<F: FilterManager> Filter<F> {
    /// IRP_MJ_FILE_SYSTEM_CONTROL pre-operation (IRQL <= APC_LEVEL): a data-changing
    /// FSCTL (`IRP_MN_USER_FS_REQUEST` with a code in
    /// [`DATA_CHANGING_FSCTLS`]) on a governed handle gets a post-operation that
    /// records it; under flush-after-write or write-through a synchronous one is
    /// synchronized (`FLT_PREOP_SYNCHRONIZE`) and flushed after it. Every other FSCTL
    /// passes through (`FLT_PREOP_SUCCESS_NO_CALLBACK`).
    pub fn pre_fs_control(&self, data: &mut F::Data) -> PreOp {
        if data.minor_function() != IRP_MN_USER_FS_REQUEST
            || !DATA_CHANGING_FSCTLS.contains(&data.fs_control_code())
        {
            return PreOp::pass();
        }
        self.with_handle_context(data, |f, d, ctx| f.pre_data_change(d, ctx, true))
    }

    /// IRP_MJ_SET_INFORMATION pre-operation (IRQL <= APC_LEVEL): an end-of-file or
    /// allocation change on a governed handle gets a post-operation that records it
    /// as a write (flush-on-close); every other class passes through.
    pub fn pre_set_information(&self, data: &mut F::Data) -> PreOp {
        if !matches!(
            data.file_information_class(),
            FILE_END_OF_FILE_INFORMATION | FILE_ALLOCATION_INFORMATION
        ) {
            return PreOp::pass();
        }
        self.with_handle_context(data, |f, d, ctx| f.pre_data_change(d, ctx, false))
    }

    fn pre_data_change(&self, data: &mut F::Data, ctx: &StreamContext, may_flush: bool) -> PreOp {
        let Some(policy) = self.policy() else {
            return PreOp::pass();
        };
        let Some((_, action)) = self.governing_rule(data, ctx, &policy) else {
            return PreOp::pass();
        };
        drop(policy);
        if action.mode == Mode::Pass {
            return PreOp::pass();
        }
        let flush_after = may_flush
            && matches!(
                action.mode,
                Mode::FlushAfterWrite | Mode::GroupCommit | Mode::WriteThrough
            );
        if !flush_after {
            return PreOp::with_callback(CompletionContext::DataChange { flush: None });
        }
        if !data.is_fast_io() && self.fm.is_operation_synchronous(data) {
            return PreOp::synchronize(CompletionContext::DataChange {
                flush: Some(FlushOrder {
                    native: action.method == FlushMethod::Native,
                    flags: action.flags,
                }),
            });
        }
        self.counters().bump(Counter::DataChangeFlushLeftToCleanup);
        PreOp::with_callback(CompletionContext::DataChange { flush: None })
    }

    /// Post-operation of a data-changing FSCTL or size change (IRQL <= DISPATCH_LEVEL;
    /// <= APC_LEVEL in the issuing thread after `FLT_PREOP_SYNCHRONIZE`). On success
    /// records a user write in the handle's context (atomics only) and counts
    /// `DataChangeRecorded`; with a flush order (synchronized) flushes at
    /// PASSIVE_LEVEL like after a synchronized write. Draining or failed: nothing.
    pub fn post_data_change(
        &self,
        data: &mut F::Data,
        ctx: Option<CompletionContext>,
        flags: PostOpFlags,
    ) -> PostOpStatus {
        let Some(CompletionContext::DataChange { flush }) = ctx else {
            return PostOpStatus::FinishedProcessing;
        };
        if flags.draining() {
            if flush.is_some() {
                self.skip(Counter::FlushSkippedDraining);
            }
            return PostOpStatus::FinishedProcessing;
        }
        if !data.io_status().is_success() {
            return PostOpStatus::FinishedProcessing;
        }
        let Some(c) = self.handle_context(data) else {
            return PostOpStatus::FinishedProcessing;
        };
        c.record_write(WriteClass::User);
        let (generation, slot) = c.rule();
        self.fm.release_context(c);
        self.counters().bump(Counter::DataChangeRecorded);
        if let Some(order) = flush {
            if self.fm.current_irql() == Irql::PASSIVE_LEVEL {
                let rule = DecidedRule { generation, slot };
                self.flush_now(data, order, FlushPlace::AfterWrite, rule, true);
            } else {
                self.skip(Counter::FlushSkippedIrql);
            }
        }
        PostOpStatus::FinishedProcessing
    }
}
