//! Command implementations: each reads its arguments, talks to a [`Client`] (or needs
//! none), and prints a table or JSON.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;

use clap::CommandFactory;
use flushguard_engine::callbacks::{Filter, PolicySource};
use flushguard_engine::matcher::Mismatch;
use flushguard_engine::protocol::events::{
    EventKind, EventRecord, NO_RULE, REGISTRY_LOAD, REGISTRY_STORE,
};
use flushguard_engine::protocol::stats::{bucket_floor_us, CallbackCounter, Counter};
use flushguard_engine::protocol::{NtStatus, StatusFlags, PROTOCOL_VERSION};
use flushguard_engine::{Action, CompiledPolicy, FileProvider, Policy};
use serde::Serialize;

use crate::cli::{
    Cli, Command, EventsArgs, ExplainArgs, PolicyCommand, ProviderArg, ReplayArgs, StatsArgs,
};
use crate::error::{exit, CliError};
use crate::outln;
use crate::output::{bytes, kv_table, print_json, TableBuilder};
use crate::port::{self, Client, PortOptions};
use crate::replay::{ReplayError, ReplayOptions, Replayer, Report};
use crate::sim::SimFm;
use crate::trace::path::{Location, PathResolver, Redirector};
use crate::trace::TraceReader;

/// Runs the parsed command line; returns the exit code.
///
/// # Errors
/// Every [`CliError`]; the caller prints it and exits with [`CliError::exit_code`].
pub fn run(cli: Cli) -> Result<u8, CliError> {
    if let Some(s) = &cli.simulate {
        port::inproc::Simulation::parse(s).map_err(CliError::Usage)?;
        if !cli.offline {
            return Err(CliError::Usage(
                "--simulate / FLUSHCTL_SIMULATE only applies to --offline".into(),
            ));
        }
    }
    let opts = PortOptions {
        offline: cli.offline,
        state: cli.state.clone(),
        simulate: cli.simulate.clone(),
        command: command_label(&cli.command),
    };
    let json = cli.json;
    match cli.command {
        Command::Status => status(&opts, json),
        Command::Policy(PolicyCommand::Show) => policy_show(&opts, json),
        Command::Policy(PolicyCommand::Apply { file, persist }) => {
            policy_apply(&opts, &file, persist, json)
        }
        Command::Policy(PolicyCommand::Check { file }) => policy_check(&file, json),
        Command::Policy(PolicyCommand::Explain(args)) => policy_explain(&opts, &args, json),
        Command::Stats(args) => stats(&opts, &args, json),
        Command::Events(args) => events(&opts, &args, json),
        Command::Load | Command::Unload => {
            let loading = matches!(cli.command, Command::Load);
            if loading {
                port::load(&opts)?;
            } else {
                port::unload(&opts)?;
            }
            if json {
                #[derive(Serialize)]
                struct LoadJson {
                    service: &'static str,
                    loaded: bool,
                    offline: bool,
                }
                print_json(&LoadJson {
                    service: flushguard_engine::protocol::SERVICE_NAME,
                    loaded: loading,
                    offline: opts.offline,
                })
                .map_err(io_err("stdout"))?;
            } else {
                outln!(
                    "FlushGuard {}{}.",
                    if loading { "loaded" } else { "unloaded" },
                    offline_note(&opts)
                );
            }
            Ok(exit::OK)
        }
        Command::Replay(args) => replay(&opts, &args, json),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "flushctl", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::GenTrace(args) => {
            crate::gen::run(&args)
                .map_err(|e| CliError::io(format!("writing {}", args.out.display()), e))?;
            Ok(exit::OK)
        }
    }
}

fn command_label(c: &Command) -> String {
    match c {
        Command::Status => "flushctl status".into(),
        Command::Policy(PolicyCommand::Show) => "flushctl policy show".into(),
        Command::Policy(PolicyCommand::Apply { .. }) => "flushctl policy apply".into(),
        Command::Policy(PolicyCommand::Check { .. }) => "flushctl policy check".into(),
        Command::Policy(PolicyCommand::Explain(_)) => {
            "flushctl policy explain (without --policy)".into()
        }
        Command::Stats(_) => "flushctl stats".into(),
        Command::Events(_) => "flushctl events".into(),
        Command::Load => "flushctl load".into(),
        Command::Unload => "flushctl unload".into(),
        Command::Replay(_) => "flushctl replay (without --policy)".into(),
        Command::Completions { .. } => "flushctl completions".into(),
        Command::GenTrace(_) => "flushctl gen-trace".into(),
    }
}

fn offline_note(opts: &PortOptions) -> &'static str {
    if opts.offline {
        " (in-process engine, --offline)"
    } else {
        ""
    }
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |e| CliError::io(what, e)
}

// ---- status ----------------------------------------------------------------------

#[derive(Serialize)]
struct StatusJson {
    port: &'static str,
    driver_version: String,
    protocol_version: u32,
    client_protocol_version: u32,
    capabilities: Vec<&'static str>,
    policy_generation: u64,
    rules: u32,
    policy_loaded: bool,
    policy_from_registry: bool,
    attach_local_volumes: bool,
    instances: u32,
    next_event_seq: u64,
    events_dropped: u64,
}

fn status(opts: &PortOptions, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let v = c.version()?;
    let s = c.status()?;
    let caps: Vec<&'static str> = v
        .capabilities
        .iter_names()
        .map(|(n, _)| match n {
            "FLT_FLUSH_BUFFERS2" => "FltFlushBuffers2",
            _ => "unknown",
        })
        .collect();
    let out = StatusJson {
        port: c.describe(),
        driver_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
        protocol_version: v.protocol_version,
        client_protocol_version: PROTOCOL_VERSION,
        capabilities: caps,
        policy_generation: s.generation,
        rules: s.rule_count,
        policy_loaded: s.flags.contains(StatusFlags::POLICY_LOADED),
        policy_from_registry: s.flags.contains(StatusFlags::FROM_REGISTRY),
        attach_local_volumes: s.flags.contains(StatusFlags::ATTACH_LOCAL_VOLUMES),
        instances: s.instances,
        next_event_seq: s.next_event_seq,
        events_dropped: s.events_dropped,
    };
    if json {
        print_json(&out).map_err(io_err("stdout"))?;
        return Ok(exit::OK);
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    outln!(
        "{}",
        kv_table(&[
            ("FlushGuard", format!("loaded ({})", out.port)),
            ("Driver version", out.driver_version.clone()),
            (
                "Protocol version",
                format!("{} (flushctl {})", out.protocol_version, PROTOCOL_VERSION)
            ),
            (
                "Capabilities",
                if out.capabilities.is_empty() {
                    "-".into()
                } else {
                    out.capabilities.join(", ")
                }
            ),
            (
                "Policy",
                format!(
                    "generation {}, {} rule(s){}",
                    out.policy_generation,
                    out.rules,
                    if out.policy_loaded {
                        ""
                    } else {
                        " (pass-through: no policy applied)"
                    }
                )
            ),
            ("Loaded from registry", yes(out.policy_from_registry)),
            ("Local volumes attached", yes(out.attach_local_volumes)),
            ("Instances", out.instances.to_string()),
            (
                "Events",
                format!(
                    "next sequence {}, {} dropped",
                    out.next_event_seq, out.events_dropped
                )
            ),
        ])
    );
    Ok(exit::OK)
}

// ---- policy ------------------------------------------------------------------------

#[derive(Serialize)]
struct ActionJson {
    mode: &'static str,
    audit_mode: Option<&'static str>,
    method: &'static str,
    flush: &'static str,
    upgrade_app_flush: Option<&'static str>,
    count_paging_io: bool,
}

impl From<&Action> for ActionJson {
    fn from(a: &Action) -> Self {
        ActionJson {
            mode: a.mode.name(),
            audit_mode: a.audited_mode.map(|m| m.name()),
            method: a.method.name(),
            flush: a.flags.policy_name(),
            upgrade_app_flush: a.upgrade_app_flush.map(|f| f.policy_name()),
            count_paging_io: a.count_paging_io,
        }
    }
}

#[derive(Serialize)]
struct RuleJson {
    index: usize,
    name: String,
    provider: &'static str,
    share: Option<String>,
    path: Option<String>,
    process: Option<String>,
    extensions: Vec<String>,
    action: ActionJson,
}

#[derive(Serialize)]
struct PolicyJson {
    generation: Option<u64>,
    attach_local_volumes: bool,
    default: ActionJson,
    rules: Vec<RuleJson>,
}

fn policy_json(p: &Policy, generation: Option<u64>) -> PolicyJson {
    PolicyJson {
        generation,
        attach_local_volumes: p.attach_local_volumes,
        default: (&p.default_action).into(),
        rules: p
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| RuleJson {
                index: i,
                name: r.name.clone(),
                provider: r.matcher.provider.name(),
                share: r.matcher.share.clone(),
                path: r.matcher.path.clone(),
                process: r.matcher.process.clone(),
                extensions: r.matcher.extensions.clone(),
                action: (&r.action).into(),
            })
            .collect(),
    }
}

fn action_summary(a: &Action) -> String {
    let mut s = a.mode.name().to_owned();
    if let Some(m) = a.audited_mode {
        s.push_str(&format!(" (of {})", m.name()));
    }
    s
}

fn print_policy_table(p: &Policy) -> Result<(), CliError> {
    let mut t = TableBuilder::new(&[
        "#", "rule", "provider", "share", "path", "process", "ext", "mode", "method", "flush",
        "upgrade",
    ]);
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "*".into());
    for (i, r) in p.rules.iter().enumerate() {
        t.row([
            i.to_string(),
            r.name.clone(),
            r.matcher.provider.name().to_owned(),
            dash(&r.matcher.share),
            dash(&r.matcher.path),
            dash(&r.matcher.process),
            if r.matcher.extensions.is_empty() {
                "*".into()
            } else {
                r.matcher.extensions.join(",")
            },
            action_summary(&r.action),
            r.action.method.name().to_owned(),
            r.action.flags.policy_name().to_owned(),
            r.action
                .upgrade_app_flush
                .map_or("-".into(), |f| f.policy_name().to_owned()),
        ]);
    }
    let d = &p.default_action;
    t.row([
        "-".into(),
        "(default)".into(),
        "*".into(),
        "*".into(),
        "*".into(),
        "*".into(),
        "*".into(),
        action_summary(d),
        d.method.name().to_owned(),
        d.flags.policy_name().to_owned(),
        d.upgrade_app_flush
            .map_or("-".into(), |f| f.policy_name().to_owned()),
    ]);
    outln!("{}", t.render());
    outln!(
        "Local volumes: {}",
        if p.attach_local_volumes {
            "attached (attach-local-volumes = true)"
        } else {
            "not attached"
        }
    );
    Ok(())
}

fn policy_show(opts: &PortOptions, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let s = c.status()?;
    let blob = c.get_policy()?;
    let p = Policy::decode(&blob).map_err(|e| CliError::PolicyDecode(e.to_string()))?;
    if json {
        print_json(&policy_json(&p, Some(s.generation))).map_err(io_err("stdout"))?;
    } else {
        outln!(
            "Active policy: generation {}, {} rule(s), first match wins.",
            s.generation,
            p.rules.len()
        );
        print_policy_table(&p)?;
        outln!("\nAs a policy file:\n\n{}", p.to_toml_string());
    }
    Ok(exit::OK)
}

/// Reads and validates a policy file (TOML); the error names line, column and field.
///
/// # Errors
/// [`CliError::Policy`] for unreadable or invalid files.
pub fn load_policy_file(path: &Path) -> Result<Policy, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Policy {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let policy = Policy::from_toml_str(&text).map_err(|e| CliError::Policy {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    // Encoding runs every check the driver's SetPolicy runs (limits, contradictions).
    policy.encode().map_err(|e| CliError::Policy {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(policy)
}

fn policy_check(file: &Path, json: bool) -> Result<u8, CliError> {
    let p = load_policy_file(file)?;
    if json {
        print_json(&policy_json(&p, None)).map_err(io_err("stdout"))?;
    } else {
        outln!(
            "{}: OK, {} rule(s); nothing was applied.",
            file.display(),
            p.rules.len()
        );
        print_policy_table(&p)?;
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct ApplyJson {
    generation: u64,
    rules: u32,
    persisted: bool,
}

fn policy_apply(
    opts: &PortOptions,
    file: &Path,
    persist: bool,
    json: bool,
) -> Result<u8, CliError> {
    let p = load_policy_file(file)?;
    let blob = p.encode().map_err(|e| CliError::Policy {
        path: file.to_owned(),
        message: e.to_string(),
    })?;
    let mut c = port::open(opts)?;
    // Events from here on tell a failed registry write apart from a rejected policy.
    let events_before = if persist {
        c.status().ok().map(|s| s.next_event_seq.saturating_sub(1))
    } else {
        None
    };
    let r = match c.set_policy(&blob, persist) {
        Ok(r) => r,
        Err(source) => {
            return Err(match events_before {
                Some(after) if store_failed_since(&mut c, after) => CliError::PortWithHint {
                    source,
                    hint: "The driver could not write the policy to the registry \
                           (HKLM\\SYSTEM\\CurrentControlSet\\Services\\FlushGuard\\Parameters\\Policy), \
                           so nothing changed: the policy in force is still the previous one \
                           (`flushctl events` shows the registry-policy-rejected `store` event).",
                },
                _ => source.into(),
            })
        }
    };
    if json {
        print_json(&ApplyJson {
            generation: r.generation,
            rules: r.rule_count,
            persisted: r.persist,
        })
        .map_err(io_err("stdout"))?;
    } else {
        outln!(
            "Applied {}: generation {}, {} rule(s){}{}.",
            file.display(),
            r.generation,
            r.rule_count,
            if r.persist {
                ", stored in the registry for the next boot"
            } else {
                " (until the driver unloads; --persist keeps it across reboots)"
            },
            offline_note(opts)
        );
    }
    Ok(exit::OK)
}

/// True when the driver recorded a `RegistryPolicyRejected` event with `value` =
/// `REGISTRY_STORE` after event sequence number `after` (a persisted SetPolicy whose
/// registry write failed). False also when the events cannot be read.
fn store_failed_since(c: &mut Client, after: u64) -> bool {
    c.events(after).is_ok_and(|r| {
        r.events
            .iter()
            .any(|e| e.kind == EventKind::RegistryPolicyRejected && e.value == REGISTRY_STORE)
    })
}

fn provider_of(arg: Option<ProviderArg>, loc: &Location) -> FileProvider {
    match arg {
        Some(ProviderArg::Smb) => FileProvider::Smb,
        Some(ProviderArg::Webdav) => FileProvider::WebDav,
        Some(ProviderArg::Nfs) => FileProvider::Nfs,
        Some(ProviderArg::Rdpdr) => FileProvider::Rdpdr,
        Some(ProviderArg::Local) => FileProvider::Local,
        None => match loc {
            Location::Remote { redirector, .. } => match redirector {
                Redirector::Smb => FileProvider::Smb,
                Redirector::WebDav => FileProvider::WebDav,
                Redirector::Nfs => FileProvider::Nfs,
                Redirector::Rdpdr => FileProvider::Rdpdr,
            },
            _ => FileProvider::Local,
        },
    }
}

fn mismatch_text(m: &Mismatch) -> String {
    match m {
        Mismatch::Provider { rule, file } => {
            format!("provider {} does not cover {}", rule.name(), file.name())
        }
        Mismatch::Share { rule, file } => format!(
            "share {rule} differs from the file's {}",
            file.as_deref().unwrap_or("(local volume)")
        ),
        Mismatch::Path { glob, file } => format!("path {glob} does not match {file}"),
        Mismatch::Process { pattern, image } => format!(
            "process {pattern} does not match {}",
            if image.is_empty() {
                "(none given)"
            } else {
                image
            }
        ),
        Mismatch::Extension { rule, file } => format!(
            "extension {} not in [{}]",
            file.as_deref().unwrap_or("(none)"),
            rule.join(", ")
        ),
        Mismatch::NoName => "the rule needs a file name, which could not be parsed".into(),
    }
}

#[derive(Serialize)]
struct ExplainJson {
    path: String,
    name: String,
    provider: &'static str,
    process: String,
    policy: String,
    matched_rule: Option<String>,
    matched_index: Option<u32>,
    action: ActionJson,
    rejected: Vec<RejectedJson>,
    name_error: Option<String>,
    /// Why the file is never governed whatever the policy says (a named pipe /
    /// mailslot share), `null` otherwise.
    exempt: Option<String>,
}

#[derive(Serialize)]
struct RejectedJson {
    index: u32,
    rule: String,
    reason: String,
}

fn policy_explain(opts: &PortOptions, args: &ExplainArgs, json: bool) -> Result<u8, CliError> {
    let mut resolver = PathResolver::new();
    for m in &args.maps {
        resolver
            .add_map(m)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let (compiled, source) = match &args.policy {
        Some(f) => {
            let p = load_policy_file(f)?;
            let c = CompiledPolicy::new(p, 0).map_err(|e| CliError::Policy {
                path: f.clone(),
                message: e.to_string(),
            })?;
            (c, f.display().to_string())
        }
        None => {
            let mut c = port::open(opts).map_err(|source| CliError::PortWithHint {
                source,
                hint: "Or explain against a policy file: --policy FILE.",
            })?;
            let blob = c.get_policy()?;
            let gen = c.status()?.generation;
            let compiled = CompiledPolicy::from_blob(&blob, gen)
                .map_err(|e| CliError::PolicyDecode(e.to_string()))?;
            (compiled, format!("{} (generation {gen})", c.describe()))
        }
    };
    let loc = resolver.resolve(&args.path);
    let name = match &loc {
        Location::Remote { device_name, .. } => device_name.clone(),
        _ => args.path.clone(),
    };
    let provider = provider_of(args.provider, &loc);
    let process = args.process.clone().unwrap_or_default();
    let (ex, name_err) = compiled.explain(&name, &process, provider);
    let p = compiled.policy();
    let rule_name = |i: u32| {
        p.rules
            .get(i as usize)
            .map_or_else(|| format!("rule {i}"), |r| r.name.clone())
    };
    let local_ignored = provider == FileProvider::Local && !p.attach_local_volumes;
    let out = ExplainJson {
        path: args.path.clone(),
        name: name.clone(),
        provider: provider.name(),
        process: process.clone(),
        policy: source,
        matched_rule: ex.matched.map(rule_name),
        matched_index: ex.matched,
        action: (&ex.action).into(),
        rejected: ex
            .rejected
            .iter()
            .map(|(i, m)| RejectedJson {
                index: *i,
                rule: rule_name(*i),
                reason: mismatch_text(m),
            })
            .collect(),
        name_error: name_err.map(|e| e.to_string()),
        exempt: ex.exempt.map(|e| e.to_string()),
    };
    if json {
        print_json(&out).map_err(io_err("stdout"))?;
        return Ok(exit::OK);
    }
    outln!("File:     {}", out.path);
    if out.name != out.path {
        outln!("Matched as: {}", out.name);
    }
    outln!("Provider: {}", out.provider);
    if !process.is_empty() {
        outln!("Process:  {process}");
    }
    outln!("Policy:   {}", out.policy);
    match (&out.name_error, &out.exempt) {
        (Some(e), None) => outln!("Note:     the name could not be parsed ({e}); only rules without share, path and extension can match."),
        (Some(e), Some(_)) => outln!("Note:     the name could not be parsed ({e})."),
        (None, _) => {}
    }
    match (&out.exempt, &out.matched_rule) {
        (Some(why), _) => outln!(
            "Result:   {why} (no rule, not the default action) -> {}",
            action_summary(&ex.action)
        ),
        (None, Some(r)) => outln!(
            "Result:   rule #{} \"{}\" -> {}",
            out.matched_index.unwrap_or(0),
            r,
            action_summary(&ex.action)
        ),
        (None, None) => outln!(
            "Result:   no rule matches -> default action: {}",
            action_summary(&ex.action)
        ),
    }
    outln!(
        "Action:   method {}, flush {}, upgrade application flushes: {}, count paging I/O: {}",
        out.action.method,
        out.action.flush,
        out.action.upgrade_app_flush.unwrap_or("no"),
        if out.action.count_paging_io {
            "yes"
        } else {
            "no"
        }
    );
    if local_ignored {
        outln!(
            "Note:     this is a local file and the policy does not attach to local volumes: \
             the driver never sees it."
        );
    }
    if !out.rejected.is_empty() {
        let mut t = TableBuilder::new(&["#", "rule", "why it does not match"]);
        for r in &out.rejected {
            t.row([r.index.to_string(), r.rule.clone(), r.reason.clone()]);
        }
        outln!("\nRules tried before:\n{}", t.render());
    }
    Ok(exit::OK)
}

// ---- stats -------------------------------------------------------------------------

#[derive(Serialize)]
struct StatsJson {
    generation: u64,
    global: BTreeMap<&'static str, u64>,
    rules: Vec<RuleStatsJson>,
    flush_latency_us: Vec<LatencyBucketJson>,
    flush_failures: Vec<FailureJson>,
    /// Every callback-layer counter by label, in wire order; `null` when the driver
    /// did not report them.
    callback_counters: Option<CallbackCountersJson>,
}

/// The callback-layer counters as one JSON object, `label: count` for every
/// [`CallbackCounter`] in wire (index) order.
struct CallbackCountersJson(Vec<u64>);

impl CallbackCountersJson {
    fn get(&self, c: CallbackCounter) -> u64 {
        self.0.get(c as usize).copied().unwrap_or(0)
    }
}

impl Serialize for CallbackCountersJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(CallbackCounter::ALL.len()))?;
        for c in CallbackCounter::ALL {
            m.serialize_entry(c.label(), &self.get(c))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RuleStatsJson {
    rule: String,
    counters: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct LatencyBucketJson {
    from_us: u64,
    below_us: u64,
    count: u64,
}

#[derive(Serialize)]
struct FailureJson {
    status: String,
    name: Option<&'static str>,
    count: u64,
}

fn counter_map(v: &[u64]) -> BTreeMap<&'static str, u64> {
    Counter::ALL
        .iter()
        .map(|c| (c.label(), v.get(*c as usize).copied().unwrap_or(0)))
        .collect()
}

/// One stats round; with `json_lines`, one compact JSON object on one line (for
/// `--watch --json`).
fn stats_once(
    c: &mut Client,
    names: &[String],
    args: &StatsArgs,
    json: bool,
    json_lines: bool,
) -> Result<(), CliError> {
    let s = c.stats()?;
    let mut rules = Vec::with_capacity(s.rules.len() + 1);
    for (i, r) in s.rules.iter().enumerate() {
        rules.push(RuleStatsJson {
            rule: names.get(i).cloned().unwrap_or_else(|| format!("rule {i}")),
            counters: counter_map(r),
        });
    }
    rules.push(RuleStatsJson {
        rule: "(default)".into(),
        counters: counter_map(&s.default_rule),
    });
    let latency: Vec<LatencyBucketJson> = s
        .latency
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| LatencyBucketJson {
            from_us: bucket_floor_us(i),
            below_us: bucket_floor_us(i + 1),
            count: *n,
        })
        .collect();
    let failures: Vec<FailureJson> = s
        .failures
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(st, n)| {
            let status = NtStatus::from_bits(*st);
            FailureJson {
                status: if *st == 0 {
                    "other".into()
                } else {
                    status.to_string()
                },
                name: status.name().filter(|_| *st != 0),
                count: *n,
            }
        })
        .collect();
    let out = StatsJson {
        generation: s.generation,
        global: counter_map(&s.global),
        rules,
        flush_latency_us: latency,
        flush_failures: failures,
        callback_counters: s.callbacks.map(CallbackCountersJson),
    };
    if json && json_lines {
        let line = serde_json::to_string(&out)
            .map_err(|e| CliError::io("json", std::io::Error::other(e)))?;
        outln!("{line}");
        return Ok(());
    }
    if json {
        print_json(&out).map_err(io_err("stdout"))?;
        return Ok(());
    }
    outln!("Counters for policy generation {}:", out.generation);
    let mut headers: Vec<String> = vec!["counter".into(), "total#".into()];
    headers.extend(out.rules.iter().map(|r| format!("{}#", r.rule)));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut t = TableBuilder::new(&header_refs);
    for c in Counter::ALL {
        let mut row = vec![c.label().to_owned(), out.global[c.label()].to_string()];
        row.extend(out.rules.iter().map(|r| r.counters[c.label()].to_string()));
        t.row(row);
    }
    outln!("{}", t.render());
    if out.flush_latency_us.is_empty() {
        outln!("Flush latency: no flushes yet.");
    } else {
        let mut t = TableBuilder::new(&["flush latency", "count#"]);
        for b in &out.flush_latency_us {
            t.row([
                format!("{} - {} µs", b.from_us, b.below_us),
                b.count.to_string(),
            ]);
        }
        outln!("{}", t.render());
    }
    if !out.flush_failures.is_empty() {
        let mut t = TableBuilder::new(&["flush failure status", "count#"]);
        for f in &out.flush_failures {
            t.row([
                match f.name {
                    Some(n) => format!("{} ({n})", f.status),
                    None => f.status.clone(),
                },
                f.count.to_string(),
            ]);
        }
        outln!("{}", t.render());
    }
    print_callback_counters(out.callback_counters.as_ref(), args.all_causes)
}

/// The "fail-open and skip causes" section: the callback-layer counters that are
/// not zero (every one with `all`), in wire order.
fn print_callback_counters(
    counters: Option<&CallbackCountersJson>,
    all: bool,
) -> Result<(), CliError> {
    let Some(counters) = counters else {
        outln!(
            "Fail-open and skip causes: not reported (the driver predates the \
             callback-layer counters)."
        );
        return Ok(());
    };
    let mut t = TableBuilder::new(&["fail-open and skip causes", "count#"]);
    for c in CallbackCounter::ALL {
        let n = counters.get(c);
        if all || n != 0 {
            t.row([c.label().to_owned(), n.to_string()]);
        }
    }
    if t.is_empty() {
        outln!("Fail-open and skip causes: none counted (--all-causes lists every counter).");
    } else {
        outln!("{}", t.render());
    }
    Ok(())
}

fn stats(opts: &PortOptions, args: &StatsArgs, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let blob = c.get_policy()?;
    let names: Vec<String> = Policy::decode(&blob)
        .map(|p| p.rules.into_iter().map(|r| r.name).collect())
        .unwrap_or_default();
    let mut round = 0u64;
    loop {
        stats_once(&mut c, &names, args, json, args.watch.is_some())?;
        round += 1;
        let Some(secs) = args.watch else { break };
        if args.count.is_some_and(|n| round >= n) {
            break;
        }
        std::io::stdout().flush().map_err(io_err("stdout"))?;
        std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
        if !json {
            outln!();
        }
    }
    if args.reset {
        c.reset_stats()?;
        if !json {
            outln!("Counters reset.");
        }
    }
    Ok(exit::OK)
}

// ---- events ------------------------------------------------------------------------

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

/// 100-ns units since 1601-01-01 UTC as `YYYY-MM-DD hh:mm:ss.fffffff UTC`.
fn format_time(t: u64) -> String {
    const EPOCH_DIFF_SECS: i64 = 11_644_473_600;
    let secs = (t / 10_000_000) as i64 - EPOCH_DIFF_SECS;
    let frac = t % 10_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:07} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
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
        method: (e.kind == EventKind::FlushFailed).then_some(if e.method == 1 {
            "native"
        } else {
            "filter"
        }),
        value: e.value,
        registry_op: (e.kind == EventKind::RegistryPolicyRejected)
            .then(|| registry_op(e.value))
            .flatten(),
        name: e.name_chars().collect(),
        name_truncated: e.flags & EVENT_FLAG_NAME_TRUNCATED != 0,
        persisted: e.flags & EVENT_FLAG_PERSISTED != 0,
    }
}

fn event_detail(e: &EventJson) -> String {
    match e.kind {
        "flush-failed" => format!(
            "{}{} after {} µs ({} method)",
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

fn events(opts: &PortOptions, args: &EventsArgs, json: bool) -> Result<u8, CliError> {
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
                .map_err(io_err("stdout"))?;
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
        std::io::stdout().flush().map_err(io_err("stdout"))?;
        std::thread::sleep(std::time::Duration::from_millis(args.interval_ms.max(10)));
    }
    Ok(exit::OK)
}

// ---- replay ------------------------------------------------------------------------

/// The engine a replay runs: a fresh in-process driver loaded with `blob` as its
/// `Parameters\Policy` value, exactly as DriverEntry loads it.
///
/// # Errors
/// [`CliError::PolicyDecode`] when the driver would reject the blob.
pub fn replay_filter(blob: Vec<u8>) -> Result<Filter<SimFm>, CliError> {
    match port::inproc::new_filter(Some(blob)) {
        (filter, PolicySource::Registry) => Ok(filter),
        (_, source) => Err(CliError::PolicyDecode(format!(
            "the replay engine did not load the policy ({source:?}); see `flushctl policy check`"
        ))),
    }
}

/// Runs a replay of `trace` under `filter`; the reusable core of `flushctl replay`.
///
/// # Errors
/// [`CliError::Trace`] when the trace cannot be read, [`CliError::MalformedTrace`] for
/// `--strict`, [`CliError::Usage`] for a bad `--map`.
pub fn replay_file(
    filter: &Filter<SimFm>,
    trace: &Path,
    maps: &[String],
    opts: ReplayOptions,
    policy_source: String,
    show_progress: bool,
) -> Result<Report, CliError> {
    let mut resolver = PathResolver::new();
    for m in maps {
        resolver
            .add_map(m)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    let file = std::fs::File::open(trace).map_err(|e| CliError::Trace {
        path: trace.to_owned(),
        source: e.into(),
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader =
        TraceReader::new(std::io::BufReader::with_capacity(1 << 20, file)).map_err(|source| {
            CliError::Trace {
                path: trace.to_owned(),
                source,
            }
        })?;
    let bar = show_progress.then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut replayer = Replayer::new(filter, resolver, opts);
    let res = replayer.run(&mut reader, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match res {
        Ok(()) => {}
        Err(ReplayError::Trace(source)) => {
            return Err(CliError::Trace {
                path: trace.to_owned(),
                source,
            })
        }
        Err(ReplayError::Strict(m)) => {
            return Err(CliError::MalformedTrace {
                path: trace.to_owned(),
                line: m.line,
                reason: m.reason,
            })
        }
    }
    Ok(replayer.finish(trace.display().to_string(), policy_source))
}

fn replay(opts: &PortOptions, args: &ReplayArgs, json: bool) -> Result<u8, CliError> {
    let (blob, source) = match &args.policy {
        Some(f) => {
            let p = load_policy_file(f)?;
            let blob = p.encode().map_err(|e| CliError::Policy {
                path: f.clone(),
                message: e.to_string(),
            })?;
            (blob, f.display().to_string())
        }
        None => {
            let mut c = port::open(opts).map_err(|source| CliError::PortWithHint {
                source,
                hint: "Or replay under a policy file: --policy FILE.",
            })?;
            let gen = c.status()?.generation;
            (
                c.get_policy()?,
                format!("the {}'s active policy (generation {gen})", c.describe()),
            )
        }
    };
    let filter = replay_filter(blob)?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let report = replay_file(
        &filter,
        &args.trace,
        &args.maps,
        ReplayOptions {
            strict: args.strict,
            max_files: args.max_files.max(1),
        },
        source,
        progress,
    )?;
    if json {
        print_json(&report).map_err(io_err("stdout"))?;
    } else {
        print_report(&report, args.top)?;
    }
    if report.counts.malformed > 0 {
        eprintln!(
            "flushctl: warning: {} malformed line(s) skipped (first at line {}); --strict stops at the first.",
            report.counts.malformed,
            report.malformed.first().map_or(0, |m| m.line)
        );
    }
    Ok(exit::OK)
}

fn print_report(r: &Report, top: usize) -> Result<(), CliError> {
    let c = &r.counts;
    outln!("Replay of {}", r.trace);
    outln!(
        "Policy:  {} (local volumes {})",
        r.policy,
        if r.attach_local_volumes {
            "attached"
        } else {
            "not attached"
        }
    );
    outln!(
        "Rows:    {} read, {} replayed through the callbacks, {} other operations, {} not files, {} on local volumes not attached, {} malformed",
        c.rows, c.events_replayed, c.other_rows, c.not_a_file, c.local_not_attached, c.malformed
    );
    if c.without_known_open > 0 || c.handles_evicted > 0 || c.files_folded > 0 {
        outln!(
            "Notes:   {} operation(s) on handles opened before the capture; {} handle(s) forgotten and {} file(s) folded to stay within memory bounds",
            c.without_known_open, c.handles_evicted, c.files_folded
        );
    }
    for m in r.malformed.iter().take(10) {
        outln!("  malformed line {}: {}", m.line, m.reason);
    }
    outln!();
    let mut t = TableBuilder::new(&[
        "rule",
        "mode",
        "files#",
        "writes#",
        "governed#",
        "WT forced#",
        "FG flushes#",
        "audit: would",
        "app flushes#",
        "unflushed files#",
        "unflushed bytes#",
        "extra RTs#",
    ]);
    for rule in &r.rules {
        let f = &rule.figures;
        let would = |k: &str| rule.engine_counters.get(k).copied().unwrap_or(0);
        t.row([
            rule.rule.clone(),
            rule.mode.to_owned(),
            rule.files.to_string(),
            f.writes.to_string(),
            f.writes_governed.to_string(),
            f.write_throughs_forced.to_string(),
            f.flushes_issued.to_string(),
            if rule.mode == "audit" {
                format!(
                    "{} flush, {} WT",
                    would("audit_would_flush"),
                    would("audit_would_write_through")
                )
            } else {
                "-".into()
            },
            f.app_flushes.to_string(),
            format!(
                "{} -> {}",
                f.unflushed_files_without, f.unflushed_files_with
            ),
            format!(
                "{} -> {}",
                bytes(f.unflushed_bytes_without),
                bytes(f.unflushed_bytes_with)
            ),
            f.extra_round_trips.to_string(),
        ]);
    }
    outln!(
        "Per rule (unflushed: as traced -> with FlushGuard):\n{}",
        t.render()
    );
    let mut files: Vec<&crate::replay::FileReport> = r.files.iter().collect();
    files.sort_by(|a, b| {
        b.figures
            .unflushed_bytes_without
            .cmp(&a.figures.unflushed_bytes_without)
            .then(b.figures.write_bytes.cmp(&a.figures.write_bytes))
    });
    let mut t = TableBuilder::new(&[
        "file",
        "rule",
        "writes#",
        "bytes#",
        "paging#",
        "WT forced#",
        "FG flushes#",
        "app flushes#",
        "unflushed at end#",
        "extra RTs#",
    ]);
    // One per-file row: the file (or the folded rest), its rule, then its figures.
    let file_row = |name: String, rule: &str, g: &crate::replay::Figures| {
        [
            name,
            rule.to_owned(),
            g.writes.to_string(),
            bytes(g.write_bytes),
            g.paging_writes.to_string(),
            g.write_throughs_forced.to_string(),
            g.flushes_issued.to_string(),
            g.app_flushes.to_string(),
            format!(
                "{} -> {}",
                bytes(g.unflushed_bytes_without),
                bytes(g.unflushed_bytes_with)
            ),
            g.extra_round_trips.to_string(),
        ]
    };
    for f in files.iter().take(top) {
        t.row(file_row(f.path.clone(), &f.rule, &f.figures));
    }
    if let Some(o) = &r.other_files {
        let name = format!("(other files: {})", r.counts.files_folded);
        t.row(file_row(name, &o.rule, &o.figures));
    }
    if t.is_empty() {
        outln!("No writes or flushes on files the policy attaches to.");
    } else {
        outln!(
            "Per file ({} of {}, most unflushed first):\n{}",
            files.len().min(top),
            files.len(),
            t.render()
        );
    }
    let tot = &r.totals;
    outln!(
        "\nAt the end of the trace: {} file(s) / {} unflushed as traced; with this policy {} file(s) / {}.",
        tot.unflushed_files_without,
        bytes(tot.unflushed_bytes_without),
        tot.unflushed_files_with,
        bytes(tot.unflushed_bytes_with)
    );
    outln!(
        "FlushGuard would issue {} flush(es) and force write-through {} time(s): {} extra round trip(s); the applications issued {} flush(es) themselves.",
        tot.flushes_issued, tot.write_throughs_forced, tot.extra_round_trips, tot.app_flushes
    );
    Ok(())
}
