//! Kernel stack frames stay small in the unoptimised driver build.
//!
//! Kernel stacks are 12-24 KiB (x64: `KERNEL_STACK_SIZE` 0x6000). A function whose
//! frame exceeds one 4 KiB page makes the compiler call `__chkstk`, which ntoskrnl.exe
//! does not export to drivers and which the driver does not link (DESIGN.md section 3).
//! Optimised builds usually fold the temporaries away, the dev profile does not, so
//! this test builds the dev-profile driver for `x86_64-pc-windows-msvc` (in its own
//! target directory, with the workspace's `.cargo/config.toml`) and checks that
//! - it links (an unresolved `__chkstk` fails the link, naming the function);
//! - the linker map defines no `__chkstk` (nobody papered over it with a stub);
//! - no function reserves 4 KiB or more with `sub rsp, imm` (llvm-objdump).
//!
//! Needs the `x86_64-pc-windows-msvc` target, clang and llvm (`scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// One page: the frame size from which the compiler emits a `__chkstk` probe.
const PAGE: u64 = 4096;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn output_of(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error} (run scripts/setup.sh)"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `sub rsp, N` frame reservations in an Intel-syntax disassembly: (bytes, function).
fn frames(disassembly: &str) -> Vec<(u64, String)> {
    let mut function = String::new();
    let mut out = Vec::new();
    for line in disassembly.lines() {
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            function = name.to_owned();
            continue;
        }
        let Some(rest) = line.split("sub").nth(1) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(imm) = rest.strip_prefix("rsp, ") {
            if let Ok(bytes) = imm.trim().parse::<u64>() {
                out.push((bytes, function.clone()));
            }
        }
    }
    out
}

#[test]
fn frame_parser_reads_llvm_objdump_intel_output() {
    let sample = "0000000180001000 <f>:\n180001000: \tsub\trsp, 4120\n\
                  0000000180002000 <g>:\n180002000: \tsub\trsp, 40\n\
                  180002004: \tsub\trax, 99999\n";
    assert_eq!(
        frames(sample),
        vec![(4120, "f".to_owned()), (40, "g".to_owned())]
    );
}

#[test]
fn debug_kernel_build_links_without_chkstk() {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel_stack");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let (ok, log) = output_of(
        Command::new(cargo)
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target_dir)
            .args([
                "build",
                "--target",
                "x86_64-pc-windows-msvc",
                "-p",
                "flushguard",
            ]),
    );
    assert!(
        ok,
        "the dev-profile driver does not link{}:\n{log}",
        if log.contains("__chkstk") {
            " (a stack frame over 4 KiB needs __chkstk: shrink the function named below)"
        } else {
            ""
        }
    );
    let debug = target_dir.join("x86_64-pc-windows-msvc").join("debug");
    let image = debug.join("flushguard.dll");
    assert!(image.is_file(), "{} not built", image.display());

    // The linker map (build.rs passes /MAP) must not define __chkstk either.
    let build = debug.join("build");
    let maps: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path().join("out").join("flushguard.map");
            p.is_file().then_some(p)
        })
        .collect();
    assert!(
        !maps.is_empty(),
        "no flushguard.map under {}",
        build.display()
    );
    for map in maps {
        let text = std::fs::read_to_string(&map).unwrap();
        assert!(
            !text.contains("__chkstk"),
            "{} defines or imports __chkstk",
            map.display()
        );
    }

    let (ok, disassembly) = output_of(
        Command::new("llvm-objdump")
            .args(["-d", "--no-show-raw-insn", "-M", "intel"])
            .arg(&image),
    );
    assert!(ok, "llvm-objdump failed: {disassembly}");
    let frames = frames(&disassembly);
    assert!(
        frames.len() > 100,
        "disassembly has too few frames to be the driver"
    );
    let (largest, _) = frames.iter().max().cloned().unwrap();
    eprintln!(
        "{} frames, largest {largest} bytes (limit {PAGE})",
        frames.len()
    );
    let big: Vec<_> = frames.iter().filter(|(b, _)| *b >= PAGE).collect();
    assert!(big.is_empty(), "frames of 4 KiB or more: {big:?}");
}
