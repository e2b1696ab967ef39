//! Issuing a flush: FltFlushBuffers2 / FltFlushBuffers or ZwFlushBuffersFileEx on
//! FlushGuard's own handle, with the recursion guard, recorded in the statistics.

use super::*;

use alloc::string::String;

use crate::path::{try_string_from_utf16_lossy, InsufficientResources};
use crate::policy::FlushMethod;
use crate::state::State;

/// Where a flush FlushGuard issues happens: the decision's [`FlushPoint`].
pub use crate::decision::FlushPoint as FlushPlace;

/// The flush a decision orders, if any.
pub(super) fn flush_order(d: &Decision) -> Option<(FlushOrder, FlushPlace)> {
    d.flush.map(|f| {
        (
            FlushOrder {
                native: f.method == FlushMethod::Native,
                flags: f.flags,
            },
            f.point,
        )
    })
}

/// Records one flush FlushGuard issued (counters, latency in µs, and on failure a
/// `FlushFailed` event naming the file). PASSIVE_LEVEL: a failure queries the
/// file name (released before returning). If the name's buffer cannot be allocated
/// the event is recorded without a name and `CallbackCounter::AllocationFailed`
/// counted.
pub(super) fn record_flush<F: FilterManager>(
    state: &State,
    fm: &F,
    rule: DecidedRule,
    native: bool,
    status: NtStatus,
    elapsed_us: u64,
    data: &F::Data,
) {
    let method = if native {
        FlushMethod::Native
    } else {
        FlushMethod::Filter
    };
    let mut name = String::new();
    if !status.is_success() {
        if let Ok(info) = fm.get_file_name_information(data) {
            match try_string_from_utf16_lossy(fm.file_name(&info)) {
                Ok(n) => name = n,
                Err(InsufficientResources) => state
                    .callback_counters()
                    .bump(flushguard_protocol::stats::CallbackCounter::AllocationFailed),
            }
            fm.release_file_name_information(info);
        }
    }
    state.record_flush_decided(
        &state.policy(),
        rule.generation,
        crate::matcher::slot_index(rule.slot),
        method,
        status,
        elapsed_us,
        &name,
    );
}

impl<F: FilterManager> Filter<F> {
    // ---- issuing a flush ------------------------------------------------------

    /// Audit: the flush the audited mode would issue here counts as done for the
    /// handle's written-since-flush bookkeeping (`Decision::clear_written_since_flush`),
    /// as [`Filter::flush_now`] records a successful flush. Context atomics only.
    pub(super) fn taken_as_flushed(&self, data: &F::Data, d: &Decision) {
        if !d.clear_written_since_flush {
            return;
        }
        if let Some(c) = self.handle_context(data) {
            c.record_flush(c.write_seq());
            self.fm.release_context(c);
        }
    }

    /// Issues one flush for the operation's file object at PASSIVE_LEVEL, holding no
    /// lock and no context reference, with this thread marked in the recursion
    /// guard. Records it (latency, failures by status) in the engine stats and an
    /// event on failure; never fails the user's operation. Returns the flush's
    /// status, `None` when it was skipped (counted).
    pub(super) fn flush_now(
        &self,
        data: &F::Data,
        order: FlushOrder,
        place: FlushPlace,
        rule: DecidedRule,
        issuing_thread: bool,
    ) -> Option<NtStatus> {
        let fm = &self.fm;
        if fm.current_irql() != Irql::PASSIVE_LEVEL {
            self.skip(Counter::FlushSkippedIrql);
            return None;
        }
        if fm.top_level_irp_set() {
            self.skip(Counter::FlushSkippedTopLevelIrp);
            return None;
        }
        if data.irp_flags() & IRP_PAGING_IO != 0 {
            self.skip(Counter::FlushSkippedPagingIo);
            return None;
        }
        // A full guard does not skip the flush (no durability promise may depend on a
        // fixed-size table): it runs unguarded through the filter method, which sends
        // the flush below this instance, so nothing re-enters our pre-flush.
        let token = match self.own_flushes.enter(fm.current_thread_id()) {
            Ok(token) => Some(token),
            Err(EnterError::Recursion) => {
                self.skip(Counter::FlushSkippedRecursion);
                return None;
            }
            Err(EnterError::Full) => {
                self.counters().bump(Counter::OwnFlushUnguarded);
                None
            }
        };
        let observed = self.handle_context(data).map(|c| {
            let seq = c.write_seq();
            fm.release_context(c);
            seq
        });
        // The native method (ZwFlushBuffersFileEx) runs only in FlushGuard's flush
        // worker (a write pended after it completed: not the issuing thread), on a
        // handle FlushGuard opens by name for this flush and closes right after
        // (FilterManager::open_flush_handle): never a handle to the application's file
        // object, so closing it can never send a second IRP_MJ_CLEANUP for it, and no
        // application file object lock is involved. Not at cleanup (the filter method
        // runs there), never with all APCs disabled (ZwFlushBuffersFileEx's completion
        // is a special kernel APC), never without the recursion guard (its
        // re-entrant pre-flush would not be recognised as ours). Otherwise the flush
        // goes to the instances below through FltFlushBuffers(2), counted
        // NativeFlushViaFilter.
        let native = order.native
            && token.is_some()
            && matches!(place, FlushPlace::AfterWrite | FlushPlace::GroupCommit(_))
            && !issuing_thread
            && !fm.all_apcs_disabled();
        if order.native && !native {
            self.counters().bump(Counter::NativeFlushViaFilter);
        }
        let started = fm.now_us();
        let result = self.issue(data, native, order.flags);
        let elapsed = fm.now_us().saturating_sub(started);
        let status = match result {
            Ok(()) => NtStatus::SUCCESS,
            Err(s) => s,
        };
        record_flush(&self.state, fm, rule, native, status, elapsed, data);
        match result {
            Ok(()) => {
                self.counters().bump(Counter::FlushOk);
                // Covers the user writes completed before the flush began and the
                // write-back completed by now: in this thread the flush's own paging
                // writes passed through unrecorded (recursion guard; an unguarded flush's
                // paging writes may be recorded, which only leaves the handle marked
                // written: one more flush at cleanup, never a missed one); written back by
                // another thread, they completed before the flush call returned.
                if let Some(seq) = observed {
                    if let Some(c) = self.handle_context(data) {
                        c.record_flush(seq);
                        fm.release_context(c);
                    }
                }
            }
            Err(status) => self.counters().bump(match status.class() {
                flushguard_protocol::StatusClass::NotFlushedRetryable => {
                    Counter::FlushFailedRetryable
                }
                flushguard_protocol::StatusClass::NotFlushedPermanent
                | flushguard_protocol::StatusClass::Flushed => Counter::FlushFailedPermanent,
            }),
        }
        drop(token);
        Some(status)
    }

    fn issue(
        &self,
        data: &F::Data,
        native: bool,
        flags: flushguard_protocol::FlushFlags,
    ) -> Result<(), NtStatus> {
        let fm = &self.fm;
        if !native {
            return if fm.has_flt_flush_buffers2() {
                fm.flt_flush_buffers2(data, flags.to_flt_flush_type())
            } else {
                if flags.to_flt_flush_type() != 0 {
                    self.counters().bump(Counter::FlushTypeWidened);
                }
                fm.flt_flush_buffers(data)
            };
        }
        let Ok(flags) = flags.to_flush_flags_ex() else {
            self.counters().bump(Counter::FlushFlagsUnsupported);
            return Err(NtStatus::INVALID_PARAMETER_MIX);
        };
        let name = match fm.get_file_name_information(data) {
            Ok(n) => n,
            Err(status) => {
                self.counters().bump(Counter::NameQueryFailed);
                return Err(status);
            }
        };
        let handle = fm.open_flush_handle(data, fm.file_name(&name));
        fm.release_file_name_information(name);
        let handle = match handle {
            Ok(h) => h,
            Err(status) => {
                self.counters().bump(Counter::HandleOpenFailed);
                return Err(status);
            }
        };
        let result = fm.zw_flush_buffers_file_ex(&handle, flags);
        if fm.close_kernel_handle(handle).is_err() {
            self.counters().bump(Counter::HandleCloseFailed);
        }
        result
    }
}
