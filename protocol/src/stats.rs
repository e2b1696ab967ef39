//! GetStats reply layout and the counter vocabulary shared by driver and CLI.
//!
//! ```text
//! StatsReplyHeader (40 bytes)
//!   generation u64 @0       total_rules u32 @8     first_rule u32 @12
//!   returned_rules u32 @16  counter_count u32 @20 (= COUNTER_COUNT)
//!   histogram_buckets u32 @24 (= LATENCY_BUCKETS)  status_slots u32 @28 (= STATUS_SLOTS)
//!   callback_counter_count u32 @32 (0, or CALLBACK_COUNTER_COUNT when the request
//!     set RequestFlags::CALLBACK_COUNTERS)        reserved u32 @36 = 0
//! global counters:        counter_count x u64
//! default-rule counters:  counter_count x u64
//! flush latency histogram: histogram_buckets x u64 (bucket i: see latency_bucket)
//! group-commit batch histogram: histogram_buckets x u64 (writers acknowledged per
//!   group-commit flush, bucketed like latency_bucket)
//! group-commit wait histogram: histogram_buckets x u64 (µs each group-commit writer
//!   waited for its batch's flush, bucketed like latency_bucket)
//! flush failures by status: status_slots x { status u32, reserved u32 = 0, count u64 }
//!   (slot order = FAILURE_STATUSES, last slot status 0 = "any other status")
//! callback-layer counters: callback_counter_count x u64 (CallbackCounter order)
//! per-rule counters: returned_rules x counter_count x u64 (rules first_rule..)
//! ```
//!
//! Compatibility: bytes 32..40 were a reserved u64 in the first layout. Without
//! `CALLBACK_COUNTERS` the driver writes 0 there and no callback section, so the
//! reply is byte for byte the original one and [`crate::PROTOCOL_VERSION`] stays 1;
//! a client sets the flag to opt in. The section sits before the per-rule
//! counters so every fixed-size part precedes the variable one.

use crate::codec::{Reader, Writer};
use crate::{DecodeError, NtStatus};
use static_assertions::const_assert_eq;

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident = $idx:expr, $label:expr; )*) => {
        /// Index of a counter in every counter array of a GetStats reply.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter { $( $(#[$m])* $name = $idx, )* }

        impl Counter {
            /// All counters in index order.
            pub const ALL: [Counter; COUNTER_COUNT] = [ $( Counter::$name ),* ];

            /// Stable snake_case label (CLI output, JSON keys).
            pub const fn label(self) -> &'static str {
                match self { $( Counter::$name => $label, )* }
            }
        }
    };
}

/// Number of counters per counter set.
pub const COUNTER_COUNT: usize = 21;

counters! {
    /// Non-paging writes seen on files the rule covers (paging writes too if the
    /// rule counts paging I/O).
    WritesSeen = 0, "writes_seen";
    /// Writes the rule acted on (write-through set or flush scheduled).
    WritesGoverned = 1, "writes_governed";
    /// Bytes of governed writes (bytes).
    BytesGoverned = 2, "bytes_governed";
    /// FILE_WRITE_THROUGH added at IRP_MJ_CREATE or SL_WRITE_THROUGH added on IRP_MJ_WRITE.
    WriteThroughForced = 3, "write_through_forced";
    /// Flushes issued with FltFlushBuffers2 / FltFlushBuffers.
    FlushesFilter = 4, "flushes_filter";
    /// Flushes issued with ZwFlushBuffersFileEx.
    FlushesNative = 5, "flushes_native";
    /// Flushes that returned a failure status: the data was not flushed
    /// (`flush_failures_retryable` + `flush_failures_permanent`).
    FlushFailures = 6, "flush_failures";
    /// Application IRP_MJ_FLUSH_BUFFERS seen.
    AppFlushesSeen = 7, "app_flushes_seen";
    /// Application flushes whose type was upgraded.
    AppFlushesUpgraded = 8, "app_flushes_upgraded";
    /// Fast I/O writes refused with FLT_PREOP_DISALLOW_FASTIO.
    FastIoDisallowed = 9, "fast_io_disallowed";
    /// Paging I/O writes passed through untouched.
    PagingIoPassed = 10, "paging_io_passed";
    /// Operations caused by FlushGuard's own flushes, passed through.
    OwnFlushesPassed = 11, "own_flushes_passed";
    /// Audit: write-through that would have been forced.
    AuditWouldWriteThrough = 12, "audit_would_write_through";
    /// Audit: flushes that would have been issued.
    AuditWouldFlush = 13, "audit_would_flush";
    /// Audit: application flushes that would have been upgraded.
    AuditWouldUpgrade = 14, "audit_would_upgrade";
    /// Flushes that were due but skipped because issuing them was unsafe
    /// (top-level IRP set, post-op draining, recursion).
    FlushesSkipped = 15, "flushes_skipped";
    /// Failed flushes whose status is classed
    /// [`crate::StatusClass::NotFlushedRetryable`] (not flushed, transient).
    FlushFailuresRetryable = 16, "flush_failures_retryable";
    /// Failed flushes whose status is classed
    /// [`crate::StatusClass::NotFlushedPermanent`] (not flushed; retrying through the
    /// same object will not help, e.g. `STATUS_ACCESS_DENIED`).
    FlushFailuresPermanent = 17, "flush_failures_permanent";
    /// Group-commit: flushes a batch's leader issued (each also counted in
    /// `flushes_filter` / `flushes_native`, and on failure in `flush_failures`).
    GroupCommitFlushes = 18, "group_commit_flushes";
    /// Group-commit: governed writes whose batch flush completed (succeeded or
    /// failed); divided by `group_commit_flushes`, the writers per flush.
    GroupCommitWrites = 19, "group_commit_writes";
    /// Group-commit: total time writers spent between registering with their stream's
    /// coordinator and their batch's flush completing, microseconds.
    GroupCommitWaitUs = 20, "group_commit_wait_us";
}

macro_rules! callback_counters {
    ($( $(#[$m:meta])* $name:ident = $idx:expr, $label:expr; )*) => {
        /// Index of a callback-layer counter in the GetStats callback section: why
        /// the driver's callbacks did, skipped or failed something (every fail-open
        /// cause has its own counter). Wire order = index; new counters are only
        /// ever appended.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum CallbackCounter { $( $(#[$m])* $name = $idx, )* }

        impl CallbackCounter {
            /// All callback counters in index (= wire) order.
            pub const ALL: [CallbackCounter; CALLBACK_COUNTER_COUNT] =
                [ $( CallbackCounter::$name ),* ];

            /// Stable snake_case label (CLI output, JSON keys).
            pub const fn label(self) -> &'static str {
                match self { $( CallbackCounter::$name => $label, )* }
            }

            /// The Rust name (`NameQueryFailed`), as `flushctl replay` reports it.
            pub const fn name(self) -> &'static str {
                match self { $( CallbackCounter::$name => stringify!($name), )* }
            }
        }
    };
}

/// Number of callback-layer counters ([`CallbackCounter`]).
pub const CALLBACK_COUNTER_COUNT: usize = 44;

callback_counters! {
    /// A pre-create set `FILE_WRITE_THROUGH`.
    CreateWriteThroughSet = 0, "create_write_through_set";
    /// A post-create attached a stream-handle context.
    ContextAttached = 1, "context_attached";
    /// A pre-write set `SL_WRITE_THROUGH`.
    WriteThroughSet = 2, "write_through_set";
    /// A pre-write returned `FLT_PREOP_DISALLOW_FASTIO`.
    FastIoDisallowed = 3, "fast_io_disallowed";
    /// A pre-write returned `FLT_PREOP_SYNCHRONIZE` for flush-after-write.
    WriteSynchronized = 4, "write_synchronized";
    /// A post-write pended an asynchronous write to FlushGuard's flush worker
    /// (`FltQueueDeferredIoWorkItem`, `FLT_POSTOP_MORE_PROCESSING_REQUIRED`): the
    /// write completes to the application after its flush.
    FlushDeferred = 5, "flush_deferred";
    /// An application flush type was upgraded.
    AppFlushUpgraded = 6, "app_flush_upgraded";
    /// A flush FlushGuard issued succeeded.
    FlushOk = 7, "flush_ok";
    /// Retired, always 0: failed flushes were once split off as "benign"; every
    /// failure now means "not flushed" and is counted as retryable or permanent
    /// ([`crate::StatusClass`]). The index stays so the wire order does not change.
    FlushFailedBenign = 8, "flush_failed_benign";
    /// A flush FlushGuard issued failed: not flushed, retryable status.
    FlushFailedRetryable = 9, "flush_failed_retryable";
    /// A flush FlushGuard issued failed: not flushed, permanent status.
    FlushFailedPermanent = 10, "flush_failed_permanent";
    /// `FltFlushBuffers2` missing: a typed flush ran as a full `FltFlushBuffers`.
    FlushTypeWidened = 11, "flush_type_widened";
    /// A native flush ran through `FltFlushBuffers(2)` instead: anywhere but the
    /// flush worker (at cleanup, after a data-changing FSCTL), with all APCs disabled,
    /// or without the recursion guard. `ZwFlushBuffersFileEx` runs only in the flush
    /// worker, on a handle FlushGuard opens for it.
    NativeFlushViaFilter = 12, "native_flush_via_filter";
    /// Flush flags with no `FLUSH_FLAGS_*` equivalent (purge) for the native method.
    FlushFlagsUnsupported = 13, "flush_flags_unsupported";
    /// Flush skipped: paging I/O.
    FlushSkippedPagingIo = 14, "flush_skipped_paging_io";
    /// Flush skipped: a top-level IRP is set on this thread.
    FlushSkippedTopLevelIrp = 15, "flush_skipped_top_level_irp";
    /// Flush skipped: IRQL above PASSIVE_LEVEL where it had to run.
    FlushSkippedIrql = 16, "flush_skipped_irql";
    /// Flush skipped: an asynchronous write could not be pended to the flush worker
    /// (fast I/O; `FltQueueDeferredIoWorkItem` refused: top-level IRP, instance
    /// torn down, no work item; or the worker full).
    FlushSkippedNotDeferrable = 17, "flush_skipped_not_deferrable";
    /// Flush skipped: the thread is already inside one of our flushes (a full
    /// recursion guard no longer skips: see `OwnFlushUnguarded`).
    FlushSkippedRecursion = 18, "flush_skipped_recursion";
    /// Flush skipped: the operation is draining (instance teardown).
    FlushSkippedDraining = 19, "flush_skipped_draining";
    /// The user's write failed; nothing done after it.
    WriteFailed = 20, "write_failed";
    /// Our own flush (or its paging writes / cleanup) re-entered and passed through.
    OwnIoPassedThrough = 21, "own_io_passed_through";
    /// `FltGetFileNameInformation` / parse failed: operation passed through.
    NameQueryFailed = 22, "name_query_failed";
    /// MUP provider lookup failed: treated as not on a share.
    ProviderQueryFailed = 23, "provider_query_failed";
    /// Requestor image lookup failed: matched with an empty image name.
    ProcessQueryFailed = 24, "process_query_failed";
    /// A stream-handle context could not be allocated, set or read.
    ContextFailed = 25, "context_failed";
    /// Opening FlushGuard's own handle for a native flush (`FltCreateFileEx2` by the
    /// file's name) failed: native flush not issued (the failure is counted as a
    /// flush failure too).
    HandleOpenFailed = 26, "handle_open_failed";
    /// `ZwClose` of our kernel handle failed.
    HandleCloseFailed = 27, "handle_close_failed";
    /// A cached rule was stale (policy changed) and could not be refreshed here.
    StaleRulePassedThrough = 28, "stale_rule_passed_through";
    /// A cached rule was refreshed after a policy change.
    RuleRefreshed = 29, "rule_refreshed";
    /// A callback arrived while unloading and passed through.
    CallbackDuringUnload = 30, "callback_during_unload";
    /// The policy was needed above APC_LEVEL (never expected; passed through).
    PolicyAboveApcLevel = 31, "policy_above_apc_level";
    /// A SetPolicy with `RequestFlags::PERSIST` failed because writing
    /// `Parameters\Policy` failed; the policy in force did not change (a
    /// `RegistryPolicyRejected` event with `value` = `REGISTRY_STORE` names the status).
    PolicyStoreFailed = 32, "policy_store_failed";
    /// A pool allocation FlushGuard needed on an I/O path failed
    /// (`STATUS_INSUFFICIENT_RESOURCES`: name or image buffer, parsed name): the
    /// operation passed through unmodified (fail open), or a failed flush's event
    /// was recorded without the file name.
    AllocationFailed = 33, "allocation_failed";
    /// A create on a server's interprocess-communication share (`\\server\PIPE`,
    /// `\\server\MAILSLOT`, `\\server\IPC$`: remote named pipes and mailslots)
    /// passed through: FlushGuard never governs these, whatever the policy says (a
    /// flush on a pipe blocks until the reader has drained it).
    IpcShareExempt = 34, "ipc_share_exempt";
    /// A flush was issued without the recursion guard because every one of its
    /// `OWN_FLUSH_SLOTS` slots was taken by another thread: it went through
    /// `FltFlushBuffers(2)` (to the instances below: nothing re-enters FlushGuard's
    /// pre-flush), never the native method, and was not skipped.
    OwnFlushUnguarded = 35, "own_flush_unguarded";
    /// A file on MUP had a provider id no resolved redirector has, and resolving the
    /// missing redirectors again (`FsRtlMupGetProviderIdFromName`) found one that
    /// registered after FlushGuard loaded (e.g. WebDAV once WebClient started).
    ProviderReresolved = 36, "provider_reresolved";
    /// Such a miss came less than a second after the last resolution attempt: the
    /// file was classified as from another redirector without asking MUP again.
    ProviderReresolveThrottled = 37, "provider_reresolve_throttled";
    /// A successful data-changing FSCTL (`FSCTL_SRV_COPYCHUNK(_WRITE)`,
    /// `FSCTL_OFFLOAD_WRITE`, `FSCTL_DUPLICATE_EXTENTS_TO_FILE(_EX)`) or end-of-file /
    /// allocation change on a governed handle was recorded as a write.
    DataChangeRecorded = 38, "data_change_recorded";
    /// An asynchronous data-changing FSCTL under flush-after-write or write-through:
    /// no safe place to flush right after it, so the flush is left to cleanup (where
    /// a flushing rule flushes the written handle).
    DataChangeFlushLeftToCleanup = 39, "data_change_flush_left_to_cleanup";
    /// `MAX_PENDED_WRITES` asynchronous writes were already pended to the flush
    /// worker: this one completed without its flush (fail open; also counted
    /// `FlushSkippedNotDeferrable`), left to the cleanup flush.
    FlushWorkerFull = 40, "flush_worker_full";
    /// Group-commit: every coordinator served other streams (or none could be
    /// allocated at load), so this write was flushed on its own, as under
    /// flush-after-write (fail open: same guarantee, no batching).
    GroupCommitUnbatched = 41, "group_commit_unbatched";
    /// Group-commit: a write flushed on its own instead of joining a batch because it
    /// ran in FlushGuard's flush worker (an asynchronous write: a system worker thread
    /// must not wait for another writer's flush) or with all APCs disabled.
    GroupCommitNotBatched = 42, "group_commit_not_batched";
    /// Group-commit: a writer's batch flush failed, so it flushed its own file object
    /// once more (the batch's flush ran through another handle, perhaps another
    /// session).
    GroupCommitFallbackFlush = 43, "group_commit_fallback_flush";
}

/// Flush-failure statuses with their own slot (DESIGN §1 list); the final slot
/// (status 0) counts every other failure.
pub const FAILURE_STATUSES: [NtStatus; 9] = [
    NtStatus::INSUFFICIENT_RESOURCES,
    NtStatus::FILE_CLOSED,
    NtStatus::INVALID_DEVICE_REQUEST,
    NtStatus::INVALID_PARAMETER,
    NtStatus::NOT_IMPLEMENTED,
    NtStatus::NOT_SUPPORTED,
    NtStatus::MEDIA_WRITE_PROTECTED,
    NtStatus::VOLUME_DISMOUNTED,
    NtStatus::ACCESS_DENIED,
];

/// Status slots in a reply: the named ones plus "other".
pub const STATUS_SLOTS: usize = FAILURE_STATUSES.len() + 1;

/// Slot index for a failure status.
pub fn failure_slot(status: NtStatus) -> usize {
    FAILURE_STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(FAILURE_STATUSES.len())
}

/// Number of latency histogram buckets.
pub const LATENCY_BUCKETS: usize = 32;
/// Histograms in a GetStats reply, each of [`LATENCY_BUCKETS`] buckets: flush latency
/// (µs), group-commit batch size (writers per flush), group-commit wait (µs).
pub const HISTOGRAMS: usize = 3;

/// Histogram bucket of a latency in microseconds: bucket 0 holds 0 µs, bucket
/// `i >= 1` holds `[2^(i-1), 2^i)` µs; the last bucket also holds everything above.
pub const fn latency_bucket(us: u64) -> usize {
    let b = (64 - us.leading_zeros()) as usize;
    if b >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        b
    }
}

/// Lower bound in microseconds of histogram bucket `i`.
pub const fn bucket_floor_us(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1u64 << (i - 1)
    }
}

/// Fixed head of a GetStats reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsReplyHeader {
    /// Policy generation the per-rule counters belong to.
    pub generation: u64,
    /// Rules in that policy.
    pub total_rules: u32,
    /// Index of the first per-rule entry.
    pub first_rule: u32,
    /// Per-rule entries in this reply.
    pub returned_rules: u32,
    /// Callback-layer counters in this reply: 0, or [`CALLBACK_COUNTER_COUNT`]
    /// when the request set `RequestFlags::CALLBACK_COUNTERS`.
    pub callback_counters: u32,
}

impl StatsReplyHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Body size in bytes for `returned_rules` entries without the callback
    /// section (a request without `CALLBACK_COUNTERS`); `None` on overflow.
    pub fn body_len(returned_rules: u32) -> Option<usize> {
        Self::body_len_with(returned_rules, 0)
    }

    /// Body size in bytes for `returned_rules` per-rule entries and
    /// `callback_counters` callback-layer counters; `None` on overflow.
    pub fn body_len_with(returned_rules: u32, callback_counters: u32) -> Option<usize> {
        let set = COUNTER_COUNT * 8;
        let fixed = Self::SIZE + 2 * set + HISTOGRAMS * LATENCY_BUCKETS * 8 + STATUS_SLOTS * 16;
        (returned_rules as usize)
            .checked_mul(set)?
            .checked_add((callback_counters as usize).checked_mul(8)?)?
            .checked_add(fixed)
    }

    /// Body size in bytes this header announces; `None` on overflow.
    pub fn announced_body_len(&self) -> Option<usize> {
        Self::body_len_with(self.returned_rules, self.callback_counters)
    }

    /// Writes the header.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        w.u64(self.generation)?;
        w.u32(self.total_rules)?;
        w.u32(self.first_rule)?;
        w.u32(self.returned_rules)?;
        w.u32(COUNTER_COUNT as u32)?;
        w.u32(LATENCY_BUCKETS as u32)?;
        w.u32(STATUS_SLOTS as u32)?;
        w.u32(self.callback_counters)?;
        w.u32(0)
    }

    /// Reads the header. Errors: `TooShort`, `BadValue` (array sizes differ from
    /// this build; `callback_counter_count` neither 0 nor
    /// [`CALLBACK_COUNTER_COUNT`]), `NonZeroReserved`, `Overflow` (first_rule +
    /// returned_rules).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let generation = r.u64()?;
        let total_rules = r.u32()?;
        let first_rule = r.u32()?;
        let returned_rules = r.u32()?;
        for (field, want) in [
            ("StatsReplyHeader.counter_count", COUNTER_COUNT),
            ("StatsReplyHeader.histogram_buckets", LATENCY_BUCKETS),
            ("StatsReplyHeader.status_slots", STATUS_SLOTS),
        ] {
            let v = r.u32()?;
            if v as usize != want {
                return Err(DecodeError::BadValue { field, value: v });
            }
        }
        let callback_counters = r.u32()?;
        if callback_counters != 0 && callback_counters as usize != CALLBACK_COUNTER_COUNT {
            return Err(DecodeError::BadValue {
                field: "StatsReplyHeader.callback_counter_count",
                value: callback_counters,
            });
        }
        r.reserved32("StatsReplyHeader.reserved")?;
        if first_rule.checked_add(returned_rules).is_none() {
            return Err(DecodeError::Overflow {
                field: "StatsReplyHeader.first_rule+returned_rules",
            });
        }
        Ok(StatsReplyHeader {
            generation,
            total_rules,
            first_rule,
            returned_rules,
            callback_counters,
        })
    }
}

const_assert_eq!(StatsReplyHeader::SIZE, 8 + 4 * 8);
const_assert_eq!(CallbackCounter::ALL.len(), CALLBACK_COUNTER_COUNT);
// Every fixed part of the reply keeps the u64 arrays 8-byte aligned.
const_assert_eq!(StatsReplyHeader::SIZE % 8, 0);
const_assert_eq!(Counter::ALL.len(), COUNTER_COUNT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 2);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(4), 3);
        assert_eq!(latency_bucket(1023), 10);
        assert_eq!(latency_bucket(1024), 11);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for i in 1..LATENCY_BUCKETS {
            assert_eq!(latency_bucket(bucket_floor_us(i)), i);
        }
    }

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn callback_counter_indices_are_dense_and_labels_unique() {
        for (i, c) in CallbackCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(c
                .label()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        for (i, a) in CallbackCounter::ALL.iter().enumerate() {
            for b in &CallbackCounter::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(CallbackCounter::NameQueryFailed.name(), "NameQueryFailed");
        assert_eq!(
            CallbackCounter::NameQueryFailed.label(),
            "name_query_failed"
        );
    }

    #[test]
    fn body_lengths() {
        let fixed = 40 + 2 * 21 * 8 + 3 * 32 * 8 + 10 * 16;
        assert_eq!(StatsReplyHeader::body_len(0), Some(fixed));
        assert_eq!(StatsReplyHeader::body_len(2), Some(fixed + 2 * 21 * 8));
        assert_eq!(
            StatsReplyHeader::body_len_with(2, CALLBACK_COUNTER_COUNT as u32),
            Some(fixed + 2 * 21 * 8 + CALLBACK_COUNTER_COUNT * 8)
        );
    }

    #[test]
    fn failure_slots() {
        assert_eq!(failure_slot(NtStatus::FILE_CLOSED), 1);
        assert_eq!(failure_slot(NtStatus::IO_TIMEOUT), STATUS_SLOTS - 1);
    }
}
