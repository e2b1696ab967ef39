//! Counters: lock-free atomics, no allocation on increment, snapshots that
//! encode for GetStats.
//!
//! Every increment is a `Relaxed` `fetch_add` on an `AtomicU64`: callable at any
//! IRQL (the memory is non-paged in the driver), never blocks, never allocates.
//! A snapshot is not atomic across counters (each value is exact on its own).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use flushguard_protocol::codec::{Reader, Writer};
use flushguard_protocol::stats::{
    failure_slot, latency_bucket, CallbackCounter, Counter, StatsReplyHeader,
    CALLBACK_COUNTER_COUNT, COUNTER_COUNT, FAILURE_STATUSES, LATENCY_BUCKETS, STATUS_SLOTS,
};
use flushguard_protocol::{DecodeError, NtStatus, StatusClass};

use crate::policy::FlushMethod;

/// One set of counters (global, per rule or default), indexed by [`Counter`].
#[derive(Debug)]
pub struct Counters([AtomicU64; COUNTER_COUNT]);

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    /// All zero.
    pub fn new() -> Self {
        Counters(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Adds `n` to `c`.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        if let Some(a) = self.0.get(c as usize) {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Current value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.0
            .get(c as usize)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// All values in [`Counter`] index order.
    pub fn snapshot(&self) -> [u64; COUNTER_COUNT] {
        load_all(&self.0)
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        self.0.iter().for_each(|a| a.store(0, Ordering::Relaxed));
    }
}

/// Global statistics: counters over all rules, flush failures per status and
/// the flush latency histogram. Per-rule counters live in the
/// [`crate::matcher::CompiledPolicy`] they belong to.
#[derive(Debug)]
pub struct Stats {
    global: Counters,
    failures: [AtomicU64; STATUS_SLOTS],
    latency: [AtomicU64; LATENCY_BUCKETS],
    /// Writers acknowledged per group-commit flush ([`latency_bucket`] buckets).
    group_batch: [AtomicU64; LATENCY_BUCKETS],
    /// Microseconds each group-commit writer waited ([`latency_bucket`] buckets).
    group_wait: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// All zero.
    pub fn new() -> Self {
        Stats {
            global: Counters::new(),
            failures: core::array::from_fn(|_| AtomicU64::new(0)),
            latency: core::array::from_fn(|_| AtomicU64::new(0)),
            group_batch: core::array::from_fn(|_| AtomicU64::new(0)),
            group_wait: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Records one group-commit flush acknowledging `writers` writers (histogram).
    pub fn record_group_batch(&self, writers: u32) {
        bump_bucket(&self.group_batch, u64::from(writers));
    }

    /// Records one group-commit writer's wait for its batch's flush, µs (histogram).
    pub fn record_group_wait(&self, us: u64) {
        bump_bucket(&self.group_wait, us);
    }

    /// Group-commit batch-size histogram (see [`Stats::record_group_batch`]).
    pub fn group_batch(&self) -> [u64; LATENCY_BUCKETS] {
        load_all(&self.group_batch)
    }

    /// Group-commit wait histogram, µs (see [`Stats::record_group_wait`]).
    pub fn group_wait(&self) -> [u64; LATENCY_BUCKETS] {
        load_all(&self.group_wait)
    }

    /// Global counters.
    pub fn global(&self) -> &Counters {
        &self.global
    }

    /// Adds `n` to counter `c` globally and in `rule` (the matching rule's set).
    #[inline]
    pub fn add(&self, rule: &Counters, c: Counter, n: u64) {
        self.add_to(Some(rule), c, n);
    }

    /// Adds `n` to counter `c` globally and, when given, in `rule`.
    #[inline]
    pub fn add_to(&self, rule: Option<&Counters>, c: Counter, n: u64) {
        self.global.add(c, n);
        if let Some(rule) = rule {
            rule.add(c, n);
        }
    }

    /// Records the result of a flush FlushGuard issued: flushes per method,
    /// failures per status and per durability class
    /// ([`StatusClass`]: retryable or permanent, both "not flushed"), latency histogram (µs).
    /// Per rule in `rule` when given (`None`: the rule's policy is no longer the active
    /// one, see [`crate::State::record_flush_decided`]).
    pub fn record_flush(
        &self,
        rule: Option<&Counters>,
        method: FlushMethod,
        status: NtStatus,
        latency_us: u64,
    ) {
        let c = match method {
            FlushMethod::Filter => Counter::FlushesFilter,
            FlushMethod::Native => Counter::FlushesNative,
        };
        self.add_to(rule, c, 1);
        bump_bucket(&self.latency, latency_us);
        if !status.is_success() {
            self.add_to(rule, Counter::FlushFailures, 1);
            match status.class() {
                StatusClass::NotFlushedRetryable => {
                    self.add_to(rule, Counter::FlushFailuresRetryable, 1);
                }
                // A failure code is never `Flushed`; count it as not flushed anyway.
                StatusClass::NotFlushedPermanent | StatusClass::Flushed => {
                    self.add_to(rule, Counter::FlushFailuresPermanent, 1);
                }
            }
            if let Some(s) = self.failures.get(failure_slot(status)) {
                s.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Zeroes the global counters, failures and histogram.
    pub fn reset(&self) {
        self.global.reset();
        self.failures
            .iter()
            .chain(self.latency.iter())
            .chain(self.group_batch.iter())
            .chain(self.group_wait.iter())
            .for_each(|a| a.store(0, Ordering::Relaxed));
    }

    /// Failure counts per slot ([`FAILURE_STATUSES`] then "other").
    pub fn failures(&self) -> [u64; STATUS_SLOTS] {
        load_all(&self.failures)
    }

    /// Latency histogram buckets (see [`latency_bucket`]).
    pub fn latency(&self) -> [u64; LATENCY_BUCKETS] {
        load_all(&self.latency)
    }
}

/// Adds one to the [`latency_bucket`] of `value` in `histogram`.
fn bump_bucket(histogram: &[AtomicU64; LATENCY_BUCKETS], value: u64) {
    if let Some(b) = histogram.get(latency_bucket(value)) {
        b.fetch_add(1, Ordering::Relaxed);
    }
}

/// The values of `counters` (each exact on its own; not one atomic snapshot).
fn load_all<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    core::array::from_fn(|i| counters.get(i).map_or(0, |a| a.load(Ordering::Relaxed)))
}

/// A decoded (or captured) GetStats reply.
///
/// The fixed-size arrays are boxed: the snapshot is built and decoded in kernel
/// code too (GetStats), where a 700-byte value copied through unoptimised frames
/// would push them past the 4 KiB that needs `__chkstk` (kernel stacks are 12-24
/// KiB). Indexing and iteration work as on arrays (`Box<[T; N]>` derefs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Policy generation of the per-rule counters.
    pub generation: u64,
    /// Rules in that policy.
    pub total_rules: u32,
    /// Index of `rules[0]`.
    pub first_rule: u32,
    /// Global counters ([`Counter`] order).
    pub global: Box<[u64; COUNTER_COUNT]>,
    /// Default-action counters.
    pub default_rule: Box<[u64; COUNTER_COUNT]>,
    /// Flush latency histogram, [`LATENCY_BUCKETS`] buckets (µs, log2).
    pub latency: Box<[u64; LATENCY_BUCKETS]>,
    /// Group-commit batch histogram: writers per flush, [`LATENCY_BUCKETS`] log2 buckets.
    pub group_batch: Box<[u64; LATENCY_BUCKETS]>,
    /// Group-commit wait histogram: µs per writer, [`LATENCY_BUCKETS`] log2 buckets.
    pub group_wait: Box<[u64; LATENCY_BUCKETS]>,
    /// Flush failures: (status, count); the last slot has status 0 = other.
    pub failures: Box<[(NtStatus, u64); STATUS_SLOTS]>,
    /// Callback-layer counters in [`CallbackCounter`] order (every fail-open and
    /// skip cause); `None` when the GetStats request did not set
    /// `RequestFlags::CALLBACK_COUNTERS` (the reply then has no such section).
    pub callbacks: Option<Box<[u64; CALLBACK_COUNTER_COUNT]>>,
    /// Per-rule counters for rules `first_rule..`.
    pub rules: Vec<[u64; COUNTER_COUNT]>,
}

impl StatsSnapshot {
    /// Encoded body length in bytes; `None` on overflow.
    pub fn encoded_len(&self) -> Option<usize> {
        StatsReplyHeader::body_len_with(
            u32::try_from(self.rules.len()).ok()?,
            self.callback_counter_count(),
        )
    }

    fn callback_counter_count(&self) -> u32 {
        if self.callbacks.is_some() {
            CALLBACK_COUNTER_COUNT as u32
        } else {
            0
        }
    }

    /// Writes the GetStats reply body (layout in [`flushguard_protocol::stats`]).
    /// Error: `OutputTooSmall`.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), DecodeError> {
        StatsReplyHeader {
            generation: self.generation,
            total_rules: self.total_rules,
            first_rule: self.first_rule,
            returned_rules: u32::try_from(self.rules.len())
                .map_err(|_| DecodeError::Overflow { field: "rules" })?,
            callback_counters: self.callback_counter_count(),
        }
        .write(w)?;
        for v in self
            .global
            .iter()
            .chain(self.default_rule.iter())
            .chain(self.latency.iter())
            .chain(self.group_batch.iter())
            .chain(self.group_wait.iter())
        {
            w.u64(*v)?;
        }
        for (s, n) in self.failures.iter() {
            w.u32(s.to_bits())?;
            w.u32(0)?;
            w.u64(*n)?;
        }
        for v in self.callbacks.iter().flat_map(|c| c.iter()) {
            w.u64(*v)?;
        }
        for r in &self.rules {
            for v in r {
                w.u64(*v)?;
            }
        }
        Ok(())
    }

    /// Decodes a GetStats reply body, with or without the callback section (the
    /// header's `callback_counter_count` says which). The arrays are filled in
    /// place on the heap (small stack frame, see the type's docs).
    ///
    /// Errors: `TooShort`, `TooLong` (trailing bytes), `BadValue`,
    /// `NonZeroReserved`, `Overflow`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let h = StatsReplyHeader::read(&mut r)?;
        let need = h.announced_body_len().ok_or(DecodeError::Overflow {
            field: "returned_rules",
        })?;
        if buf.len() < need {
            return Err(DecodeError::TooShort {
                needed: need as u32,
                got: buf.len() as u32,
            });
        }
        if buf.len() > need {
            return Err(DecodeError::TooLong {
                max: need as u32,
                got: buf.len() as u32,
            });
        }
        let mut snap = StatsSnapshot {
            generation: h.generation,
            total_rules: h.total_rules,
            first_rule: h.first_rule,
            global: Box::new([0; COUNTER_COUNT]),
            default_rule: Box::new([0; COUNTER_COUNT]),
            latency: Box::new([0; LATENCY_BUCKETS]),
            group_batch: Box::new([0; LATENCY_BUCKETS]),
            group_wait: Box::new([0; LATENCY_BUCKETS]),
            failures: Box::new([(NtStatus::SUCCESS, 0); STATUS_SLOTS]),
            callbacks: None,
            rules: Vec::with_capacity(h.returned_rules as usize),
        };
        read_u64s(&mut r, &mut snap.global[..])?;
        read_u64s(&mut r, &mut snap.default_rule[..])?;
        read_u64s(&mut r, &mut snap.latency[..])?;
        read_u64s(&mut r, &mut snap.group_batch[..])?;
        read_u64s(&mut r, &mut snap.group_wait[..])?;
        read_failures(&mut r, &mut snap.failures[..])?;
        if h.callback_counters != 0 {
            let mut callbacks = Box::new([0; CALLBACK_COUNTER_COUNT]);
            read_u64s(&mut r, &mut callbacks[..])?;
            snap.callbacks = Some(callbacks);
        }
        for _ in 0..h.returned_rules {
            let mut set = [0u64; COUNTER_COUNT];
            read_u64s(&mut r, &mut set)?;
            snap.rules.push(set);
        }
        Ok(snap)
    }

    /// Value of counter `c` in the global set.
    pub fn global(&self, c: Counter) -> u64 {
        self.global.get(c as usize).copied().unwrap_or(0)
    }

    /// Value of callback-layer counter `c`; `None` when the reply had no callback
    /// section.
    pub fn callback(&self, c: CallbackCounter) -> Option<u64> {
        self.callbacks
            .as_ref()
            .and_then(|v| v.get(c as usize).copied())
    }
}

/// Reads `out.len()` little-endian u64 values in place. Error: `TooShort`.
fn read_u64s(r: &mut Reader<'_>, out: &mut [u64]) -> Result<(), DecodeError> {
    for v in out {
        *v = r.u64()?;
    }
    Ok(())
}

/// Reads the failure slots in place: each slot's status must be the one
/// [`FAILURE_STATUSES`] puts there (0 for the last, "other"), reserved zero.
/// Errors: `TooShort`, `NonZeroReserved`, `BadValue`.
fn read_failures(r: &mut Reader<'_>, out: &mut [(NtStatus, u64)]) -> Result<(), DecodeError> {
    for (i, slot) in out.iter_mut().enumerate() {
        let s = NtStatus::from_bits(r.u32()?);
        r.reserved32("StatsReply.failure.reserved")?;
        let expected = FAILURE_STATUSES
            .get(i)
            .copied()
            .unwrap_or(NtStatus::SUCCESS);
        if s != expected {
            return Err(DecodeError::BadValue {
                field: "StatsReply.failure.status",
                value: s.to_bits(),
            });
        }
        *slot = (s, r.u64()?);
    }
    Ok(())
}
