//! `flushctl replay`: a Process Monitor trace replayed through the driver's callback
//! logic under a policy, and the report as tables or JSON.

use std::io::IsTerminal;
use std::path::Path;

use flushguard_engine::callbacks::{Filter, PolicySource};

use super::policy::load_policy_file;
use crate::cli::ReplayArgs;
use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{bytes, print_json, TableBuilder};
use crate::port::{self, PortOptions};
use crate::replay::{ReplayError, ReplayOptions, Replayer, Report};
use crate::sim_fltmgr::SimFm;
use crate::trace::path::PathResolver;
use crate::trace::TraceReader;

/// The engine a replay runs: a fresh in-process driver loaded with `blob` as its
/// `Parameters\Policy` value, exactly as DriverEntry loads it.
///
/// # Errors
/// [`CliError::PolicyDecode`] when the driver would reject the blob.
pub fn replay_filter(blob: Vec<u8>) -> Result<Filter<SimFm>, CliError> {
    match port::inproc::new_filter(Some(blob)) {
        (filter, PolicySource::Registry) => Ok(filter),
        (_, source) => Err(CliError::PolicyDecode(format!(
            "the replay engine did not load the policy ({source:?}); see `flushctl policy check`"
        ))),
    }
}

/// Runs a replay of `trace` under `filter`; the reusable core of `flushctl replay`.
///
/// # Errors
/// [`CliError::Trace`] when the trace cannot be read, [`CliError::MalformedTrace`] for
/// `--strict`, [`CliError::Usage`] for a bad `--map`.
pub fn replay_file(
    filter: &Filter<SimFm>,
    trace: &Path,
    maps: &[String],
    opts: ReplayOptions,
    policy_source: String,
    show_progress: bool,
) -> Result<Report, CliError> {
    let mut resolver = PathResolver::new();
    for m in maps {
        resolver
            .add_map(m)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let file = std::fs::File::open(trace).map_err(|e| CliError::Trace {
        path: trace.to_owned(),
        source: e.into(),
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader =
        // The reader buffers itself (one copy of the bytes, not two); its thread
        // parses the next records while the callbacks run on these.
        TraceReader::with_reader_thread(file).map_err(|source| {
            CliError::Trace {
                path: trace.to_owned(),
                source,
            }
        })?;
    let bar = show_progress.then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut replayer = Replayer::new(filter, resolver, opts);
    let res = replayer.run(&mut reader, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match res {
        Ok(()) => {}
        Err(ReplayError::Trace(source)) => {
            return Err(CliError::Trace {
                path: trace.to_owned(),
                source,
            })
        }
        Err(ReplayError::Strict(m)) => {
            return Err(CliError::MalformedTrace {
                path: trace.to_owned(),
                line: m.line,
                reason: m.reason,
            })
        }
    }
    Ok(replayer.finish(trace.display().to_string(), policy_source))
}

pub(super) fn replay(opts: &PortOptions, args: &ReplayArgs, json: bool) -> Result<u8, CliError> {
    let (blob, source) = match &args.policy {
        Some(f) => {
            let p = load_policy_file(f)?;
            let blob = p.encode().map_err(|e| CliError::Policy {
                path: f.clone(),
                message: e.to_string(),
            })?;
            (blob, f.display().to_string())
        }
        None => {
            let mut c = port::open(opts).map_err(|source| CliError::PortWithHint {
                source,
                hint: "Or replay under a policy file: --policy FILE.",
            })?;
            let gen = c.status()?.generation;
            (
                c.get_policy()?,
                format!("the {}'s active policy (generation {gen})", c.describe()),
            )
        }
    };
    let filter = replay_filter(blob)?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let report = replay_file(
        &filter,
        &args.trace,
        &args.maps,
        ReplayOptions {
            strict: args.strict,
            max_files: args.max_files.max(1),
            flush_latency_us: args.flush_latency_us,
        },
        source,
        progress,
    )?;
    if json {
        print_json(&report).map_err(CliError::io_while("stdout"))?;
    } else {
        print_report(&report, args.top)?;
    }
    if report.counts.malformed > 0 {
        eprintln!(
            "flushctl: warning: {} malformed line(s) skipped (first at line {}); --strict stops at the first.",
            report.counts.malformed,
            report.malformed.first().map_or(0, |m| m.line)
        );
    }
    Ok(exit::OK)
}

fn print_report(r: &Report, top: usize) -> Result<(), CliError> {
    let c = &r.counts;
    outln!("Replay of {}", r.trace);
    outln!(
        "Policy:  {} (local volumes {})",
        r.policy,
        if r.attach_local_volumes {
            "attached"
        } else {
            "not attached"
        }
    );
    outln!(
        "Rows:    {} read, {} replayed through the callbacks, {} other operations, {} not files, {} on local volumes not attached, {} malformed",
        c.rows, c.events_replayed, c.other_rows, c.not_a_file, c.local_not_attached, c.malformed
    );
    if c.without_known_open > 0 || c.handles_evicted > 0 || c.files_folded > 0 {
        outln!(
            "Notes:   {} operation(s) on handles opened before the capture; {} handle(s) forgotten and {} file(s) folded to stay within memory bounds",
            c.without_known_open, c.handles_evicted, c.files_folded
        );
    }
    for m in r.malformed.iter().take(10) {
        outln!("  malformed line {}: {}", m.line, m.reason);
    }
    outln!();
    let mut t = TableBuilder::new(&[
        "rule",
        "mode",
        "files#",
        "writes#",
        "governed#",
        "WT forced#",
        "FG flushes#",
        "audit: would",
        "app flushes#",
        "unflushed files#",
        "unflushed bytes#",
        "extra RTs#",
    ]);
    for rule in &r.rules {
        let f = &rule.figures;
        let would = |k: &str| rule.engine_counters.get(k).copied().unwrap_or(0);
        t.row([
            rule.rule.clone(),
            rule.mode.to_owned(),
            rule.files.to_string(),
            f.writes.to_string(),
            f.writes_governed.to_string(),
            f.write_throughs_forced.to_string(),
            f.flushes_issued.to_string(),
            if rule.mode == "audit" {
                format!(
                    "{} flush, {} WT",
                    would("audit_would_flush"),
                    would("audit_would_write_through")
                )
            } else {
                "-".into()
            },
            f.app_flushes.to_string(),
            format!(
                "{} -> {}",
                f.unflushed_files_without, f.unflushed_files_with
            ),
            format!(
                "{} -> {}",
                bytes(f.unflushed_bytes_without),
                bytes(f.unflushed_bytes_with)
            ),
            f.extra_round_trips.to_string(),
        ]);
    }
    outln!(
        "Per rule (unflushed: as traced -> with FlushGuard):\n{}",
        t.render()
    );
    for rule in &r.rules {
        let Some(g) = &rule.group_commit else {
            continue;
        };
        outln!(
            "Group commit, rule {} (max-batch {}, max-batch-wait-us {}; flushes of {} us modelled on the trace's write times): {} write(s) -> {} flush(es), {:.2} writes per flush, wait mean {:.0} us, max {} us{}",
            rule.rule,
            g.max_batch,
            g.max_batch_wait_us,
            g.flush_latency_us,
            g.writes,
            g.flushes,
            g.writes_per_flush,
            g.mean_wait_us,
            g.max_wait_us,
            if g.writes_without_time > 0 {
                format!("; {} write(s) without a usable Time of Day not modelled", g.writes_without_time)
            } else {
                String::new()
            }
        );
    }
    let mut files: Vec<&crate::replay::FileReport> = r.files.iter().collect();
    files.sort_by(|a, b| {
        b.figures
            .unflushed_bytes_without
            .cmp(&a.figures.unflushed_bytes_without)
            .then(b.figures.write_bytes.cmp(&a.figures.write_bytes))
    });
    let mut t = TableBuilder::new(&[
        "file",
        "rule",
        "writes#",
        "bytes#",
        "paging#",
        "WT forced#",
        "FG flushes#",
        "app flushes#",
        "unflushed at end#",
        "extra RTs#",
    ]);
    // One per-file row: the file (or the folded rest), its rule, then its figures.
    let file_row = |name: String, rule: &str, g: &crate::replay::Figures| {
        [
            name,
            rule.to_owned(),
            g.writes.to_string(),
            bytes(g.write_bytes),
            g.paging_writes.to_string(),
            g.write_throughs_forced.to_string(),
            g.flushes_issued.to_string(),
            g.app_flushes.to_string(),
            format!(
                "{} -> {}",
                bytes(g.unflushed_bytes_without),
                bytes(g.unflushed_bytes_with)
            ),
            g.extra_round_trips.to_string(),
        ]
    };
    for f in files.iter().take(top) {
        t.row(file_row(f.path.clone(), &f.rule, &f.figures));
    }
    if let Some(o) = &r.other_files {
        let name = format!("(other files: {})", r.counts.files_folded);
        t.row(file_row(name, &o.rule, &o.figures));
    }
    if t.is_empty() {
        outln!("No writes or flushes on files the policy attaches to.");
    } else {
        outln!(
            "Per file ({} of {}, most unflushed first):\n{}",
            files.len().min(top),
            files.len(),
            t.render()
        );
    }
    let tot = &r.totals;
    outln!(
        "\nAt the end of the trace: {} file(s) / {} unflushed as traced; with this policy {} file(s) / {}.",
        tot.unflushed_files_without,
        bytes(tot.unflushed_bytes_without),
        tot.unflushed_files_with,
        bytes(tot.unflushed_bytes_with)
    );
    outln!(
        "FlushGuard would issue {} flush(es) and force write-through {} time(s): {} extra round trip(s); the applications issued {} flush(es) themselves.",
        tot.flushes_issued, tot.write_throughs_forced, tot.extra_round_trips, tot.app_flushes
    );
    Ok(())
}
