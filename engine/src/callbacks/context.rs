//! Per-handle state ([`StreamContext`]) and the pre-to-post hand-over
//! ([`CompletionContext`]).

use core::sync::atomic::{AtomicU64, Ordering};

use flushguard_protocol::FlushFlags;

/// Rule slot meaning "the policy's default action" (no rule matched).
pub const DEFAULT_RULE_SLOT: u32 = u32::MAX;

/// The stream-handle context FlushGuard attaches in post-create to every governed
/// handle (`FLT_STREAMHANDLE_CONTEXT`, non-paged: read at DISPATCH_LEVEL).
///
/// It caches which rule governs the handle, tagged with the policy generation it
/// was computed under, and tracks writes against flushes with two sequence numbers
/// so that "written since the last flush" is race-free without a lock:
/// a successful write bumps `write_seq`; a flush that began after observing
/// `write_seq == n` and succeeded raises `flushed_seq` to at least `n`.
#[derive(Debug)]
pub struct StreamContext {
    /// `generation << 32 | rule slot` ([`DEFAULT_RULE_SLOT`] = default action).
    rule: AtomicU64,
    /// Successful writes through this handle (monotonic).
    write_seq: AtomicU64,
    /// Highest `write_seq` covered by a successful flush (monotonic).
    flushed_seq: AtomicU64,
}

impl StreamContext {
    /// A context for a handle governed by rule `slot` of policy `generation`.
    pub fn new(generation: u32, slot: u32) -> Self {
        StreamContext {
            rule: AtomicU64::new(pack(generation, slot)),
            write_seq: AtomicU64::new(0),
            flushed_seq: AtomicU64::new(0),
        }
    }

    /// `(generation, rule slot)` cached for this handle.
    pub fn rule(&self) -> (u32, u32) {
        unpack(self.rule.load(Ordering::Acquire))
    }

    /// Replaces the cached rule after a re-lookup under a newer policy.
    pub fn set_rule(&self, generation: u32, slot: u32) {
        self.rule.store(pack(generation, slot), Ordering::Release);
    }

    /// Records one successful write; returns the new write sequence number.
    pub fn record_write(&self) -> u64 {
        self.write_seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current write sequence number (observe before starting a flush).
    pub fn write_seq(&self) -> u64 {
        self.write_seq.load(Ordering::Acquire)
    }

    /// Records that a flush which started after write `observed` succeeded.
    pub fn record_flush(&self, observed: u64) {
        self.flushed_seq.fetch_max(observed, Ordering::AcqRel);
    }

    /// True when a successful write is not yet covered by a successful flush.
    pub fn written_since_flush(&self) -> bool {
        self.write_seq.load(Ordering::Acquire) > self.flushed_seq.load(Ordering::Acquire)
    }
}

fn pack(generation: u32, slot: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// What a pre-operation callback hands to its post-operation callback.
///
/// A plain value, no allocation: the driver passes it through the `PVOID`
/// completion context with [`CompletionContext::encode`] / [`CompletionContext::decode`],
/// so there is nothing to free on any path (including draining).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompletionContext {
    /// Post-create: attach a [`StreamContext`] for this rule.
    Create {
        /// Low 32 bits of the policy generation the rule was looked up in.
        generation: u32,
        /// Rule index, or [`DEFAULT_RULE_SLOT`]. At most 2^24 - 2 (encoding limit).
        slot: u32,
    },
    /// Post-write.
    Write {
        /// Record the write in the handle's context (flush-on-close bookkeeping).
        record_write: bool,
        /// Issue a flush once the write succeeded.
        flush: Option<FlushOrder>,
        /// The pre-write returned `FLT_PREOP_SYNCHRONIZE`: the post-write runs in the
        /// issuing thread before the write's system service returns (a user handle
        /// to the file object exists unless another thread closes it concurrently).
        synchronized: bool,
    },
    /// Post-flush of an application flush on a governed handle.
    Flush {
        /// `write_seq` observed before the flush went down (at most 2^56 - 1).
        observed_write_seq: u64,
    },
}

/// A flush FlushGuard will issue: the method and its typed flags, stored in
/// protocol `FlushFlags` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlushOrder {
    /// Use `ZwFlushBuffersFileEx` on a kernel handle instead of `FltFlushBuffers(2)`.
    pub native: bool,
    /// The flush type.
    pub flags: FlushFlags,
}

const TAG_CREATE: usize = 1;
const TAG_WRITE: usize = 2;
const TAG_FLUSH: usize = 3;

impl CompletionContext {
    /// Encodes as a non-zero `usize` (bits 0..3 tag, payload above), for the
    /// `PVOID` completion context. Needs a 64-bit `usize` for the full ranges.
    pub fn encode(self) -> usize {
        match self {
            CompletionContext::Create { generation, slot } => {
                let slot = (slot & 0x00FF_FFFF) as usize;
                TAG_CREATE | (slot << 4) | ((generation as usize) << 28)
            }
            CompletionContext::Write {
                record_write,
                flush,
                synchronized,
            } => {
                let mut v = TAG_WRITE;
                if record_write {
                    v |= 1 << 4;
                }
                if synchronized {
                    v |= 1 << 7;
                }
                if let Some(f) = flush {
                    v |= 1 << 5;
                    if f.native {
                        v |= 1 << 6;
                    }
                    v |= usize::from(f.flags.bits()) << 8;
                }
                v
            }
            CompletionContext::Flush { observed_write_seq } => {
                TAG_FLUSH | ((observed_write_seq as usize & ((1usize << 56) - 1)) << 4)
            }
        }
    }

    /// Decodes a value made by [`CompletionContext::encode`]; `None` for 0 or an
    /// unknown tag (a NULL completion context).
    pub fn decode(v: usize) -> Option<Self> {
        match v & 0xF {
            TAG_CREATE => {
                let mut slot = ((v >> 4) & 0x00FF_FFFF) as u32;
                if slot == 0x00FF_FFFF {
                    slot = DEFAULT_RULE_SLOT;
                }
                Some(CompletionContext::Create {
                    slot,
                    generation: (v >> 28) as u32,
                })
            }
            TAG_WRITE => Some(CompletionContext::Write {
                record_write: v & (1 << 4) != 0,
                synchronized: v & (1 << 7) != 0,
                flush: (v & (1 << 5) != 0).then_some(FlushOrder {
                    native: v & (1 << 6) != 0,
                    flags: FlushFlags::from_bits_retain((v >> 8) as u16),
                }),
            }),
            TAG_FLUSH => Some(CompletionContext::Flush {
                observed_write_seq: (v >> 4) as u64,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_context_round_trips() {
        let cases = [
            CompletionContext::Create {
                generation: 7,
                slot: 3,
            },
            CompletionContext::Create {
                generation: u32::MAX,
                slot: DEFAULT_RULE_SLOT,
            },
            CompletionContext::Write {
                record_write: true,
                flush: None,
                synchronized: false,
            },
            CompletionContext::Write {
                record_write: false,
                synchronized: true,
                flush: Some(FlushOrder {
                    native: true,
                    flags: FlushFlags::FLUSH_AND_PURGE,
                }),
            },
            CompletionContext::Flush {
                observed_write_seq: 123_456_789,
            },
        ];
        for c in cases {
            let v = c.encode();
            assert_ne!(v, 0);
            assert_eq!(CompletionContext::decode(v), Some(c));
        }
        assert_eq!(CompletionContext::decode(0), None);
    }

    #[test]
    fn written_since_flush_tracks_sequences() {
        let c = StreamContext::new(1, 0);
        assert!(!c.written_since_flush());
        let seen = c.record_write();
        c.record_write();
        c.record_flush(seen);
        assert!(c.written_since_flush(), "second write not covered");
        c.record_flush(c.write_seq());
        assert!(!c.written_since_flush());
        c.record_flush(0);
        assert!(!c.written_since_flush(), "flushed_seq never goes back");
    }
}
