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
//! mode = "write-through"              # pass | audit | write-through | flush-after-write | flush-on-close
//! audit-mode = "flush-after-write"    # only with mode = "audit" (default write-through)
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

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{Action, FlushMethod, Matcher, Mode, Policy, PolicyError, Provider, Rule};
use flushguard_protocol::{Contradiction, DecodeError, FlushFlags};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileToml {
    #[serde(default)]
    attach_local_volumes: bool,
    #[serde(default)]
    default: Option<Spanned<ActionToml>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleToml>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ActionToml {
    #[serde(default)]
    mode: Option<ModeToml>,
    #[serde(default)]
    audit_mode: Option<ModeToml>,
    #[serde(default)]
    method: Option<MethodToml>,
    #[serde(default)]
    flush: Option<FlushToml>,
    #[serde(default)]
    upgrade_app_flush: Option<FlushToml>,
    #[serde(default)]
    count_paging_io: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleToml {
    name: Spanned<String>,
    #[serde(default)]
    provider: Option<ProviderToml>,
    #[serde(default)]
    share: Option<Spanned<String>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    process: Option<Spanned<String>>,
    #[serde(default)]
    extensions: Option<Spanned<Vec<String>>>,
    mode: ModeToml,
    #[serde(default)]
    audit_mode: Option<ModeToml>,
    #[serde(default)]
    method: Option<MethodToml>,
    #[serde(default)]
    flush: Option<FlushToml>,
    #[serde(default)]
    upgrade_app_flush: Option<FlushToml>,
    #[serde(default)]
    count_paging_io: bool,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum ModeToml {
    Pass,
    Audit,
    WriteThrough,
    FlushAfterWrite,
    FlushOnClose,
}

impl From<ModeToml> for Mode {
    fn from(m: ModeToml) -> Mode {
        match m {
            ModeToml::Pass => Mode::Pass,
            ModeToml::Audit => Mode::Audit,
            ModeToml::WriteThrough => Mode::WriteThrough,
            ModeToml::FlushAfterWrite => Mode::FlushAfterWrite,
            ModeToml::FlushOnClose => Mode::FlushOnClose,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum MethodToml {
    Filter,
    Native,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum ProviderToml {
    Any,
    Smb,
    Webdav,
    Nfs,
    Rdpdr,
}

#[derive(Deserialize, Clone, Copy)]
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

fn action_from(
    mode: Option<ModeToml>,
    audit_mode: Option<ModeToml>,
    method: Option<MethodToml>,
    flush: Option<FlushToml>,
    upgrade: Option<FlushToml>,
    count_paging_io: bool,
) -> Action {
    let mode = mode.map_or(Mode::Pass, Mode::from);
    let audited_mode = match (mode, audit_mode) {
        (_, Some(m)) => Some(Mode::from(m)),
        (Mode::Audit, None) => Some(Mode::WriteThrough),
        _ => None,
    };
    Action {
        mode,
        audited_mode,
        method: match method {
            Some(MethodToml::Native) => FlushMethod::Native,
            _ => FlushMethod::Filter,
        },
        flags: flush.map_or(FlushFlags::empty(), FlushFlags::from),
        upgrade_app_flush: upgrade.map(FlushFlags::from),
        count_paging_io,
    }
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

/// Dotted field path at `offset`: `rule[i].key`, `default.key` or `key`.
fn field_at(src: &str, offset: usize) -> String {
    let before = src.get(..offset.min(src.len())).unwrap_or(src);
    let mut table = String::new();
    let mut rule_idx: Option<usize> = None;
    for line in before.lines() {
        let t = line.trim();
        if t.starts_with("[[") {
            if t.trim_start_matches('[').trim_end_matches(']').trim() == "rule" {
                rule_idx = Some(rule_idx.map_or(0, |i| i + 1));
                table = format!("rule[{}]", rule_idx.unwrap_or(0));
            } else {
                table = t.to_string();
            }
        } else if t.starts_with('[') {
            table = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
        }
    }
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let line = src
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let key = match line.find('=') {
        Some(eq) if !line.trim_start().starts_with('[') => {
            line.get(..eq).unwrap_or("").trim().to_string()
        }
        _ => String::new(),
    };
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

fn syntax(
    src: &str,
    span: Option<Range<usize>>,
    field: Option<String>,
    message: String,
) -> PolicyError {
    let off = span.map_or(0, |s| s.start);
    let (line, column) = line_col(src, off);
    PolicyError::Syntax {
        line,
        column,
        field: field.unwrap_or_else(|| field_at(src, off)),
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
        let file: FileToml = toml::from_str(src)
            .map_err(|e| syntax(src, e.span(), None, e.message().to_string()))?;
        let default_span = file.default.as_ref().map(Spanned::span);
        let default_action = file.default.map_or_else(
            || Action::PASS,
            |d| {
                let d = d.into_inner();
                action_from(
                    d.mode,
                    d.audit_mode,
                    d.method,
                    d.flush,
                    d.upgrade_app_flush,
                    d.count_paging_io,
                )
            },
        );
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
                ],
            ));
            rules.push(Rule {
                name: r.name.into_inner(),
                matcher: Matcher {
                    provider: match r.provider {
                        None | Some(ProviderToml::Any) => Provider::Any,
                        Some(ProviderToml::Smb) => Provider::Smb,
                        Some(ProviderToml::Webdav) => Provider::WebDav,
                        Some(ProviderToml::Nfs) => Provider::Nfs,
                        Some(ProviderToml::Rdpdr) => Provider::Rdpdr,
                    },
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
                Err(syntax(src, span, Some(path), message))
            }
            Err(e) => Err(e),
        }
    }

    /// Renders the policy as a TOML policy file that parses back to an equal
    /// policy (used by `flushctl policy show`).
    pub fn to_toml_string(&self) -> String {
        use toml::{Table, Value};
        let action_table = |a: &Action, t: &mut Table| {
            t.insert("mode".into(), Value::String(a.mode.name().into()));
            if let (Mode::Audit, Some(m)) = (a.mode, a.audited_mode) {
                t.insert("audit-mode".into(), Value::String(m.name().into()));
            }
            if a.method != FlushMethod::Filter {
                t.insert("method".into(), Value::String(a.method.name().into()));
            }
            if !a.flags.is_empty() {
                t.insert("flush".into(), Value::String(a.flags.policy_name().into()));
            }
            if let Some(u) = a.upgrade_app_flush {
                t.insert(
                    "upgrade-app-flush".into(),
                    Value::String(u.policy_name().into()),
                );
            }
            if a.count_paging_io {
                t.insert("count-paging-io".into(), Value::Boolean(true));
            }
        };
        let mut root = Table::new();
        if self.attach_local_volumes {
            root.insert("attach-local-volumes".into(), Value::Boolean(true));
        }
        let mut d = Table::new();
        action_table(&self.default_action, &mut d);
        root.insert("default".into(), Value::Table(d));
        let mut rules = Vec::new();
        for r in &self.rules {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(r.name.clone()));
            if r.matcher.provider != Provider::Any {
                t.insert(
                    "provider".into(),
                    Value::String(r.matcher.provider.name().into()),
                );
            }
            for (k, v) in [
                ("share", &r.matcher.share),
                ("path", &r.matcher.path),
                ("process", &r.matcher.process),
            ] {
                if let Some(v) = v {
                    t.insert(k.into(), Value::String(v.clone()));
                }
            }
            if !r.matcher.extensions.is_empty() {
                t.insert(
                    "extensions".into(),
                    Value::Array(
                        r.matcher
                            .extensions
                            .iter()
                            .cloned()
                            .map(Value::String)
                            .collect(),
                    ),
                );
            }
            action_table(&r.action, &mut t);
            rules.push(Value::Table(t));
        }
        if !rules.is_empty() {
            root.insert("rule".into(), Value::Array(rules));
        }
        toml::to_string(&root).unwrap_or_default()
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
