//! `flushctl policy explain`: which rule governs a path and why each earlier rule did
//! not match.

use flushguard_engine::matcher::Mismatch;
use flushguard_engine::{CompiledPolicy, FileProvider};
use serde::Serialize;

use super::policy::{action_summary, load_policy_file, ActionJson};
use crate::cli::ExplainArgs;
use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{print_json, TableBuilder};
use crate::port::{self, PortOptions};
use crate::trace::path::{Location, PathResolver};

/// `--provider`, else the redirector the path shows, else a local volume.
fn provider_of(arg: Option<FileProvider>, loc: &Location) -> FileProvider {
    match (arg, loc) {
        (Some(p), _) => p,
        (None, Location::Remote { redirector, .. }) => *redirector,
        (None, _) => FileProvider::Local,
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

pub(super) fn policy_explain(
    opts: &PortOptions,
    args: &ExplainArgs,
    json: bool,
) -> Result<u8, CliError> {
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
        print_json(&out).map_err(CliError::io_while("stdout"))?;
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
