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

/// `sub rsp, N` frame reservations in an Intel-syntax disassembly without raw
/// bytes: (bytes, instruction address).
fn frames(disassembly: &str) -> Vec<(u64, u64)> {
    disassembly
        .lines()
        .filter_map(|line| {
            let (address, instruction) = line.split_once(':')?;
            let address = u64::from_str_radix(address.trim(), 16).ok()?;
            let mut words = instruction.split_whitespace();
            if words.next()? != "sub" || words.next()? != "rsp," {
                return None;
            }
            Some((words.next()?.parse().ok()?, address))
        })
        .collect()
}

/// Code symbols of an lld-link `/MAP` file: (virtual address, mangled name), sorted.
/// Lines look like ` 0001:00000100   _ZN...E   0000000180001100   lib:object`.
fn code_symbols(map: &str) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = map
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if !words.next()?.starts_with("0001:") {
                return None;
            }
            let name = words.next()?;
            let va = u64::from_str_radix(words.next()?, 16).ok()?;
            Some((va, name.to_owned()))
        })
        .collect();
    out.sort();
    out
}

/// The symbol containing address `at` (the closest one at or below it).
fn symbol_at(symbols: &[(u64, String)], at: u64) -> &str {
    let i = symbols.partition_point(|(va, _)| *va <= at);
    i.checked_sub(1)
        .and_then(|i| symbols.get(i))
        .map_or("?", |(_, name)| name.as_str())
}

#[test]
fn frame_and_map_parsers_read_llvm_output() {
    let sample = "0000000180001000 <.text>:\n180001000: \tsub\trsp, 4120\n\
                  180001007: \tmov\trax, 1\n180002000: \tsub\trsp, 40\n\
                  180002004: \tsub\trax, 99999\n";
    assert_eq!(
        frames(sample),
        vec![(4120, 0x1_8000_1000), (40, 0x1_8000_2000)]
    );
    let map = "  Address  Publics by Value  Rva+Base  Lib:Object\n\n \
               0001:00000000       f_a 0000000180001000     a.o\n \
               0001:00001000       f_b 0000000180002000     b.o\n \
               0002:00000000       data 0000000180060000     c.o\n";
    let symbols = code_symbols(map);
    assert_eq!(symbols.len(), 2);
    assert_eq!(symbol_at(&symbols, 0x1_8000_1800), "f_a");
    assert_eq!(symbol_at(&symbols, 0x1_8000_2000), "f_b");
    assert_eq!(symbol_at(&symbols, 0x1_7000_0000), "?");
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
    let map = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path().join("out").join("flushguard.map");
            p.is_file().then_some(p)
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no flushguard.map under {}", build.display()));
    let map = std::fs::read_to_string(&map).unwrap();
    assert!(
        !map.contains("__chkstk"),
        "the map defines or imports __chkstk"
    );
    let symbols = code_symbols(&map);
    assert!(symbols.len() > 100, "the map lists too few code symbols");

    let (ok, disassembly) = output_of(
        Command::new("llvm-objdump")
            .args(["-d", "--no-show-raw-insn", "-M", "intel"])
            .arg(&image),
    );
    assert!(ok, "llvm-objdump failed: {disassembly}");
    let mut frames = frames(&disassembly);
    assert!(
        frames.len() > 100,
        "disassembly has too few frames to be the driver"
    );
    frames.sort_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
    let named = |(bytes, at): &(u64, u64)| format!("{bytes} {}", symbol_at(&symbols, *at));
    eprintln!(
        "{} frames; largest (bytes, function):\n  {}",
        frames.len(),
        frames
            .iter()
            .take(8)
            .map(named)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let big: Vec<_> = frames
        .iter()
        .filter(|(b, _)| *b >= PAGE)
        .map(named)
        .collect();
    assert!(big.is_empty(), "frames of 4 KiB or more: {big:#?}");
}
