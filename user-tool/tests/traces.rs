//! `flushctl replay` on the real, published Process Monitor captures in
//! `../shared/traces/` (see its README for each file's source). The captures are read
//! from there at test time and never copied into the repository.
//!
//! Every expected figure below was counted independently of flushctl, with Python's
//! `csv` module over the same files (rows; per path: successful WriteFile rows without
//! `Paging I/O` and the sum of their `Length`, WriteFile rows with `Paging I/O` and their
//! bytes, successful FlushBuffersFile rows; and, replaying CreateFile/CloseFile/rename
//! per (PID, path), the handles closed after a write with no flush in between — the
//! flushes of flush-on-close — and the bytes written after a file's last flush).
//! In that count a flush's cache write-back — the successful `WriteFile` rows with
//! `Paging I/O, Synchronous Paging I/O` of the same path by the same PID directly
//! after its `FlushBuffersFile` row — is covered by the flush; any other paging write
//! marks the PID's newest open handle of the path (else the path's oldest one). The
//! same count gives the flush-on-close figures asserted for 05, 07, 09, 11 and 13.

use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value;

fn traces_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    assert!(
        dir.is_dir(),
        "the real captures are expected in {} (the repository's ../shared/traces)",
        dir.display()
    );
    dir
}

fn trace(name: &str) -> PathBuf {
    traces_dir().join(name)
}

fn policy(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Every capture is on local drives: these policies attach to local volumes.
const FLUSH_ON_CLOSE: &str = "attach-local-volumes = true\n[default]\nmode = \"flush-on-close\"\n";
const WRITE_THROUGH: &str = "attach-local-volumes = true\n[default]\nmode = \"write-through\"\n";

fn replay_json(trace: &PathBuf, policy: &PathBuf, extra: &[&str]) -> Value {
    let out = Command::cargo_bin("flushctl")
        .unwrap()
        .arg("--json")
        .arg("replay")
        .arg("--trace")
        .arg(trace)
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn file<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the report"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// (file name, data rows) of every capture, counted with Python's csv module.
const ROWS: &[(&str, u64)] = &[
    ("05-notepad-save-unicode-name-pp64.csv", 20),
    ("06-explorer-jumplist-flush-lock-pp32.csv", 35),
    ("07-notepad-save-bbbb-pp32.csv", 13),
    ("09-calc1-text-output-monitorAPIs.csv", 52),
    ("10-malware-rarsfx-drop-flush-sre.csv", 9226),
    ("11-gcc-compile-locale-comma-nbsp.csv", 9877),
    ("13-ransomware-sim-write-rename.csv", 368),
];

#[test]
fn every_capture_parses_with_zero_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(&dir, "foc.toml", FLUSH_ON_CLOSE);
    let mut seen: Vec<String> = std::fs::read_dir(traces_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    seen.sort();
    let listed: Vec<&str> = ROWS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        seen, listed,
        "a capture was added or removed: count its rows"
    );
    for (name, rows) in ROWS {
        let r = replay_json(&trace(name), &p, &["--strict"]);
        assert_eq!(u(&r["counts"], "malformed"), 0, "{name}");
        assert_eq!(u(&r["counts"], "rows"), *rows, "{name}");
        assert_eq!(u(&r["counts"], "without_known_open"), 0, "{name}");
    }
}

#[test]
fn notepad_unicode_name_05() {
    // 05-notepad-save-unicode-name-pp64.csv: one 70-byte WriteFile, closed, never flushed.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("05-notepad-save-unicode-name-pp64.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let f = file(&r, "C:\\Users\\test\\Downloads\\יוניקוד.txt");
    assert_eq!((u(f, "writes"), u(f, "write_bytes")), (1, 70));
    assert_eq!((u(f, "paging_writes"), u(f, "app_flushes")), (0, 0));
    assert_eq!(u(f, "unflushed_bytes_without"), 70);
    // flush-on-close: one flush at the CloseFile after the write.
    assert_eq!(u(f, "flushes_issued"), 1);
    assert_eq!(u(f, "unflushed_bytes_with"), 0);
}

#[test]
fn explorer_jumplist_flush_then_paging_write_06() {
    // 06-explorer-jumplist-flush-lock-pp32.csv: FlushBuffersFile, then a 4,096-byte
    // paging write (Non-cached, Paging I/O, Synchronous Paging I/O); no cached write.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("06-explorer-jumplist-flush-lock-pp32.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let f = file(
        &r,
        "C:\\Users\\test\\AppData\\Roaming\\Microsoft\\Windows\\Recent\\AutomaticDestinations\\918e0ecb43d17e23.automaticDestinations-ms",
    );
    assert_eq!(u(f, "writes"), 0);
    assert_eq!((u(f, "paging_writes"), u(f, "paging_bytes")), (1, 4096));
    assert_eq!(u(f, "app_flushes"), 1);
    assert_eq!(u(f, "unflushed_bytes_without"), 0);
    // The paging write is the flush's own write-back (it follows the FlushBuffersFile
    // row): the flush covers it, so flush-on-close has nothing left to flush at the
    // CloseFile (independent count: 0 flushes).
    assert_eq!(u(f, "flushes_issued"), 0);
    assert_eq!(u(&r["totals"], "flushes_issued"), 0);
    assert_eq!(u(f, "unflushed_bytes_with"), 0);
    // The engine's own counters agree with the per-file view.
    let default = r["rules"].as_array().unwrap().last().unwrap();
    assert_eq!(u(&default["engine_counters"], "app_flushes_seen"), 1);
    assert_eq!(u(&default["engine_counters"], "paging_io_passed"), 1);
}

#[test]
fn notepad_bbbb_with_an_empty_result_07() {
    // 07-notepad-save-bbbb-pp32.csv: one 109-byte write; one row has an empty Result.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("07-notepad-save-bbbb-pp32.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let f = file(&r, "C:\\Temp\\bbbb.txt");
    assert_eq!((u(f, "writes"), u(f, "write_bytes")), (1, 109));
    assert_eq!(u(f, "flushes_issued"), 1);
    assert_eq!(u(&r["counts"], "malformed"), 0);
}

#[test]
fn calc_eleven_buffered_writes_09() {
    // 09-calc1-text-output-monitorAPIs.csv: 11 cached writes, 43,485 bytes, no flush.
    let dir = tempfile::tempdir().unwrap();
    let name = "C:\\shared-Mac-mini-Porter\\calc\\calc-home\\calc1\\Debug\\my-total.txt";
    let r = replay_json(
        &trace("09-calc1-text-output-monitorAPIs.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let f = file(&r, name);
    assert_eq!((u(f, "writes"), u(f, "write_bytes")), (11, 43_485));
    assert_eq!(u(f, "unflushed_bytes_without"), 43_485);
    assert_eq!(
        (u(f, "flushes_issued"), u(f, "unflushed_bytes_with")),
        (1, 0)
    );
    // Under write-through every one of the 11 cached writes is forced through: 11
    // extra round trips, nothing left unflushed.
    let r = replay_json(
        &trace("09-calc1-text-output-monitorAPIs.csv"),
        &policy(&dir, "wt.toml", WRITE_THROUGH),
        &[],
    );
    let f = file(&r, name);
    assert_eq!(u(f, "extra_round_trips"), 11);
    assert_eq!(u(f, "flushes_issued"), 0);
    assert_eq!(u(f, "unflushed_bytes_with"), 0);
}

#[test]
fn rarsfx_write_flush_paging_10() {
    // 10-malware-rarsfx-drop-flush-sre.csv: seven dropped files, each one cached write,
    // one FlushBuffersFile, one paging write.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("10-malware-rarsfx-drop-flush-sre.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let base = "C:\\Users\\Sysuser\\AppData\\Local\\Temp\\RarSFX0\\";
    // (file, write bytes, paging bytes)
    for (n, wb, pb) in [
        ("pk.bin", 4_204, 8_192),
        ("inst.dat", 996, 4_096),
        ("bpkhk.dll", 24_576, 24_576),
        ("bpkwb.dll", 40_960, 40_960),
        ("bpk.exe", 438_272, 438_272),
        ("rinst.exe", 7_680, 8_192),
        ("vip01.JPG", 24_685, 28_672),
    ] {
        let f = file(&r, &format!("{base}{n}"));
        assert_eq!((u(f, "writes"), u(f, "write_bytes")), (1, wb), "{n}");
        assert_eq!(
            (u(f, "paging_writes"), u(f, "paging_bytes")),
            (1, pb),
            "{n}"
        );
        assert_eq!(u(f, "app_flushes"), 1, "{n}");
        assert_eq!(u(f, "unflushed_bytes_without"), 0, "{n}");
        // Each paging write is the write-back of the flush right before it: covered,
        // so the CloseFile needs no flush (independent count: 0 per file).
        assert_eq!(u(f, "flushes_issued"), 0, "{n}");
        assert_eq!(u(f, "unflushed_bytes_with"), 0, "{n}");
    }
    assert_eq!(u(&r["totals"], "flushes_issued"), 0);
    assert_eq!(u(&r["totals"], "app_flushes"), 7);
    assert_eq!(u(&r["totals"], "writes"), 7);
    // 9226 rows, mostly registry noise: 8301 rows are operations FlushGuard never sees.
    assert_eq!(u(&r["counts"], "other_rows"), 8301);
}

#[test]
fn gcc_locale_nbsp_numbers_11() {
    // 11-gcc-compile-locale-comma-nbsp.csv: U+00A0 thousands separators, `,` decimal
    // times; cck1WjCe gets 11 writes (50,318 bytes), ccGGGqhj.s one of 428 bytes.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("11-gcc-compile-locale-comma-nbsp.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    let f = file(&r, "C:\\Users\\fskor\\AppData\\Local\\Temp\\cck1WjCe");
    assert_eq!((u(f, "writes"), u(f, "write_bytes")), (11, 50_318));
    let g = file(&r, "C:\\Users\\fskor\\AppData\\Local\\Temp\\ccGGGqhj.s");
    assert_eq!((u(g, "writes"), u(g, "write_bytes")), (1, 428));
    assert_eq!(u(&r["totals"], "unflushed_bytes_without"), 50_746);
    assert_eq!(u(&r["totals"], "flushes_issued"), 2);
    assert_eq!(u(&r["totals"], "unflushed_bytes_with"), 0);
}

#[test]
fn ransomware_writes_then_renames_13() {
    // 13-ransomware-sim-write-rename.csv: 21 files written once each (274 bytes in
    // all), then renamed; the CloseFile rows name the new paths.
    let dir = tempfile::tempdir().unwrap();
    let r = replay_json(
        &trace("13-ransomware-sim-write-rename.csv"),
        &policy(&dir, "p.toml", FLUSH_ON_CLOSE),
        &[],
    );
    assert_eq!(u(&r["totals"], "writes"), 21);
    assert_eq!(u(&r["totals"], "write_bytes"), 274);
    assert_eq!(u(&r["totals"], "unflushed_files_without"), 21);
    // The handle moved with the rename, so each cleanup found its written handle.
    assert_eq!(u(&r["totals"], "flushes_issued"), 21);
    assert_eq!(u(&r["totals"], "unflushed_files_with"), 0);
    let f = file(&r, "C:\\ransomware_test\\README_RANSOM.txt");
    assert_eq!((u(f, "writes"), u(f, "write_bytes")), (1, 49));
}

#[test]
fn mapped_drive_makes_a_capture_remote() {
    // 07-notepad-save-bbbb-pp32.csv with C: mapped to a share: the file is on SMB, so
    // no attach-local-volumes is needed, and a share rule governs it.
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        &dir,
        "share.toml",
        "[[rule]]\nname = \"temp-share\"\nprovider = \"smb\"\nshare = '\\\\fs01\\c'\npath = \"temp/**\"\nmode = \"flush-on-close\"\n",
    );
    let r = replay_json(
        &trace("07-notepad-save-bbbb-pp32.csv"),
        &p,
        &["--map", "C:=\\\\fs01\\c"],
    );
    let f = file(&r, "C:\\Temp\\bbbb.txt");
    assert_eq!(f["name"], "\\Device\\Mup\\fs01\\c\\Temp\\bbbb.txt");
    assert_eq!(f["provider"], "smb");
    assert_eq!(f["rule"], "temp-share");
    assert_eq!(u(f, "flushes_issued"), 1);
    assert_eq!(u(&r["counts"], "local_not_attached"), 0);
    // Without the map the same capture is local and, unattached, never seen.
    let r = replay_json(&trace("07-notepad-save-bbbb-pp32.csv"), &p, &[]);
    assert!(r["files"].as_array().unwrap().is_empty());
    assert_eq!(u(&r["counts"], "local_not_attached"), 5);
}

#[test]
fn extra_columns_in_any_order_give_the_same_report() {
    // 09-calc1-text-output-monitorAPIs.csv rewritten with three more columns and the
    // columns shuffled, as ProcMon exports with a custom column set look.
    let dir = tempfile::tempdir().unwrap();
    let src = trace("09-calc1-text-output-monitorAPIs.csv");
    let mut rdr = csv::Reader::from_path(&src).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let order = [
        "Detail",
        "Sequence",
        "Operation",
        "TID",
        "Path",
        "Result",
        "Duration",
        "PID",
        "Time of Day",
        "Process Name",
    ];
    let shuffled = dir.path().join("shuffled.csv");
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_path(&shuffled)
        .unwrap();
    w.write_record(order).unwrap();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        let get = |h: &str| headers.iter().position(|x| x == h).map_or("", |j| &rec[j]);
        let row: Vec<String> = order
            .iter()
            .map(|h| match *h {
                "Sequence" => i.to_string(),
                "TID" => "1234".into(),
                "Duration" => "0.0000123".into(),
                h => get(h).to_owned(),
            })
            .collect();
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    let p = policy(&dir, "p.toml", FLUSH_ON_CLOSE);
    let a = replay_json(&src, &p, &[]);
    let b = replay_json(&shuffled, &p, &[]);
    assert_eq!(a["files"], b["files"]);
    assert_eq!(a["totals"], b["totals"]);
    assert_eq!(u(&b["counts"], "malformed"), 0);
}

/// The engine counters of a report added up over its rules.
fn engine_total(report: &Value, counter: &str) -> u64 {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u(&r["engine_counters"], counter))
        .sum()
}

#[test]
fn audit_predicts_every_enforcing_mode_on_every_capture() {
    // Issue 10 defect 4: on the same trace, audit's "would" counters equal what the
    // audited mode does when it enforces: the flushes it issues (after a write and at
    // close), the write-throughs it forces, the application flushes it upgrades. Every
    // capture, on its local drive and with C: mapped to a share.
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        ("write-through", ""),
        ("flush-after-write", ""),
        ("flush-on-close", ""),
        (
            "flush-after-write",
            "upgrade-app-flush = \"full\"\nflush = \"file-data-only\"\n",
        ),
        ("write-through", "upgrade-app-flush = \"full\"\n"),
    ];
    let mut names: Vec<PathBuf> = std::fs::read_dir(traces_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut mismatches = Vec::new();
    for (i, (mode, extra)) in modes.iter().enumerate() {
        for (where_, attach, map) in [
            ("local", "attach-local-volumes = true\n", None),
            ("share", "", Some("C:=\\\\fs01\\c")),
        ] {
            let enforce = policy(
                &dir,
                &format!("e{i}-{where_}.toml"),
                &format!("{attach}[default]\nmode = \"{mode}\"\n{extra}"),
            );
            let audit = policy(
                &dir,
                &format!("a{i}-{where_}.toml"),
                &format!("{attach}[default]\nmode = \"audit\"\naudit-mode = \"{mode}\"\n{extra}"),
            );
            let args: Vec<&str> = map.map_or(vec![], |m| vec!["--map", m]);
            for t in &names {
                let e = replay_json(t, &enforce, &args);
                let a = replay_json(t, &audit, &args);
                let issued =
                    engine_total(&e, "flushes_filter") + engine_total(&e, "flushes_native");
                assert_eq!(issued, u(&e["totals"], "flushes_issued"));
                let pairs = [
                    ("flush", issued, engine_total(&a, "audit_would_flush")),
                    (
                        "write-through",
                        engine_total(&e, "write_through_forced"),
                        engine_total(&a, "audit_would_write_through"),
                    ),
                    (
                        "upgrade",
                        engine_total(&e, "app_flushes_upgraded"),
                        engine_total(&a, "audit_would_upgrade"),
                    ),
                ];
                for (what, enforced, predicted) in pairs {
                    if enforced != predicted {
                        mismatches.push(format!(
                            "{} {mode} {extra:?} {where_}: {what} enforced {enforced}, audit predicted {predicted}",
                            t.file_name().unwrap().to_string_lossy()
                        ));
                    }
                }
                // Audit changes nothing.
                assert_eq!(u(&a["totals"], "flushes_issued"), 0);
                assert_eq!(u(&a["totals"], "write_throughs_forced"), 0);
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
