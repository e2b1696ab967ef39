//! `flushctl durability run | verify | witness`: the durability tester's commands (the
//! logic is in [`crate::durability`]; this module reads arguments and prints).

use std::io::IsTerminal;
use std::sync::Arc;

use crate::cli::{
    DurabilityCommand, DurabilityRunArgs, DurabilityVerifyArgs, DurabilityWitnessArgs,
};
use crate::durability::net::{RemoteWitness, WitnessServer};
use crate::durability::record::check_record_size;
use crate::durability::run::{new_run_id, run, RunConfig, RunOutcome};
use crate::durability::smb::{SmbTarget, SmbUrl, PASSWORD_ENV};
use crate::durability::target::{Target, TargetSpec};
use crate::durability::verify::{verify, Verdict, VerifyError};
use crate::durability::witness::{LocalWitness, Witness, MAX_THREADS};
use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{bytes, print_json, TableBuilder};

/// Runs a `durability` subcommand; returns the exit code.
///
/// # Errors
/// [`CliError::Usage`] for bad arguments or a missing SMB password,
/// [`CliError::Unsupported`] for a pattern this OS cannot express on a local file,
/// [`CliError::Smb`] when an `smb://` target cannot be reached, [`CliError::Witness`]
/// for witness failures, [`CliError::Io`] for I/O failures of the target.
pub(super) fn durability(cmd: &DurabilityCommand, json: bool) -> Result<u8, CliError> {
    match cmd {
        DurabilityCommand::Run(a) => durability_run(a, json),
        DurabilityCommand::Verify(a) => durability_verify(a, json),
        DurabilityCommand::Witness(a) => durability_witness(a),
    }
}

/// The SMB password: `FLUSHCTL_SMB_PASSWORD` when set (even empty), else asked for on
/// the terminal without echo.
fn smb_password(url: &SmbUrl) -> Result<String, CliError> {
    if let Some(p) = std::env::var_os(PASSWORD_ENV) {
        return p
            .into_string()
            .map_err(|_| CliError::Usage(format!("{PASSWORD_ENV} is not valid UTF-8")));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no password for {url}: set {PASSWORD_ENV} (stdin is not a terminal to ask on)"
        )));
    }
    rpassword::prompt_password(format!("SMB password for {}@{}: ", url.user, url.addr()))
        .map_err(CliError::io_while("reading the password from the terminal"))
}

/// Connects an `smb://` target; a path is used as it is.
fn connect(spec: &TargetSpec) -> Result<Target, CliError> {
    match spec {
        TargetSpec::Local(p) => Ok(Target::Local(p.clone())),
        TargetSpec::Smb(url) => {
            let password = smb_password(url)?;
            let t = SmbTarget::connect(url, &password).map_err(|e| CliError::Smb(e.to_string()))?;
            Ok(Target::Smb(Arc::new(t)))
        }
    }
}

#[derive(serde::Serialize)]
struct RunReport<'a> {
    run: String,
    target: String,
    /// The negotiated SMB dialect of an `smb://` target.
    #[serde(skip_serializing_if = "Option::is_none")]
    smb_dialect: Option<String>,
    /// The cipher of an `smb://` target's messages (`none`: not encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    smb_encryption: Option<String>,
    witness: String,
    pattern: &'static str,
    threads: u32,
    record_size: u32,
    acknowledged: u64,
    bytes: u64,
    records_per_s: f64,
    #[serde(flatten)]
    outcome: &'a RunOutcome,
}

fn durability_run(a: &DurabilityRunArgs, json: bool) -> Result<u8, CliError> {
    let record_size = check_record_size(a.record_size)
        .map_err(|e| CliError::Usage(format!("--record-size: {e}")))?;
    if a.threads == 0 || a.threads > MAX_THREADS {
        return Err(CliError::Usage(format!(
            "--threads {}: expected 1..={MAX_THREADS}",
            a.threads
        )));
    }
    if matches!(a.target, TargetSpec::Local(_)) && !a.pattern.supported() {
        return Err(CliError::Unsupported(format!(
            "--pattern {} is Windows only for a local file: here it is the same as write-through (O_DSYNC); use --pattern write-through, or an smb:// target",
            a.pattern.name()
        )));
    }
    let target = connect(&a.target)?;
    let cfg = RunConfig {
        target,
        run: new_run_id(),
        threads: a.threads,
        record_size,
        records: a.records,
        duration: a.duration,
        pattern: a.pattern,
    };
    let witness: Box<dyn Witness> = match (&a.witness, &a.witness_addr) {
        (Some(p), _) => Box::new(
            LocalWitness::create(p, cfg.info()).map_err(|e| CliError::Witness(e.to_string()))?,
        ),
        (None, Some(addr)) => Box::new(
            RemoteWitness::connect(addr, cfg.info())
                .map_err(|e| CliError::Witness(e.to_string()))?,
        ),
        (None, None) => {
            return Err(CliError::Usage(
                "--witness or --witness-addr is required".into(),
            ))
        }
    };
    let bar = (!a.no_progress && std::io::stderr().is_terminal()).then(|| {
        let b = match a.records {
            Some(n) => indicatif::ProgressBar::new(n.saturating_mul(u64::from(a.threads))),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "writing {spinner} {bar:40} {pos}/{len} records acknowledged ({per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let outcome = run(&cfg, witness.as_ref(), &|n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })
    .map_err(|e| CliError::io(format!("creating target {}", cfg.target.describe()), e))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let acknowledged = outcome.acknowledged();
    let report = RunReport {
        run: format!("{:016x}", cfg.run),
        target: cfg.target.describe(),
        smb_dialect: match &cfg.target {
            Target::Smb(s) => Some(s.dialect()),
            Target::Local(_) => None,
        },
        smb_encryption: match &cfg.target {
            Target::Smb(s) => Some(s.encryption()),
            Target::Local(_) => None,
        },
        witness: witness.describe(),
        pattern: cfg.pattern.name(),
        threads: cfg.threads,
        record_size,
        acknowledged,
        bytes: acknowledged * u64::from(record_size),
        records_per_s: if outcome.elapsed_s > 0.0 {
            acknowledged as f64 / outcome.elapsed_s
        } else {
            0.0
        },
        outcome: &outcome,
    };
    if json {
        print_json(&report).map_err(CliError::io_while("stdout"))?;
    } else {
        outln!(
            "run {}: {} writer(s), {}-byte records, pattern {}, target {}",
            report.run,
            report.threads,
            report.record_size,
            report.pattern,
            report.target
        );
        if let (Some(d), Some(e)) = (&report.smb_dialect, &report.smb_encryption) {
            outln!(
                "SMB dialect {d}, encryption {e}, requests built by flushctl (docs/flushctl.md, SMB target)"
            );
        }
        outln!("{}", report.witness);
        outln!(
            "acknowledged {} records ({}) in {:.2} s: {:.0} records/s",
            acknowledged,
            bytes(report.bytes),
            outcome.elapsed_s,
            report.records_per_s
        );
        if outcome.writers.len() > 1 {
            let mut t = TableBuilder::new(&["writer#", "acknowledged#"]);
            for w in &outcome.writers {
                t.row([w.writer.to_string(), w.acknowledged.to_string()]);
            }
            outln!("{}", t.render());
        }
    }
    for w in outcome.writers.iter().filter(|w| w.error.is_some()) {
        eprintln!(
            "flushctl: writer {} stopped: {}",
            w.writer,
            w.error.as_deref().unwrap_or_default()
        );
    }
    Ok(if outcome.ok() { exit::OK } else { exit::FAILED })
}

fn durability_verify(a: &DurabilityVerifyArgs, json: bool) -> Result<u8, CliError> {
    let target = connect(&a.target)?;
    let v = verify(&target, &a.witness).map_err(|e| match e {
        VerifyError::Witness(w) => CliError::Witness(w.to_string()),
        VerifyError::Target { target, source } => {
            CliError::io(format!("reading target {target}"), source)
        }
    })?;
    if json {
        print_json(&v).map_err(CliError::io_while("stdout"))?;
    } else {
        print_verdict(&v)?;
    }
    if v.witness_torn_tail > 0 {
        eprintln!(
            "flushctl: note: the witness ends in an incomplete entry ({} bytes, a crash mid-append); ignored",
            v.witness_torn_tail
        );
    }
    Ok(if v.lost() == 0 { exit::OK } else { exit::LOST })
}

fn print_verdict(v: &Verdict) -> Result<(), CliError> {
    outln!(
        "run {}: {} writer(s), {}-byte records, target {}",
        v.run_hex,
        v.run.threads,
        v.run.record_size,
        bytes(v.target_len)
    );
    let mut t = TableBuilder::new(&[
        "writer#",
        "acknowledged#",
        "present#",
        "lost#",
        "missing#",
        "torn#",
        "stale#",
        "corrupt#",
        "first lost#",
        "unacknowledged#",
    ]);
    for w in &v.writers {
        t.row([
            w.writer.to_string(),
            w.acknowledged.to_string(),
            w.present.to_string(),
            w.lost.to_string(),
            w.missing.to_string(),
            w.torn.to_string(),
            w.stale.to_string(),
            w.corrupt.to_string(),
            w.first_lost.map_or_else(|| "-".into(), |s| s.to_string()),
            w.unacknowledged.to_string(),
        ]);
    }
    outln!("{}", t.render());
    if v.lost() == 0 {
        outln!(
            "OK: all {} acknowledged records are intact",
            v.acknowledged()
        );
    } else {
        outln!(
            "LOST: {} of {} acknowledged records are not intact",
            v.lost(),
            v.acknowledged()
        );
    }
    Ok(())
}

fn durability_witness(a: &DurabilityWitnessArgs) -> Result<u8, CliError> {
    let server = WitnessServer::bind(&a.listen, &a.dir).map_err(|e| {
        CliError::io(
            format!(
                "listening on {} with witness files in {}",
                a.listen,
                a.dir.display()
            ),
            e,
        )
    })?;
    let addr = server
        .local_addr()
        .map_err(CliError::io_while("reading the bound address"))?;
    outln!(
        "flushctl durability witness: listening on {addr}, files in {}",
        a.dir.display()
    );
    server
        .serve(|line| eprintln!("flushctl durability witness: {line}"))
        .map_err(CliError::io_while("accepting connections"))?;
    Ok(exit::OK)
}
