//! `flushctl durability run | verify | witness` end to end: exit codes, JSON, the loss
//! kinds verify tells apart, and the remote witness on a loopback address.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn flushctl() -> Command {
    let mut c = Command::cargo_bin("flushctl").unwrap();
    c.env_remove("FLUSHCTL_STATE")
        .env_remove("FLUSHCTL_SIMULATE");
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn run_json(args: &[&str]) -> Value {
    let out = flushctl()
        .args(["--json", "durability", "run"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `durability verify --json`: (exit code, report).
fn verify_json(target: &Path, witness: &Path) -> (i32, Value) {
    let out = flushctl()
        .args(["--json", "durability", "verify", "--target", p(target)])
        .args(["--witness", p(witness)])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn at(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

#[test]
fn run_then_verify_finds_everything() {
    let d = Dir::new();
    let (t, w) = (d.at("t.dat"), d.at("w.fgw"));
    let r = run_json(&[
        "--target",
        p(&t),
        "--witness",
        p(&w),
        "--records",
        "25",
        "--threads",
        "3",
        "--record-size",
        "1024",
        "--pattern",
        "flush",
    ]);
    assert_eq!(r["acknowledged"], 75);
    assert_eq!(r["pattern"], "flush");
    assert_eq!(r["writers"].as_array().unwrap().len(), 3);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 75 * 1024);
    let (code, v) = verify_json(&t, &w);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["run_hex"], r["run"]);
    for wr in v["writers"].as_array().unwrap() {
        assert_eq!(
            (wr["acknowledged"].as_u64(), wr["present"].as_u64()),
            (Some(25), Some(25))
        );
        assert_eq!(wr["lost"], 0);
        assert!(wr["first_lost"].is_null());
    }
    flushctl()
        .args([
            "durability",
            "verify",
            "--target",
            p(&t),
            "--witness",
            p(&w),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "OK: all 75 acknowledged records are intact",
        ));
}

#[test]
fn verify_tells_torn_corrupt_stale_and_missing_apart() {
    let d = Dir::new();
    let (t, w1, w2) = (d.at("t.dat"), d.at("w1.fgw"), d.at("w2.fgw"));
    let args = |w: &Path| {
        vec![
            "--target".to_owned(),
            p(&t).to_owned(),
            "--witness".to_owned(),
            p(w).to_owned(),
            "--records".to_owned(),
            "8".to_owned(),
        ]
    };
    let a1 = args(&w1);
    run_json(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    let first = std::fs::read(&t).unwrap();
    let a2 = args(&w2);
    run_json(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    let mut data = std::fs::read(&t).unwrap();
    // record 1: the previous run's record is back (stale)
    data[4096..8192].copy_from_slice(&first[4096..8192]);
    // record 2: only its first sector reached the disk (torn)
    data[8192 + 512..12288].fill(0);
    // record 3: a flipped bit (corrupt)
    data[12288 + 1000] ^= 0x10;
    // records 6 and 7: the file was cut (missing)
    data.truncate(6 * 4096);
    std::fs::write(&t, &data).unwrap();
    let (code, v) = verify_json(&t, &w2);
    assert_eq!(code, 8, "{v}");
    let wr = &v["writers"][0];
    for (k, n) in [
        ("acknowledged", 8),
        ("present", 3),
        ("lost", 5),
        ("stale", 1),
        ("torn", 1),
        ("corrupt", 1),
        ("missing", 2),
        ("first_lost", 1),
    ] {
        assert_eq!(wr[k], n, "{k}: {v}");
    }
    flushctl()
        .args([
            "durability",
            "verify",
            "--target",
            p(&t),
            "--witness",
            p(&w2),
        ])
        .assert()
        .code(8)
        .stdout(predicate::str::contains(
            "LOST: 5 of 8 acknowledged records",
        ));
}

#[test]
fn unacknowledged_records_and_a_torn_witness_tail_are_not_losses() {
    let d = Dir::new();
    let (t, w) = (d.at("t.dat"), d.at("w.fgw"));
    run_json(&["--target", p(&t), "--witness", p(&w), "--records", "5"]);
    // The crash came after record 4 was written but before its ack was complete.
    let mut wit = std::fs::read(&w).unwrap();
    wit.truncate(wit.len() - 40 + 13);
    std::fs::write(&w, &wit).unwrap();
    let (code, v) = verify_json(&t, &w);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["writers"][0]["acknowledged"], 4);
    assert_eq!(v["writers"][0]["unacknowledged"], 1);
    assert_eq!(v["witness_torn_tail"], 13);
}

#[test]
fn bad_arguments_and_inputs_get_clear_errors() {
    let d = Dir::new();
    let (t, w) = (d.at("t.dat"), d.at("w.fgw"));
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
        .args(["--records", "1", "--record-size", "10"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("record size 10 bytes is outside"));
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--records", "1"])
        .assert()
        .code(2);
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
        .assert()
        .code(2);
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
        .args(["--duration", "3 days"])
        .assert()
        .code(2);
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
        .args(["--records", "1", "--threads", "0"])
        .assert()
        .code(2);
    if !cfg!(windows) {
        flushctl()
            .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
            .args(["--records", "1", "--pattern", "create-write-through"])
            .assert()
            .code(6)
            .stderr(predicate::str::contains("Windows only"));
    }
    run_json(&["--target", p(&t), "--witness", p(&w), "--records", "1"]);
    flushctl()
        .args(["durability", "run", "--target", p(&t), "--witness", p(&w)])
        .args(["--records", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"));
    std::fs::write(d.at("junk.fgw"), [7u8; 80]).unwrap();
    flushctl()
        .args(["durability", "verify", "--target", p(&t), "--witness"])
        .arg(d.at("junk.fgw"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad witness entry magic"));
    flushctl()
        .args(["durability", "verify", "--witness", p(&w), "--target"])
        .arg(d.at("nope.dat"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("reading target"));
}

/// A `flushctl durability witness` child on 127.0.0.1, killed (by its own handle) when
/// dropped.
struct WitnessProcess(Child);

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn remote_witness_on_loopback() {
    let d = Dir::new();
    let wdir = d.at("witness");
    let bin = assert_cmd::cargo::cargo_bin("flushctl");
    let mut child = WitnessProcess(
        std::process::Command::new(bin)
            .args(["durability", "witness", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&wdir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let t = d.at("t.dat");
    let r = run_json(&[
        "--target",
        p(&t),
        "--witness-addr",
        &addr,
        "--records",
        "20",
        "--threads",
        "2",
        "--pattern",
        "write-through",
    ]);
    assert_eq!(r["acknowledged"], 40);
    let wfile = wdir.join(format!("{}.fgw", r["run"].as_str().unwrap()));
    let (code, v) = verify_json(&t, &wfile);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["writers"][1]["present"], 20);
    // A witness that is not there.
    drop(child);
    flushctl()
        .args([
            "durability",
            "run",
            "--target",
            p(&t),
            "--witness-addr",
            &addr,
        ])
        .args(["--records", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("remote witness"));
}

#[test]
fn smb_targets_get_clear_errors() {
    let d = Dir::new();
    let w = d.at("w.fgw");
    let run = |target: &str| {
        let mut c = flushctl();
        c.env_remove("FLUSHCTL_SMB_PASSWORD")
            .args(["durability", "run", "--target", target, "--witness", p(&w)])
            .args(["--records", "1"])
            .write_stdin("");
        c
    };
    for (url, says) in [
        ("smb://u:pw@127.0.0.1/s/t.dat", "FLUSHCTL_SMB_PASSWORD"),
        ("smb://127.0.0.1/s/t.dat", "without a user"),
        ("smb://u@127.0.0.1:0/s/t.dat", "bad port `0`"),
        ("smb://u@127.0.0.1/s", "without a file in the share"),
        ("smb://u@127.0.0.1/s/a?b", "cannot contain"),
    ] {
        run(url)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    // A well-formed URL without a password and no terminal to ask on.
    run("smb://u@127.0.0.1:1/s/t.dat")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no password for smb://u@127.0.0.1:1/s/t.dat",
        ));
    // Nothing listens on port 1 of the loopback address: a connect error, exit 1.
    run("smb://u@127.0.0.1:1/s/t.dat")
        .env("FLUSHCTL_SMB_PASSWORD", "x")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "connecting to smb://u@127.0.0.1:1/s/t.dat",
        ));
    assert!(
        !w.exists(),
        "no witness is created before the target is reached"
    );
}
