//! What the callback layer counts: every skipped action and every failure, by
//! cause. Increments are single relaxed atomic adds (no allocation, any IRQL).
//!
//! The vocabulary ([`Counter`], an alias of
//! [`flushguard_protocol::stats::CallbackCounter`]) is part of the wire: GetStats
//! with `RequestFlags::CALLBACK_COUNTERS` returns these values in [`Counter`] order.
//! The counters live in the engine [`crate::handler::State`] so the port handler can
//! report and reset them.

use core::sync::atomic::{AtomicU64, Ordering};

pub use flushguard_protocol::stats::CallbackCounter as Counter;
use flushguard_protocol::stats::CALLBACK_COUNTER_COUNT;

/// The callback layer's counters, indexed by [`Counter`].
#[derive(Debug)]
pub struct CallbackCounters {
    values: [AtomicU64; CALLBACK_COUNTER_COUNT],
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
            values: [const { AtomicU64::new(0) }; CALLBACK_COUNTER_COUNT],
        }
    }

    /// Adds one to `c`.
    pub fn bump(&self, c: Counter) {
        if let Some(v) = self.values.get(c as usize) {
            v.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.values
            .get(c as usize)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    /// All values in [`Counter`] (wire) order. Each value is exact on its own; the
    /// set is not one atomic snapshot.
    pub fn snapshot(&self) -> [u64; CALLBACK_COUNTER_COUNT] {
        core::array::from_fn(|i| self.values.get(i).map_or(0, |v| v.load(Ordering::Relaxed)))
    }

    /// Sets every counter to zero (ResetStats).
    pub fn reset(&self) {
        for v in &self.values {
            v.store(0, Ordering::Relaxed);
        }
    }
}
