//! What the callback layer counts: every skipped action and every failure, by
//! cause. Increments are single relaxed atomic adds (no allocation, any IRQL).

use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident, )*) => {
        /// One callback-layer counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Counter { $( $(#[$m])* $name, )* }

        impl Counter {
            /// Every counter, in declaration (= wire) order.
            pub const ALL: &'static [Counter] = &[ $( Counter::$name ),* ];
            /// The counter's name as shown by `flushctl stats`.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$name => stringify!($name), )* }
            }
        }
    };
}

counters! {
    /// A pre-create set `FILE_WRITE_THROUGH`.
    CreateWriteThroughSet,
    /// A post-create attached a stream-handle context.
    ContextAttached,
    /// A pre-write set `SL_WRITE_THROUGH`.
    WriteThroughSet,
    /// A pre-write returned `FLT_PREOP_DISALLOW_FASTIO`.
    FastIoDisallowed,
    /// A pre-write returned `FLT_PREOP_SYNCHRONIZE` for flush-after-write.
    WriteSynchronized,
    /// A post-write deferred its flush with `FltDoCompletionProcessingWhenSafe`.
    FlushDeferred,
    /// An application flush type was upgraded.
    AppFlushUpgraded,
    /// A flush FlushGuard issued succeeded.
    FlushOk,
    /// A flush FlushGuard issued failed with a benign status.
    FlushFailedBenign,
    /// A flush FlushGuard issued failed with a retryable status.
    FlushFailedRetryable,
    /// A flush FlushGuard issued failed with a permanent status.
    FlushFailedPermanent,
    /// `FltFlushBuffers2` missing: a typed flush ran as a full `FltFlushBuffers`.
    FlushTypeWidened,
    /// A native flush ran through `FltFlushBuffers(2)` instead: at cleanup, after
    /// cleanup, outside the issuing thread of a synchronized write, or on a
    /// `FO_SYNCHRONOUS_IO` file object (see `Filter` flush rules: a second
    /// IRP_MJ_CLEANUP or a file object lock self-deadlock would follow).
    NativeFlushViaFilter,
    /// Flush flags with no `FLUSH_FLAGS_*` equivalent (purge) for the native method.
    FlushFlagsUnsupported,
    /// Flush skipped: paging I/O.
    FlushSkippedPagingIo,
    /// Flush skipped: a top-level IRP is set on this thread.
    FlushSkippedTopLevelIrp,
    /// Flush skipped: IRQL above PASSIVE_LEVEL where it had to run.
    FlushSkippedIrql,
    /// Flush skipped: `FltDoCompletionProcessingWhenSafe` returned FALSE.
    FlushSkippedNotDeferrable,
    /// Flush skipped: the thread is already inside one of our flushes, or every
    /// recursion-guard slot is taken.
    FlushSkippedRecursion,
    /// Flush skipped: the operation is draining (instance teardown).
    FlushSkippedDraining,
    /// The user's write failed; nothing done after it.
    WriteFailed,
    /// Our own flush (or its paging writes / cleanup) re-entered and passed through.
    OwnIoPassedThrough,
    /// `FltGetFileNameInformation` / parse failed: operation passed through.
    NameQueryFailed,
    /// MUP provider lookup failed: treated as not on a share.
    ProviderQueryFailed,
    /// Requestor image lookup failed: matched with an empty image name.
    ProcessQueryFailed,
    /// A stream-handle context could not be allocated, set or read.
    ContextFailed,
    /// `ObOpenObjectByPointer` failed: native flush not issued.
    HandleOpenFailed,
    /// `ZwClose` of our kernel handle failed.
    HandleCloseFailed,
    /// A cached rule was stale (policy changed) and could not be refreshed here.
    StaleRulePassedThrough,
    /// A cached rule was refreshed after a policy change.
    RuleRefreshed,
    /// A callback arrived while unloading and passed through.
    CallbackDuringUnload,
    /// The policy was needed above APC_LEVEL (never expected; passed through).
    PolicyAboveApcLevel,
}

/// The callback layer's counters.
#[derive(Debug)]
pub struct CallbackCounters {
    values: [AtomicU64; Counter::ALL.len()],
}

impl Default for CallbackCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl CallbackCounters {
    /// All zero.
    pub const fn new() -> Self {
        CallbackCounters {
            values: [const { AtomicU64::new(0) }; Counter::ALL.len()],
        }
    }

    /// Adds one to `c`.
    pub fn bump(&self, c: Counter) {
        self.values[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Current value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Sets every counter to zero (ResetStats).
    pub fn reset(&self) {
        for v in &self.values {
            v.store(0, Ordering::Relaxed);
        }
    }
}
