//! Recursion guard: which threads are inside a flush FlushGuard issued.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Number of threads the guard can mark as inside one of our flushes at once. A
/// flush that finds no free slot is not skipped: it runs unguarded through the filter
/// method (see [`EnterError::Full`]), so no durability promise depends on this size.
pub const OWN_FLUSH_SLOTS: usize = 64;

/// Why [`OwnFlushSet::enter`] returned no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnterError {
    /// The thread is already inside one of our flushes (or its id is 0): a flush
    /// issued now would recurse. The caller skips it.
    Recursion,
    /// Every slot is taken by other threads. The caller may still flush, but its own
    /// re-entrant I/O will not be recognised, so it must use a method that does not
    /// re-enter FlushGuard (`FltFlushBuffers(2)`, sent to the instances below).
    Full,
}

/// A lock-free set of thread ids (`PsGetCurrentThreadId`) currently issuing a
/// FlushGuard flush. A pre-flush (ZwFlushBuffersFileEx re-entry), pre-write (paging
/// writes of the flushed cache) or pre-cleanup (ZwClose of our handle) on such a
/// thread is our own I/O and is passed through untouched.
#[derive(Debug)]
pub struct OwnFlushSet {
    slots: [AtomicU64; OWN_FLUSH_SLOTS],
    /// Threads between [`OwnFlushSet::enter`] (counted before they take a slot) and
    /// the drop of their token (after they left it): while 0, which is most of the
    /// time, [`OwnFlushSet::contains`] scans no slot.
    entered: AtomicUsize,
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
            entered: AtomicUsize::new(0),
        }
    }

    /// True when `thread` (non-zero) is inside one of our flushes. Exact when `thread`
    /// is the calling thread (the only use: "is this our own I/O?"): its own
    /// [`OwnFlushSet::enter`] counted it before taking a slot, in program order.
    pub fn contains(&self, thread: u64) -> bool {
        thread != 0
            && self.entered.load(Ordering::Acquire) != 0
            && self
                .slots
                .iter()
                .any(|s| s.load(Ordering::Acquire) == thread)
    }

    /// Marks `thread` (non-zero) as flushing until the returned token drops.
    ///
    /// # Errors
    /// [`EnterError::Recursion`] when the thread is already flushing (or is 0),
    /// [`EnterError::Full`] when every slot is taken.
    pub fn enter(&self, thread: u64) -> Result<OwnFlushToken<'_>, EnterError> {
        if thread == 0 || self.contains(thread) {
            return Err(EnterError::Recursion);
        }
        self.entered.fetch_add(1, Ordering::AcqRel);
        for (index, slot) in self.slots.iter().enumerate() {
            if slot
                .compare_exchange(0, thread, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(OwnFlushToken { set: self, index });
            }
        }
        self.entered.fetch_sub(1, Ordering::AcqRel);
        Err(EnterError::Full)
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
        self.set.entered.fetch_sub(1, Ordering::AcqRel);
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
            assert_eq!(s.enter(5).err(), Some(EnterError::Recursion));
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
        assert_eq!(s.enter(1000).err(), Some(EnterError::Full));
        assert_eq!(s.entered.load(Ordering::Relaxed), OWN_FLUSH_SLOTS);
        assert!(!s.contains(1000));
        drop(tokens);
        // Neither the refused enter nor the dropped tokens leave a count behind.
        assert_eq!(s.entered.load(Ordering::Relaxed), 0);
        assert!(s.enter(1000).is_ok());
    }
}
