//! `flushctl events`: the driver's event ring (flush failures, policy changes, registry
//! policy rejections, counter resets).

use std::io::Write;

use flushguard_engine::protocol::events::{
    EventKind, EventRecord, NO_RULE, REGISTRY_LOAD, REGISTRY_STORE,
};
use flushguard_engine::FlushMethod;
use serde::Serialize;

use crate::cli::EventsArgs;
use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{print_json, TableBuilder};
use crate::port::{self, PortOptions};

#[derive(Serialize)]
struct EventJson {
    seq: u64,
    time: String,
    kind: &'static str,
    status: String,
    status_name: Option<&'static str>,
    generation: u64,
    rule: Option<u32>,
    method: Option<&'static str>,
    value: u64,
    /// `registry-policy-rejected` only: `load` (`value` = REGISTRY_LOAD, reading
    /// `Parameters\Policy` at driver load) or `store` (`value` = REGISTRY_STORE, writing
    /// it for a persisted SetPolicy); absent for other kinds and unknown values.
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_op: Option<&'static str>,
    /// `flush-failed` only: what the status means for the data,
    /// `not-flushed-retryable` or `not-flushed-permanent` (protocol `StatusClass`).
    #[serde(skip_serializing_if = "Option::is_none")]
    durability: Option<&'static str>,
    name: String,
    name_truncated: bool,
    persisted: bool,
}

/// `load` / `store` for a `RegistryPolicyRejected` event's `value`.
fn registry_op(value: u64) -> Option<&'static str> {
    match value {
        REGISTRY_LOAD => Some("load"),
        REGISTRY_STORE => Some("store"),
        _ => None,
    }
}

fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::FlushFailed => "flush-failed",
        EventKind::PolicyChanged => "policy-changed",
        EventKind::StatsReset => "stats-reset",
        EventKind::RegistryPolicyRejected => "registry-policy-rejected",
    }
}

/// 100-ns units since 1601-01-01 UTC (a Windows `FILETIME`, the driver's
/// `KeQuerySystemTimePrecise`) as `YYYY-MM-DD hh:mm:ss.fffffff UTC`. Every `u64` is a
/// date before the year 60 100, within `time`'s `large-dates` range; the raw value is
/// shown should that ever fail.
fn format_time(t: u64) -> String {
    /// Seconds from 1601-01-01 to 1970-01-01.
    const EPOCH_DIFF_SECS: i64 = 11_644_473_600;
    let secs = (t / 10_000_000) as i64 - EPOCH_DIFF_SECS;
    let frac = t % 10_000_000;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{frac:07} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("{t} (100 ns units since 1601-01-01 UTC)"),
    }
}

fn event_json(e: &EventRecord) -> EventJson {
    use flushguard_engine::protocol::events::{EVENT_FLAG_NAME_TRUNCATED, EVENT_FLAG_PERSISTED};
    EventJson {
        seq: e.seq,
        time: format_time(e.time),
        kind: kind_name(e.kind),
        status: e.status.to_string(),
        status_name: e.status.name(),
        generation: e.generation,
        rule: (e.rule != NO_RULE).then_some(e.rule),
        method: (e.kind == EventKind::FlushFailed).then_some(
            FlushMethod::from_code(e.method).map_or(FlushMethod::Filter.name(), FlushMethod::name),
        ),
        value: e.value,
        registry_op: (e.kind == EventKind::RegistryPolicyRejected)
            .then(|| registry_op(e.value))
            .flatten(),
        durability: (e.kind == EventKind::FlushFailed).then(|| e.status.class().label()),
        name: e.name_chars().collect(),
        name_truncated: e.flags & EVENT_FLAG_NAME_TRUNCATED != 0,
        persisted: e.flags & EVENT_FLAG_PERSISTED != 0,
    }
}

fn event_detail(e: &EventJson) -> String {
    match e.kind {
        "flush-failed" => format!(
            "{}: {}{} after {} µs ({} method)",
            e.durability.unwrap_or("not-flushed-permanent"),
            if e.name_truncated { "…" } else { "" },
            e.name,
            e.value,
            e.method.unwrap_or("filter")
        ),
        "policy-changed" => format!(
            "{} rule(s){}",
            e.value,
            if e.persisted { ", persisted" } else { "" }
        ),
        "registry-policy-rejected" => match e.registry_op {
            Some("load") => "load: Parameters\\Policy could not be read or decoded at driver load \
                 (running pass-through)"
                .into(),
            Some(op) => format!(
                "{op}: persisted SetPolicy could not write Parameters\\Policy (policy unchanged)"
            ),
            None => format!("value {} (unknown registry operation)", e.value),
        },
        _ => String::new(),
    }
}

pub(super) fn events(opts: &PortOptions, args: &EventsArgs, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let mut after = 0u64;
    let mut polls = 0u64;
    let mut printed_header = false;
    loop {
        let r = c.events(after)?;
        let list: Vec<EventJson> = r.events.iter().map(event_json).collect();
        if let Some(last) = r.events.last() {
            after = last.seq;
        }
        if json {
            if args.follow {
                // One JSON object per line while following.
                for e in &list {
                    outln!(
                        "{}",
                        serde_json::to_string(e)
                            .map_err(|e| CliError::io("json", std::io::Error::other(e)))?
                    );
                }
            } else {
                #[derive(Serialize)]
                struct EventsJson<'a> {
                    next_seq: u64,
                    dropped: u64,
                    events: &'a [EventJson],
                }
                print_json(&EventsJson {
                    next_seq: r.next_seq,
                    dropped: r.dropped,
                    events: &list,
                })
                .map_err(CliError::io_while("stdout"))?;
            }
        } else if !list.is_empty() || !printed_header {
            let mut t = TableBuilder::new(&[
                "seq#",
                "time (UTC)",
                "event",
                "status",
                "gen#",
                "rule",
                "detail",
            ]);
            for e in &list {
                t.row([
                    e.seq.to_string(),
                    e.time.trim_end_matches(" UTC").to_owned(),
                    e.kind.to_owned(),
                    match e.status_name {
                        Some(n) if e.status != "0x00000000" => format!("{} {n}", e.status),
                        _ => e.status.clone(),
                    },
                    e.generation.to_string(),
                    e.rule.map_or("-".into(), |r| r.to_string()),
                    event_detail(e),
                ]);
            }
            if list.is_empty() {
                outln!("No events.");
            } else {
                outln!("{}", t.render());
            }
            if r.dropped > 0 && !printed_header {
                outln!(
                    "{} older event(s) were overwritten before being read.",
                    r.dropped
                );
            }
            printed_header = true;
        }
        polls += 1;
        if !args.follow || args.count.is_some_and(|n| polls >= n) {
            break;
        }
        std::io::stdout()
            .flush()
            .map_err(CliError::io_while("stdout"))?;
        std::thread::sleep(std::time::Duration::from_millis(args.interval_ms.max(10)));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    /// Expected values from Python's `datetime(1601, 1, 1) + timedelta(seconds=t // 10**7)`.
    #[test]
    fn filetimes_format_as_utc() {
        assert_eq!(format_time(0), "1601-01-01 00:00:00.0000000 UTC");
        assert_eq!(
            format_time(116_444_736_000_000_000),
            "1970-01-01 00:00:00.0000000 UTC"
        );
        assert_eq!(
            format_time(133_000_000_001_234_567),
            "2022-06-18 04:26:40.1234567 UTC"
        );
        assert_eq!(
            format_time(2_650_467_743_999_999_999),
            "9999-12-31 23:59:59.9999999 UTC"
        );
        // Past Python's range: Howard Hinnant's civil-from-days algorithm (the
        // hand-written calendar this replaced), computed in Python.
        assert_eq!(format_time(u64::MAX), "60056-05-28 05:36:10.9551615 UTC");
    }
}
