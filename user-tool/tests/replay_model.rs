//! How replay turns trace rows into callback calls: advanced-output operation names, fast
//! I/O, asynchronous handles, handles opened before the capture, IRP_MJ_CLOSE. Small
//! hand-written traces (generated here, not captures).

use assert_cmd::Command;
use serde_json::Value;

const HEADER: &str =
    "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n";
const FILE: &str = "\\\\fs1\\data\\f.txt";

fn row(op: &str, result: &str, detail: &str) -> String {
    format!("\"10:00:00.0000000 AM\",\"app.exe\",\"42\",\"{op}\",\"{FILE}\",\"{result}\",\"{detail}\"\r\n")
}

/// A policy with one rule `data` in `mode` for `\\fs1\data`.
fn data_rule(mode: &str) -> String {
    format!("[[rule]]\nname = \"data\"\nshare = '\\\\fs1\\data'\nmode = \"{mode}\"\n")
}

fn replay(rows: &[String], mode: &str) -> Value {
    let out = replay_text(
        &format!("{HEADER}{}", rows.concat()),
        &data_rule(mode),
        true,
    );
    serde_json::from_str(&out).unwrap()
}

const SYNC_OPEN: &str = "Desired Access: Generic Write, Disposition: OverwriteIf, Options: Synchronous IO Non-Alert, Non-Directory File, Attributes: N, ShareMode: Read, AllocationSize: 0, OpenResult: Created";
const ASYNC_OPEN: &str = "Desired Access: Generic Write, Disposition: OverwriteIf, Options: Non-Directory File, Attributes: N, ShareMode: Read, AllocationSize: 0, OpenResult: Created";

fn the_file(r: &Value) -> &Value {
    &r["files"][0]
}

#[test]
fn advanced_output_names_and_fast_io() {
    // ProcMon's advanced output: IRP names; a fast I/O write on a governed handle is
    // sent back as an IRP (FLT_PREOP_DISALLOW_FASTIO), then the IRP write follows.
    let rows = [
        row("IRP_MJ_CREATE", "SUCCESS", SYNC_OPEN),
        row(
            "FASTIO_WRITE",
            "FAST IO DISALLOWED",
            "Offset: 0, Length: 100",
        ),
        row("IRP_MJ_WRITE", "SUCCESS", "Offset: 0, Length: 100"),
        row("IRP_MJ_CLEANUP", "SUCCESS", ""),
        row("IRP_MJ_CLOSE", "SUCCESS", ""),
    ];
    let r = replay(&rows, "flush-on-close");
    let f = the_file(&r);
    assert_eq!(f["fast_io_disallowed"], 1);
    assert_eq!(f["writes"], 1);
    assert_eq!(f["flushes_issued"], 1);
    assert_eq!(f["unflushed_bytes_without"], 100);
    assert_eq!(f["unflushed_bytes_with"], 0);
    assert_eq!(f["name"], "\\Device\\Mup\\fs1\\data\\f.txt");
    assert_eq!(r["counts"]["events_replayed"], 5);
}

#[test]
fn asynchronous_handle_flushes_through_the_deferred_path() {
    // No Synchronous IO option: the write is asynchronous, its post-write runs at
    // DISPATCH_LEVEL and the write is pended to FlushGuard's flush worker.
    for (open, path) in [
        (SYNC_OPEN, "WriteSynchronized"),
        (ASYNC_OPEN, "FlushDeferred"),
    ] {
        let rows = [
            row("CreateFile", "SUCCESS", open),
            row("WriteFile", "SUCCESS", "Offset: 0, Length: 10"),
            row("WriteFile", "SUCCESS", "Offset: 10, Length: 10"),
        ];
        let r = replay(&rows, "flush-after-write");
        let f = the_file(&r);
        assert_eq!(f["flushes_issued"], 2, "{open}");
        assert_eq!(f["unflushed_bytes_with"], 0, "{open}");
        assert_eq!(f["unflushed_bytes_without"], 20, "{open}");
        assert_eq!(f["open_handles_at_end"], 1, "{open}");
        // Which path the callback logic took, from its own counters.
        assert_eq!(r["callback_counters"][path], 2, "{open}");
        assert_eq!(r["callback_counters"]["FlushOk"], 2, "{open}");
    }
}

#[test]
fn write_through_forces_create_and_write_flags() {
    let rows = [
        row("CreateFile", "SUCCESS", SYNC_OPEN),
        row("WriteFile", "SUCCESS", "Offset: 0, Length: 4,096"),
        row(
            "WriteFile",
            "SUCCESS",
            "Offset: 4,096, Length: 4,096, I/O Flags: Non-cached",
        ),
        row("CloseFile", "SUCCESS", ""),
    ];
    let r = replay(&rows, "write-through");
    let f = the_file(&r);
    assert_eq!(f["flushes_issued"], 0);
    assert_eq!(f["unflushed_bytes_with"], 0);
    assert_eq!(f["unflushed_bytes_without"], 8192);
    // Only the cached write costs a round trip of its own.
    assert_eq!(f["extra_round_trips"], 1);
    assert!(f["write_throughs_forced"].as_u64().unwrap() >= 1);
}

#[test]
fn handles_opened_before_the_capture_are_reported_not_governed() {
    let rows = [
        row("WriteFile", "SUCCESS", "Offset: 0, Length: 5"),
        row("FlushBuffersFile", "SUCCESS", ""),
        row("CloseFile", "SUCCESS", ""),
    ];
    let r = replay(&rows, "flush-after-write");
    assert_eq!(r["counts"]["without_known_open"], 3);
    let f = the_file(&r);
    assert_eq!(f["writes"], 1);
    assert_eq!(f["writes_governed"], 0);
    assert_eq!(f["flushes_issued"], 0);
    assert_eq!(f["rule"], "data");
}

#[test]
fn failed_and_pending_writes_are_not_counted() {
    let rows = [
        row("CreateFile", "SUCCESS", SYNC_OPEN),
        row("WriteFile", "DISK FULL", "Offset: 0, Length: 5"),
        row("WriteFile", "", "Offset: 5, Length: 5"),
        row("CloseFile", "SUCCESS", ""),
    ];
    let r = replay(&rows, "flush-on-close");
    let f = the_file(&r);
    assert_eq!(f["writes"], 0);
    assert_eq!(f["flushes_issued"], 0);
    assert_eq!(r["counts"]["malformed"], 0);
}

#[test]
fn paging_write_after_close_uses_the_cleaned_file_object() {
    // The lazy writer (System, PID 4) writes the pages after CloseFile: the file object
    // lives until IRP_MJ_CLOSE; after it, the paging write has no known file object.
    let lazy = |len: &str| {
        format!(
            "\"10:00:01.0000000 AM\",\"System\",\"4\",\"WriteFile\",\"{FILE}\",\"SUCCESS\",\"Offset: 0, Length: {len}, I/O Flags: Non-cached, Paging I/O\"\r\n"
        )
    };
    let rows = [
        row("CreateFile", "SUCCESS", SYNC_OPEN),
        row("WriteFile", "SUCCESS", "Offset: 0, Length: 100"),
        row("CloseFile", "SUCCESS", ""),
        lazy("4,096"),
        row("IRP_MJ_CLOSE", "SUCCESS", ""),
        lazy("4,096"),
    ];
    let r = replay(&rows, "flush-on-close");
    let f = the_file(&r);
    assert_eq!(f["paging_writes"], 2);
    assert_eq!(f["paging_bytes"], 8192);
    assert_eq!(r["counts"]["without_known_open"], 1);
}

const WRITE_BACK: &str =
    "Offset: 0, Length: 4,096, I/O Flags: Non-cached, Paging I/O, Synchronous Paging I/O, Priority: Normal";

#[test]
fn a_flush_covers_its_own_write_back_but_nothing_after_it() {
    // The cache write-back of a FlushBuffersFile (synchronous paging writes of that
    // file by that process, listed right after it) happens inside the flush: the close
    // needs no flush. Two write-back rows in a row are both inside.
    let covered = [
        row("CreateFile", "SUCCESS", SYNC_OPEN),
        row("WriteFile", "SUCCESS", "Offset: 0, Length: 5000"),
        row("FlushBuffersFile", "SUCCESS", ""),
        row("WriteFile", "SUCCESS", WRITE_BACK),
        row("WriteFile", "SUCCESS", WRITE_BACK),
        row("CloseFile", "SUCCESS", ""),
    ];
    let r = replay(&covered, "flush-on-close");
    let f = the_file(&r);
    assert_eq!(
        (f["writes"].as_u64(), f["paging_writes"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(f["app_flushes"], 1);
    assert_eq!(f["flushes_issued"], 0);
    assert_eq!(f["unflushed_bytes_with"], 0);

    // A user write after the flush, a failed flush, or a paging write that does not
    // directly follow the flush (another operation in between: the flush returned)
    // leaves the handle written since its last flush: one flush at close.
    for (case, middle) in [
        (
            "user write after the flush",
            vec![
                row("FlushBuffersFile", "SUCCESS", ""),
                row("WriteFile", "SUCCESS", WRITE_BACK),
                row("WriteFile", "SUCCESS", "Offset: 5000, Length: 10"),
            ],
        ),
        (
            "failed flush",
            vec![
                row("FlushBuffersFile", "ACCESS DENIED", ""),
                row("WriteFile", "SUCCESS", WRITE_BACK),
            ],
        ),
        (
            "paging write after the flush returned",
            vec![
                row("FlushBuffersFile", "SUCCESS", ""),
                row("SetEndOfFileInformationFile", "SUCCESS", "EndOfFile: 5,000"),
                row("WriteFile", "SUCCESS", WRITE_BACK),
            ],
        ),
        (
            "asynchronous paging write (mapped page writer) inside the window",
            vec![
                row("FlushBuffersFile", "SUCCESS", ""),
                row(
                    "WriteFile",
                    "SUCCESS",
                    "Offset: 0, Length: 4,096, I/O Flags: Non-cached, Paging I/O, Priority: Normal",
                ),
            ],
        ),
    ] {
        let mut rows = vec![
            row("CreateFile", "SUCCESS", SYNC_OPEN),
            row("WriteFile", "SUCCESS", "Offset: 0, Length: 5000"),
        ];
        rows.extend(middle);
        rows.push(row("CloseFile", "SUCCESS", ""));
        let r = replay(&rows, "flush-on-close");
        assert_eq!(the_file(&r)["flushes_issued"], 1, "{case}");
    }
}

#[test]
fn named_pipes_are_reported_as_never_governed() {
    // Under a flushing default, a remote named pipe (`\\srv\pipe\x`) is passed through
    // like the driver does: no flush, its own report row; `\\srv\pipes` is governed.
    let mut rows = String::from(HEADER);
    for path in [r"\\srv\pipe\x", r"\\srv\pipes\x"] {
        for (op, detail) in [
            ("CreateFile", SYNC_OPEN),
            ("WriteFile", "Offset: 0, Length: 100"),
            ("FlushBuffersFile", ""),
            ("CloseFile", ""),
        ] {
            rows.push_str(&format!(
                "\"10:00:00.0000000 AM\",\"app.exe\",\"42\",\"{op}\",\"{path}\",\"SUCCESS\",\"{detail}\"\r\n"
            ));
        }
    }
    let out = replay_text(&rows, "[default]\nmode = \"flush-after-write\"\n", true);
    let r: Value = serde_json::from_str(&out).unwrap();
    let files = r["files"].as_array().unwrap();
    let pipe = files.iter().find(|f| f["path"] == r"\\srv\pipe\x").unwrap();
    assert_eq!(
        pipe["rule"],
        "(never governed: named pipe / mailslot share)"
    );
    assert_eq!(pipe["mode"], "pass");
    assert_eq!(pipe["flushes_issued"], 0);
    assert_eq!(pipe["writes_governed"], 0);
    assert_eq!(pipe["app_flushes_upgraded"], 0);
    let pipes = files
        .iter()
        .find(|f| f["path"] == r"\\srv\pipes\x")
        .unwrap();
    assert_eq!(pipes["rule"], "(default)");
    assert_eq!(pipes["flushes_issued"], 1);
    let rules = r["rules"].as_array().unwrap();
    assert_eq!(rules[0]["rule"], "(default)");
    assert_eq!(rules[0]["files"], 1);
    assert_eq!(rules[1]["rule"], pipe["rule"]);
    assert_eq!(rules[1]["files"], 1);
    assert_eq!(r["callback_counters"]["IpcShareExempt"], 1);
}

/// Runs `flushctl [--json] replay --strict` on `trace` (the whole CSV text) under `policy`
/// (TOML text); returns stdout.
fn replay_text(trace: &str, policy: &str, json: bool) -> String {
    replay_text_with(trace, policy, json, &[])
}

/// [`replay_text`] with more replay options (`extra`).
fn replay_text_with(trace: &str, policy: &str, json: bool, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.csv");
    std::fs::write(&t, trace).unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, policy).unwrap();
    let mut cmd = Command::cargo_bin("flushctl").unwrap();
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .args(["replay", "--strict"])
        .args(extra)
        .arg("--trace")
        .arg(&t)
        .arg("--policy")
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const LOCAL_FLUSH_ON_CLOSE: &str =
    "attach-local-volumes = true\n[default]\nmode = \"flush-on-close\"\n";

#[test]
fn an_application_flush_on_a_handle_opened_before_the_capture_counts() {
    // Issue 10's smallest reproduction (a generated trace, not a capture): a write and
    // a successful FlushBuffersFile on a handle the process opened before the capture
    // started. The flush empties the file's cache: 0 bytes unflushed, 1 flush.
    let trace = "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\n\
                 \"1\",\"a.exe\",\"7\",\"WriteFile\",\"C:\\x.log\",\"SUCCESS\",\"Offset: 0, Length: 4,096\"\n\
                 \"2\",\"a.exe\",\"7\",\"FlushBuffersFile\",\"C:\\x.log\",\"SUCCESS\",\"\"\n";
    let r: Value = serde_json::from_str(&replay_text(trace, LOCAL_FLUSH_ON_CLOSE, true)).unwrap();
    assert_eq!(r["counts"]["without_known_open"], 2);
    let f = the_file(&r);
    assert_eq!(f["path"], "C:\\x.log");
    assert_eq!(f["writes"], 1);
    assert_eq!(f["app_flushes"], 1);
    assert_eq!(f["unflushed_bytes_without"], 0);
    assert_eq!(f["unflushed_bytes_with"], 0);
    assert_eq!(r["totals"]["app_flushes"], 1);
    assert_eq!(r["totals"]["unflushed_files_without"], 0);
    let text = replay_text(trace, LOCAL_FLUSH_ON_CLOSE, false);
    assert!(
        text.contains("At the end of the trace: 0 file(s) / 0 B unflushed as traced"),
        "{text}"
    );
    assert!(
        text.contains("the applications issued 1 flush(es) themselves"),
        "{text}"
    );
}

#[test]
fn a_flush_empties_the_file_cache_whichever_handle_issues_it() {
    // Generated trace. The registry-hive pattern of issue 10 on a log opened before the
    // capture (write, FlushBuffersFile, its synchronous paging write-back; five times),
    // then a file written through a handle opened during the capture by PID 7 and
    // flushed through a handle PID 8 opened before the capture.
    let line = |pid: &str, op: &str, path: &str, detail: &str| {
        format!("\"1\",\"a.exe\",\"{pid}\",\"{op}\",\"{path}\",\"SUCCESS\",\"{detail}\"\r\n")
    };
    let mut trace = String::from(HEADER);
    for offset in ["0", "4,096", "8,192", "12,288", "16,384"] {
        let detail = format!("Offset: {offset}, Length: 4,096");
        trace.push_str(&line("7", "WriteFile", "C:\\hive.LOG1", &detail));
        trace.push_str(&line("7", "FlushBuffersFile", "C:\\hive.LOG1", ""));
        trace.push_str(&line("7", "WriteFile", "C:\\hive.LOG1", WRITE_BACK));
    }
    trace.push_str(&line("7", "CreateFile", "C:\\shared.dat", SYNC_OPEN));
    trace.push_str(&line(
        "7",
        "WriteFile",
        "C:\\shared.dat",
        "Offset: 0, Length: 100",
    ));
    trace.push_str(&line("8", "FlushBuffersFile", "C:\\shared.dat", ""));
    let r: Value = serde_json::from_str(&replay_text(&trace, LOCAL_FLUSH_ON_CLOSE, true)).unwrap();
    let files = r["files"].as_array().unwrap();
    let hive = files.iter().find(|f| f["path"] == "C:\\hive.LOG1").unwrap();
    assert_eq!(hive["writes"], 5);
    assert_eq!(hive["paging_writes"], 5);
    assert_eq!(hive["app_flushes"], 5);
    assert_eq!(hive["unflushed_bytes_without"], 0);
    assert_eq!(hive["unflushed_bytes_with"], 0);
    let shared = files
        .iter()
        .find(|f| f["path"] == "C:\\shared.dat")
        .unwrap();
    assert_eq!(shared["app_flushes"], 1);
    assert_eq!(shared["unflushed_bytes_without"], 0);
    // PID 7's own handle is still written since *its* last flush: flush-on-close
    // would flush it at its close; nothing is unflushed at the end of the trace.
    assert_eq!(shared["unflushed_bytes_with"], 0);
    assert_eq!(r["totals"]["app_flushes"], 6);
}

#[test]
fn a_handle_keeps_its_path_while_the_path_cache_is_emptied() {
    // The replay caches resolved paths (at least 1 024) and keys its per-path handle
    // table by an id per folded path; emptying the cache must never give a path with
    // a tracked handle a second id. 5 000 other paths between the operations empty
    // the cache several times (with --max-files 10 it holds 1 024); the handle is
    // written, renamed (to another case of the new name) and written again.
    let at = |path: &str, op: &str, result: &str, detail: &str| {
        format!("\"10:00:00.0000000 AM\",\"app.exe\",\"42\",\"{op}\",\"{path}\",\"{result}\",\"{detail}\"\r\n")
    };
    let others = |from: usize| -> Vec<String> {
        (from..from + 5000)
            .map(|i| {
                at(
                    &format!("\\\\fs1\\data\\other-{i}.txt"),
                    "CreateFile",
                    "NAME NOT FOUND",
                    "",
                )
            })
            .collect()
    };
    let (f, g) = ("\\\\fs1\\data\\f.txt", "\\\\fs1\\data\\G.txt");
    let mut rows = vec![at(f, "CreateFile", "SUCCESS", SYNC_OPEN)];
    rows.extend(others(0));
    rows.push(at(f, "WriteFile", "SUCCESS", "Offset: 0, Length: 10"));
    rows.push(at(
        f,
        "SetRenameInformationFile",
        "SUCCESS",
        "ReplaceIfExists: False, FileName: \\\\fs1\\data\\G.txt",
    ));
    rows.extend(others(5000));
    rows.push(at(
        "\\\\fs1\\data\\g.TXT",
        "WriteFile",
        "SUCCESS",
        "Offset: 10, Length: 10",
    ));
    rows.push(at(g, "CloseFile", "SUCCESS", ""));
    let out = replay_text_with(
        &format!("{HEADER}{}", rows.concat()),
        &data_rule("flush-after-write"),
        true,
        &["--max-files", "10"],
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["counts"]["without_known_open"], 0, "{}", r["counts"]);
    let file = &r["files"][0];
    assert_eq!(file["writes"], 2);
    assert_eq!(file["writes_governed"], 2);
    assert_eq!(file["flushes_issued"], 2);
}
