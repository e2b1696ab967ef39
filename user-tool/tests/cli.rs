//! End-to-end tests of every flushctl command against the in-process port
//! (`--offline` with a state file), including each error message and exit code.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const SQL_POLICY: &str = r#"
[default]
mode = "pass"

[[rule]]
name = "sql-data"
provider = "smb"
share = '\\fs1\sql'
extensions = ["mdf", "ldf"]
process = "sqlservr.exe"
mode = "write-through"

[[rule]]
name = "fs1-rest"
share = '\\fs1\data'
mode = "flush-on-close"
"#;

const AUDIT_POLICY: &str = r#"
[default]
mode = "audit"
audit-mode = "flush-after-write"
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }
    fn file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }
    /// `flushctl --offline --state <tmp>/state.json ...`
    fn offline(&self) -> Command {
        let mut c = Command::cargo_bin("flushctl").unwrap();
        c.env_remove("FLUSHCTL_STATE")
            .env_remove("FLUSHCTL_SIMULATE")
            .arg("--offline")
            .arg("--state")
            .arg(self.state());
        c
    }
    fn json(&self, args: &[&str]) -> Value {
        let out = self.offline().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn flushctl() -> Command {
    let mut c = Command::cargo_bin("flushctl").unwrap();
    c.env_remove("FLUSHCTL_STATE")
        .env_remove("FLUSHCTL_SIMULATE");
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn help_documents_exit_codes() {
    flushctl()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("4  access denied"));
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        flushctl()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("flushctl"))
            .stdout(predicate::str::contains("replay"));
    }
}

#[cfg(not(windows))]
#[test]
fn driver_commands_off_windows_say_what_still_works() {
    for args in [
        &["status"][..],
        &["policy", "show"],
        &["stats"],
        &["events"],
        &["load"],
        &["unload"],
    ] {
        flushctl()
            .args(args)
            .assert()
            .code(6)
            .stderr(predicate::str::contains("exists only on Windows"))
            .stderr(predicate::str::contains("--offline"))
            .stderr(predicate::str::contains("policy check"));
    }
}

#[test]
fn status_of_a_fresh_offline_engine() {
    let e = Env::new();
    let s = e.json(&["status"]);
    assert_eq!(s["port"], "in-process engine");
    assert_eq!(s["protocol_version"], s["client_protocol_version"]);
    assert_eq!(s["policy_generation"], 0);
    assert_eq!(s["policy_loaded"], false);
    e.offline()
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("Driver version:"))
        .stdout(predicate::str::contains("pass-through"));
}

#[test]
fn policy_check_accepts_and_rejects_with_line_and_column() {
    let e = Env::new();
    let good = e.file("good.toml", SQL_POLICY);
    flushctl()
        .args(["policy", "check", p(&good)])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK, 2 rule(s)"))
        .stdout(predicate::str::contains("sql-data"));
    let j: Value = serde_json::from_slice(
        &flushctl()
            .args(["--json", "policy", "check", p(&good)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(j["rules"][0]["name"], "sql-data");
    assert_eq!(j["rules"][0]["action"]["mode"], "write-through");
    let bad = e.file("bad.toml", "[[rule]]\nname = \"x\"\nmode = \"bogus\"\n");
    flushctl()
        .args(["policy", "check", p(&bad)])
        .assert()
        .code(7)
        .stderr(predicate::str::contains("line 3, column"))
        .stderr(predicate::str::contains("rule[0].mode"));
    flushctl()
        .args(["policy", "check", "/nonexistent/policy.toml"])
        .assert()
        .code(7);
}

#[test]
fn apply_show_persist_unload_load_round_trip() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    let audit = e.file("audit.toml", AUDIT_POLICY);
    let r = e.json(&["policy", "apply", p(&sql)]);
    assert_eq!(
        (r["generation"].as_u64(), r["rules"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(r["persisted"], false);
    // The next invocation sees it.
    let show = e.json(&["policy", "show"]);
    assert_eq!(show["generation"], 1);
    assert_eq!(show["rules"][1]["name"], "fs1-rest");
    assert_eq!(show["rules"][1]["share"], "\\\\fs1\\data");
    e.offline()
        .args(["policy", "show"])
        .assert()
        .success()
        .stdout(predicate::str::contains("generation 1"))
        .stdout(predicate::str::contains("[[rule]]"));
    // A persisted apply is what a reload brings back.
    let r = e.json(&["policy", "apply", p(&audit), "--persist"]);
    assert_eq!(
        (r["generation"].as_u64(), r["persisted"].as_bool()),
        (Some(2), Some(true))
    );
    let u = e.json(&["unload"]);
    assert_eq!(
        (u["loaded"].as_bool(), u["offline"].as_bool()),
        (Some(false), Some(true))
    );
    e.offline()
        .args(["replay", "--trace", "x.csv"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--policy FILE"));
    e.offline()
        .arg("status")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not loaded"))
        .stderr(predicate::str::contains("flushctl load"))
        .stderr(predicate::str::contains("fltmc load FlushGuard"));
    e.offline().arg("unload").assert().code(3);
    e.offline().arg("load").assert().success();
    e.offline()
        .arg("load")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already loaded"));
    let s = e.json(&["status"]);
    assert_eq!(s["policy_from_registry"], true);
    assert_eq!(s["policy_generation"], 1);
    let show = e.json(&["policy", "show"]);
    assert_eq!(show["default"]["mode"], "audit");
    assert_eq!(show["default"]["audit_mode"], "flush-after-write");
}

#[test]
fn a_rejected_apply_changes_nothing() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    e.json(&["policy", "apply", p(&sql)]);
    let bad = e.file(
        "dup.toml",
        "[[rule]]\nname = \"a\"\nmode = \"pass\"\n[[rule]]\nname = \"a\"\nmode = \"pass\"\n",
    );
    e.offline()
        .args(["policy", "apply", p(&bad)])
        .assert()
        .code(7)
        .stderr(predicate::str::contains("dup.toml"));
    let show = e.json(&["policy", "show"]);
    assert_eq!(show["generation"], 1);
    assert_eq!(show["rules"][0]["name"], "sql-data");
}

#[test]
fn explain_against_a_file_and_against_the_engine() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    flushctl()
        .args([
            "policy",
            "explain",
            "\\\\fs1\\sql\\db\\ledger.mdf",
            "--process",
            "sqlservr.exe",
            "--policy",
            p(&sql),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "rule #0 \"sql-data\" -> write-through",
        ));
    let j: Value = serde_json::from_slice(
        &flushctl()
            .args([
                "--json",
                "policy",
                "explain",
                "Z:\\reports\\q3.xlsx",
                "--map",
                "Z:=\\\\fs1\\data",
                "--policy",
                p(&sql),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(j["name"], "\\Device\\Mup\\fs1\\data\\reports\\q3.xlsx");
    assert_eq!(j["matched_rule"], "fs1-rest");
    assert_eq!(j["rejected"][0]["rule"], "sql-data");
    assert_eq!(j["action"]["mode"], "flush-on-close");
    // Without --policy: the engine's active policy.
    e.json(&["policy", "apply", p(&sql)]);
    let j = e.json(&[
        "policy",
        "explain",
        "\\\\fs1\\sql\\db\\ledger.mdf",
        "--process",
        "notepad.exe",
        "--provider",
        "smb",
    ]);
    assert_eq!(j["matched_rule"], Value::Null);
    assert!(j["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("process"));
    assert!(j["policy"].as_str().unwrap().contains("generation 1"));
}

const GREEDY_POLICY: &str = r#"
[default]
mode = "flush-after-write"

[[rule]]
name = "smb-all"
provider = "smb"
mode = "write-through"
"#;

#[test]
fn explain_says_named_pipe_and_mailslot_shares_are_never_governed() {
    let e = Env::new();
    let greedy = e.file("greedy.toml", GREEDY_POLICY);
    flushctl()
        .args(["policy", "explain", r"\\srv\PIPE\spoolss", "--policy", p(&greedy)])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Result:   named pipe / mailslot share: never governed (no rule, not the default action) -> pass",
        ))
        .stdout(predicate::str::contains("Rules tried before").not());
    for path in [
        r"\\srv\pipe\x",
        r"\Device\Mup\srv\mailslot\y",
        r"\\srv\ipc$",
        r"\\?\UNC\srv\Pipe\a\..\b",
    ] {
        let j: Value = serde_json::from_slice(
            &flushctl()
                .args(["--json", "policy", "explain", path, "--policy", p(&greedy)])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(
            j["exempt"], "named pipe / mailslot share: never governed",
            "{path}"
        );
        assert_eq!(j["action"]["mode"], "pass", "{path}");
        assert_eq!(j["matched_rule"], Value::Null, "{path}");
        assert_eq!(j["rejected"], serde_json::json!([]), "{path}");
    }
    // A share that only looks like one is governed as usual; `exempt` is null.
    let j: Value = serde_json::from_slice(
        &flushctl()
            .args([
                "--json",
                "policy",
                "explain",
                r"\\srv\pipes\x",
                "--policy",
                p(&greedy),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(j["exempt"], Value::Null);
    assert_eq!(j["matched_rule"], "smb-all");
    assert_eq!(j["action"]["mode"], "write-through");
}

#[test]
fn a_rule_for_a_named_pipe_share_is_rejected_and_not_applied() {
    let e = Env::new();
    let bad = e.file(
        "pipes.toml",
        "[[rule]]\nname = \"pipes\"\nshare = '\\\\fs1\\IPC$'\nmode = \"write-through\"\n",
    );
    flushctl()
        .args(["policy", "check", p(&bad)])
        .assert()
        .code(7)
        .stderr(predicate::str::contains("line 3, column 9"))
        .stderr(predicate::str::contains("rule[0].share"))
        .stderr(predicate::str::contains(
            "contradictory policy: a named pipe / mailslot share",
        ));
    e.offline()
        .args(["policy", "apply", p(&bad)])
        .assert()
        .failure()
        .stderr(predicate::str::contains("rule[0].share"));
    let j = e.json(&["policy", "show"]);
    assert_eq!(j["rules"], serde_json::json!([]), "{j}");
}

#[test]
fn stats_watch_reset_and_events() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    e.json(&["policy", "apply", p(&sql)]);
    let s = e.json(&["stats"]);
    assert_eq!(s["generation"], 1);
    let rules: Vec<&str> = s["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["sql-data", "fs1-rest", "(default)"]);
    assert_eq!(s["global"]["writes_seen"], 0);
    let out = e
        .offline()
        .args(["stats", "--watch", "1", "--count", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.matches("Counters for policy generation 1").count(),
        2,
        "{text}"
    );
    let out = e
        .offline()
        .args(["--json", "stats", "--watch", "1", "--count", "2"])
        .output()
        .unwrap();
    let rounds: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[1]["generation"], 1);
    e.offline()
        .args(["stats", "--reset"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Counters reset."));
    let ev = e.json(&["events"]);
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["policy-changed", "stats-reset"]);
    assert_eq!(ev["events"][0]["value"], 2);
    e.offline()
        .arg("events")
        .assert()
        .success()
        .stdout(predicate::str::contains("policy-changed"));
    // --follow prints one JSON object per event per line and stops after --count polls.
    let out = e
        .offline()
        .args([
            "--json",
            "events",
            "--follow",
            "--count",
            "2",
            "--interval-ms",
            "20",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["kind"], "stats-reset");
}

#[test]
fn access_denied_says_run_elevated() {
    let e = Env::new();
    for args in [&["status"][..], &["policy", "show"], &["stats"]] {
        e.offline()
            .args(["--simulate", "access-denied"])
            .args(args)
            .assert()
            .code(4)
            .stderr(predicate::str::contains("access denied"))
            .stderr(predicate::str::contains("elevated"))
            .stderr(predicate::str::contains("0x80070005"));
    }
    e.offline()
        .env("FLUSHCTL_SIMULATE", "access-denied")
        .arg("load")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("loading a driver"))
        .stderr(predicate::str::contains("0x80070522"));
}

#[test]
fn version_mismatch_names_both_versions() {
    let e = Env::new();
    e.offline()
        .args(["--simulate", "client-version=7", "status"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains(
            "flushctl speaks protocol version 7",
        ))
        .stderr(predicate::str::contains(
            "the driver speaks protocol version 1",
        ));
}

#[test]
fn the_test_hook_is_checked() {
    let e = Env::new();
    e.offline()
        .args(["--simulate", "bogus", "status"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "not-loaded, access-denied, client-version=N",
        ));
    flushctl()
        .args(["--simulate", "access-denied", "status"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("only applies to --offline"));
    // A store fault must name a failure status: a success code, an unknown name or
    // bad hex is a usage error.
    for bad in [
        "registry-store-fails=0x00000000",
        "registry-store-fails=NO_SUCH_STATUS",
        "registry-store-fails=0xZZ",
    ] {
        e.offline()
            .args(["--simulate", bad, "status"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!("`{bad}`")))
            .stderr(predicate::str::contains("registry-store-fails[=STATUS]"));
    }
}

/// Labels of every callback-layer counter, in wire order.
fn callback_labels() -> Vec<&'static str> {
    flushguard_protocol::stats::CallbackCounter::ALL
        .iter()
        .map(|c| c.label())
        .collect()
}

/// The `callback_counters` object of `stats --json`: every label once, no other
/// key; returns the non-zero ones.
fn nonzero_callback_counters(stats: &Value) -> Vec<(String, u64)> {
    let m = stats["callback_counters"]
        .as_object()
        .expect("callback_counters");
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    let mut labels = callback_labels();
    keys.sort_unstable();
    labels.sort_unstable();
    assert_eq!(keys, labels);
    assert_eq!(keys.len(), 44);
    m.iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .filter(|(_, v)| *v != 0)
        .collect()
}

#[test]
fn stats_show_fail_open_causes_and_a_failed_registry_store() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    e.json(&["policy", "apply", p(&sql)]);
    let s = e.json(&["stats"]);
    assert_eq!(nonzero_callback_counters(&s), []);
    // --json lists the section in wire order.
    let out = e.offline().args(["--json", "stats"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // (After the section's key: `fast_io_disallowed` is also a rule counter.)
    let section = &text[text.find("\"callback_counters\"").unwrap()..];
    let positions: Vec<usize> = callback_labels()
        .iter()
        .map(|l| {
            section
                .find(&format!("\"{l}\": 0"))
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{section}");
    e.offline()
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Fail-open and skip causes: none counted (--all-causes lists every counter).",
        ));

    // The registry write of a persisted SetPolicy fails: the request fails with that
    // status and nothing changes, but the engine counts it and records an event.
    e.offline()
        .args([
            "--simulate",
            "registry-store-fails=INSUFFICIENT_RESOURCES",
            "policy",
            "apply",
            "--persist",
            p(&sql),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the driver rejected SetPolicy: 0xC000009A (INSUFFICIENT_RESOURCES)",
        ))
        .stderr(predicate::str::contains(
            "The driver could not write the policy to the registry",
        ))
        .stderr(predicate::str::contains(
            "the policy in force is still the previous one",
        ));
    let s = e.json(&["stats"]);
    assert_eq!(s["generation"], 1);
    assert_eq!(
        nonzero_callback_counters(&s),
        [("policy_store_failed".to_owned(), 1)]
    );
    e.offline()
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"\| fail-open and skip causes +\| count \|").unwrap())
        .stdout(predicate::str::is_match(r"\| policy_store_failed +\| +1 \|").unwrap())
        .stdout(predicate::str::contains("name_query_failed").not());
    // --all-causes: every counter has a row, zeros included.
    let out = e
        .offline()
        .args(["stats", "--all-causes"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for l in callback_labels() {
        let want = if l == "policy_store_failed" { 1 } else { 0 };
        let row = regex_row(l, want);
        assert!(row.eval(text.as_str()), "{l} = {want}:\n{text}");
    }
    let ev = e.json(&["events"]);
    let last = ev["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "registry-policy-rejected");
    assert_eq!(last["registry_op"], "store");
    assert_eq!(last["value"], 1);
    assert_eq!(last["status"], "0xC000009A");
    assert_eq!(last["status_name"], "INSUFFICIENT_RESOURCES");
    assert_eq!(last["generation"], 1);
    assert!(ev["events"][0].get("registry_op").is_none());
    e.offline()
        .arg("events")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "store: persisted SetPolicy could not write Parameters\\Policy (policy unchanged)",
        ));
    // Nothing was stored: the next driver load runs pass-through.
    e.offline().arg("unload").assert().success();
    e.offline().arg("load").assert().success();
    let st = e.json(&["status"]);
    assert_eq!(st["policy_generation"], 0);
    assert_eq!(st["policy_loaded"], false);
    // Without the fault the same persisted apply succeeds.
    e.json(&["policy", "apply", "--persist", p(&sql)]);
    let s = e.json(&["stats"]);
    assert_eq!(nonzero_callback_counters(&s), []);

    // --watch --json: each round carries the whole section; --reset zeroes it.
    e.offline()
        .args([
            "--simulate",
            "registry-store-fails",
            "policy",
            "apply",
            "--persist",
            p(&sql),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("0xC0000022 (ACCESS_DENIED)"));
    let out = e
        .offline()
        .args(["--json", "stats", "--watch", "1", "--count", "2", "--reset"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rounds: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 2);
    for r in &rounds {
        assert_eq!(
            nonzero_callback_counters(r),
            [("policy_store_failed".to_owned(), 1)]
        );
    }
    assert_eq!(nonzero_callback_counters(&e.json(&["stats"])), []);
}

/// A table row `| label | n |` (label padded, count right-aligned).
fn regex_row(label: &str, n: u64) -> predicates::str::RegexPredicate {
    predicate::str::is_match(format!(r"(?m)^\| {label} +\| +{n} \|$")).unwrap()
}

#[test]
fn an_unreadable_registry_policy_at_load_is_a_load_event() {
    let e = Env::new();
    let sql = e.file("sql.toml", SQL_POLICY);
    e.json(&["policy", "apply", "--persist", p(&sql)]);
    // Corrupt the stored Parameters\Policy value (as a damaged registry would be),
    // then reload: DriverEntry rejects it and runs pass-through.
    let mut st: Value = serde_json::from_slice(&std::fs::read(e.state()).unwrap()).unwrap();
    st["registry_policy"] = Value::from("deadbeef");
    std::fs::write(e.state(), serde_json::to_vec(&st).unwrap()).unwrap();
    e.offline().arg("unload").assert().success();
    e.offline().arg("load").assert().success();
    let ev = e.json(&["events"]);
    let events = ev["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{ev}");
    assert_eq!(events[0]["kind"], "registry-policy-rejected");
    assert_eq!(events[0]["registry_op"], "load");
    assert_eq!(events[0]["value"], 0);
    assert_eq!(events[0]["generation"], 0);
    assert_ne!(events[0]["status"], "0x00000000");
    e.offline()
        .arg("events")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "load: Parameters\\Policy could not be read or decoded at driver load \
             (running pass-through)",
        ));
    assert_eq!(nonzero_callback_counters(&e.json(&["stats"])), []);
}

#[test]
fn driver_not_loaded_says_how_to_load_it() {
    let e = Env::new();
    e.offline()
        .args(["--simulate", "not-loaded", "stats"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not loaded"))
        .stderr(predicate::str::contains("flushctl load"))
        .stderr(predicate::str::contains("0x80070002"));
}

fn generated_sample(e: &Env) -> PathBuf {
    let out = e.dir.path().join("sample.generated.csv");
    flushctl()
        .args([
            "gen-trace",
            "--out",
            p(&out),
            "--events",
            "400",
            "--seed",
            "3",
        ])
        .assert()
        .success();
    out
}

fn repo_example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn replay_of_the_generated_sample_under_the_example_policy() {
    let e = Env::new();
    let trace = generated_sample(&e);
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.contains("GENERATED synthetic workload"));
    let policy = repo_example("replay-sample.toml");
    let out = flushctl()
        .args([
            "--json",
            "replay",
            "--trace",
            p(&trace),
            "--map",
            "Z:=\\\\gen-fs01\\home",
            "--policy",
            p(&policy),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["counts"]["rows"], 400);
    assert_eq!(r["counts"]["malformed"], 0);
    let rule = |n: &str| {
        r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["rule"] == n)
            .unwrap()
            .clone()
    };
    // flush-after-write: one FlushGuard flush per governed log write, nothing left over.
    let logs = rule("logs");
    assert!(logs["writes"].as_u64().unwrap() > 0);
    assert_eq!(logs["flushes_issued"], logs["writes_governed"]);
    assert_eq!(logs["unflushed_bytes_with"], 0);
    assert_eq!(
        logs["engine_counters"]["flushes_filter"],
        logs["flushes_issued"]
    );
    // write-through: nothing flushed, nothing left unflushed.
    let db = rule("databases");
    assert_eq!(db["flushes_issued"], 0);
    assert_eq!(db["unflushed_bytes_with"], 0);
    // audit changes nothing.
    let backups = rule("backups");
    assert_eq!(backups["flushes_issued"], 0);
    assert_eq!(
        backups["unflushed_bytes_with"],
        backups["unflushed_bytes_without"]
    );
    // The human report has both tables.
    flushctl()
        .args([
            "replay",
            "--trace",
            p(&trace),
            "--map",
            "Z:=\\\\gen-fs01\\home",
            "--policy",
            p(&policy),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("Per rule"))
        .stdout(predicate::str::contains("Per file"))
        .stdout(predicate::str::contains("\\\\gen-fs01\\generated\\"));
}

#[test]
fn replay_defaults_to_the_engines_policy() {
    let e = Env::new();
    let trace = generated_sample(&e);
    let policy = repo_example("replay-sample.toml");
    e.json(&["policy", "apply", p(&policy)]);
    let r = e.json(&[
        "replay",
        "--trace",
        p(&trace),
        "--map",
        "Z:=\\\\gen-fs01\\home",
    ]);
    assert!(r["policy"].as_str().unwrap().contains("generation 1"));
    let direct: Value = serde_json::from_slice(
        &flushctl()
            .args([
                "--json",
                "replay",
                "--trace",
                p(&trace),
                "--map",
                "Z:=\\\\gen-fs01\\home",
                "--policy",
                p(&policy),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(r["totals"], direct["totals"]);
    #[cfg(not(windows))]
    flushctl()
        .args(["replay", "--trace", p(&trace)])
        .assert()
        .code(6)
        .stderr(predicate::str::contains(
            "replay --trace FILE --policy FILE",
        ));
}

#[test]
fn malformed_lines_are_reported_and_strict_stops() {
    let e = Env::new();
    let policy = e.file("p.toml", "[default]\nmode = \"flush-on-close\"\n");
    let trace = e.file(
        "bad.csv",
        "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
         \"1\",\"a.exe\",\"4\",\"CreateFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Options: Synchronous IO Non-Alert\"\r\n\
         \"1\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Offset: 0, Length: lots\"\r\n\
         \"1\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\"\r\n\
         \"1\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Offset: 0, Length: 1,000\"\r\n\
         \"1\",\"a.exe\",\"4\",\"CloseFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"\"\r\n",
    );
    let out = flushctl()
        .args([
            "--json",
            "replay",
            "--trace",
            p(&trace),
            "--policy",
            p(&policy),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("2 malformed line(s) skipped (first at line 3)"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["counts"]["malformed"], 2);
    assert_eq!(r["malformed"][0]["line"], 3);
    assert!(r["malformed"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("Length"));
    assert_eq!(r["malformed"][1]["line"], 4);
    assert_eq!(r["totals"]["writes"], 1);
    assert_eq!(r["totals"]["flushes_issued"], 1);
    let (strict, _) = strict_and_lenient_replay(&trace, &policy);
    strict
        .code(7)
        .stderr(predicate::str::contains("line 3"))
        .stderr(predicate::str::contains("--strict"));
}

/// `replay --strict` of `trace` under `policy` (its assertion, for the caller's exit
/// code and message checks), then the same replay without `--strict` as JSON, which
/// must succeed (the report).
fn strict_and_lenient_replay(
    trace: &std::path::Path,
    policy: &std::path::Path,
) -> (assert_cmd::assert::Assert, Value) {
    let strict = flushctl()
        .args([
            "replay",
            "--strict",
            "--trace",
            p(trace),
            "--policy",
            p(policy),
        ])
        .assert();
    let out = flushctl()
        .args([
            "--json",
            "replay",
            "--trace",
            p(trace),
            "--policy",
            p(policy),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    (strict, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn strict_rejects_a_record_cut_off_inside_a_quoted_field() {
    // Generated trace: the file ends inside the quoted Detail of its last record (a
    // capture copied while it was written, a truncated download), which loses the
    // write's I/O Flags. Python's csv module rejects this file with `strict=True`
    // ("_csv.Error: unexpected end of data"; checked with Python 3.11's
    // `csv.reader(f, strict=True)`); without `strict` it returns the record as here.
    let e = Env::new();
    let policy = e.file("p.toml", "[default]\nmode = \"flush-on-close\"\n");
    let trace = e.file(
        "cut.csv",
        "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
         \"1\",\"a.exe\",\"4\",\"CreateFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Options: Synchronous IO Non-Alert\"\r\n\
         \"2\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Offset: 0, Length: 4,096",
    );
    let (strict, r) = strict_and_lenient_replay(&trace, &policy);
    strict
        .code(7)
        .stderr(predicate::str::contains("line 3: "))
        .stderr(predicate::str::contains("unterminated quoted field"));
    // Without --strict the record is counted as malformed and not replayed.

    assert_eq!(r["counts"]["malformed"], 1);
    assert_eq!(r["malformed"][0]["line"], 3);
    assert_eq!(r["totals"]["writes"], 0);
}

#[test]
fn strict_rejects_misplaced_group_separators() {
    // Generated trace: `Length: 1,5` is not a number any locale prints (issue 10: it
    // was read as 15); `1,536` on the next line is.
    let e = Env::new();
    let policy = e.file("p.toml", "[default]\nmode = \"flush-on-close\"\n");
    let trace = e.file(
        "sep.csv",
        "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
         \"1\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Offset: 0, Length: 1,5\"\r\n\
         \"2\",\"a.exe\",\"4\",\"WriteFile\",\"\\\\s\\h\\f.txt\",\"SUCCESS\",\"Offset: 0, Length: 1,536\"\r\n",
    );
    let (strict, r) = strict_and_lenient_replay(&trace, &policy);
    strict
        .code(7)
        .stderr(predicate::str::contains("line 2: WriteFile: `Length: 1,5`"))
        .stderr(predicate::str::contains("misplaced thousands separators"));

    assert_eq!(r["counts"]["malformed"], 1);
    assert_eq!(r["malformed"][0]["line"], 2);
    assert_eq!(r["totals"]["write_bytes"], 1536);
}

#[test]
fn a_trace_rejected_as_a_whole_exits_7() {
    // Generated inputs: a ProcMon header and one row saved as UTF-16 (with and without
    // a byte order mark, both byte orders), an empty file, a file that is not a
    // Process Monitor CSV. Exit 7 is "invalid input" (docs/flushctl.md, Exit codes).
    let e = Env::new();
    let policy = e.file("p.toml", "[default]\nmode = \"pass\"\n");
    let text =
        "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
                \"1\",\"a.exe\",\"4\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"\r\n";
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "utf16le-bom.csv",
            [&[0xFF, 0xFE][..], &le].concat(),
            "UTF-16",
        ),
        (
            "utf16be-bom.csv",
            [&[0xFE, 0xFF][..], &be].concat(),
            "UTF-16",
        ),
        ("utf16le.csv", le.clone(), "UTF-16"),
        ("utf16be.csv", be.clone(), "UTF-16"),
        ("empty.csv", Vec::new(), "the trace is empty"),
        (
            "not.csv",
            b"hello,world\n1,2\n".to_vec(),
            "missing column(s)",
        ),
    ];
    for (name, bytes, message) in cases {
        let trace = e.dir.path().join(name);
        std::fs::write(&trace, bytes).unwrap();
        let out = flushctl()
            .args(["replay", "--trace", p(&trace), "--policy", p(&policy)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        if message == "UTF-16" {
            assert!(stderr.contains("re-save it as UTF-8"), "{name}: {stderr}");
            assert!(!stderr.contains("missing column"), "{name}: {stderr}");
        }
    }
}

#[test]
fn replay_input_errors() {
    let e = Env::new();
    let policy = e.file("p.toml", "[default]\nmode = \"pass\"\n");
    let not_csv = e.file("x.csv", "hello,world\n1,2\n");
    flushctl()
        .args(["replay", "--trace", p(&not_csv), "--policy", p(&policy)])
        .assert()
        .code(7)
        .stderr(predicate::str::contains("missing column(s)"))
        .stderr(predicate::str::contains("Operation"));
    flushctl()
        .args([
            "replay",
            "--trace",
            "/nonexistent.csv",
            "--policy",
            p(&policy),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent.csv"));
    flushctl()
        .args([
            "replay",
            "--trace",
            p(&not_csv),
            "--policy",
            p(&policy),
            "--map",
            "Z:fs\\x",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid --map"));
}

#[test]
fn gen_trace_is_deterministic() {
    let e = Env::new();
    let a = e.dir.path().join("a.csv");
    let b = e.dir.path().join("b.csv");
    for f in [&a, &b] {
        flushctl()
            .args([
                "gen-trace",
                "--out",
                p(f),
                "--events",
                "1000",
                "--seed",
                "9",
            ])
            .assert()
            .success();
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text.lines().count(), 1001);
}

#[test]
fn replay_models_group_commit_batching_from_the_trace_times() {
    // Generated trace: one handle on an SMB file; governed writes complete at
    // 0.000000, 0.000100, 0.000200, 0.005000 and 0.005300 s past 10:00:00 AM, one
    // write at an unusable time. With 1 000 µs flushes: the write at 0 leads
    // (flush 0..1000 µs); those at 100 and 200 µs share the next (1000..2000); the
    // one at 5000 leads (5000..6000) and the one at 5300 waits for 6000..7000:
    // 5 writes, 4 flushes; waits 1000, 1900, 1800, 1000, 1700 µs.
    let e = Env::new();
    let policy = e.file(
        "p.toml",
        "[[rule]]\nname = \"wal\"\nshare = '\\\\s\\h'\nmode = \"group-commit\"\nmax-batch = 8\n",
    );
    let row = |t: &str, op: &str, detail: &str| {
        format!(
            "\"{t}\",\"db.exe\",\"7\",\"{op}\",\"\\\\s\\h\\wal.log\",\"SUCCESS\",\"{detail}\"\r\n"
        )
    };
    let open =
        "Desired Access: Generic Write, Disposition: OpenIf, Options: Synchronous IO Non-Alert";
    let write = |off: u32| format!("Offset: {off}, Length: 512");
    let mut trace = String::from(
        "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n",
    );
    trace += &row("10:00:00.0000000 AM", "CreateFile", open);
    for (i, t) in [
        "10:00:00.0000000 AM",
        "10:00:00.0001000 AM",
        "10:00:00.0002000 AM",
        "10:00:00.0050000 AM",
        "10:00:00.0053000 AM",
        "soon",
    ]
    .iter()
    .enumerate()
    {
        trace += &row(t, "WriteFile", &write(512 * i as u32));
    }
    trace += &row("10:00:00.0090000 AM", "CloseFile", "");
    let trace = e.file("gc.csv", &trace);
    let replay = |extra: &[&str]| -> Value {
        let out = flushctl()
            .args([
                "--json",
                "replay",
                "--trace",
                p(&trace),
                "--policy",
                p(&policy),
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = replay(&[]);
    let g = &r["rules"][0]["group_commit"];
    assert_eq!(g["writes"], 5, "{g}");
    assert_eq!(g["writes_without_time"], 1);
    assert_eq!(g["flushes"], 4);
    assert_eq!(g["max_batch"], 8);
    assert_eq!(g["flush_latency_us"], 1000);
    assert_eq!(g["max_wait_us"], 1900);
    assert_eq!(
        g["mean_wait_us"],
        (1000 + 1900 + 1800 + 1000 + 1700) as f64 / 5.0
    );
    // With 100 µs flushes no write waits for another's: one flush each.
    let r = replay(&["--flush-latency-us", "100"]);
    assert_eq!(r["rules"][0]["group_commit"]["flushes"], 5);
    // Rules of other modes carry no model.
    assert!(r["rules"][1].get("group_commit").is_none());
}
