//! `flushctl policy show | check | apply`: the policy as a table and as JSON, validation
//! of a policy file, and the all-or-nothing apply (with `--persist`).

use std::path::Path;

use flushguard_engine::protocol::events::{EventKind, REGISTRY_STORE};
use flushguard_engine::{Action, Policy};
use serde::Serialize;

use crate::error::CliError;
use crate::exit;
use crate::outln;
use crate::output::{print_json, TableBuilder};
use crate::port::{self, Client, PortOptions};

#[derive(Serialize)]
pub(super) struct ActionJson {
    pub(super) mode: &'static str,
    pub(super) audit_mode: Option<&'static str>,
    pub(super) method: &'static str,
    pub(super) flush: &'static str,
    pub(super) upgrade_app_flush: Option<&'static str>,
    pub(super) count_paging_io: bool,
    /// Group-commit options (`null` unless the (audited) mode is group-commit).
    pub(super) max_batch: Option<u32>,
    pub(super) max_batch_wait_us: Option<u32>,
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
            max_batch: a.group.map(|g| g.max_batch),
            max_batch_wait_us: a.group.map(|g| g.max_batch_wait_us),
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
pub(super) struct PolicyJson {
    generation: Option<u64>,
    attach_local_volumes: bool,
    default: ActionJson,
    rules: Vec<RuleJson>,
}

pub(super) fn policy_json(p: &Policy, generation: Option<u64>) -> PolicyJson {
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

pub(super) fn action_summary(a: &Action) -> String {
    let mut s = a.mode.name().to_owned();
    if let Some(m) = a.audited_mode {
        s.push_str(&format!(" (of {})", m.name()));
    }
    if let Some(g) = a.group {
        s.push_str(&format!(
            " [batch <= {}, wait {} us]",
            g.max_batch, g.max_batch_wait_us
        ));
    }
    s
}

pub(super) fn print_policy_table(p: &Policy) -> Result<(), CliError> {
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

pub(super) fn policy_show(opts: &PortOptions, json: bool) -> Result<u8, CliError> {
    let mut c = port::open(opts)?;
    let s = c.status()?;
    let blob = c.get_policy()?;
    let p = Policy::decode(&blob).map_err(|e| CliError::PolicyDecode(e.to_string()))?;
    if json {
        print_json(&policy_json(&p, Some(s.generation))).map_err(CliError::io_while("stdout"))?;
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

pub(super) fn policy_check(file: &Path, json: bool) -> Result<u8, CliError> {
    let p = load_policy_file(file)?;
    if json {
        print_json(&policy_json(&p, None)).map_err(CliError::io_while("stdout"))?;
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

pub(super) fn policy_apply(
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
        .map_err(CliError::io_while("stdout"))?;
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
            opts.offline_note()
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
