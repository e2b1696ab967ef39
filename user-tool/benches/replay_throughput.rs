//! Replay throughput benchmark (a bench binary, `harness = false`).
//!
//! Measures, on one Process Monitor CSV (by default a generated trace of 1 000 000
//! rows written to the target directory):
//! 1. `csv`: merely parsing the CSV with the csv crate (`read_byte_record`, no field
//!    interpretation) — the floor;
//! 2. `parse`: flushctl's header-driven reader with Detail parsing;
//! 3. `replay`: the full replay (path resolution, the driver's callback logic over the
//!    simulated Filter Manager, per-file bookkeeping, report).
//!
//! Rows per second for each, best of `--rounds`, and the ratio replay/csv.
//!
//! ```text
//! cargo bench -p flushctl --bench replay_throughput -- [--events N] [--trace FILE]
//!     [--policy FILE] [--map D:=\\srv\share]... [--rounds N] [--only csv|parse|replay]
//! ```
//! Peak memory: run the release `flushctl replay` (or this binary with `--only`) under
//! `/usr/bin/time -v` and read "Maximum resident set size".

use std::path::PathBuf;
use std::time::Instant;

use flushctl::replay::ReplayOptions;
use flushctl::trace::{Item, TraceReader};

struct Args {
    events: u64,
    trace: Option<PathBuf>,
    policy: PathBuf,
    maps: Vec<String>,
    rounds: u32,
    only: Option<String>,
}

fn parse_args() -> Args {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        events: 1_000_000,
        trace: None,
        policy: manifest.join("../examples/replay-sample.toml"),
        maps: Vec::new(),
        rounds: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => a.events = val().parse().expect("--events N"),
            "--trace" => a.trace = Some(PathBuf::from(val())),
            "--policy" => a.policy = PathBuf::from(val()),
            "--map" => a.maps.push(val()),
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--only" => a.only = Some(val()),
            // `cargo bench` passes --bench; ignore it and libtest-style filters.
            _ => {}
        }
    }
    if a.trace.is_none() && a.maps.is_empty() {
        a.maps.push("Z:=\\\\gen-fs01\\home".into());
    }
    a
}

fn best<F: FnMut() -> u64>(rounds: u32, mut f: F) -> (u64, f64) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (n, best)
}

fn main() {
    let a = parse_args();
    let trace = match &a.trace {
        Some(t) => t.clone(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            let p = target.join(format!("replay-bench-{}.generated.csv", a.events));
            if !p.exists() {
                eprintln!("generating {} rows into {}", a.events, p.display());
                let f = std::fs::File::create(&p).expect("create trace");
                flushctl::gen::write_trace(std::io::BufWriter::new(f), a.events, 1, 2000)
                    .expect("write trace");
            }
            p
        }
    };
    let size = std::fs::metadata(&trace).expect("trace").len();
    println!(
        "trace: {} ({:.1} MiB)",
        trace.display(),
        size as f64 / 1048576.0
    );
    let want = |k: &str| a.only.as_deref().is_none_or(|o| o == k);

    let mut csv_rate = None;
    if want("csv") {
        let (rows, secs) = best(a.rounds, || {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .buffer_capacity(256 * 1024)
                .from_reader(std::io::BufReader::with_capacity(
                    1 << 20,
                    std::fs::File::open(&trace).unwrap(),
                ));
            let mut rec = csv::ByteRecord::new();
            let mut n = 0;
            while r.read_byte_record(&mut rec).unwrap() {
                n += 1;
            }
            n
        });
        let rate = rows as f64 / secs;
        csv_rate = Some(rate);
        println!(
            "csv    : {rows} rows in {secs:.3} s = {rate:>12.0} rows/s ({:.0} MiB/s)",
            size as f64 / 1048576.0 / secs
        );
    }
    if want("parse") {
        let (rows, secs) = best(a.rounds, || {
            let f = std::fs::File::open(&trace).unwrap();
            // As `flushctl replay` opens it (the reader buffers itself; its thread
            // parses the csv while this one interprets the records).
            let mut r = TraceReader::with_reader_thread(f).unwrap();
            let mut n = 0;
            while let Some(item) = r.next_event().unwrap() {
                if !matches!(item, Item::Malformed(_)) {
                    n += 1;
                }
            }
            n
        });
        let rate = rows as f64 / secs;
        println!(
            "parse  : {rows} rows in {secs:.3} s = {rate:>12.0} rows/s{}",
            csv_rate.map_or(String::new(), |c| format!(
                " ({:.2}x the csv-only time)",
                c / rate
            ))
        );
    }
    if want("replay") {
        let policy = flushctl::commands::load_policy_file(&a.policy).expect("policy");
        let blob = policy.encode().expect("encode");
        let mut last = None;
        let (rows, secs) = best(a.rounds, || {
            let filter = flushctl::commands::replay_filter(blob.clone()).expect("filter");
            let report = flushctl::commands::replay_file(
                &filter,
                &trace,
                &a.maps,
                ReplayOptions::default(),
                a.policy.display().to_string(),
                false,
            )
            .expect("replay");
            let n = report.counts.rows;
            last = Some(report);
            n
        });
        let rate = rows as f64 / secs;
        println!(
            "replay : {rows} rows in {secs:.3} s = {rate:>12.0} rows/s{}",
            csv_rate.map_or(String::new(), |c| format!(
                " ({:.2}x the csv-only time)",
                c / rate
            ))
        );
        if let Some(r) = last {
            println!(
                "         {} events through the callbacks, {} files, {} FlushGuard flushes, {} malformed",
                r.counts.events_replayed,
                r.files.len(),
                r.totals.flushes_issued,
                r.counts.malformed
            );
        }
    }
}
