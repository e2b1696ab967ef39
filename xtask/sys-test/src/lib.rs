//! `cargo xtask sys-test`: the shipped `flushguard.sys`, signed, executed in a Linux
//! test process (issue 14).
//!
//! - [`loader`]: maps the PE at a non-preferred base, applies every base relocation,
//!   binds every import by name (a missing one fails naming DLL and routine), and
//!   requires the Authenticode certificate table.
//! - [`kernel`]: every imported ntoskrnl.exe / fltmgr.sys routine as an
//!   `extern "win64"` function with Filter Verifier's checks, over the [`world`].
//! - [`dispatch`]: calls into the image (DriverEntry, callbacks, port) with the
//!   post-call checks; [`layout`]: the structures, declared here from the headers.
//! - [`scenario`]: the scenarios, one description; [`binary`] runs them on the image,
//!   [`compare`] on the host fake, and compares.
//!
//! Each scenario runs in a child process of its own (`--scenario NAME`): the driver's
//! globals start fresh, and a bug check or crash in one cannot hide the others.
//!
//! This crate is the only place outside the driver where code of the image runs; its
//! `unsafe` blocks map memory, call into the image and read or write the raw memory
//! the driver hands over, one operation each with a `// SAFETY:` comment.

pub mod binary;
pub mod compare;
pub mod dispatch;
pub mod kernel;
pub mod layout;
pub mod loader;
pub mod port;
pub mod scenario;
pub mod world;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use compare::COORDINATOR_BLOCK_CALLS;

/// Loads `sys` with the harness's imports.
///
/// # Errors
/// See [`loader::load`].
pub fn load(bytes: &[u8]) -> Result<loader::LoadedImage> {
    loader::load(bytes, kernel::resolve)
}

/// Stack of the thread a scenario runs on, bytes.
const SCENARIO_STACK: usize = 16 << 20;
/// Bytes below the scenario's top frame painted before the run.
const PAINTED: usize = 4 << 20;
/// Bytes right below the top frame left unpainted (the painting routines' own frames).
const GAP: usize = 4 << 10;
/// The paint.
const PAINT: u64 = 0x5A5A_A5A5_5A5A_A5A5;

/// Paints `[top - PAINTED, top - GAP)` of the current thread's stack (the scenario's
/// thread, or a system thread's, `kernel/thread.rs`, with a stack as large).
#[inline(never)]
pub(crate) fn paint_stack(top: usize) {
    let mut address = top - PAINTED;
    while address < top - GAP {
        // SAFETY: the address lies in this thread's stack (SCENARIO_STACK bytes, of which
        // the frames above `top - GAP` are in use), 8-byte aligned, below every live
        // frame: nothing reads or writes it until the scenario's calls grow down to it.
        unsafe { (address as *mut u64).write_volatile(PAINT) };
        address += 8;
    }
}

/// Bytes below `top` the scenario's frames reached: the lowest word not holding the
/// paint any more.
#[inline(never)]
pub(crate) fn stack_high_water(top: usize) -> usize {
    let mut address = top - PAINTED;
    while address < top - GAP {
        // SAFETY: as in `paint_stack`: this thread's stack below every live frame.
        let word = unsafe { (address as *const u64).read_volatile() };
        if word != PAINT {
            return top - address;
        }
        address += 8;
    }
    0
}

/// Runs one scenario in this process and prints its result lines for the parent
/// (`@calls`, `@callbacks`, `@violation`, ...). Returns true if it passed.
///
/// The scenario runs on a thread of its own whose stack is painted first, so the
/// deepest stack the run reached can be read back.
///
/// # Errors
/// The image cannot be read or loaded, or the scenario is unknown.
pub fn run_child(sys: &Path, name: &str, inject: Option<&str>) -> Result<bool> {
    let spec = scenario::SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .with_context(|| format!("unknown scenario {name}"))?;
    // `SITE` or `SITE#N`: the first (or the N-th, from 0) call of SITE fails. SITE is
    // a host fake's call site, or one of the binary's alone (compare::BINARY_ONLY_SITES).
    let mut site = None;
    let mut binary_only = false;
    if let Some(inject) = inject {
        let (name, nth) = inject.split_once('#').unwrap_or((inject, "0"));
        let nth: u64 = nth
            .parse()
            .with_context(|| format!("bad call number in {inject}"))?;
        if let Some(&(routine, status)) = compare::BINARY_ONLY_SITES.iter().find(|s| s.0 == name) {
            let mut w = world::world();
            w.inject = Some((routine, nth, status));
            w.binary_only_injection = true;
            binary_only = true;
        } else {
            let shared =
                compare::site_by_name(name).with_context(|| format!("unknown call site {name}"))?;
            world::world().inject = Some((compare::routine_of(shared), nth, shared.failure().0));
            site = Some((shared, nth));
        }
    }
    let bytes = std::fs::read(sys).with_context(|| format!("reading {}", sys.display()))?;
    let (outcome, high_water) = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("scenario {name}"))
            .stack_size(SCENARIO_STACK)
            .spawn_scoped(scope, || -> Result<_> {
                let image = load(&bytes)?;
                let marker = 0u8;
                let top = std::hint::black_box(&marker) as *const u8 as usize & !0xF;
                paint_stack(top);
                let outcome = binary::run_scenario(&image, spec);
                Ok((outcome, stack_high_water(top)))
            })
            .map(|handle| handle.join())
    })
    .context("starting the scenario thread")?
    .map_err(|_| anyhow::anyhow!("the scenario thread panicked (harness bug)"))??;
    let (deepest_import_call, system_thread_stack) = {
        let w = world::world();
        (w.deepest_import_call, w.system_thread_stack)
    };
    let mut violations = outcome.violations.clone();
    if inject.is_some() && !world::world().injected {
        violations.push("the injected failure never happened in the binary".to_string());
    }
    if !binary_only {
        let fake = compare::run_fake(spec, site);
        violations.extend(compare::differences(&outcome, &fake));
    }
    let sequence = compare::normalise(&outcome.sequence).len();
    println!("@calls {}", outcome.calls);
    println!("@distinct {}", outcome.distinct_calls);
    println!("@sequence {sequence}");
    println!("@callbacks {}", outcome.callbacks);
    println!("@allocations {}", outcome.allocations);
    println!("@flushes {:?}", outcome.flushes);
    let mut sites: Vec<String> = flushguard_tests::fake::CallSite::ALL
        .iter()
        .filter(|&&site| compare::injectable(site))
        .filter_map(|&site| {
            let n = outcome.counts.get(compare::routine_of(site)).copied()?;
            (n > 0).then(|| format!("{site:?}#{n}"))
        })
        .collect();
    for (routine, _) in compare::BINARY_ONLY_SITES {
        if let Some(&n) = outcome.counts.get(routine).filter(|&&n| n > 0) {
            sites.push(format!("{routine}#{n}"));
        }
    }
    println!("@sites {}", sites.join(" "));
    let called: Vec<&str> = outcome
        .counts
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(routine, _)| *routine)
        .filter(|routine| !routine.contains(' '))
        .collect();
    println!("@called {}", called.join(" "));
    println!(
        "@stack {deepest_import_call} {}",
        high_water.max(system_thread_stack)
    );
    println!(
        "@seen create FILE_WRITE_THROUGH={} write SL_WRITE_THROUGH={} flush minor={}",
        u8::from(outcome.seen.create_write_through),
        u8::from(outcome.seen.write_through),
        outcome.seen.flush_minor
    );
    for finding in &world::world().findings {
        println!("@finding {finding}");
    }
    for line in &outcome.debug_output {
        println!("@debug {line}");
    }
    for v in &violations {
        println!("@violation {v}");
    }
    Ok(violations.is_empty())
}

/// One scenario's result as the parent sees it.
#[derive(Debug, Default)]
struct ChildResult {
    calls: u64,
    distinct: u64,
    /// Calls compared in order with the host fake's (`compare::SEQUENCE_ROUTINES`).
    sequence: usize,
    callbacks: u64,
    allocations: u64,
    flushes: String,
    seen: String,
    /// Injectable call sites the scenario reached, as `SITE#CALLS`.
    sites: Vec<String>,
    /// Imports the driver called.
    called: Vec<String>,
    /// Findings (not failing).
    findings: Vec<String>,
    /// Deepest driver frames at an import call, bytes (lower bound).
    stack_driver: usize,
    /// Painted-stack high-water mark of the whole run (harness frames included), bytes.
    stack_high_water: usize,
    violations: Vec<String>,
    debug: Vec<String>,
}

fn parse_child(stdout: &str) -> ChildResult {
    let mut r = ChildResult::default();
    for line in stdout.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "@calls" => r.calls = value.parse().unwrap_or(0),
            "@distinct" => r.distinct = value.parse().unwrap_or(0),
            "@sequence" => r.sequence = value.parse().unwrap_or(0),
            "@callbacks" => r.callbacks = value.parse().unwrap_or(0),
            "@allocations" => r.allocations = value.parse().unwrap_or(0),
            "@flushes" => r.flushes = value.to_string(),
            "@seen" => r.seen = value.to_string(),
            "@sites" => r.sites = value.split_whitespace().map(str::to_string).collect(),
            "@called" => r.called = value.split_whitespace().map(str::to_string).collect(),
            "@finding" => r.findings.push(value.to_string()),
            "@stack" => {
                let mut parts = value.split(' ').map(|p| p.parse().unwrap_or(0));
                r.stack_driver = parts.next().unwrap_or(0);
                r.stack_high_water = parts.next().unwrap_or(0);
            }
            "@violation" => r.violations.push(value.to_string()),
            "@debug" => r.debug.push(value.to_string()),
            _ => {}
        }
    }
    r
}

/// The loader must refuse a package whose import table names a routine the harness
/// lacks, and one whose relocations are removed. Returns the two refusals.
fn loader_self_checks(bytes: &[u8]) -> Result<[String; 2]> {
    let mut renamed = bytes.to_vec();
    let needle = b"KeBugCheckEx\0";
    let at = renamed
        .windows(needle.len())
        .position(|w| w == needle)
        .context("KeBugCheckEx not among the import names")?;
    renamed[at + needle.len() - 2] = b'y';
    let missing = match load(&renamed) {
        Ok(_) => bail!("an image importing KeBugCheckEy loaded"),
        Err(e) => format!("{e:#}"),
    };
    if !missing.contains("ntoskrnl.exe!KeBugCheckEy") {
        bail!("the missing-import failure does not name ntoskrnl.exe!KeBugCheckEy: {missing}");
    }
    let mut stripped = bytes.to_vec();
    let pe = u32::from_le_bytes([bytes[0x3C], bytes[0x3D], bytes[0x3E], bytes[0x3F]]) as usize;
    let entry = pe + 24 + 112 + 5 * 8; // PE32+ data directory 5 (BASERELOC)
    stripped
        .get_mut(entry..entry + 8)
        .context("no room for data directory 5")?
        .fill(0);
    let relocs = match load(&stripped) {
        Ok(_) => bail!("an image without base relocations loaded at a non-preferred base"),
        Err(e) => format!("{e:#}"),
    };
    if !relocs.contains("no base relocations") {
        bail!("the stripped-relocations failure does not say so: {relocs}");
    }
    Ok([missing, relocs])
}

/// Runs one scenario (with a call of `inject`, `SITE#N`, failing) in a child process and
/// collects its result; a crash or bug check becomes a violation.
fn run_one(
    exe: &Path,
    child_args: &[&str],
    sys: &Path,
    name: &str,
    inject: Option<&str>,
) -> Result<ChildResult> {
    let mut command = Command::new(exe);
    command
        .args(child_args)
        .arg("--sys")
        .arg(sys)
        .arg("--scenario")
        .arg(name);
    if let Some(site) = inject {
        command.arg("--inject").arg(site);
    }
    let output = command
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut result = parse_child(&stdout);
    match output.status.code() {
        Some(0) | Some(1) => {}
        code => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            result.violations.push(format!(
                "the scenario process ended with {code:?} (crash or bug check): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    if output.status.code() == Some(1) && result.violations.is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        result
            .violations
            .push(format!("the scenario failed: {}", stderr.trim()));
    }
    Ok(result)
}

/// Loads `sys`, reports the image, runs every scenario in a child process
/// (`exe` + `child_args` + `--sys SYS --scenario NAME`) and prints the summary.
/// Returns true if everything passed.
///
/// # Errors
/// The image cannot be read or loaded, or a child cannot be started.
pub fn run_all(sys: &Path, exe: &Path, child_args: &[&str], verbose: bool) -> Result<bool> {
    let started = std::time::Instant::now();
    let bytes = std::fs::read(sys).with_context(|| format!("reading {}", sys.display()))?;
    println!("\n==> sys-test: {} ({} bytes)", sys.display(), bytes.len());
    let image = load(&bytes)?;
    println!(
        "    Authenticode certificate table: {} bytes",
        image.certificate_bytes
    );
    println!(
        "    mapped at 0x{:X} (preferred base 0x{:X}), SizeOfImage 0x{:X}, entry RVA 0x{:X}",
        image.base, image.preferred_base, image.size, image.entry_rva
    );
    println!("    base relocations applied: {}", image.relocations);
    let mut dlls: Vec<(String, usize)> = Vec::new();
    for import in &image.imports {
        match dlls.iter_mut().find(|(d, _)| *d == import.dll) {
            Some((_, n)) => *n += 1,
            None => dlls.push((import.dll.clone(), 1)),
        }
    }
    let per_dll: Vec<String> = dlls.iter().map(|(d, n)| format!("{d} {n}")).collect();
    println!(
        "    imports bound by name: {} ({})",
        image.imports.len(),
        per_dll.join(", ")
    );
    println!("    sections (virtual size / raw size, protection):");
    for s in &image.sections {
        println!(
            "      {:<8} RVA 0x{:05X}  {:>7} / {:>7} bytes  {}",
            s.name, s.rva, s.virtual_size, s.raw_size, s.protection
        );
    }
    let bound = image.imports.len();
    let imported: Vec<String> = image.imports.iter().map(|i| i.name.clone()).collect();
    drop(image);
    let [missing, relocs] = loader_self_checks(&bytes)?;
    println!("    loader refuses a renamed import: {missing}");
    println!("    loader refuses stripped relocations: {relocs}");

    println!("\n==> scenarios (each in its own process; binary vs the engine on the host fake)");
    let mut total_calls = 0;
    let mut total_sequence = 0;
    let mut total_violations = 0;
    let mut passed = 0;
    let mut deepest_driver = 0;
    let mut deepest_painted = 0;
    let mut called = std::collections::BTreeSet::new();
    let mut findings: std::collections::BTreeMap<String, Vec<&str>> =
        std::collections::BTreeMap::new();
    let mut injections = 0;
    let mut injections_passed = 0;
    let mut entry_runs = 0;
    let mut entry_runs_passed = 0;
    for spec in scenario::SCENARIOS {
        let mut result = run_one(exe, child_args, sys, spec.name, None)?;
        called.extend(result.called.iter().cloned());
        for finding in &result.findings {
            findings.entry(finding.clone()).or_default().push(spec.name);
        }
        // The same scenario with the first call of each call site it reached failing.
        let mut injected = Vec::new();
        let mut injected_runs = 0;
        let mut scenario_entry_runs = 0;
        for entry in result.sites.clone() {
            let (site, calls) = entry.split_once('#').unwrap_or((&entry, "1"));
            let calls: u64 = calls.parse().unwrap_or(1);
            let most = compare::site_by_name(site).map_or(calls, compare::injected_calls);
            let binary_only = compare::BINARY_ONLY_SITES.iter().any(|s| s.0 == site);
            for nth in 0..calls.min(most) {
                let inject = format!("{site}#{nth}");
                let r = run_one(exe, child_args, sys, spec.name, Some(&inject))?;
                injected_runs += 1;
                total_calls += r.calls;
                if binary_only {
                    entry_runs += 1;
                    scenario_entry_runs += 1;
                    entry_runs_passed += usize::from(r.violations.is_empty());
                } else {
                    injections += 1;
                    injections_passed += usize::from(r.violations.is_empty());
                    total_sequence += r.sequence;
                }
                for v in r.violations {
                    injected.push(format!("[call {} of {site} fails] {v}", nth + 1));
                }
            }
        }
        let injected_sites = result.sites.len();
        result.violations.extend(injected);
        total_calls += result.calls;
        total_sequence += result.sequence;
        total_violations += result.violations.len();
        let ok = result.violations.is_empty();
        passed += usize::from(ok);
        println!(
            "    {:<34} {}  calls {:>4} ({:>2} routines)  callbacks {:>3}  pool allocations {:>3}  flushes {}",
            spec.name,
            if ok { "ok  " } else { "FAIL" },
            result.calls,
            result.distinct,
            result.callbacks,
            result.allocations,
            result.flushes
        );
        println!(
            "        file system saw: {}; stack: driver frames {} bytes at its deepest import \
             call, painted high-water mark {} bytes (harness frames included)",
            result.seen, result.stack_driver, result.stack_high_water
        );
        println!(
            "        call sequence: {} Filter Manager / kernel call(s) compared in order with the \
             host fake's (routine, flush type / flags, file, IRQL)",
            result.sequence
        );
        println!(
            "        failure injection: {injected_runs} run(s), each with one call of one of \
             {injected_sites} call site(s) failing (every call; of the group-commit \
             coordinator blocks the first {COORDINATOR_BLOCK_CALLS}), binary vs host fake; \
             {scenario_entry_runs} of them binary only (PsCreateSystemThread in DriverEntry: \
             DriverEntry fails and leaves nothing behind)"
        );
        deepest_driver = deepest_driver.max(result.stack_driver);
        deepest_painted = deepest_painted.max(result.stack_high_water);
        for v in &result.violations {
            println!("        violation: {v}");
        }
        if verbose {
            for d in &result.debug {
                println!("        DbgPrintEx {d}");
            }
        }
    }
    println!(
        "\n==> sys-test summary: {} scenarios, {passed} passed; {bound} imports bound; {total_calls} \
         kernel/Filter Manager calls checked, {total_sequence} of them compared in order with \
         the host fake's; {injections} failure-injection runs, {injections_passed} passed; \
         {entry_runs} DriverEntry failure runs (binary only), {entry_runs_passed} passed; \
         {total_violations} violation(s); {} ms",
        scenario::SCENARIOS.len(),
        started.elapsed().as_millis()
    );
    // Not calls: the data import, and what only a failure calls (a bug check, an
    // exception dispatched to the SEH shim). KeWaitForSingleObject is called by the
    // flush worker threads on their semaphore; on a group-commit event it would be
    // called only by a writer whose batch another writer leads, and here every writer
    // leads its own.
    let not_expected = ["MmUserProbeAddress", "KeBugCheckEx", "__C_specific_handler"];
    let never: Vec<&str> = imported
        .iter()
        .filter(|name| !called.contains(*name) && !not_expected.contains(&name.as_str()))
        .map(String::as_str)
        .collect();
    println!(
        "    imports the driver called: {} of {bound} (not counted: the data import \
         MmUserProbeAddress, KeBugCheckEx, __C_specific_handler); never called: {}",
        imported
            .iter()
            .filter(|name| called.contains(*name))
            .count(),
        if never.is_empty() {
            "none".to_string()
        } else {
            never.join(", ")
        }
    );
    for (finding, scenarios) in &findings {
        println!(
            "    finding (reported, not failing): {finding} [scenarios: {}]",
            scenarios.join(", ")
        );
    }
    println!(
        "    stack: the driver's own frames reached {deepest_driver} bytes at its deepest \
         import call (summed over re-entries; lower bound); the painted stack of the \
         scenario thread or a system thread reached {deepest_painted} bytes (upper bound: \
         the debug-built harness's frames included)"
    );
    Ok(total_violations == 0 && passed == scenario::SCENARIOS.len())
}
