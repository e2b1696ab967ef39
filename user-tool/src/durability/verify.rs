//! `flushctl durability verify`: the target compared with the witness after a crash.
//!
//! The witness gives the run (id, writers, record size) and, per writer, how many
//! records were acknowledged (`A`: sequence numbers `0..A`). Each slot of the target is
//! read in file order (slot `i` holds writer `i % threads`, sequence number
//! `i / threads`) and classified with [`classify_against`]. Per writer:
//!
//! - `acknowledged`: `A`;
//! - `present`: acknowledged records found intact;
//! - `lost` = `missing + torn + stale + corrupt`: acknowledged records not intact;
//! - `first_lost`: the smallest lost sequence number;
//! - `unacknowledged`: intact records after the last acknowledged one (written, but no
//!   acknowledgement reached the witness before the crash: expected, not an error).

use std::io::{BufReader, Read};
use std::path::Path;

use super::record::{classify_against, encode, RecordId, Slot};
use super::target::Target;
use super::witness::{read_witness, RunInfo, WitnessError};

/// One writer's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterVerdict {
    /// Writer number.
    pub writer: u32,
    /// Records the witness holds for this writer.
    pub acknowledged: u64,
    /// Acknowledged records found intact.
    pub present: u64,
    /// Acknowledged records not intact (missing + torn + stale + corrupt).
    pub lost: u64,
    /// Lost: zeros or past the end of the target.
    pub missing: u64,
    /// Lost: partly written (some sectors new, others zero or the previous record's).
    pub torn: u64,
    /// Lost: another record (an earlier run's, or another sequence number) is there.
    pub stale: u64,
    /// Lost: anything else (flipped bits, garbage).
    pub corrupt: u64,
    /// The smallest lost sequence number.
    pub first_lost: Option<u64>,
    /// Intact records beyond the acknowledged ones (written, not acknowledged).
    pub unacknowledged: u64,
}

/// The whole verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// The run (from the witness).
    pub run: RunInfo,
    /// The run id as 16 hex digits.
    pub run_hex: String,
    /// Length of the target in bytes.
    pub target_len: u64,
    /// Bytes of an incomplete last witness entry that were ignored (a crash mid-append).
    pub witness_torn_tail: u64,
    /// Per writer, by writer number.
    pub writers: Vec<WriterVerdict>,
}

impl Verdict {
    /// Acknowledged records lost, all writers.
    pub fn lost(&self) -> u64 {
        self.writers.iter().map(|w| w.lost).sum()
    }

    /// Acknowledged records, all writers.
    pub fn acknowledged(&self) -> u64 {
        self.writers.iter().map(|w| w.acknowledged).sum()
    }
}

/// Why verify could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The witness is unreadable or malformed.
    #[error(transparent)]
    Witness(#[from] WitnessError),
    /// The target could not be opened or read.
    #[error("target {target}: {source}")]
    Target {
        /// The target's path or URL.
        target: String,
        /// The OS error, or the SMB request's NTSTATUS or connection error.
        source: std::io::Error,
    },
}

/// Reads into `buf` until it is full or the reader ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Compares `target` (a local file or an `smb://` target, read from its start to its
/// end once) with `witness`.
///
/// # Errors
/// [`VerifyError::Witness`] (see [`read_witness`]), [`VerifyError::Target`].
pub fn verify(target: &Target, witness: &Path) -> Result<Verdict, VerifyError> {
    let log = read_witness(witness)?;
    let info = log.state.info();
    let acked = log.state.acknowledged().to_vec();
    let terr = |source| VerifyError::Target {
        target: target.describe(),
        source,
    };
    let (file, target_len) = target.open_read().map_err(terr)?;
    let size = u64::from(info.record_size);
    let threads = u64::from(info.threads);
    let file_slots = target_len.div_ceil(size);
    let acked_slots = acked
        .iter()
        .enumerate()
        .filter(|(_, &a)| a > 0)
        .map(|(w, &a)| (a - 1) * threads + w as u64 + 1)
        .max()
        .unwrap_or(0);
    let mut writers: Vec<WriterVerdict> = acked
        .iter()
        .enumerate()
        .map(|(w, &a)| WriterVerdict {
            writer: w as u32,
            acknowledged: a,
            ..WriterVerdict::default()
        })
        .collect();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut slot = vec![0u8; info.record_size as usize];
    let mut want = vec![0u8; info.record_size as usize];
    for i in 0..file_slots.max(acked_slots) {
        let n = read_up_to(&mut reader, &mut slot).map_err(terr)?;
        let w = (i % threads) as u32;
        let id = RecordId {
            run: info.run,
            writer: w,
            seq: i / threads,
        };
        encode(id, &mut want);
        let kind = classify_against(&want, id, info.record_size, &slot[..n]);
        let v = &mut writers[w as usize];
        if id.seq >= v.acknowledged {
            v.unacknowledged += u64::from(kind == Slot::Intact);
            continue;
        }
        match kind {
            Slot::Intact => v.present += 1,
            Slot::Missing => v.missing += 1,
            Slot::Torn => v.torn += 1,
            Slot::Stale(_) => v.stale += 1,
            Slot::Corrupt => v.corrupt += 1,
        }
        if kind != Slot::Intact {
            v.lost += 1;
            v.first_lost.get_or_insert(id.seq);
        }
    }
    Ok(Verdict {
        run: info,
        run_hex: format!("{:016x}", info.run),
        target_len,
        witness_torn_tail: log.torn_tail,
        writers,
    })
}

#[cfg(test)]
mod tests {
    use super::super::record::encoded;
    use super::super::witness::{Entry, WitnessFile};
    use super::*;

    #[test]
    fn every_kind_of_loss_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let info = RunInfo {
            run: 5,
            threads: 2,
            record_size: 1024,
        };
        let wp = dir.path().join("w.fgw");
        let mut w = WitnessFile::create(&wp, info).unwrap();
        for s in 0..6 {
            w.append(&Entry::Ack {
                run: 5,
                writer: 0,
                seq: s,
            })
            .unwrap();
        }
        w.append(&Entry::Ack {
            run: 5,
            writer: 1,
            seq: 0,
        })
        .unwrap();
        let id = |writer, seq| RecordId {
            run: 5,
            writer,
            seq,
        };
        let mut t = Vec::new();
        // writer 0: seq 0 intact, 1 missing, 2 torn, 3 stale, 4 corrupt, 5 intact
        // writer 1: seq 0 intact (acked), 1..3 intact (not acknowledged)
        for s in 0..6u64 {
            let mut r0 = encoded(id(0, s), 1024);
            match s {
                1 => r0.fill(0),
                2 => r0[512..].fill(0),
                3 => r0 = encoded(RecordId { run: 4, ..id(0, s) }, 1024),
                4 => r0[700] ^= 1,
                _ => {}
            }
            t.extend_from_slice(&r0);
            if s < 3 {
                t.extend_from_slice(&encoded(id(1, s), 1024));
            } else {
                t.extend_from_slice(&[0; 1024]);
            }
        }
        let tp = dir.path().join("t.dat");
        std::fs::write(&tp, &t).unwrap();
        let v = verify(&Target::Local(tp.clone()), &wp).unwrap();
        let w0 = &v.writers[0];
        assert_eq!(
            (w0.acknowledged, w0.present, w0.lost, w0.first_lost),
            (6, 2, 4, Some(1))
        );
        assert_eq!((w0.missing, w0.torn, w0.stale, w0.corrupt), (1, 1, 1, 1));
        let w1 = &v.writers[1];
        assert_eq!((w1.acknowledged, w1.present, w1.lost), (1, 1, 0));
        assert_eq!(w1.unacknowledged, 2);
        assert_eq!(v.lost(), 4);
        // A target cut short loses the acknowledged tail.
        std::fs::write(&tp, &t[..2048]).unwrap();
        let v = verify(&Target::Local(tp.clone()), &wp).unwrap();
        assert_eq!((v.writers[0].lost, v.writers[0].missing), (5, 5));
    }
}
