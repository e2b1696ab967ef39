//! `flushctl stats`: counters (global, per rule, default action), the flush latency
//! histogram, the group-commit batch and wait histograms, flush failures by NTSTATUS
//! and the callback layer's fail-open and skip causes.

use std::collections::BTreeMap;
use std::io::Write;

use flushguard_engine::protocol::stats::{bucket_floor_us, CallbackCounter, Counter};
use flushguard_engine::protocol::NtStatus;
use flushguard_engine::Policy;
use serde::Serialize;

use crate::cli::StatsArgs;
use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{print_json, TableBuilder};
use crate::port::{self, Client, PortOptions};

#[derive(Serialize)]
struct StatsJson {
    generation: u64,
    global: BTreeMap<&'static str, u64>,
    rules: Vec<RuleStatsJson>,
    flush_latency_us: Vec<LatencyBucketJson>,
    /// Group-commit flushes by writers acknowledged (non-empty buckets).
    group_commit_batch: Vec<BatchBucketJson>,
    /// Group-commit writers by time waited for their batch's flush, µs.
    group_commit_wait_us: Vec<LatencyBucketJson>,
    flush_failures: Vec<FailureJson>,
    /// Every callback-layer counter by label, in wire order; `null` when the driver
    /// did not report them.
    callback_counters: Option<CallbackCountersJson>,
}

/// The callback-layer counters as one JSON object, `label: count` for every
/// [`CallbackCounter`] in wire (index) order.
struct CallbackCountersJson(Vec<u64>);

impl CallbackCountersJson {
    fn get(&self, c: CallbackCounter) -> u64 {
        self.0.get(c as usize).copied().unwrap_or(0)
    }
}

impl Serialize for CallbackCountersJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(CallbackCounter::ALL.len()))?;
        for c in CallbackCounter::ALL {
            m.serialize_entry(c.label(), &self.get(c))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RuleStatsJson {
    rule: String,
    counters: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct LatencyBucketJson {
    from_us: u64,
    below_us: u64,
    count: u64,
}

#[derive(Serialize)]
struct BatchBucketJson {
    from_writers: u64,
    below_writers: u64,
    count: u64,
}

/// The non-empty buckets of a log2 histogram (bucket i: `[2^(i-1), 2^i)`).
fn buckets(h: &[u64]) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    h.iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (bucket_floor_us(i), bucket_floor_us(i + 1), *n))
}

#[derive(Serialize)]
struct FailureJson {
    status: String,
    name: Option<&'static str>,
    /// `not-flushed-retryable` / `not-flushed-permanent` (protocol `StatusClass`);
    /// for the "other" slot, `not-flushed`.
    durability: &'static str,
    count: u64,
}

fn counter_map(v: &[u64]) -> BTreeMap<&'static str, u64> {
    Counter::ALL
        .iter()
        .map(|c| (c.label(), v.get(*c as usize).copied().unwrap_or(0)))
        .collect()
}

/// One stats round; with `json_lines`, one compact JSON object on one line (for
/// `--watch --json`).
fn stats_once(
    c: &mut Client,
    names: &[String],
    args: &StatsArgs,
    json: bool,
    json_lines: bool,
) -> Result<(), CliError> {
    let s = c.stats()?;
    let mut rules = Vec::with_capacity(s.rules.len() + 1);
    for (i, r) in s.rules.iter().enumerate() {
        rules.push(RuleStatsJson {
            rule: names.get(i).cloned().unwrap_or_else(|| format!("rule {i}")),
            counters: counter_map(r),
        });
    }
    rules.push(RuleStatsJson {
        rule: "(default)".into(),
        counters: counter_map(&s.default_rule),
    });
    let latency_of = |h: &[u64]| -> Vec<LatencyBucketJson> {
        buckets(h)
            .map(|(from_us, below_us, count)| LatencyBucketJson {
                from_us,
                below_us,
                count,
            })
            .collect()
    };
    let latency = latency_of(&s.latency);
    let group_commit_wait_us = latency_of(&s.group_wait);
    let group_commit_batch: Vec<BatchBucketJson> = buckets(&s.group_batch)
        .map(|(from_writers, below_writers, count)| BatchBucketJson {
            from_writers,
            below_writers,
            count,
        })
        .collect();
    let failures: Vec<FailureJson> = s
        .failures
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(st, n)| {
            let status = NtStatus::from_bits(*st);
            FailureJson {
                status: if *st == 0 {
                    "other".into()
                } else {
                    status.to_string()
                },
                name: status.name().filter(|_| *st != 0),
                durability: if *st == 0 {
                    "not-flushed"
                } else {
                    status.class().label()
                },
                count: *n,
            }
        })
        .collect();
    let out = StatsJson {
        generation: s.generation,
        global: counter_map(&s.global),
        rules,
        flush_latency_us: latency,
        group_commit_batch,
        group_commit_wait_us,
        flush_failures: failures,
        callback_counters: s.callbacks.map(CallbackCountersJson),
    };
    if json && json_lines {
        let line = serde_json::to_string(&out)
            .map_err(|e| CliError::io("json", std::io::Error::other(e)))?;
        outln!("{line}");
        return Ok(());
    }
    if json {
        print_json(&out).map_err(CliError::io_while("stdout"))?;
        return Ok(());
    }
    outln!("Counters for policy generation {}:", out.generation);
    let mut headers: Vec<String> = vec!["counter".into(), "total#".into()];
    headers.extend(out.rules.iter().map(|r| format!("{}#", r.rule)));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut t = TableBuilder::new(&header_refs);
    for c in Counter::ALL {
        let mut row = vec![c.label().to_owned(), out.global[c.label()].to_string()];
        row.extend(out.rules.iter().map(|r| r.counters[c.label()].to_string()));
        t.row(row);
    }
    outln!("{}", t.render());
    if out.flush_latency_us.is_empty() {
        outln!("Flush latency: no flushes yet.");
    } else {
        print_histogram(
            ["flush latency", "count#"],
            latency_rows(&out.flush_latency_us),
        )?;
    }
    if !out.group_commit_batch.is_empty() {
        let batch = out.group_commit_batch.iter().map(|b| {
            (
                format!("{} - {}", b.from_writers, b.below_writers - 1),
                b.count,
            )
        });
        print_histogram(["group-commit flush: writers", "flushes#"], batch)?;
        print_histogram(
            ["group-commit wait", "writers#"],
            latency_rows(&out.group_commit_wait_us),
        )?;
    }
    if !out.flush_failures.is_empty() {
        let mut t = TableBuilder::new(&["flush failure status", "durability", "count#"]);
        for f in &out.flush_failures {
            t.row([
                match f.name {
                    Some(n) => format!("{} ({n})", f.status),
                    None => f.status.clone(),
                },
                f.durability.to_owned(),
                f.count.to_string(),
            ]);
        }
        outln!("{}", t.render());
    }
    print_callback_counters(out.callback_counters.as_ref(), args.all_causes)
}

/// The rows of a µs histogram: `(range, count)`.
fn latency_rows(buckets: &[LatencyBucketJson]) -> impl Iterator<Item = (String, u64)> + '_ {
    buckets
        .iter()
        .map(|b| (format!("{} - {} µs", b.from_us, b.below_us), b.count))
}

/// Prints a two-column histogram table.
fn print_histogram(
    headers: [&str; 2],
    rows: impl Iterator<Item = (String, u64)>,
) -> Result<(), CliError> {
    let mut t = TableBuilder::new(&headers);
    for (range, count) in rows {
        t.row([range, count.to_string()]);
    }
    outln!("{}", t.render());
    Ok(())
}

/// The "fail-open and skip causes" section: the callback-layer counters that are
/// not zero (every one with `all`), in wire order.
fn print_callback_counters(
    counters: Option<&CallbackCountersJson>,
    all: bool,
) -> Result<(), CliError> {
    let Some(counters) = counters else {
        outln!(
            "Fail-open and skip causes: not reported (the driver predates the \
             callback-layer counters)."
        );
        return Ok(());
    };
    let mut t = TableBuilder::new(&["fail-open and skip causes", "count#"]);
    for c in CallbackCounter::ALL {
        let n = counters.get(c);
        if all || n != 0 {
            t.row([c.label().to_owned(), n.to_string()]);
        }
    }
    if t.is_empty() {
        outln!("Fail-open and skip causes: none counted (--all-causes lists every counter).");
    } else {
        outln!("{}", t.render());
    }
    Ok(())
}

pub(super) fn stats(opts: &PortOptions, args: &StatsArgs, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let blob = c.get_policy()?;
    let names: Vec<String> = Policy::decode(&blob)
        .map(|p| p.rules.into_iter().map(|r| r.name).collect())
        .unwrap_or_default();
    let mut round = 0u64;
    loop {
        stats_once(&mut c, &names, args, json, args.watch.is_some())?;
        round += 1;
        let Some(secs) = args.watch else { break };
        if args.count.is_some_and(|n| round >= n) {
            break;
        }
        std::io::stdout()
            .flush()
            .map_err(CliError::io_while("stdout"))?;
        std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
        if !json {
            outln!();
        }
    }
    if args.reset {
        c.reset_stats()?;
        if !json {
            outln!("Counters reset.");
        }
    }
    Ok(exit::OK)
}
