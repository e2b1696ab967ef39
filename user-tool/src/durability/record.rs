//! The durability record: a fixed-size, self-describing, checksummed block that
//! `flushctl durability run` writes and `flushctl durability verify` classifies.
//!
//! Layout (all integers little-endian, offsets in bytes):
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 8    | magic `FGDREC01`                                             |
//! | 8      | 8    | run id (random per `durability run`)                         |
//! | 16     | 4    | writer id (0-based thread number)                            |
//! | 20     | 4    | record length in bytes (the whole record, header included)   |
//! | 24     | 8    | sequence number (0-based, per writer)                        |
//! | 32     | 4    | CRC-32C (Castagnoli) of the record with this field zeroed    |
//! | 36     | 4    | reserved, zero                                               |
//! | 40     | rest | payload: a pseudo-random stream derived from (run, writer, seq) |
//!
//! Because the payload is a function of the header, a reader that knows which record
//! belongs at a place can regenerate it byte for byte and tell apart (see [`classify`]):
//! an intact record, a missing one (zeros or end of file), a torn one (part new, part
//! zeros or the previous record), a stale one (a complete valid record of another run,
//! writer or sequence number) and a corrupt one (anything else).

use std::fmt;

/// The record magic, bytes 0..8.
pub const MAGIC: [u8; 8] = *b"FGDREC01";
/// Length of the header in bytes; the payload starts here.
pub const HEADER_LEN: usize = 40;
/// Smallest record size in bytes.
pub const MIN_RECORD_SIZE: u32 = 64;
/// Largest record size in bytes (16 MiB).
pub const MAX_RECORD_SIZE: u32 = 16 << 20;
/// Granularity in bytes at which [`classify`] compares a slot with the record it should
/// hold: a 512-byte sector, the unit a disk writes atomically.
pub const SECTOR: usize = 512;

const CRC_AT: usize = 32;

static CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Which record: the run, the writer (thread) and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RecordId {
    /// Run id, random per `durability run`.
    pub run: u64,
    /// Writer (thread) number, 0-based.
    pub writer: u32,
    /// Sequence number of the record in its writer's stream, 0-based.
    pub seq: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {:016x} writer {} seq {}",
            self.run, self.writer, self.seq
        )
    }
}

/// Why a record size is refused by [`check_record_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "record size {0} bytes is outside {min}..={max} bytes",
    min = MIN_RECORD_SIZE,
    max = MAX_RECORD_SIZE
)]
pub struct RecordSizeError(pub u64);

/// Checks a record size in bytes.
///
/// # Errors
/// [`RecordSizeError`] when `size` is below [`MIN_RECORD_SIZE`] or above
/// [`MAX_RECORD_SIZE`].
pub fn check_record_size(size: u64) -> Result<u32, RecordSizeError> {
    match u32::try_from(size) {
        Ok(s) if (MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&s) => Ok(s),
        _ => Err(RecordSizeError(size)),
    }
}

/// Why [`decode`] refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer is shorter than the header or than the length the header declares.
    #[error("record truncated: {have} of {need} bytes")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Bytes 0..8 are not [`MAGIC`].
    #[error("bad record magic")]
    BadMagic,
    /// The declared length is not a valid record size or is not the buffer's length.
    #[error("bad record length {declared} (buffer {buffer} bytes)")]
    BadLength {
        /// The length field.
        declared: u32,
        /// The buffer length.
        buffer: usize,
    },
    /// The reserved field is not zero.
    #[error("reserved field not zero")]
    Reserved,
    /// The CRC-32C does not match.
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The stored checksum.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
}

fn crc_of(buf: &[u8]) -> u32 {
    let mut d = CASTAGNOLI.digest();
    d.update(&buf[..CRC_AT]);
    d.update(&[0; 4]);
    d.update(&buf[CRC_AT + 4..]);
    d.finalize()
}

/// splitmix64: the payload generator (fast, and every seed gives a distinct stream).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes record `id` into `buf`; the record size is `buf.len()`.
///
/// # Panics
/// When `buf.len()` is not a valid record size (see [`check_record_size`]); callers
/// check the size once, up front.
pub fn encode(id: RecordId, buf: &mut [u8]) {
    let len = check_record_size(buf.len() as u64).expect("record size checked by the caller");
    buf[0..8].copy_from_slice(&MAGIC);
    buf[8..16].copy_from_slice(&id.run.to_le_bytes());
    buf[16..20].copy_from_slice(&id.writer.to_le_bytes());
    buf[20..24].copy_from_slice(&len.to_le_bytes());
    buf[24..32].copy_from_slice(&id.seq.to_le_bytes());
    buf[32..40].fill(0);
    let mut state = id.run
        ^ (u64::from(id.writer)).rotate_left(32)
        ^ id.seq.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for chunk in buf[HEADER_LEN..].chunks_mut(8) {
        let v = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let crc = crc_of(buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Record `id` of `size` bytes as a new buffer.
///
/// # Panics
/// As [`encode`].
pub fn encoded(id: RecordId, size: u32) -> Vec<u8> {
    let mut v = vec![0; size as usize];
    encode(id, &mut v);
    v
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The identity a header claims, without checking the CRC: magic and a length equal to
/// `size` are required.
fn claimed_id(buf: &[u8], size: u32) -> Option<RecordId> {
    (buf.len() >= HEADER_LEN && buf[0..8] == MAGIC && le_u32(buf, 20) == size).then(|| RecordId {
        run: le_u64(buf, 8),
        writer: le_u32(buf, 16),
        seq: le_u64(buf, 24),
    })
}

/// Decodes and checks one record occupying all of `buf`.
///
/// # Errors
/// Every [`DecodeError`]: truncated, bad magic, bad length, reserved bits, CRC mismatch.
pub fn decode(buf: &[u8]) -> Result<RecordId, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: HEADER_LEN,
        });
    }
    if buf[0..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let declared = le_u32(buf, 20);
    if check_record_size(u64::from(declared)).is_err() {
        return Err(DecodeError::BadLength {
            declared,
            buffer: buf.len(),
        });
    }
    if (declared as usize) > buf.len() {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: declared as usize,
        });
    }
    if declared as usize != buf.len() {
        return Err(DecodeError::BadLength {
            declared,
            buffer: buf.len(),
        });
    }
    if le_u32(buf, 36) != 0 {
        return Err(DecodeError::Reserved);
    }
    let stored = le_u32(buf, CRC_AT);
    let computed = crc_of(buf);
    if stored != computed {
        return Err(DecodeError::Crc { stored, computed });
    }
    Ok(RecordId {
        run: le_u64(buf, 8),
        writer: le_u32(buf, 16),
        seq: le_u64(buf, 24),
    })
}

/// What a slot of the target file holds, compared with the record that belongs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Exactly the expected record.
    Intact,
    /// Nothing: the slot is past the end of the file or all zeros.
    Missing,
    /// Part of the expected record: some sectors are the expected ones, each other
    /// sector is zeros (or past the end of the file) or the previous record's.
    Torn,
    /// Another record: a complete valid record of another run, writer or sequence
    /// number, or (wholly or partly, with the rest zeros) the record named by the
    /// slot's header when that is not the expected one.
    Stale(RecordId),
    /// Anything else (e.g. flipped bits).
    Corrupt,
}

/// Classifies the bytes `slot` found where record `expected` of `size` bytes belongs.
/// `slot` may be shorter than `size` (the file ended); the missing tail counts as zeros.
/// Comparison is per [`SECTOR`] of the record.
///
/// # Panics
/// When `size` is not a valid record size.
pub fn classify(expected: RecordId, size: u32, slot: &[u8]) -> Slot {
    let want = encoded(expected, size);
    classify_against(&want, expected, size, slot)
}

/// [`classify`] with the expected record already encoded (`want`, `size` bytes).
pub fn classify_against(want: &[u8], expected: RecordId, size: u32, slot: &[u8]) -> Slot {
    let slot = &slot[..slot.len().min(size as usize)];
    if slot == want {
        return Slot::Intact;
    }
    if slot.iter().all(|&b| b == 0) {
        return Slot::Missing;
    }
    if slot.len() == want.len() {
        if let Ok(id) = decode(slot) {
            return if id == expected {
                Slot::Corrupt
            } else {
                Slot::Stale(id)
            };
        }
    }
    // The previous record, when the slot's header names one other than the expected.
    let other = claimed_id(slot, size)
        .filter(|id| *id != expected)
        .map(|id| (id, encoded(id, size)));
    let mut new_sectors = 0usize;
    let mut old_sectors = 0usize;
    for (i, w) in want.chunks(SECTOR).enumerate() {
        let start = i * SECTOR;
        let have = slot
            .get(start..(start + w.len()).min(slot.len()))
            .unwrap_or(&[]);
        if !have.is_empty() && have == &w[..have.len()] {
            new_sectors += 1;
        } else if have.iter().all(|&b| b == 0) {
            // zeros or past the end: nothing of either record
        } else if other
            .as_ref()
            .is_some_and(|(_, o)| o.get(start..start + have.len()) == Some(have))
        {
            old_sectors += 1;
        } else {
            return Slot::Corrupt;
        }
    }
    match (new_sectors, old_sectors, other) {
        (n, _, _) if n > 0 => Slot::Torn,
        (0, o, Some((id, _))) if o > 0 => Slot::Stale(id),
        _ => Slot::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: RecordId = RecordId {
        run: 0x1234_5678_9abc_def0,
        writer: 3,
        seq: 42,
    };

    #[test]
    fn round_trip_and_fixed_fields() {
        let r = encoded(ID, 4096);
        assert_eq!(&r[0..8], b"FGDREC01");
        assert_eq!(le_u32(&r, 20), 4096);
        assert_eq!(decode(&r), Ok(ID));
        assert_eq!(classify(ID, 4096, &r), Slot::Intact);
    }

    #[test]
    fn crc_is_castagnoli() {
        // The check value of CRC-32C ("123456789").
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn record_sizes() {
        assert_eq!(check_record_size(64), Ok(64));
        assert_eq!(check_record_size(63), Err(RecordSizeError(63)));
        assert!(check_record_size(u64::from(MAX_RECORD_SIZE) + 1).is_err());
        assert!(check_record_size(u64::MAX).is_err());
    }

    #[test]
    fn decode_errors() {
        let r = encoded(ID, 128);
        assert!(matches!(
            decode(&r[..10]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&r[..100]),
            Err(DecodeError::Truncated { need: 128, .. })
        ));
        let mut bad = r.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = r.clone();
        bad[36] = 1;
        assert_eq!(decode(&bad), Err(DecodeError::Reserved));
        let mut bad = r.clone();
        bad[100] ^= 0x80;
        assert!(matches!(decode(&bad), Err(DecodeError::Crc { .. })));
        let mut long = r.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(matches!(decode(&long), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn missing_torn_stale_corrupt() {
        let size = 4096u32;
        let want = encoded(ID, size);
        assert_eq!(classify(ID, size, &[]), Slot::Missing);
        assert_eq!(classify(ID, size, &vec![0; 4096]), Slot::Missing);
        // First two sectors written, the rest never reached the disk.
        let mut torn = vec![0; 4096];
        torn[..1024].copy_from_slice(&want[..1024]);
        assert_eq!(classify(ID, size, &torn), Slot::Torn);
        // File ends mid-record.
        assert_eq!(classify(ID, size, &want[..2048]), Slot::Torn);
        // Another run's record in the slot, complete.
        let old = RecordId { run: 7, ..ID };
        let old_rec = encoded(old, size);
        assert_eq!(classify(ID, size, &old_rec), Slot::Stale(old));
        // New sectors over the previous run's record.
        let mut mixed = old_rec.clone();
        mixed[2048..].copy_from_slice(&want[2048..]);
        assert_eq!(classify(ID, size, &mixed), Slot::Torn);
        // The previous record's start only.
        let mut old_part = vec![0; 4096];
        old_part[..512].copy_from_slice(&old_rec[..512]);
        assert_eq!(classify(ID, size, &old_part), Slot::Stale(old));
        // One flipped bit.
        let mut flipped = want.clone();
        flipped[3000] ^= 4;
        assert_eq!(classify(ID, size, &flipped), Slot::Corrupt);
        // Garbage.
        assert_eq!(classify(ID, size, &vec![0xAA; 4096]), Slot::Corrupt);
    }

    fn id_strategy() -> impl Strategy<Value = RecordId> {
        (any::<u64>(), 0u32..64, any::<u64>()).prop_map(|(run, writer, seq)| RecordId {
            run,
            writer,
            seq,
        })
    }

    proptest! {
        #[test]
        fn prop_round_trip(id in id_strategy(), size in 64u32..9000) {
            let r = encoded(id, size);
            prop_assert_eq!(decode(&r), Ok(id));
            prop_assert_eq!(classify(id, size, &r), Slot::Intact);
        }

        #[test]
        fn prop_any_bit_flip_is_detected(id in id_strategy(), size in 64u32..4096, bit in any::<usize>()) {
            let mut r = encoded(id, size);
            let bit = bit % (r.len() * 8);
            r[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&r).is_err());
            prop_assert_ne!(classify(id, size, &r), Slot::Intact);
        }

        #[test]
        fn prop_sector_prefix_is_torn(id in id_strategy(), sectors in 2usize..16, keep in 1usize..16) {
            let size = (sectors * SECTOR) as u32;
            let keep = keep.min(sectors - 1);
            let r = encoded(id, size);
            let mut slot = vec![0; r.len()];
            slot[..keep * SECTOR].copy_from_slice(&r[..keep * SECTOR]);
            prop_assert_eq!(classify(id, size, &slot), Slot::Torn);
            // and cut off by the end of the file
            prop_assert_eq!(classify(id, size, &r[..keep * SECTOR]), Slot::Torn);
        }

        #[test]
        fn prop_other_records_are_stale(a in id_strategy(), b in id_strategy(), size in 64u32..4096) {
            prop_assume!(a != b);
            prop_assert_eq!(classify(a, size, &encoded(b, size)), Slot::Stale(b));
        }

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = classify(ID, 128, &bytes);
        }
    }
}
