//! Group-commit throughput (issue 11 item 7): the engine's group-commit coordinator
//! ([`flushguard_engine::group_commit::GroupCommit`]) against "fdatasync per write", with
//! real threads writing 4 KiB records to a real file on a disk-backed file system.
//!
//! # What is compared
//!
//! Both variants give each record the same guarantee: a writer's record is acknowledged
//! only after an `fdatasync` that **started after the record's write completed** has
//! completed with success.
//!
//! * **baseline** (fdatasync per write): each writer `pwrite`s its record
//!   ([`FileExt::write_at`]) and then calls [`File::sync_data`] (`fdatasync(2)` on
//!   Linux) itself.
//! * **group commit**: each writer `pwrite`s its record and then calls
//!   [`GroupCommit::commit`] with [`GroupOptions::DEFAULT`] (`max-batch` 64, no added
//!   wait), whose flush closure is `file.sync_data()`: one writer of each batch issues
//!   the `fdatasync`, the others wait for it. Every acknowledgement must be
//!   [`Committed::Flushed`]; the closure counts the flushes.
//!
//! # How
//!
//! All writers of a configuration share one freshly created file; writer `i` writes its
//! record `k` at offset `(k * writers + i) * 4096`, so no two records overlap. Each
//! configuration (1, 2, 4, 8 and 16 writers, both variants) runs for a fixed time
//! (`FLUSHGUARD_BENCH_SECS`, default 1.5 s); a writer finishes the record it is on when
//! time is up, and the rate is acknowledged records over the time until the last writer
//! stopped. The table gives writes/s of both variants, their ratio, the group-commit
//! variant's flushes per acknowledged write and writes per flush, and for each variant
//! the mean `fdatasync` latency and the mean number of `fdatasync`s in flight (what
//! limits both rates: the coordinator runs one flush at a time, the baseline as many as
//! there are writers). The targets (>= 4x the baseline's throughput at 8 writers,
//! <= 0.25 flushes per write) are reported as MET / NOT MET, not asserted.
//!
//! `fio` runs in the same run as an outside anchor (`--fdatasync=1 --ioengine=psync`,
//! 4 KiB sequential writes, 1 and 8 jobs, one file per job, same directory and duration);
//! without `fio` the bench says how to install it and goes on.
//!
//! The directory is `FLUSHGUARD_BENCH_DIR` if set, else the system temporary directory
//! unless it is memory-backed (tmpfs, ramfs), else cargo's target temporary directory;
//! the bench prints the directory and its file system type.
//!
//! Run: `cargo bench -p flushguard-engine --bench group_commit`. Without `--bench` (for
//! example `cargo test --benches`) it runs a short smoke check: 0.05 s per
//! configuration, no `fio`.
#![forbid(unsafe_code)]

use std::env;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flushguard_engine::group_commit::host::HostCommitSync;
use flushguard_engine::group_commit::{Committed, GroupCommit, GroupOptions};
use flushguard_engine::protocol::NtStatus;

/// Bytes per record.
const RECORD: usize = 4096;
/// Writer counts measured.
const WRITERS: [usize; 5] = [1, 2, 4, 8, 16];
/// The writer count the targets refer to.
const TARGET_WRITERS: usize = 8;
/// Target: group-commit writes/s over baseline writes/s at [`TARGET_WRITERS`].
const TARGET_RATIO: f64 = 4.0;
/// Target: flushes per acknowledged write at [`TARGET_WRITERS`].
const TARGET_FLUSHES_PER_WRITE: f64 = 0.25;

/// Locks `m`, ignoring poisoning (a panicking writer fails the run anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// --- One measured configuration -------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Each writer: pwrite, then fdatasync itself.
    Baseline,
    /// Each writer: pwrite, then `GroupCommit::commit` with an fdatasync flush.
    GroupCommit,
}

/// What one run of one configuration measured.
#[derive(Default)]
struct Run {
    /// Records written and acknowledged as flushed.
    flushed: u64,
    /// Records written but not acknowledged as flushed (failed write, failed flush).
    not_flushed: u64,
    /// fdatasync calls issued.
    flushes: u64,
    /// Total nanoseconds spent inside fdatasync.
    flush_ns: u64,
    /// From the start signal to the last writer's end.
    elapsed: Duration,
    /// The first I/O error seen, if any.
    error: Option<String>,
}

impl Run {
    fn writes_per_sec(&self) -> f64 {
        self.flushed as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
    fn flushes_per_write(&self) -> f64 {
        self.flushes as f64 / (self.flushed.max(1)) as f64
    }
    /// Mean number of fdatasync calls in flight (time inside fdatasync over elapsed time):
    /// at most 1 for group commit, which runs one flush at a time.
    fn syncs_in_flight(&self) -> f64 {
        self.flush_ns as f64 / 1e9 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
    fn mean_flush_ms(&self) -> f64 {
        self.flush_ns as f64 / (self.flushes.max(1)) as f64 / 1e6
    }
}

/// Shared counters of a run.
#[derive(Default)]
struct Counters {
    flushed: AtomicU64,
    not_flushed: AtomicU64,
    flushes: AtomicU64,
    flush_ns: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Counters {
    /// One timed fdatasync of `file`, counted.
    fn sync(&self, file: &File) -> io::Result<()> {
        let start = Instant::now();
        let result = file.sync_data();
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_ns.fetch_add(ns, Ordering::Relaxed);
        if let Err(e) = &result {
            self.note_error(format!("fdatasync: {e}"));
        }
        result
    }

    fn note_error(&self, message: String) {
        lock(&self.error).get_or_insert(message);
    }
}

/// Runs `writers` threads of `variant` on a fresh file in `dir` for `duration`.
fn run(dir: &Path, variant: Variant, writers: usize, duration: Duration) -> io::Result<Run> {
    let path = dir.join(format!(
        "flushguard-group-commit-{}.dat",
        std::process::id()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // The empty file's creation is durable before the clock starts.
    file.sync_all()?;
    let coordinator = GroupCommit::new(HostCommitSync::default());
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let start = Barrier::new(writers + 1);
    let elapsed = thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let (file, coordinator, counters, stop, start) =
                    (&file, &coordinator, &counters, &stop, &start);
                scope.spawn(move || {
                    let mut record = [0u8; RECORD];
                    record[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    start.wait();
                    let mut k: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        record[8..16].copy_from_slice(&k.to_le_bytes());
                        let offset = (k * writers as u64 + i as u64) * RECORD as u64;
                        k += 1;
                        if let Err(e) = file.write_all_at(&record, offset) {
                            counters.note_error(format!("pwrite: {e}"));
                            counters.not_flushed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let flushed = match variant {
                            Variant::Baseline => counters.sync(file).is_ok(),
                            Variant::GroupCommit => {
                                let committed = coordinator.commit(group_options(), |_batch| {
                                    match counters.sync(file) {
                                        Ok(()) => NtStatus::SUCCESS,
                                        Err(_) => NtStatus::UNSUCCESSFUL,
                                    }
                                });
                                committed == Committed::Flushed
                            }
                        };
                        let slot = if flushed {
                            &counters.flushed
                        } else {
                            &counters.not_flushed
                        };
                        slot.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            if handle.join().is_err() {
                counters.note_error("a writer thread panicked".into());
            }
        }
        began.elapsed()
    });
    drop(file);
    fs::remove_file(&path)?;
    Ok(Run {
        flushed: counters.flushed.load(Ordering::Relaxed),
        not_flushed: counters.not_flushed.load(Ordering::Relaxed),
        flushes: counters.flushes.load(Ordering::Relaxed),
        flush_ns: counters.flush_ns.load(Ordering::Relaxed),
        elapsed,
        error: counters
            .error
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
    })
}

// --- Where to write -------------------------------------------------------------------------

/// The file system type and source of the mount holding `path` (from
/// /proc/self/mountinfo: the longest mount point that is a prefix of `path`).
fn file_system(path: &Path) -> Option<(String, String)> {
    let path = fs::canonicalize(path).ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - type source super
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4).map(|m| unescape_mount(m)) else {
            continue;
        };
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(fs_type), Some(source)) = (fields.get(dash + 1), fields.get(dash + 2)) else {
            continue;
        };
        let depth = Path::new(&mount_point).components().count();
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(d, _, _)| depth >= *d) {
            best = Some((depth, (*fs_type).to_owned(), (*source).to_owned()));
        }
    }
    best.map(|(_, fs_type, source)| (fs_type, source))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn memory_backed(fs_type: &str) -> bool {
    matches!(fs_type, "tmpfs" | "ramfs" | "devtmpfs")
}

/// The directory to write in.
struct BenchDir {
    path: PathBuf,
    /// Why it was chosen.
    chosen_by: &'static str,
    /// Its file system: (type, source), when /proc/self/mountinfo tells.
    fs: Option<(String, String)>,
}

impl BenchDir {
    fn new(path: PathBuf, chosen_by: &'static str) -> io::Result<Self> {
        fs::create_dir_all(&path)?;
        let fs = file_system(&path);
        Ok(BenchDir {
            path,
            chosen_by,
            fs,
        })
    }

    /// `FLUSHGUARD_BENCH_DIR`, else a directory in the system temporary directory unless
    /// that is memory-backed, else one in cargo's target temporary directory.
    fn choose() -> io::Result<Self> {
        if let Some(dir) = env::var_os("FLUSHGUARD_BENCH_DIR") {
            return BenchDir::new(PathBuf::from(dir), "FLUSHGUARD_BENCH_DIR");
        }
        let temp = env::temp_dir();
        if file_system(&temp).is_some_and(|(fs_type, _)| !memory_backed(&fs_type)) {
            return BenchDir::new(temp.join("flushguard-bench"), "system temporary directory");
        }
        BenchDir::new(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flushguard-bench"),
            "cargo's target temporary directory",
        )
    }
}

// --- fio ------------------------------------------------------------------------------------

/// fio's figures for one job count.
struct Fio {
    iops: f64,
    sync_mean_ms: Option<f64>,
}

enum FioResult {
    Missing,
    Failed(String),
    Done(Fio),
}

/// `fio` with `jobs` jobs of 4 KiB sequential writes, an fdatasync after each, in `dir`.
fn run_fio(dir: &Path, jobs: usize, duration: Duration) -> FioResult {
    let name = format!("fdatasync{jobs}");
    let output = Command::new("fio")
        .arg(format!("--name={name}"))
        .arg(format!("--directory={}", dir.display()))
        .args(["--rw=write", "--bs=4k", "--size=16M", "--fdatasync=1"])
        .args([
            "--ioengine=psync",
            "--group_reporting",
            "--output-format=json",
        ])
        .arg(format!("--numjobs={jobs}"))
        .arg(format!("--runtime={}ms", duration.as_millis().max(1)))
        .arg("--time_based")
        .output();
    // fio leaves its files (`<name>.<job>.0`) behind.
    for job in 0..jobs {
        let _ = fs::remove_file(dir.join(format!("{name}.{job}.0")));
    }
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FioResult::Missing,
        Err(e) => return FioResult::Failed(format!("could not run fio: {e}")),
    };
    if !output.status.success() {
        return FioResult::Failed(format!(
            "fio exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    // fio may print notes before the JSON document.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.find('{').map_or("", |at| &stdout[at..]);
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(value) => value,
        Err(e) => return FioResult::Failed(format!("fio's JSON did not parse: {e}")),
    };
    let job = &value["jobs"][0];
    match job["write"]["iops"].as_f64() {
        Some(iops) => FioResult::Done(Fio {
            iops,
            sync_mean_ms: job["sync"]["lat_ns"]["mean"].as_f64().map(|ns| ns / 1e6),
        }),
        None => FioResult::Failed("fio's JSON has no jobs[0].write.iops".into()),
    }
}

// --- main -----------------------------------------------------------------------------------

/// `max-batch-wait-us` of the group-commit variant (`FLUSHGUARD_BENCH_WAIT_US`, default 0).
static BATCH_WAIT_US: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The group-commit options the bench runs with: the policy defaults, with
/// `max-batch-wait-us` from `FLUSHGUARD_BENCH_WAIT_US`.
fn group_options() -> GroupOptions {
    GroupOptions {
        max_batch_wait_us: BATCH_WAIT_US.load(Ordering::Relaxed),
        ..GroupOptions::DEFAULT
    }
}

fn main() -> ExitCode {
    let benching = env::args().any(|a| a == "--bench");
    let secs = match env::var("FLUSHGUARD_BENCH_SECS") {
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs > 0.0 => secs,
            _ => {
                eprintln!("FLUSHGUARD_BENCH_SECS={s:?} is not a positive number of seconds");
                return ExitCode::FAILURE;
            }
        },
        Err(_) if benching => 1.5,
        Err(_) => 0.05,
    };
    let duration = Duration::from_secs_f64(secs);
    if let Ok(s) = env::var("FLUSHGUARD_BENCH_WAIT_US") {
        match s.trim().parse::<u32>() {
            Ok(us) if us <= 50_000 => BATCH_WAIT_US.store(us, Ordering::Relaxed),
            _ => {
                eprintln!("FLUSHGUARD_BENCH_WAIT_US={s:?} is not 0..=50000 microseconds");
                return ExitCode::FAILURE;
            }
        }
    }
    let BenchDir {
        path: dir,
        chosen_by,
        fs,
    } = match BenchDir::choose() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("cannot create the benchmark directory: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!("group commit vs fdatasync per write (issue 11 item 7)");
    if !benching {
        println!("(smoke check: run with `cargo bench` for real figures)");
    }
    match &fs {
        Some((fs_type, source)) => println!(
            "directory: {} ({chosen_by}); file system: {fs_type} on {source}",
            dir.display()
        ),
        None => println!(
            "directory: {} ({chosen_by}); file system: unknown",
            dir.display()
        ),
    }
    if fs.as_ref().is_some_and(|(t, _)| memory_backed(t)) {
        println!("WARNING: memory-backed file system: fdatasync costs nothing here; set FLUSHGUARD_BENCH_DIR to a directory on a disk");
    }
    println!(
        "{RECORD} B records, one shared file, {secs} s per configuration, group options: max-batch {}, max-batch-wait-us {}",
        group_options().max_batch,
        group_options().max_batch_wait_us
    );
    println!();
    println!(
        "{:>7} | {:>12} {:>7} {:>9} | {:>12} {:>7} {:>9} | {:>6} | {:>11} | {:>9} | acks",
        "writers",
        "baseline w/s",
        "sync ms",
        "in flight",
        "group w/s",
        "sync ms",
        "in flight",
        "ratio",
        "flush/write",
        "avg batch"
    );

    let mut failed = false;
    let mut at_target: Option<(f64, f64, f64)> = None;
    for writers in WRITERS {
        let measured = run(&dir, Variant::Baseline, writers, duration).and_then(|baseline| {
            run(&dir, Variant::GroupCommit, writers, duration).map(|group| (baseline, group))
        });
        let (baseline, group) = match measured {
            Ok(runs) => runs,
            Err(e) => {
                println!("{writers:>7} | I/O error setting up the run: {e}");
                failed = true;
                continue;
            }
        };
        let ratio = group.writes_per_sec() / baseline.writes_per_sec().max(f64::MIN_POSITIVE);
        let acks = if baseline.not_flushed == 0 && group.not_flushed == 0 {
            "all Flushed".to_owned()
        } else {
            failed = true;
            format!(
                "NOT FLUSHED: baseline {}, group {}",
                baseline.not_flushed, group.not_flushed
            )
        };
        println!(
            "{writers:>7} | {:>12.0} {:>7.3} {:>9.2} | {:>12.0} {:>7.3} {:>9.2} | {:>5.2}x | {:>11.3} | {:>9.2} | {acks}",
            baseline.writes_per_sec(),
            baseline.mean_flush_ms(),
            baseline.syncs_in_flight(),
            group.writes_per_sec(),
            group.mean_flush_ms(),
            group.syncs_in_flight(),
            ratio,
            group.flushes_per_write(),
            1.0 / group.flushes_per_write().max(f64::MIN_POSITIVE),
        );
        for (name, r) in [("baseline", &baseline), ("group", &group)] {
            if let Some(e) = &r.error {
                println!("        {name}: first I/O error: {e}");
            }
        }
        if writers == TARGET_WRITERS {
            at_target = Some((ratio, group.flushes_per_write(), baseline.writes_per_sec()));
        }
    }
    println!(
        "  (sync ms: mean time inside one fdatasync; in flight: mean fdatasyncs in progress, time inside\n   fdatasync over elapsed time; avg batch: writes acknowledged per group-commit flush)"
    );

    println!();
    if benching {
        for jobs in [1, TARGET_WRITERS] {
            match run_fio(&dir, jobs, duration) {
                FioResult::Done(fio) => {
                    let sync = fio
                        .sync_mean_ms
                        .map_or(String::new(), |ms| format!(", fdatasync mean {ms:.3} ms"));
                    let beside = match (jobs, at_target) {
                        (TARGET_WRITERS, Some((ratio, _, base))) => format!(
                            "  (ours at {TARGET_WRITERS} writers: baseline {base:.0} w/s, group {:.0} w/s)",
                            base * ratio
                        ),
                        _ => String::new(),
                    };
                    println!(
                        "fio {jobs:>2} job(s), psync, 4k, fdatasync=1, one file per job: {:.0} write IOPS{sync}{beside}",
                        fio.iops
                    );
                }
                FioResult::Missing => {
                    println!("fio: not installed, no outside anchor (install it: `apt-get install fio`, or scripts/setup.sh)");
                    break;
                }
                FioResult::Failed(e) => println!("fio {jobs} job(s): failed: {e}"),
            }
        }
    } else {
        println!("fio: skipped in the smoke check");
    }

    println!();
    match at_target {
        Some((ratio, flushes_per_write, _)) => {
            let verdict = |met: bool| if met { "MET" } else { "NOT MET" };
            println!(
                "target: >= {TARGET_RATIO}x the throughput of fdatasync per write at {TARGET_WRITERS} writers: {ratio:.2}x: {}",
                verdict(ratio >= TARGET_RATIO)
            );
            println!(
                "target: <= {TARGET_FLUSHES_PER_WRITE} flushes per write at {TARGET_WRITERS} writers: {flushes_per_write:.3}: {}",
                verdict(flushes_per_write <= TARGET_FLUSHES_PER_WRITE)
            );
        }
        None => println!("targets: no figures at {TARGET_WRITERS} writers"),
    }
    if chosen_by != "FLUSHGUARD_BENCH_DIR" {
        // Only the directory this bench created (if empty).
        let _ = fs::remove_dir(&dir);
    }
    if failed {
        println!("FAILED: an I/O error or a write not acknowledged as flushed (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
