//! GetStats reply layout and the counter vocabulary shared by driver and CLI.
//!
//! ```text
//! StatsReplyHeader (40 bytes)
//!   generation u64 @0       total_rules u32 @8     first_rule u32 @12
//!   returned_rules u32 @16  counter_count u32 @20 (= COUNTER_COUNT)
//!   histogram_buckets u32 @24 (= LATENCY_BUCKETS)  status_slots u32 @28 (= STATUS_SLOTS)
//!   reserved u64 @32 = 0
//! global counters:        counter_count x u64
//! default-rule counters:  counter_count x u64
//! flush latency histogram: histogram_buckets x u64 (bucket i: see latency_bucket)
//! flush failures by status: status_slots x { status u32, reserved u32 = 0, count u64 }
//!   (slot order = FAILURE_STATUSES, last slot status 0 = "any other status")
//! per-rule counters: returned_rules x counter_count x u64 (rules first_rule..)
//! ```

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
pub const COUNTER_COUNT: usize = 17;

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
    /// Flushes that returned a failure status (any class).
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
    /// Failed flushes whose status is classed Retryable.
    FlushFailuresRetryable = 16, "flush_failures_retryable";
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
}

impl StatsReplyHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Body size in bytes for `returned_rules` entries; `None` on overflow.
    pub fn body_len(returned_rules: u32) -> Option<usize> {
        let set = COUNTER_COUNT * 8;
        let fixed = Self::SIZE + 2 * set + LATENCY_BUCKETS * 8 + STATUS_SLOTS * 16;
        (returned_rules as usize)
            .checked_mul(set)?
            .checked_add(fixed)
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
        w.u64(0)
    }

    /// Reads the header. Errors: `TooShort`, `BadValue` (array sizes differ from
    /// this build), `NonZeroReserved`, `Overflow` (first_rule + returned_rules).
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
        if r.u64()? != 0 {
            return Err(DecodeError::NonZeroReserved {
                field: "StatsReplyHeader.reserved",
            });
        }
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
        })
    }
}

const_assert_eq!(StatsReplyHeader::SIZE, 8 + 4 * 6 + 8);
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
    fn failure_slots() {
        assert_eq!(failure_slot(NtStatus::FILE_CLOSED), 1);
        assert_eq!(failure_slot(NtStatus::IO_TIMEOUT), STATUS_SLOTS - 1);
    }
}
