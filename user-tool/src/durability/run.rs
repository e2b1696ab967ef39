//! The writers of `flushctl durability run`.
//!
//! Writer `w` (one thread each) writes its record `s` at byte offset
//! `(s * threads + w) * record_size`, makes it durable as the [`Pattern`] says (nothing,
//! an O_DSYNC / write-through handle or WRITE flag, or `File::sync_data` / an SMB2 FLUSH
//! after the write), and then
//! reports the acknowledgement to the [`Witness`]; only when the witness has it durably
//! does the writer write its next record. So the witness never holds an acknowledgement
//! the target was not told to keep, and at most one record per writer is in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::record::{encode, RecordId};
use super::target::{Pattern, Target, TargetFile};
use super::witness::{RunInfo, Witness};

/// What to write.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The target file.
    pub target: Target,
    /// The run id (the witness's Begin carries it too).
    pub run: u64,
    /// Writer threads, at least 1.
    pub threads: u32,
    /// Record size in bytes (checked with [`super::record::check_record_size`]).
    pub record_size: u32,
    /// Records per writer (`None`: until `duration`).
    pub records: Option<u64>,
    /// How long to write (`None`: until `records`).
    pub duration: Option<Duration>,
    /// How records are made durable.
    pub pattern: Pattern,
}

impl RunConfig {
    /// The Begin the witness gets.
    pub fn info(&self) -> RunInfo {
        RunInfo {
            run: self.run,
            threads: self.threads,
            record_size: self.record_size,
        }
    }
}

/// One writer's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriterOutcome {
    /// Writer number.
    pub writer: u32,
    /// Records acknowledged (and in the witness).
    pub acknowledged: u64,
    /// Why the writer stopped early, if it did (write, flush or witness error).
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutcome {
    /// Per writer, by writer number.
    pub writers: Vec<WriterOutcome>,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

impl RunOutcome {
    /// Records acknowledged by all writers.
    pub fn acknowledged(&self) -> u64 {
        self.writers.iter().map(|w| w.acknowledged).sum()
    }

    /// True when no writer stopped on an error.
    pub fn ok(&self) -> bool {
        self.writers.iter().all(|w| w.error.is_none())
    }
}

/// Runs the writers; `progress` is called after every acknowledgement with the total
/// acknowledged so far (from any writer thread).
///
/// # Errors
/// The error of the first open of the target (creating it: the OS error, or the SMB
/// CREATE's NTSTATUS or connection error); later failures stop the
/// failing writer and all others, and are reported per writer in [`RunOutcome`].
pub fn run(
    cfg: &RunConfig,
    witness: &dyn Witness,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<RunOutcome> {
    let first = cfg.target.open(cfg.pattern, true)?;
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut first = Some(first);
    let writers = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|w| {
                let file = if w == 0 { first.take() } else { None };
                let (stop, total) = (&stop, &total);
                scope.spawn(move || {
                    let r = writer(cfg, w, file, witness, stop, deadline, &|| {
                        progress(total.fetch_add(1, Ordering::Relaxed) + 1);
                    });
                    if r.error.is_some() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(w, h)| {
                h.join().unwrap_or_else(|_| WriterOutcome {
                    writer: w as u32,
                    acknowledged: 0,
                    error: Some("writer thread panicked".into()),
                })
            })
            .collect()
    });
    Ok(RunOutcome {
        writers,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

fn writer(
    cfg: &RunConfig,
    w: u32,
    file: Option<TargetFile<'_>>,
    witness: &dyn Witness,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    acked: &dyn Fn(),
) -> WriterOutcome {
    let mut out = WriterOutcome {
        writer: w,
        acknowledged: 0,
        error: None,
    };
    let file = match file.map_or_else(|| cfg.target.open(cfg.pattern, false), Ok) {
        Ok(f) => f,
        Err(e) => {
            out.error = Some(format!("open {}: {e}", cfg.target.describe()));
            return out;
        }
    };
    let mut buf = vec![0u8; cfg.record_size as usize];
    let stride = u64::from(cfg.threads) * u64::from(cfg.record_size);
    for seq in 0u64.. {
        if cfg.records.is_some_and(|n| seq >= n)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || stop.load(Ordering::Relaxed)
        {
            break;
        }
        let Some(offset) = seq
            .checked_mul(stride)
            .and_then(|o| o.checked_add(u64::from(w) * u64::from(cfg.record_size)))
        else {
            out.error = Some(format!("offset of record {seq} overflows"));
            break;
        };
        encode(
            RecordId {
                run: cfg.run,
                writer: w,
                seq,
            },
            &mut buf,
        );
        if let Err(e) = file.write_all_at(&buf, offset) {
            out.error = Some(format!("write of record {seq} at byte {offset}: {e}"));
            break;
        }
        if cfg.pattern == Pattern::Flush {
            if let Err(e) = file.flush() {
                out.error = Some(format!("flush after record {seq}: {e}"));
                break;
            }
        }
        if let Err(e) = witness.ack(w, seq) {
            out.error = Some(format!("acknowledging record {seq}: {e}"));
            break;
        }
        out.acknowledged += 1;
        acked();
    }
    out
}

/// A fresh random run id.
pub fn new_run_id() -> u64 {
    // Never 0, so a zeroed header can never claim to be of this run.
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::super::record::{classify, Slot};
    use super::super::witness::{read_witness, LocalWitness};
    use super::*;

    #[test]
    fn writers_interleave_and_every_ack_is_witnessed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RunConfig {
            target: Target::Local(dir.path().join("t.dat")),
            run: 99,
            threads: 3,
            record_size: 512,
            records: Some(10),
            duration: None,
            pattern: Pattern::Flush,
        };
        let wpath = dir.path().join("w.fgw");
        let w = LocalWitness::create(&wpath, cfg.info()).unwrap();
        let seen = AtomicU64::new(0);
        let out = run(&cfg, &w, &|n| {
            seen.fetch_max(n, Ordering::Relaxed);
        })
        .unwrap();
        assert!(out.ok(), "{out:?}");
        assert_eq!(out.acknowledged(), 30);
        assert_eq!(seen.load(Ordering::Relaxed), 30);
        let data = std::fs::read(dir.path().join("t.dat")).unwrap();
        assert_eq!(data.len(), 30 * 512);
        for (i, slot) in data.chunks(512).enumerate() {
            let id = RecordId {
                run: 99,
                writer: (i % 3) as u32,
                seq: (i / 3) as u64,
            };
            assert_eq!(classify(id, 512, slot), Slot::Intact);
        }
        let log = read_witness(&wpath).unwrap();
        assert_eq!(log.state.acknowledged(), &[10, 10, 10]);
    }
}
