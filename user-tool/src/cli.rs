//! The command-line interface (clap derive).

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use flushguard_engine::FileProvider;

use crate::durability::target::{Pattern, TargetSpec};

/// Administer the FlushGuard minifilter: show and apply durability policy, read
/// statistics and events, load and unload the driver, and replay Process Monitor traces
/// to see what a policy would do before enabling it.
#[derive(Debug, Parser)]
#[command(
    name = "flushctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Talk to an in-process engine instead of the driver (works on any OS). Its state
    /// (policy, loaded flag) is kept in the file given by --state / FLUSHCTL_STATE, so
    /// successive invocations see each other's changes; without one, each run starts from
    /// a freshly loaded engine with the pass-through policy.
    #[arg(long, global = true)]
    pub offline: bool,

    /// State file of the --offline engine (created when missing).
    #[arg(long, global = true, env = "FLUSHCTL_STATE", value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables (reading commands).
    #[arg(long, global = true)]
    pub json: bool,

    /// Test hook: make the --offline port fail the way the driver's port fails
    /// (not-loaded, access-denied, client-version=N, registry-store-fails[=STATUS]).
    /// Hidden; see docs/flushctl.md, "--offline".
    #[arg(
        long,
        global = true,
        hide = true,
        env = "FLUSHCTL_SIMULATE",
        value_name = "FAULT"
    )]
    pub simulate: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  operation failed (I/O error, the driver returned an error status)
  2  usage error (bad arguments)
  3  the FlushGuard driver is not loaded (or its port is not open)
  4  access denied: run from an elevated (administrator) prompt
  5  protocol version mismatch between flushctl and the driver
  6  not supported on this operating system (use --offline, replay, policy check)
  7  invalid input: policy file rejected, trace rejected as a whole (empty, UTF-16,
     not a Process Monitor CSV), or a malformed trace line with --strict";

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show whether the driver is loaded, its version and the active policy generation.
    Status,
    /// Show, check, apply or explain the durability policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show the driver's counters (per rule, flush latency histogram).
    Stats(StatsArgs),
    /// Show recent driver events (flush failures, policy changes).
    Events(EventsArgs),
    /// Load the driver (FilterLoad, like `fltmc load FlushGuard`). Needs elevation.
    Load,
    /// Unload the driver (FilterUnload, like `fltmc unload FlushGuard`). Needs elevation.
    Unload,
    /// Replay a Process Monitor CSV export through the engine and report what FlushGuard
    /// would have done.
    Replay(ReplayArgs),
    /// Durability tester: write sequenced, checksummed records, keep a witness of every
    /// acknowledged one, and after a crash verify that none was lost.
    #[command(subcommand)]
    Durability(DurabilityCommand),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a generated Process Monitor-style CSV trace (synthetic workload).
    #[command(hide = true)]
    GenTrace(GenTraceArgs),
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the active policy.
    Show,
    /// Validate a policy file and apply it atomically (all or nothing).
    Apply {
        /// Policy file (TOML).
        file: PathBuf,
        /// Also store it so the driver loads it at boot (registry, REG_BINARY).
        #[arg(long)]
        persist: bool,
    },
    /// Validate a policy file without applying it (needs no driver).
    Check {
        /// Policy file (TOML).
        file: PathBuf,
    },
    /// Show which rule governs a path and what it would do.
    Explain(ExplainArgs),
}

/// `durability` subcommands.
#[derive(Debug, Subcommand)]
pub enum DurabilityCommand {
    /// Write records to a target file; each acknowledged record reaches the witness
    /// before the writer writes its next one.
    Run(DurabilityRunArgs),
    /// Compare the target with its witness after a crash (exit 8 when an acknowledged
    /// record was lost).
    Verify(DurabilityVerifyArgs),
    /// Serve as a remote witness: store the acknowledgements of `durability run
    /// --witness-addr` durably (fsync before each answer) in DIR/RUN.fgw.
    Witness(DurabilityWitnessArgs),
}

/// `durability run` arguments.
#[derive(Debug, Args)]
pub struct DurabilityRunArgs {
    /// The file the records are written to (created when missing; an existing file is
    /// overwritten in place, not truncated, except by create-write-through): a path, or
    /// `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH` to speak SMB2/3 to the server directly
    /// (password from FLUSHCTL_SMB_PASSWORD, else asked for on the terminal).
    #[arg(long, value_name = "FILE|URL", value_parser = parse_target)]
    pub target: TargetSpec,
    /// Writer threads; writer W writes its record S at byte offset
    /// (S * THREADS + W) * RECORD_SIZE.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: u32,
    /// Record size in bytes (64 to 16 MiB).
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    pub record_size: u64,
    /// Records per writer.
    #[arg(long, value_name = "N", required_unless_present = "duration")]
    pub records: Option<u64>,
    /// Write for this long (e.g. `30s`, `500ms`, `2m`; a bare number is seconds); with
    /// --records, whichever ends first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// How each record is made durable before it is acknowledged.
    #[arg(long, value_enum, default_value_t = Pattern::Plain)]
    pub pattern: Pattern,
    /// Local witness file (new; fsynced after every acknowledgement). Keep it off the
    /// storage under test.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "witness_addr",
        conflicts_with = "witness_addr"
    )]
    pub witness: Option<PathBuf>,
    /// Remote witness (`flushctl durability witness`) at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub witness_addr: Option<String>,
    /// Never draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// `durability verify` arguments.
#[derive(Debug, Args)]
pub struct DurabilityVerifyArgs {
    /// The target written by `durability run`: a path or an smb:// URL (as for run).
    #[arg(long, value_name = "FILE|URL", value_parser = parse_target)]
    pub target: TargetSpec,
    /// The run's witness file (a local witness, or DIR/RUN.fgw of a remote witness).
    #[arg(long, value_name = "FILE")]
    pub witness: PathBuf,
}

/// `durability witness` arguments.
#[derive(Debug, Args)]
pub struct DurabilityWitnessArgs {
    /// Address to listen on, e.g. `0.0.0.0:7070` (port 0: any; the bound address is
    /// printed first).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// Directory of the witness files, one per run (created when missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Parses `--target`: an `smb://` URL or a path ([`TargetSpec::parse`]).
///
/// # Errors
/// The URL's error ([`crate::durability::smb::UrlError`]) as a message; an empty value.
pub fn parse_target(s: &str) -> Result<TargetSpec, String> {
    TargetSpec::parse(s).map_err(|e| match e {
        crate::durability::smb::UrlError::NotSmb(_) => "expected a path or an smb:// URL".into(),
        e => e.to_string(),
    })
}

/// Parses `--duration`: a number with an optional unit `ms`, `s`, `m` or `h` (seconds
/// when none).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration such as 30s, 500ms, 2m or 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("`{s}`: expected a duration such as 30s, 500ms, 2m or 1h"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// `--provider` values: the [`FileProvider`]s a file can be named on the command line
/// (all but `other`), by their engine name, with the help clap shows.
fn provider_parser() -> impl TypedValueParser<Value = FileProvider> {
    PossibleValuesParser::new([
        PossibleValue::new(FileProvider::Smb.name()).help("SMB (LanmanRedirector)"),
        PossibleValue::new(FileProvider::WebDav.name()).help("WebDAV (WebDavRedirector)"),
        PossibleValue::new(FileProvider::Nfs.name()).help("NFS client"),
        PossibleValue::new(FileProvider::Rdpdr.name()).help("Remote Desktop drive redirection"),
        PossibleValue::new(FileProvider::Local.name())
            .help("A local volume (only governed when the policy attaches local volumes)"),
    ])
    .map(|name| {
        FileProvider::from_name(&name).expect("every possible value is a FileProvider name")
    })
}

/// `policy explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The file: `\\server\share\dir\file`, `\Device\Mup\server\share\...`, or a drive
    /// path together with --map.
    pub path: String,
    /// Image name of the writing process (e.g. `excel.exe`).
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Redirector behind the file (default: guessed from the path).
    #[arg(long, value_parser = provider_parser(), value_name = "P")]
    pub provider: Option<FileProvider>,
    /// Explain against this policy file instead of the driver's active policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Map a drive letter to a share, e.g. `Z:=\\fs01\projects` (repeatable).
    #[arg(long = "map", value_name = "D:=\\\\SERVER\\SHARE")]
    pub maps: Vec<String>,
}

/// `stats` arguments.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print again every SECS seconds until interrupted (with --json: one JSON object
    /// per line).
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
    /// Reset the counters after reading them.
    #[arg(long)]
    pub reset: bool,
    /// List every callback-layer counter (fail-open and skip causes) in the table,
    /// zeros included; by default only the non-zero ones. --json always has all.
    #[arg(long)]
    pub all_causes: bool,
    /// With --watch: stop after N rounds (default: until interrupted).
    #[arg(long, hide = true, value_name = "N")]
    pub count: Option<u64>,
}

/// `events` arguments.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep polling for new events until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: poll interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
    /// With --follow: stop after N polls (default: until interrupted).
    #[arg(long, hide = true, value_name = "N")]
    pub count: Option<u64>,
}

/// `replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Process Monitor CSV export (File > Save > CSV; any column set and order with
    /// Process Name, PID, Operation, Path, Result and Detail).
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// Policy file (TOML). Default: the driver's active policy (needs the driver or
    /// --offline).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Map a drive letter to a share, e.g. `Z:=\\fs01\projects` (repeatable).
    #[arg(long = "map", value_name = "D:=\\\\SERVER\\SHARE")]
    pub maps: Vec<String>,
    /// Stop at the first malformed line (exit code 7).
    #[arg(long)]
    pub strict: bool,
    /// Rows in the per-file table (largest unflushed first); the JSON report lists all.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Most distinct files tracked individually; further files are added up in one
    /// "(other files)" row, so memory stays bounded on any trace.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_files: usize,
    /// Flush latency the group-commit model assumes, in microseconds: group-commit
    /// rules are reported with the flushes their batching would issue given the
    /// trace's write times (`Time of Day`) and this latency.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub flush_latency_us: u64,
    /// Never draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// `gen-trace` arguments.
#[derive(Debug, Args)]
pub struct GenTraceArgs {
    /// Output file (`-` for stdout).
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of data rows to write.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub events: u64,
    /// Seed of the pseudo-random workload (same seed, same file).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Distinct files the workload touches.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub files: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "3d", "-1", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_provider_value_parses() {
        for (arg, p) in [
            ("smb", FileProvider::Smb),
            ("webdav", FileProvider::WebDav),
            ("nfs", FileProvider::Nfs),
            ("rdpdr", FileProvider::Rdpdr),
            ("local", FileProvider::Local),
        ] {
            let cli =
                Cli::try_parse_from(["flushctl", "policy", "explain", "x", "--provider", arg])
                    .expect("parses");
            let Command::Policy(PolicyCommand::Explain(e)) = cli.command else {
                panic!("not explain");
            };
            assert_eq!(e.provider, Some(p));
        }
        assert!(
            Cli::try_parse_from(["flushctl", "policy", "explain", "x", "--provider", "other"])
                .is_err()
        );
    }
}
