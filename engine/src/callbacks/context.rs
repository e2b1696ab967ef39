//! Per-handle state ([`StreamContext`]) and the pre-to-post hand-over
//! ([`CompletionContext`]).

use core::sync::atomic::{AtomicU64, Ordering};

use flushguard_protocol::nt::{IRP_PAGING_IO, IRP_SYNCHRONOUS_PAGING_IO};
use flushguard_protocol::FlushFlags;

use super::fltmgr::TopLevelIrp;

pub use crate::matcher::{DEFAULT_RULE_SLOT, EXEMPT_SLOT, UNCLASSIFIED_SLOT};

/// How a flush covers a completed write: which of the flush's two moments the write
/// must have completed before. See [`StreamContext`] for the reasoning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteClass {
    /// Every write that is not provably a flush's own write-back: user writes
    /// (cached, non-cached, write-through, fast I/O reissued as an IRP),
    /// asynchronous paging writes (the modified / mapped page writer), and
    /// synchronous paging writes of anyone but the flushing thread (the lazy
    /// writer: top-level `FSRTL_CACHE_TOP_LEVEL_IRP`; another thread's write-back).
    /// Covered by a successful flush only if the write completed before the flush
    /// **began**.
    User,
    /// The flush's own cache write-back: a synchronous paging write
    /// (`IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO`, what `CcFlushCache` issues)
    /// issued by the thread that is inside an application flush of this handle,
    /// while a file system's IRP is top-level on that thread (the redirector's
    /// flush dispatch writing its cache back). Covered by that flush if the write
    /// completed before the flush **completed**.
    WriteBack,
}

impl WriteClass {
    /// Only a synchronous paging write (`IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO`)
    /// can be a flush's own write-back: the other inputs of [`WriteClass::classify`]
    /// need not be asked for any other write. Any IRQL.
    pub const fn may_be_write_back(irp_flags: u32) -> bool {
        const SYNC_PAGING: u32 = IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO;
        irp_flags & SYNC_PAGING == SYNC_PAGING
    }

    /// The class of a write, decided in its pre-write (the issuing thread):
    /// `irp_flags` is `Iopb->IrpFlags` (`IRP_PAGING_IO` 0x2, `IRP_SYNCHRONOUS_PAGING_IO`
    /// 0x40; wdm.h, "IRP" DDI page), `top_level` the thread's `IoGetTopLevelIrp()`,
    /// `flushing_this_handle` whether this thread is inside an application flush of
    /// the handle ([`StreamContext::flush_in_progress_by`]). Any IRQL.
    pub const fn classify(
        irp_flags: u32,
        top_level: TopLevelIrp,
        flushing_this_handle: bool,
    ) -> Self {
        if Self::may_be_write_back(irp_flags)
            && matches!(top_level, TopLevelIrp::FileSystem)
            && flushing_this_handle
        {
            WriteClass::WriteBack
        } else {
            WriteClass::User
        }
    }
}

/// The stream-handle context FlushGuard attaches in post-create to every governed
/// handle (`FLT_STREAMHANDLE_CONTEXT`, non-paged: read at DISPATCH_LEVEL).
///
/// It caches which rule governs the handle, tagged with the policy generation it
/// was computed under, and tracks writes against flushes with lock-free sequence
/// numbers, one pair per [`WriteClass`]:
///
/// - a write is recorded when it **completed successfully** (its post-write), in
///   its class's sequence (`user_seq` or `writeback_seq`, monotonic);
/// - a flush (the application's `IRP_MJ_FLUSH_BUFFERS` observed at pre- and
///   post-flush, or one FlushGuard issues, observed before the call and after it
///   returns) reads `user_seq` when it **begins** and, once it **succeeded**, raises
///   `user_flushed` to that value and `writeback_flushed` to the `writeback_seq` it
///   reads then ([`StreamContext::record_flush`]);
/// - the handle is *written since its last flush* while either sequence is ahead
///   of its flushed mark ([`StreamContext::written_since_flush`]).
///
/// # Why two classes
///
/// Paging writes are recorded so that memory-mapped writes (visible to a filter
/// only as paging writes) are flushed at close. But a flush writes the cache back
/// *inside itself*: the file system or redirector calls `CcFlushCache` in its flush
/// dispatch, which issues synchronous paging writes in the flushing thread, waits
/// for them, and only then asks the storage (disk cache flush) or the server
/// (SMB2 FLUSH) to make the data durable, then completes the flush. Those paging
/// writes complete after the flush began; counting them like user writes re-marked
/// every flushed file, and flush-on-close then issued a flush nobody needed (seen
/// replaying real captures: `FlushBuffersFile` followed by its `Paging I/O,
/// Synchronous Paging I/O` write-back). FlushGuard's own flushes cause the same
/// write-back; in the flushing thread it passes through untouched (recursion
/// guard) and is not recorded at all.
///
/// # What is guaranteed
///
/// - A user write (or asynchronous paging write) that completed after a flush
///   began is never covered by that flush: it may have reached the cache after
///   `CcFlushCache` passed its range, or the server after the SMB2 FLUSH. The handle
///   stays written-since-flush until a later flush covers it, so it is flushed at
///   cleanup under flush-on-close. A failed or drained flush covers nothing.
/// - A synchronous paging write that completed before the flush completed is
///   covered. This is exact for the flush's own write-back (it completes before
///   the durability request is sent) and for every write that completed before the
///   flush began.
/// - Races between writers, flushes and readers need no lock: each sequence and
///   each mark is a single atomic, marks are raised with `fetch_max` to values read
///   from their own sequence (so `flushed <= seq` always holds), and a write whose
///   increment is not yet visible to a flush is simply not covered by it.
///
/// # What counts as a flush's own write-back (issue 9 finding 1)
///
/// Filter Manager gives no per-IRP link from a paging write to the flush that
/// caused it. A synchronous paging write is treated as the flush's write-back only
/// when it provably is: it is issued (its pre-write runs) in the thread that is
/// inside an application flush of this handle (recorded at pre-flush,
/// [`StreamContext::begin_flush`]) while a file system's IRP is top-level there
/// (`IoGetTopLevelIrp()` a pointer: the redirector dispatching that flush). The
/// lazy writer (`FSRTL_CACHE_TOP_LEVEL_IRP`, a system worker thread), the mapped
/// page writer, another thread's flush and `FlushViewOfFile` (no top-level IRP) are
/// all [`WriteClass::User`]: a flush covers them only if they completed before it
/// began, so mapped-view data dirtied during a flush is flushed again at cleanup.
/// If two threads flush one handle at once, only the later one is recorded and the
/// earlier one's write-back counts as a user write: one more flush at cleanup, never
/// a missed one. FlushGuard's own flushes need no record: their write-back in the
/// flushing thread passes through as ours (recursion guard), and write-back a file
/// system posts to another thread is a user write.
///
/// The context is per handle (file object): paging writes arrive on the file
/// object the cache was initialised with, so with several governed handles of one
/// file they may mark a handle other than the one the application flushed. That
/// costs at most one extra flush at that handle's cleanup, never a lost one.
#[derive(Debug)]
pub struct StreamContext {
    /// `generation << 32 | rule slot` ([`DEFAULT_RULE_SLOT`] = default action).
    rule: AtomicU64,
    /// Successful [`WriteClass::User`] writes through this handle (monotonic).
    user_seq: AtomicU64,
    /// Highest `user_seq` covered by a successful flush (monotonic, `<= user_seq`).
    user_flushed: AtomicU64,
    /// Successful [`WriteClass::WriteBack`] writes on this handle (monotonic).
    writeback_seq: AtomicU64,
    /// Highest `writeback_seq` covered by a successful flush (monotonic,
    /// `<= writeback_seq`).
    writeback_flushed: AtomicU64,
    /// Thread id (`PsGetCurrentThreadId`) inside an application flush of this
    /// handle, between its pre-flush and post-flush; 0 for none.
    flusher: AtomicU64,
    /// Audit: the create would have been opened with `FILE_WRITE_THROUGH` by the
    /// audited write-through mode (the file object would carry `FO_WRITE_THROUGH`).
    audited_write_through: bool,
}

impl StreamContext {
    /// A context for a handle governed by rule `slot` of policy `generation`.
    pub fn new(generation: u32, slot: u32) -> Self {
        StreamContext {
            rule: AtomicU64::new(pack(generation, slot)),
            user_seq: AtomicU64::new(0),
            user_flushed: AtomicU64::new(0),
            writeback_seq: AtomicU64::new(0),
            writeback_flushed: AtomicU64::new(0),
            flusher: AtomicU64::new(0),
            audited_write_through: false,
        }
    }

    /// The same context, recording whether an audit rule's create would have been
    /// opened with `FILE_WRITE_THROUGH` ([`StreamContext::audited_write_through`]).
    pub fn with_audited_write_through(mut self, write_through: bool) -> Self {
        self.audited_write_through = write_through;
        self
    }

    /// Audit: the audited write-through mode would have opened this handle with
    /// `FILE_WRITE_THROUGH`, so its writes would already be write-through (the
    /// enforcing mode forces no `SL_WRITE_THROUGH` on them and audit predicts none).
    pub fn audited_write_through(&self) -> bool {
        self.audited_write_through
    }

    /// Records that `thread` (non-zero) is inside an application flush of this
    /// handle (pre-flush, the issuing thread). Any IRQL.
    pub fn begin_flush(&self, thread: u64) {
        self.flusher.store(thread, Ordering::Release);
    }

    /// Ends the application flush in progress (post-flush, any thread: the
    /// completion may run elsewhere, so the mark is cleared whoever set it; a
    /// concurrent flush then loses its mark, the conservative side). Any IRQL.
    pub fn end_flush(&self) {
        self.flusher.store(0, Ordering::Release);
    }

    /// True when `thread` (non-zero) is inside an application flush of this handle.
    pub fn flush_in_progress_by(&self, thread: u64) -> bool {
        thread != 0 && self.flusher.load(Ordering::Acquire) == thread
    }

    /// `(generation, rule slot)` cached for this handle.
    pub fn rule(&self) -> (u32, u32) {
        unpack(self.rule.load(Ordering::Acquire))
    }

    /// Replaces the cached rule after a re-lookup under a newer policy.
    pub fn set_rule(&self, generation: u32, slot: u32) {
        self.rule.store(pack(generation, slot), Ordering::Release);
    }

    /// Records one write of `class` that completed successfully (call from the
    /// post-write, any IRQL <= DISPATCH_LEVEL); returns that class's new sequence
    /// number.
    pub fn record_write(&self, class: WriteClass) -> u64 {
        let seq = match class {
            WriteClass::User => &self.user_seq,
            WriteClass::WriteBack => &self.writeback_seq,
        };
        seq.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current [`WriteClass::User`] sequence number: read it when a flush
    /// **begins** (pre-flush, or before issuing one) and pass it to
    /// [`StreamContext::record_flush`].
    pub fn write_seq(&self) -> u64 {
        self.user_seq.load(Ordering::Acquire)
    }

    /// Records that a flush which began after observing `observed_at_start`
    /// ([`StreamContext::write_seq`]) has **just completed successfully**: it covers
    /// user writes up to `observed_at_start` and every write-back write completed by
    /// now. Call it at post-flush or right after the flush call returned, never for
    /// a failed or drained flush. Any IRQL <= DISPATCH_LEVEL.
    pub fn record_flush(&self, observed_at_start: u64) {
        let writeback = self.writeback_seq.load(Ordering::Acquire);
        self.user_flushed
            .fetch_max(observed_at_start, Ordering::AcqRel);
        self.writeback_flushed
            .fetch_max(writeback, Ordering::AcqRel);
    }

    /// True when a successful write is not yet covered by a successful flush (see
    /// the type's docs for what "covered" means).
    pub fn written_since_flush(&self) -> bool {
        // Each mark is read before its sequence: a write racing with this call can
        // only make the answer `true` (the conservative side).
        let user_flushed = self.user_flushed.load(Ordering::Acquire);
        let writeback_flushed = self.writeback_flushed.load(Ordering::Acquire);
        self.user_seq.load(Ordering::Acquire) > user_flushed
            || self.writeback_seq.load(Ordering::Acquire) > writeback_flushed
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
        /// Rule index, [`DEFAULT_RULE_SLOT`] or [`UNCLASSIFIED_SLOT`]. A rule index is
        /// at most 2^24 - 3 (encoding limit; `MAX_RULES` is far below).
        slot: u32,
    },
    /// Post-write.
    Write {
        /// Record the write in the handle's context (flush-on-close bookkeeping).
        record_write: bool,
        /// The pre-write classed it [`WriteClass::WriteBack`] (the flushing thread's
        /// own cache write-back); otherwise [`WriteClass::User`].
        write_back: bool,
        /// Issue a flush once the write succeeded.
        flush: Option<FlushOrder>,
        /// The pre-write returned `FLT_PREOP_SYNCHRONIZE`: the post-write runs in the
        /// issuing thread before the write's system service returns (a user handle
        /// to the file object exists unless another thread closes it concurrently).
        synchronized: bool,
        /// The rule is `audit`: the post-write only counts what it would do, and never
        /// holds the write for a flush worker.
        audit: bool,
    },
    /// Post-operation of an operation that changes the file's data without an
    /// IRP_MJ_WRITE: a data-changing FSCTL (`FSCTL_SRV_COPYCHUNK(_WRITE)`,
    /// `FSCTL_OFFLOAD_WRITE`, `FSCTL_DUPLICATE_EXTENTS_TO_FILE(_EX)`) or an end-of-file
    /// / allocation change (IRP_MJ_SET_INFORMATION).
    DataChange {
        /// Flush once it succeeded: set only when the pre-operation returned
        /// `FLT_PREOP_SYNCHRONIZE`, so the post-operation runs in the issuing thread.
        flush: Option<FlushOrder>,
    },
    /// Post-flush of an application flush on a governed handle.
    Flush {
        /// [`StreamContext::write_seq`] observed before the flush went down (at most
        /// 2^56 - 1).
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
const TAG_DATA_CHANGE: usize = 4;

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
                write_back,
                flush,
                synchronized,
                audit,
            } => {
                let mut v = TAG_WRITE;
                if audit {
                    v |= 1 << 24;
                }
                if write_back {
                    v |= 1 << 25;
                }
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
            CompletionContext::DataChange { flush } => {
                let mut v = TAG_DATA_CHANGE;
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
                } else if slot == UNCLASSIFIED_SLOT & 0x00FF_FFFF {
                    slot = UNCLASSIFIED_SLOT;
                }
                Some(CompletionContext::Create {
                    slot,
                    generation: (v >> 28) as u32,
                })
            }
            TAG_WRITE => Some(CompletionContext::Write {
                record_write: v & (1 << 4) != 0,
                write_back: v & (1 << 25) != 0,
                audit: v & (1 << 24) != 0,
                synchronized: v & (1 << 7) != 0,
                flush: (v & (1 << 5) != 0).then_some(FlushOrder {
                    native: v & (1 << 6) != 0,
                    flags: FlushFlags::from_bits_retain((v >> 8) as u16),
                }),
            }),
            TAG_DATA_CHANGE => Some(CompletionContext::DataChange {
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
            CompletionContext::Create {
                generation: 9,
                slot: UNCLASSIFIED_SLOT,
            },
            CompletionContext::Write {
                record_write: true,
                write_back: true,
                flush: None,
                synchronized: false,
                audit: true,
            },
            CompletionContext::Write {
                record_write: false,
                write_back: false,
                synchronized: true,
                audit: false,
                flush: Some(FlushOrder {
                    native: true,
                    flags: FlushFlags::FLUSH_AND_PURGE,
                }),
            },
            CompletionContext::Flush {
                observed_write_seq: 123_456_789,
            },
            CompletionContext::DataChange { flush: None },
            CompletionContext::DataChange {
                flush: Some(FlushOrder {
                    native: true,
                    flags: FlushFlags::DATA_SYNC_ONLY,
                }),
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
        let seen = c.record_write(WriteClass::User);
        c.record_write(WriteClass::User);
        c.record_flush(seen);
        assert!(c.written_since_flush(), "second write not covered");
        c.record_flush(c.write_seq());
        assert!(!c.written_since_flush());
        c.record_flush(0);
        assert!(!c.written_since_flush(), "flushed marks never go back");
    }

    #[test]
    fn write_class_needs_sync_paging_a_file_system_top_level_and_the_flushing_thread() {
        use flushguard_protocol::nt::IRP_NOCACHE;
        const SYNC_PAGING: u32 = IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO | IRP_NOCACHE;
        let fs = TopLevelIrp::FileSystem;
        assert_eq!(WriteClass::classify(0, fs, true), WriteClass::User);
        assert_eq!(
            WriteClass::classify(IRP_NOCACHE, fs, true),
            WriteClass::User
        );
        // The modified / mapped page writer: asynchronous paging I/O.
        assert_eq!(
            WriteClass::classify(IRP_PAGING_IO | IRP_NOCACHE, TopLevelIrp::ModWrite, true),
            WriteClass::User
        );
        // IRP_SYNCHRONOUS_PAGING_IO alone is not paging I/O.
        assert_eq!(
            WriteClass::classify(IRP_SYNCHRONOUS_PAGING_IO, fs, true),
            WriteClass::User
        );
        assert_eq!(
            WriteClass::classify(SYNC_PAGING, fs, true),
            WriteClass::WriteBack
        );
        // The lazy writer, no top-level IRP, or not the flushing thread: a user write.
        for top in [TopLevelIrp::Cache, TopLevelIrp::None, TopLevelIrp::ModWrite] {
            assert_eq!(
                WriteClass::classify(SYNC_PAGING, top, true),
                WriteClass::User
            );
        }
        assert_eq!(
            WriteClass::classify(SYNC_PAGING, fs, false),
            WriteClass::User
        );
    }

    #[test]
    fn top_level_irp_values() {
        assert_eq!(TopLevelIrp::from_raw(0), TopLevelIrp::None);
        assert_eq!(TopLevelIrp::from_raw(2), TopLevelIrp::Cache);
        assert_eq!(TopLevelIrp::from_raw(3), TopLevelIrp::ModWrite);
        assert_eq!(TopLevelIrp::from_raw(0xFFFF), TopLevelIrp::OtherFlag);
        assert_eq!(
            TopLevelIrp::from_raw(0xFFFF_8000_1234_5670),
            TopLevelIrp::FileSystem
        );
    }

    #[test]
    fn the_flush_mark_names_one_thread() {
        let c = StreamContext::new(1, 0);
        assert!(!c.flush_in_progress_by(7));
        c.begin_flush(7);
        assert!(c.flush_in_progress_by(7));
        assert!(!c.flush_in_progress_by(8));
        c.end_flush();
        assert!(!c.flush_in_progress_by(7));
        assert!(!c.flush_in_progress_by(0));
    }

    #[test]
    fn a_flush_covers_its_own_write_back() {
        // Cached write, then an application flush whose write-back (a synchronous
        // paging write) completes inside it.
        let c = StreamContext::new(1, 0);
        c.record_write(WriteClass::User);
        let at_start = c.write_seq();
        c.record_write(WriteClass::WriteBack);
        c.record_flush(at_start);
        assert!(
            !c.written_since_flush(),
            "write-back inside the flush covered"
        );
        // A later lazy-writer / write-back write is not covered by that flush.
        c.record_write(WriteClass::WriteBack);
        assert!(c.written_since_flush());
        c.record_flush(c.write_seq());
        assert!(!c.written_since_flush());
    }

    #[test]
    fn user_and_mapped_writes_completed_during_a_flush_stay_unflushed() {
        for class in [
            WriteClass::User,
            WriteClass::classify(IRP_PAGING_IO, TopLevelIrp::ModWrite, false),
        ] {
            let c = StreamContext::new(1, 0);
            let at_start = c.write_seq();
            // Completes after the flush began (concurrent writer, or the mapped
            // page writer's asynchronous paging write).
            c.record_write(class);
            c.record_write(WriteClass::WriteBack);
            c.record_flush(at_start);
            assert!(c.written_since_flush(), "{class:?} after the flush began");
        }
    }

    #[test]
    #[cfg(feature = "std")]
    fn concurrent_writers_and_flushers_never_lose_a_user_write() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let c = Arc::new(StreamContext::new(1, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let flushers: Vec<_> = (0..2)
            .map(|_| {
                let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let at_start = c.write_seq();
                        c.record_write(WriteClass::WriteBack);
                        c.record_flush(at_start);
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            // Every user write completing while flushes run is either seen as
            // unflushed right after it completed, or a flush that began after it
            // covered it already; covered means a flush observed it at its start.
            let seq = c.record_write(WriteClass::User);
            if !c.written_since_flush() {
                assert!(c.user_flushed.load(Ordering::Acquire) >= seq);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for f in flushers {
            f.join().unwrap();
        }
        let at_start = c.write_seq();
        c.record_flush(at_start);
        assert!(!c.written_since_flush());
    }
}
