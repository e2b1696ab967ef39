//! Policy files: TOML via serde + toml (std feature). Schema: see
//! `docs/policy.md` (the policy file reference) and `examples/`.
//!
//! ```toml
//! attach-local-volumes = false        # optional, default false
//!
//! [default]                           # optional, default mode = "pass"
//! mode = "pass"
//!
//! [[rule]]
//! name = "sql-data"                   # required, unique, 1..=64 characters
//! provider = "smb"                    # any (default) | smb | webdav | nfs | rdpdr
//! share = '\\fs1\sql'                 # or '\Device\Mup\fs1\sql', '\\?\UNC\fs1\sql'
//! path = "**/*.mdf"                   # glob below the share
//! process = "sqlservr.exe"            # image file name pattern
//! extensions = ["mdf", "ldf"]         # any of
//! mode = "write-through"              # pass | audit | write-through | flush-after-write | flush-on-close | group-commit
//! audit-mode = "flush-after-write"    # only with mode = "audit" (default write-through)
//! max-batch = 64                      # group-commit only: writers per flush, 1..=4096 (default 64)
//! max-batch-wait-us = 0               # group-commit only: leader's wait, 0..=50000 µs (default 0)
//! method = "filter"                   # filter (FltFlushBuffers2) | native (ZwFlushBuffersFileEx)
//! flush = "full"                      # full | no-sync | data-sync-only | file-data-only | flush-and-purge
//! upgrade-app-flush = "full"          # optional: upgrade application flushes to at least this
//! count-paging-io = false             # optional
//! ```
//!
//! Every error names the line, the column, the field (`rule[2].mode`) and what
//! was expected; nothing is applied from a file with any error.

use std::format;
use std::ops::Range;
use std::string::{String, ToString};
use std::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;
use toml::Spanned;

use crate::policy::{
    Action, FlushMethod, GroupOptions, Matcher, Mode, Policy, PolicyError, ProviderSelector, Rule,
};
use flushguard_protocol::{Contradiction, DecodeError, FlushFlags};

/// The file as serde reads and writes it. `Spanned` fields locate semantic errors;
/// [`Policy::to_toml_string`] writes the same structs (with empty spans).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileToml {
    #[serde(default, skip_serializing_if = "is_false")]
    attach_local_volumes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<Spanned<ActionToml>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rule: Vec<Spanned<RuleToml>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ActionToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<FlushMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<FlushToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upgrade_app_flush: Option<FlushToml>,
    #[serde(default, skip_serializing_if = "is_false")]
    count_paging_io: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_batch: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_batch_wait_us: Option<Spanned<u32>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleToml {
    name: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<ProviderSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extensions: Option<Spanned<Vec<String>>>,
    mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<FlushMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<FlushToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upgrade_app_flush: Option<FlushToml>,
    #[serde(default, skip_serializing_if = "is_false")]
    count_paging_io: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_batch: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_batch_wait_us: Option<Spanned<u32>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A flush type by its policy-file name ([`FlushFlags::policy_name`]).
#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum FlushToml {
    Full,
    NoSync,
    DataSyncOnly,
    FileDataOnly,
    FlushAndPurge,
}

impl From<FlushToml> for FlushFlags {
    fn from(f: FlushToml) -> FlushFlags {
        match f {
            FlushToml::Full => FlushFlags::empty(),
            FlushToml::NoSync => FlushFlags::NO_SYNC,
            FlushToml::DataSyncOnly => FlushFlags::DATA_SYNC_ONLY,
            FlushToml::FileDataOnly => FlushFlags::FILE_DATA_ONLY,
            FlushToml::FlushAndPurge => FlushFlags::FLUSH_AND_PURGE,
        }
    }
}

impl FlushToml {
    /// The one spelling of a validated single flush type (`None` for a combination,
    /// which [`Action::validate`] rejects).
    fn of(flags: FlushFlags) -> Option<FlushToml> {
        [
            FlushToml::Full,
            FlushToml::NoSync,
            FlushToml::DataSyncOnly,
            FlushToml::FileDataOnly,
            FlushToml::FlushAndPurge,
        ]
        .into_iter()
        .find(|t| FlushFlags::from(*t) == flags)
    }
}

impl ActionToml {
    fn to_action(&self) -> Action {
        action_from(
            self.mode,
            self.audit_mode,
            self.method,
            self.flush,
            self.upgrade_app_flush,
            self.count_paging_io,
            group_from(&self.max_batch, &self.max_batch_wait_us),
        )
    }

    /// The keys [`Policy::to_toml_string`] writes: `mode` always, the others only
    /// when they differ from their defaults.
    fn of(a: &Action) -> ActionToml {
        ActionToml {
            mode: Some(a.mode),
            audit_mode: match (a.mode, a.audited_mode) {
                (Mode::Audit, m) => m,
                _ => None,
            },
            method: (a.method != FlushMethod::Filter).then_some(a.method),
            flush: if a.flags.is_empty() {
                None
            } else {
                FlushToml::of(a.flags)
            },
            upgrade_app_flush: a.upgrade_app_flush.and_then(FlushToml::of),
            count_paging_io: a.count_paging_io,
            max_batch: a
                .group
                .filter(|g| g.max_batch != GroupOptions::DEFAULT.max_batch)
                .map(|g| Spanned::new(0..0, g.max_batch)),
            max_batch_wait_us: a
                .group
                .filter(|g| g.max_batch_wait_us != GroupOptions::DEFAULT.max_batch_wait_us)
                .map(|g| Spanned::new(0..0, g.max_batch_wait_us)),
        }
    }
}

/// The group-commit options as written: `Some` when either key is present (defaults
/// for the other). Which mode they go with is [`action_from`]'s business.
fn group_from(
    max_batch: &Option<Spanned<u32>>,
    wait: &Option<Spanned<u32>>,
) -> Option<GroupOptions> {
    (max_batch.is_some() || wait.is_some()).then(|| GroupOptions {
        max_batch: max_batch
            .as_ref()
            .map_or(GroupOptions::DEFAULT.max_batch, |v| *v.get_ref()),
        max_batch_wait_us: wait
            .as_ref()
            .map_or(GroupOptions::DEFAULT.max_batch_wait_us, |v| *v.get_ref()),
    })
}

fn action_from(
    mode: Option<Mode>,
    audit_mode: Option<Mode>,
    method: Option<FlushMethod>,
    flush: Option<FlushToml>,
    upgrade: Option<FlushToml>,
    count_paging_io: bool,
    group: Option<GroupOptions>,
) -> Action {
    let mode = mode.unwrap_or(Mode::Pass);
    let audited_mode = match (mode, audit_mode) {
        (_, Some(m)) => Some(m),
        (Mode::Audit, None) => Some(Mode::WriteThrough),
        _ => None,
    };
    let mut action = Action {
        mode,
        audited_mode,
        method: method.unwrap_or(FlushMethod::Filter),
        flags: flush.map_or(FlushFlags::empty(), FlushFlags::from),
        upgrade_app_flush: upgrade.map(FlushFlags::from),
        count_paging_io,
        group,
    };
    // A group-commit rule without options gets the defaults; options on another
    // mode stay, for validate to reject at the key.
    if action.effective_mode() == Mode::GroupCommit && action.group.is_none() {
        action.group = Some(GroupOptions::DEFAULT);
    }
    action
}

/// 1-based (line, column) of byte `offset` in `src` (column in characters).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Dotted field path of a deserialization error (`rule[2].mode`, `default.method`,
/// `attach-local-volumes`), from serde_path_to_error's path; the `Spanned` wrappers'
/// private keys are left out.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn syntax(src: &str, span: Option<Range<usize>>, field: String, message: String) -> PolicyError {
    let off = span.map_or(0, |s| s.start);
    let (line, column) = line_col(src, off);
    PolicyError::Syntax {
        line,
        column,
        field,
        message,
    }
}

impl Policy {
    /// Parses and validates a TOML policy file.
    ///
    /// Errors: `PolicyError::Syntax { line, column, field, message }` for TOML
    /// syntax, unknown fields, wrong types, unknown enumeration values (the
    /// message lists the accepted values) and every semantic problem of
    /// [`Policy::validate`] (located at the offending field).
    pub fn from_toml_str(src: &str) -> Result<Policy, PolicyError> {
        let de = toml::Deserializer::parse(src)
            .map_err(|e| syntax(src, e.span(), String::new(), e.message().to_string()))?;
        let file: FileToml = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = field_path(e.path());
            let e = e.into_inner();
            syntax(src, e.span(), field, e.message().to_string())
        })?;
        let default_span = file.default.as_ref().map(Spanned::span);
        let default_action = file
            .default
            .map_or_else(|| Action::PASS, |d| d.into_inner().to_action());
        let mut spans = Vec::with_capacity(file.rule.len());
        let mut rules = Vec::with_capacity(file.rule.len());
        for r in file.rule {
            let rule_span = r.span();
            let r = r.into_inner();
            let fs = |s: &Option<Spanned<String>>| s.as_ref().map(Spanned::span);
            spans.push((
                rule_span.clone(),
                [
                    ("name", Some(r.name.span())),
                    ("share", fs(&r.share)),
                    ("path", fs(&r.path)),
                    ("process", fs(&r.process)),
                    ("extensions", r.extensions.as_ref().map(Spanned::span)),
                    (
                        "max-batch",
                        r.max_batch
                            .as_ref()
                            .or(r.max_batch_wait_us.as_ref())
                            .map(Spanned::span),
                    ),
                    (
                        "max-batch-wait-us",
                        r.max_batch_wait_us.as_ref().map(Spanned::span),
                    ),
                ],
            ));
            rules.push(Rule {
                name: r.name.into_inner(),
                matcher: Matcher {
                    provider: r.provider.unwrap_or_default(),
                    share: r.share.map(Spanned::into_inner),
                    path: r.path.map(Spanned::into_inner),
                    process: r.process.map(Spanned::into_inner),
                    extensions: r.extensions.map(Spanned::into_inner).unwrap_or_default(),
                },
                action: action_from(
                    Some(r.mode),
                    r.audit_mode,
                    r.method,
                    r.flush,
                    r.upgrade_app_flush,
                    r.count_paging_io,
                    group_from(&r.max_batch, &r.max_batch_wait_us),
                ),
            });
        }
        let policy = Policy {
            rules,
            default_action,
            attach_local_volumes: file.attach_local_volumes,
        };
        match policy.validate() {
            Ok(()) => Ok(policy),
            Err(PolicyError::Invalid {
                rule, field, error, ..
            }) => {
                let (span, path) = match rule.and_then(|i| spans.get(i).map(|s| (i, s))) {
                    Some((i, (rule_span, fields))) => {
                        let span = fields
                            .iter()
                            .find(|(f, _)| *f == field)
                            .and_then(|(_, s)| s.clone())
                            .unwrap_or_else(|| rule_span.clone());
                        (Some(span), format!("rule[{i}].{field}"))
                    }
                    None => (default_span, field.to_string()),
                };
                // A well-formed share that is never governed: "expected" would
                // suggest a spelling problem.
                let message = match error {
                    DecodeError::Contradictory(Contradiction::IpcShare) => format!(
                        "{error}: remote named pipes and mailslots are always passed \
                         through, so this rule could never apply (remove it)"
                    ),
                    _ => format!("{error} (expected {})", expected_for(field)),
                };
                Err(syntax(src, span, path, message))
            }
            Err(e) => Err(e),
        }
    }

    /// Renders the policy as a TOML policy file that parses back to an equal
    /// policy (used by `flushctl policy show`): the structs [`Policy::from_toml_str`]
    /// reads, serialized; keys at their default are left out (except `mode`).
    pub fn to_toml_string(&self) -> String {
        let unspanned = |v| Spanned::new(0..0, v);
        let file = FileToml {
            attach_local_volumes: self.attach_local_volumes,
            default: Some(unspanned(ActionToml::of(&self.default_action))),
            rule: self
                .rules
                .iter()
                .map(|r| {
                    let a = ActionToml::of(&r.action);
                    Spanned::new(
                        0..0,
                        RuleToml {
                            name: Spanned::new(0..0, r.name.clone()),
                            provider: (r.matcher.provider != ProviderSelector::Any)
                                .then_some(r.matcher.provider),
                            share: r.matcher.share.clone().map(|v| Spanned::new(0..0, v)),
                            path: r.matcher.path.clone().map(|v| Spanned::new(0..0, v)),
                            process: r.matcher.process.clone().map(|v| Spanned::new(0..0, v)),
                            extensions: (!r.matcher.extensions.is_empty())
                                .then(|| Spanned::new(0..0, r.matcher.extensions.clone())),
                            mode: r.action.mode,
                            audit_mode: a.audit_mode,
                            method: a.method,
                            flush: a.flush,
                            upgrade_app_flush: a.upgrade_app_flush,
                            count_paging_io: a.count_paging_io,
                            max_batch: a.max_batch,
                            max_batch_wait_us: a.max_batch_wait_us,
                        },
                    )
                })
                .collect(),
        };
        toml::to_string(&file).unwrap_or_default()
    }
}

fn expected_for(field: &str) -> &'static str {
    match field {
        "share" => "\\\\server\\share, \\Device\\Mup\\server\\share or \\\\?\\UNC\\server\\share",
        "path" => "a glob below the share such as **/*.db or logs/*, without . or .. components",
        "process" => "an image file name pattern such as sqlservr.exe",
        "extensions" => "at most 32 extensions such as \"db\" or \".mdf\", without wildcards",
        "name" => "a unique, non-empty name of at most 64 characters",
        "rules" => "at most 16384 rules",
        "max-batch" => {
            "max-batch (1..=4096) and max-batch-wait-us only with mode group-commit \
             (or audit-mode group-commit)"
        }
        "max-batch-wait-us" => "0..=50000 microseconds, only with mode group-commit",
        _ => {
            "a consistent action: one flush type, no flush-and-purge with method native, \
              no flush settings on pass, audit-mode only with mode audit"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
