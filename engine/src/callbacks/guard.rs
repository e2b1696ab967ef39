//! Recursion guard: which threads are inside a flush FlushGuard issued.

use core::sync::atomic::{AtomicU64, Ordering};

/// Maximum number of threads that can be inside one of our flushes at once. A
/// flush that finds no free slot is skipped and counted (fail open).
pub const OWN_FLUSH_SLOTS: usize = 64;

/// A lock-free set of thread ids (`PsGetCurrentThreadId`) currently issuing a
/// FlushGuard flush. A pre-flush (ZwFlushBuffersFileEx re-entry), pre-write (paging
/// writes of the flushed cache) or pre-cleanup (ZwClose of our handle) on such a
/// thread is our own I/O and is passed through untouched.
#[derive(Debug)]
pub struct OwnFlushSet {
    slots: [AtomicU64; OWN_FLUSH_SLOTS],
}

impl Default for OwnFlushSet {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnFlushSet {
    /// An empty set.
    pub const fn new() -> Self {
        OwnFlushSet {
            slots: [const { AtomicU64::new(0) }; OWN_FLUSH_SLOTS],
        }
    }

    /// True when `thread` (non-zero) is inside one of our flushes.
    pub fn contains(&self, thread: u64) -> bool {
        thread != 0
            && self
                .slots
                .iter()
                .any(|s| s.load(Ordering::Acquire) == thread)
    }

    /// Marks `thread` (non-zero) as flushing until the returned token drops. `None`
    /// when the thread is already flushing (a recursion) or every slot is taken.
    pub fn enter(&self, thread: u64) -> Option<OwnFlushToken<'_>> {
        if thread == 0 || self.contains(thread) {
            return None;
        }
        for (index, slot) in self.slots.iter().enumerate() {
            if slot
                .compare_exchange(0, thread, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(OwnFlushToken { set: self, index });
            }
        }
        None
    }

    /// Number of threads currently inside one of our flushes.
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Acquire) != 0)
            .count()
    }

    /// True when no thread is inside one of our flushes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Clears its slot in [`OwnFlushSet`] when dropped.
#[derive(Debug)]
pub struct OwnFlushToken<'a> {
    set: &'a OwnFlushSet,
    index: usize,
}

impl Drop for OwnFlushToken<'_> {
    fn drop(&mut self) {
        self.set.slots[self.index].store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_marks_and_drop_clears() {
        let s = OwnFlushSet::new();
        assert!(!s.contains(5));
        {
            let _t = s.enter(5).expect("free slot");
            assert!(s.contains(5));
            assert!(s.enter(5).is_none(), "recursion refused");
        }
        assert!(!s.contains(5));
        assert!(s.is_empty());
    }

    #[test]
    fn full_set_refuses() {
        let s = OwnFlushSet::new();
        let tokens: alloc::vec::Vec<_> = (1..=OWN_FLUSH_SLOTS as u64)
            .map(|t| s.enter(t).expect("slot"))
            .collect();
        assert!(s.enter(1000).is_none());
        drop(tokens);
        assert!(s.enter(1000).is_some());
    }
}
