//! Bounded event ring for GetEvents: flush failures, policy changes, resets.
//!
//! Fixed capacity allocated once; pushing never allocates. The oldest event is
//! overwritten when full; overwritten events nobody had read are counted as
//! dropped. Guarded by a spin lock held only to copy one record: call at
//! IRQL <= APC_LEVEL (the driver pushes from PASSIVE_LEVEL flush paths and the
//! port callback), never from a post-op at DISPATCH_LEVEL.

use alloc::vec::Vec;

use flushguard_protocol::codec::Writer;
use flushguard_protocol::events::EventKind;
use flushguard_protocol::events::{EventRecord, EventsReplyHeader};
use flushguard_protocol::{DecodeError, NtStatus};

/// Default ring capacity (events).
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

#[derive(Debug)]
struct Ring {
    slots: Vec<EventRecord>,
    /// Sequence number of the next event (first event is 1).
    next_seq: u64,
    /// Highest sequence number a reader has been given.
    read_seq: u64,
    dropped: u64,
}

/// The event ring.
#[derive(Debug)]
pub struct EventRing {
    inner: spin::Mutex<Ring>,
    capacity: usize,
}

impl EventRing {
    /// A ring holding at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let filler = EventRecord::new(EventKind::StatsReset, NtStatus::SUCCESS, 0, 0);
        EventRing {
            inner: spin::Mutex::new(Ring {
                slots: alloc::vec![filler; capacity],
                next_seq: 1,
                read_seq: 0,
                dropped: 0,
            }),
            capacity,
        }
    }

    /// As [`new`](Self::new), with the ring's one allocation (`capacity` records)
    /// made fallibly: what the driver uses at DriverEntry (PASSIVE_LEVEL).
    ///
    /// # Errors
    /// [`InsufficientResources`](crate::path::InsufficientResources) when the pool
    /// cannot hold the ring (DriverEntry then fails with
    /// `STATUS_INSUFFICIENT_RESOURCES`).
    pub fn try_new(capacity: usize) -> Result<Self, crate::path::InsufficientResources> {
        let capacity = capacity.max(1);
        let filler = EventRecord::new(EventKind::StatsReset, NtStatus::SUCCESS, 0, 0);
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity)?;
        slots.resize(capacity, filler);
        Ok(EventRing {
            inner: spin::Mutex::new(Ring {
                slots,
                next_seq: 1,
                read_seq: 0,
                dropped: 0,
            }),
            capacity,
        })
    }

    /// Capacity in events.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `ev`, assigning its sequence number and `time` (100 ns units).
    /// Returns the sequence number.
    pub fn push(&self, mut ev: EventRecord, time: u64) -> u64 {
        let mut r = self.inner.lock();
        let seq = r.next_seq;
        ev.seq = seq;
        ev.time = time;
        let cap = self.capacity as u64;
        if seq > cap {
            let evicted = seq - cap;
            if evicted > r.read_seq {
                r.dropped += 1;
            }
        }
        let idx = ((seq - 1) % cap) as usize;
        if let Some(slot) = r.slots.get_mut(idx) {
            *slot = ev;
        }
        r.next_seq = seq + 1;
        seq
    }

    /// (next sequence number, dropped count).
    pub fn state(&self) -> (u64, u64) {
        let r = self.inner.lock();
        (r.next_seq, r.dropped)
    }

    /// Events with `seq > after_seq`, oldest first, at most `max`.
    pub fn read(&self, after_seq: u64, max: usize) -> (EventsReplyHeader, Vec<EventRecord>) {
        let mut out = Vec::new();
        let hdr = self.read_with(after_seq, max, |ev| out.push(*ev));
        (hdr, out)
    }

    fn read_with(
        &self,
        after_seq: u64,
        max: usize,
        mut f: impl FnMut(&EventRecord),
    ) -> EventsReplyHeader {
        let mut r = self.inner.lock();
        let cap = self.capacity as u64;
        let oldest = r.next_seq.saturating_sub(cap).max(1);
        let first = after_seq.saturating_add(1).max(oldest);
        let mut count = 0u32;
        let mut seq = first;
        while seq < r.next_seq && (count as usize) < max {
            if let Some(ev) = r.slots.get(((seq - 1) % cap) as usize) {
                f(ev);
            }
            count += 1;
            seq += 1;
        }
        if seq > 1 && seq - 1 > r.read_seq {
            r.read_seq = seq - 1;
        }
        EventsReplyHeader {
            next_seq: r.next_seq,
            dropped: r.dropped,
            count,
        }
    }

    /// Number of events [`write_reply`](Self::write_reply) would return.
    pub fn available(&self, after_seq: u64, max: usize) -> usize {
        let r = self.inner.lock();
        let oldest = r.next_seq.saturating_sub(self.capacity as u64).max(1);
        let first = after_seq.saturating_add(1).max(oldest);
        (r.next_seq.saturating_sub(first) as usize).min(max)
    }

    /// Writes a GetEvents reply body (header + records) into `w`: at most `max`
    /// events, and only as many as fit in `room` bytes; the returned ones are
    /// marked read. Returns the record count.
    /// Error: `OutputTooSmall` if even the header does not fit.
    pub fn write_reply(
        &self,
        after_seq: u64,
        max: usize,
        w: &mut Writer<'_>,
        room: usize,
    ) -> Result<u32, DecodeError> {
        if room < EventsReplyHeader::SIZE {
            return Err(DecodeError::OutputTooSmall {
                needed: EventsReplyHeader::SIZE as u32,
                got: room as u32,
            });
        }
        let fit = (room - EventsReplyHeader::SIZE) / EventRecord::SIZE;
        let (hdr, evs) = self.read(after_seq, max.min(fit));
        hdr.write(w)?;
        for e in &evs {
            e.write(w)?;
        }
        Ok(hdr.count)
    }
}
