//! The policy model: ordered rules (first match wins) plus a default action.
//!
//! A [`Policy`] keeps strings exactly as the administrator wrote them (so a
//! policy shown back reads like the file); [`Policy::validate`] checks them and
//! [`crate::matcher::CompiledPolicy`] holds the normalized forms. The same policy
//! travels as a blob (SetPolicy body and the `REG_BINARY` registry value, layout in
//! [`flushguard_protocol::policy`]): [`Policy::encode`] / [`Policy::decode`] round
//! trip exactly.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use flushguard_protocol::codec::{utf16_len, Utf16Str, Writer};
use flushguard_protocol::policy::{
    ActionFlags, ActionWire, PolicyBlob, PolicyFlags, PolicyHeader, RuleWire, MAX_EXTENSIONS,
    MAX_EXTENSIONS_UNITS, MAX_EXTENSION_UNITS, MAX_GROUP_BATCH, MAX_GROUP_BATCH_WAIT_US,
    MAX_PATH_GLOB_UNITS, MAX_POLICY_BYTES, MAX_PROCESS_UNITS, MAX_RULES, MAX_RULE_NAME_UNITS,
    MAX_SHARE_UNITS,
};
use flushguard_protocol::{
    Contradiction, DecodeError, FlushFlags, NameProblem, NtStatus, Utf16Problem,
};

pub use crate::group_commit::GroupOptions;
use crate::path::{self, InsufficientResources, NameError};
pub use crate::vocabulary::{FileProvider, FlushMethod, Mode, ProviderSelector};

/// A rule's action. `Copy`, so a per-file cache can hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Action {
    /// What to do.
    pub mode: Mode,
    /// For `Mode::Audit` only: the enforcing mode whose effects are counted.
    pub audited_mode: Option<Mode>,
    /// How flushes are issued.
    pub method: FlushMethod,
    /// Flush type of the flushes this action issues (one type, see [`FlushFlags`]).
    pub flags: FlushFlags,
    /// Upgrade application IRP_MJ_FLUSH_BUFFERS to at least this type.
    pub upgrade_app_flush: Option<FlushFlags>,
    /// Count paging I/O writes (lazy writer, mapped pages) in writes seen and
    /// bytes governed. Paging I/O is never blocked or flushed either way.
    pub count_paging_io: bool,
    /// Group-commit options: `Some` exactly when the effective mode is
    /// [`Mode::GroupCommit`] (checked by [`Action::validate`]).
    pub group: Option<GroupOptions>,
}

impl Action {
    /// The pass-through action.
    pub const PASS: Action = Action {
        mode: Mode::Pass,
        audited_mode: None,
        method: FlushMethod::Filter,
        flags: FlushFlags::empty(),
        upgrade_app_flush: None,
        count_paging_io: false,
        group: None,
    };

    /// An action with `mode` and defaults for everything else (`audit` audits
    /// write-through; group-commit gets [`GroupOptions::DEFAULT`]).
    pub const fn with_mode(mode: Mode) -> Action {
        Action {
            mode,
            audited_mode: if matches!(mode, Mode::Audit) {
                Some(Mode::WriteThrough)
            } else {
                None
            },
            group: if matches!(mode, Mode::GroupCommit) {
                Some(GroupOptions::DEFAULT)
            } else {
                None
            },
            ..Action::PASS
        }
    }

    /// The mode whose effects are computed: `audited_mode` for audit, else `mode`.
    pub const fn effective_mode(&self) -> Mode {
        match (self.mode, self.audited_mode) {
            (Mode::Audit, Some(m)) => m,
            (m, _) => m,
        }
    }

    /// Wire form.
    pub fn to_wire(&self) -> ActionWire {
        let mut action_flags = ActionFlags::empty();
        action_flags.set(
            ActionFlags::UPGRADE_APP_FLUSH,
            self.upgrade_app_flush.is_some(),
        );
        action_flags.set(ActionFlags::COUNT_PAGING_IO, self.count_paging_io);
        ActionWire {
            mode: self.mode.code(),
            method: self.method.code(),
            flush_flags: self.flags,
            upgrade_flags: self.upgrade_app_flush.unwrap_or(FlushFlags::empty()),
            action_flags,
            audit_mode: self.audited_mode.map_or(0, Mode::code),
            // Out-of-range values saturate and are rejected by check_contradictions.
            max_batch: self
                .group
                .map_or(0, |g| u16::try_from(g.max_batch).unwrap_or(u16::MAX)),
            max_batch_wait_us: self.group.map_or(0, |g| {
                u16::try_from(g.max_batch_wait_us).unwrap_or(u16::MAX)
            }),
        }
    }

    /// From the wire form (already structurally validated).
    pub fn from_wire(w: &ActionWire) -> Result<Action, DecodeError> {
        Ok(Action {
            mode: Mode::from_code(w.mode)?,
            audited_mode: if w.mode == Mode::Audit.code() {
                Some(Mode::from_code(w.audit_mode)?)
            } else {
                None
            },
            method: FlushMethod::from_code(w.method)?,
            flags: w.flush_flags,
            upgrade_app_flush: if w.action_flags.contains(ActionFlags::UPGRADE_APP_FLUSH) {
                Some(w.upgrade_flags)
            } else {
                None
            },
            count_paging_io: w.action_flags.contains(ActionFlags::COUNT_PAGING_IO),
            group: (w.max_batch != 0).then_some(GroupOptions {
                max_batch: u32::from(w.max_batch),
                max_batch_wait_us: u32::from(w.max_batch_wait_us),
            }),
        })
    }

    /// Checks the action: one flush type per flag set, no purge with the native
    /// method, no settings on `pass`, audit targets an enforcing mode, group-commit
    /// options exactly on a (audited) group-commit mode and within
    /// [`MAX_GROUP_BATCH`] / [`MAX_GROUP_BATCH_WAIT_US`].
    /// Errors: `Contradictory(..)`, `BadValue { field: "Action.max_batch" |
    /// "Action.max_batch_wait_us" }`.
    pub fn validate(&self) -> Result<(), DecodeError> {
        self.flags.validate()?;
        if let Some(u) = self.upgrade_app_flush {
            u.validate()?;
        }
        match (self.mode, self.audited_mode) {
            (Mode::Audit, Some(m)) if m.is_enforcing() => {}
            (Mode::Audit, _) => {
                return Err(DecodeError::Contradictory(Contradiction::BadAuditTarget))
            }
            (_, Some(_)) => return Err(DecodeError::Contradictory(Contradiction::BadAuditTarget)),
            _ => {}
        }
        let group_commit = self.effective_mode() == Mode::GroupCommit;
        match self.group {
            None if group_commit => {
                return Err(DecodeError::BadValue {
                    field: "Action.max_batch",
                    value: 0,
                })
            }
            Some(g) if group_commit && g.max_batch > u32::from(MAX_GROUP_BATCH) => {
                return Err(DecodeError::BadValue {
                    field: "Action.max_batch",
                    value: g.max_batch,
                })
            }
            Some(g) if group_commit && g.max_batch_wait_us > u32::from(MAX_GROUP_BATCH_WAIT_US) => {
                return Err(DecodeError::BadValue {
                    field: "Action.max_batch_wait_us",
                    value: g.max_batch_wait_us,
                })
            }
            _ => {}
        }
        self.to_wire().check_contradictions()
    }
}

/// What a rule matches on. Every `None`/empty criterion matches everything;
/// all given criteria must match. Strings are kept as written.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Matcher {
    /// Redirector.
    pub provider: ProviderSelector,
    /// Share in any accepted spelling (`\\server\share`, `\Device\Mup\server\share`,
    /// `\\?\UNC\server\share`).
    pub share: Option<String>,
    /// Path glob below the share (`**/*.db`, `logs/*`); see [`path::PathGlob`].
    pub path: Option<String>,
    /// Process image file name pattern (`sqlservr.exe`, `*.exe`).
    pub process: Option<String>,
    /// File extensions (`db`, `.mdf`), any of which matches.
    pub extensions: Vec<String>,
}

/// One policy rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique name (1..=64 UTF-16 units), used in stats, events and explain.
    pub name: String,
    /// What it matches.
    pub matcher: Matcher,
    /// What it does.
    pub action: Action,
}

/// A whole policy: rules in order (first match wins) and the default action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
    /// Applies when no rule matches.
    pub default_action: Action,
    /// Attach to local volumes too (testing); network volumes only otherwise.
    pub attach_local_volumes: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::pass_through()
    }
}

/// A policy that is not acceptable, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// The blob is malformed (structure, limits, UTF-16, flags).
    Wire(DecodeError),
    /// A rule (index, name) or the default action (`rule: None`) is invalid.
    Invalid {
        /// Rule index, `None` for the default action or the policy as a whole.
        rule: Option<usize>,
        /// Rule name when known.
        name: Option<String>,
        /// Field (`share`, `path`, `process`, `extensions`, `name`, `action`, `rules`).
        field: &'static str,
        /// The specific problem.
        error: DecodeError,
    },
    /// A policy file that is not valid TOML for the schema (std feature).
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted field path (`rule[2].mode`), empty when unknown.
        field: String,
        /// What was expected / what was wrong.
        message: String,
    },
    /// A buffer for the decoded or compiled policy could not be allocated
    /// (`STATUS_INSUFFICIENT_RESOURCES`: in the driver the pool is exhausted).
    /// Says nothing about the policy itself; retrying later may succeed.
    InsufficientResources,
}

impl PolicyError {
    /// The `NTSTATUS` the driver answers a SetPolicy with.
    pub fn ntstatus(&self) -> NtStatus {
        match self {
            PolicyError::Wire(e) | PolicyError::Invalid { error: e, .. } => e.ntstatus(),
            PolicyError::Syntax { .. } => NtStatus::INVALID_PARAMETER,
            PolicyError::InsufficientResources => NtStatus::INSUFFICIENT_RESOURCES,
        }
    }

    /// `Invalid`, or `InsufficientResources` for a field that could not be checked
    /// for lack of memory. The rule name is copied fallibly (left out when that
    /// fails: the error path must not allocate infallibly either).
    fn invalid(
        rule: Option<usize>,
        name: Option<&str>,
        field: &'static str,
        error: NameError,
    ) -> Self {
        match error {
            NameError::Invalid(error) => PolicyError::Invalid {
                rule,
                name: name.and_then(|n| path::try_string(n).ok()),
                field,
                error,
            },
            NameError::InsufficientResources => PolicyError::InsufficientResources,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Wire(e) => write!(f, "malformed policy blob: {e} ({})", e.ntstatus()),
            PolicyError::Invalid {
                rule,
                name,
                field,
                error,
            } => {
                match (rule, name) {
                    (Some(i), Some(n)) => write!(f, "rule {i} ({n:?}), field `{field}`: ")?,
                    (Some(i), None) => write!(f, "rule {i}, field `{field}`: ")?,
                    (None, _) => write!(f, "field `{field}`: ")?,
                }
                write!(f, "{error}")
            }
            PolicyError::Syntax {
                line,
                column,
                field,
                message,
            } => {
                write!(f, "line {line}, column {column}")?;
                if !field.is_empty() {
                    write!(f, ", field `{field}`")?;
                }
                write!(f, ": {message}")
            }
            PolicyError::InsufficientResources => InsufficientResources.fmt(f),
        }
    }
}

impl core::error::Error for PolicyError {}

impl From<DecodeError> for PolicyError {
    fn from(e: DecodeError) -> Self {
        PolicyError::Wire(e)
    }
}

impl From<InsufficientResources> for PolicyError {
    fn from(_: InsufficientResources) -> Self {
        PolicyError::InsufficientResources
    }
}

impl From<alloc::collections::TryReserveError> for PolicyError {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        PolicyError::InsufficientResources
    }
}

fn check_units(field: &'static str, s: &str, max: u32) -> Result<(), DecodeError> {
    let n = utf16_len(s);
    if n > max as usize {
        return Err(DecodeError::Utf16 {
            field,
            problem: Utf16Problem::TooLong {
                max,
                got: u32::try_from(n).unwrap_or(u32::MAX),
            },
        });
    }
    if s.contains('\0') {
        return Err(DecodeError::Utf16 {
            field,
            problem: Utf16Problem::EmbeddedNul,
        });
    }
    Ok(())
}

/// A wire string decoded into one fallible allocation of its exact UTF-8 length.
fn try_wire_string(u: &Utf16Str<'_>) -> Result<String, InsufficientResources> {
    let len: usize = u.chars().map(char::len_utf8).sum();
    let mut out = String::new();
    out.try_reserve_exact(len)?;
    out.extend(u.chars());
    Ok(out)
}

/// [`try_wire_string`], `None` for an empty string (no allocation).
fn try_wire_opt(u: &Utf16Str<'_>) -> Result<Option<String>, InsufficientResources> {
    if u.is_empty() {
        Ok(None)
    } else {
        try_wire_string(u).map(Some)
    }
}

/// The `|`-joined wire extension list, split (every buffer allocated fallibly).
fn try_split_extensions(u: &Utf16Str<'_>) -> Result<Vec<String>, InsufficientResources> {
    let joined = try_wire_string(u)?;
    let mut out = Vec::new();
    if joined.is_empty() {
        return Ok(out);
    }
    out.try_reserve_exact(joined.split('|').count())?;
    for e in joined.split('|') {
        out.push(path::try_string(e)?);
    }
    Ok(out)
}

/// The model of one decoded wire rule. Errors: `Wire(BadValue)` (provider or
/// action codes); `InsufficientResources` (every string and vector is allocated
/// fallibly). (Its own function to keep [`Policy::decode`]'s frame small in the
/// unoptimised kernel build.)
fn rule_from_wire(rw: &RuleWire<'_>) -> Result<Rule, PolicyError> {
    let provider = ProviderSelector::from_code(rw.provider)?;
    let action = Action::from_wire(&rw.action)?;
    Ok(Rule {
        name: try_wire_string(&rw.name)?,
        matcher: Matcher {
            provider,
            share: try_wire_opt(&rw.share)?,
            path: try_wire_opt(&rw.path)?,
            process: try_wire_opt(&rw.process)?,
            extensions: try_split_extensions(&rw.extensions)?,
        },
        action,
    })
}

/// A rule problem: the field and the specific error (converted to
/// [`PolicyError::Invalid`] by [`Policy::validate`]).
type RuleProblem = (&'static str, NameError);

/// Checks one rule: name (`duplicate`: the name is that of an earlier rule),
/// matcher, action.
///
/// The checks are split over small functions on purpose: in unoptimised kernel
/// builds every `?` temporary gets its own stack slot, and one function holding all
/// of them needed a frame over 4 KiB (a `__chkstk` call, which a driver cannot link).
fn check_rule(r: &Rule, duplicate: bool) -> Result<(), RuleProblem> {
    check_rule_name(&r.name, duplicate)?;
    check_matcher(&r.matcher)?;
    r.action
        .validate()
        .map_err(|e| (action_field(&e), e.into()))
}

/// The policy-file key an action error is about (`action` when it is not one key).
fn action_field(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::BadValue {
            field: "Action.max_batch",
            ..
        }
        | DecodeError::Contradictory(Contradiction::GroupOptionsOutsideGroupCommit) => "max-batch",
        DecodeError::BadValue {
            field: "Action.max_batch_wait_us",
            ..
        } => "max-batch-wait-us",
        _ => "action",
    }
}

fn check_rule_name(name: &str, duplicate: bool) -> Result<(), RuleProblem> {
    check_units("name", name, MAX_RULE_NAME_UNITS).map_err(|e| ("name", e.into()))?;
    if name.is_empty() {
        return Err((
            "name",
            NameError::Invalid(DecodeError::Name {
                field: "name",
                problem: NameProblem::EmptyComponent,
            }),
        ));
    }
    if duplicate {
        return Err((
            "name",
            NameError::Invalid(DecodeError::Contradictory(Contradiction::DuplicateRuleName)),
        ));
    }
    Ok(())
}

/// The index of the first rule whose name an earlier rule already has, if any.
/// O(n log n) with one fallible allocation (`n` indices) and an in-place unstable
/// sort (no allocation): SetPolicy runs in the driver, and a policy has up to
/// `MAX_RULES` rules.
///
/// # Errors
/// [`InsufficientResources`] when the index buffer could not be allocated.
fn first_duplicate_name(rules: &[Rule]) -> Result<Option<usize>, InsufficientResources> {
    let mut order: Vec<u32> = Vec::new();
    order.try_reserve_exact(rules.len())?;
    order.extend((0..rules.len()).map(|i| i as u32));
    let name = |i: u32| rules.get(i as usize).map_or("", |r| r.name.as_str());
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)).then(a.cmp(&b)));
    Ok(order
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if name(*a) == name(*b) => Some(*b as usize),
            _ => None,
        })
        .min())
}

fn check_matcher(m: &Matcher) -> Result<(), RuleProblem> {
    check_optional(m)?;
    check_extensions(&m.extensions).map_err(|e| ("extensions", e))
}

fn check_optional(m: &Matcher) -> Result<(), RuleProblem> {
    if let Some(s) = &m.share {
        check_share(s).map_err(|e| ("share", e))?;
    }
    if let Some(p) = &m.path {
        check_path(p).map_err(|e| ("path", e))?;
    }
    if let Some(p) = &m.process {
        check_process(p).map_err(|e| ("process", e))?;
    }
    Ok(())
}

/// A share constraint: a valid share name, and not one FlushGuard never governs
/// (`Contradictory(IpcShare)` for `\\server\PIPE`, `MAILSLOT`, `IPC$`: see
/// [`crate::matcher::Exemption`]).
fn check_share(s: &str) -> Result<(), NameError> {
    check_units("share", s, MAX_SHARE_UNITS)?;
    let share = path::normalize_share(s)?;
    match crate::exemption::Exemption::of_share(&share) {
        Some(_) => Err(DecodeError::Contradictory(Contradiction::IpcShare).into()),
        None => Ok(()),
    }
}

fn check_path(p: &str) -> Result<(), NameError> {
    check_units("path", p, MAX_PATH_GLOB_UNITS)?;
    path::PathGlob::new(p).map(drop)
}

fn check_process(p: &str) -> Result<(), NameError> {
    check_units("process", p, MAX_PROCESS_UNITS)?;
    path::normalize_process(p).map(drop)
}

fn check_extensions(extensions: &[String]) -> Result<(), NameError> {
    if extensions.len() > MAX_EXTENSIONS as usize {
        return Err(DecodeError::LimitExceeded {
            what: "extensions",
            max: MAX_EXTENSIONS,
            got: u32::try_from(extensions.len()).unwrap_or(u32::MAX),
        }
        .into());
    }
    for e in extensions {
        check_units("extensions", e, MAX_EXTENSION_UNITS)?;
        path::normalize_extension(e)?;
    }
    Ok(())
}

impl Policy {
    /// No rules; everything passes. What the driver runs before any policy is
    /// loaded.
    pub fn pass_through() -> Policy {
        Policy {
            rules: Vec::new(),
            default_action: Action::PASS,
            attach_local_volumes: false,
        }
    }

    /// Checks limits, names, shares, globs, processes, extensions and actions.
    ///
    /// Errors: `PolicyError::Invalid` with the rule index, field and one of
    /// `LimitExceeded` (more than `MAX_RULES` rules, more than `MAX_EXTENSIONS`
    /// extensions), `Utf16 { TooLong | EmbeddedNul }`, `Name { .. }`,
    /// `Contradictory(..)` (including `DuplicateRuleName`, and `IpcShare` for a
    /// share FlushGuard never governs); `PolicyError::InsufficientResources` when a
    /// check's buffer could not be allocated (every one is allocated fallibly).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.rules.len() > MAX_RULES as usize {
            return Err(PolicyError::invalid(
                None,
                None,
                "rules",
                NameError::Invalid(DecodeError::LimitExceeded {
                    what: "rules",
                    max: MAX_RULES,
                    got: u32::try_from(self.rules.len()).unwrap_or(u32::MAX),
                }),
            ));
        }
        self.default_action
            .validate()
            .map_err(|e| PolicyError::invalid(None, None, "default", e.into()))?;
        let duplicate = first_duplicate_name(&self.rules)?;
        for (i, r) in self.rules.iter().enumerate() {
            if let Err((field, e)) = check_rule(r, duplicate == Some(i)) {
                return Err(PolicyError::invalid(Some(i), Some(&r.name), field, e));
            }
        }
        Ok(())
    }

    /// Encodes the policy as a blob (SetPolicy body / registry `REG_BINARY`).
    ///
    /// Errors: any [`validate`](Self::validate) error; `Invalid { field: "rules",
    /// LimitExceeded }` (`STATUS_IMPLEMENTATION_LIMIT`) above `MAX_POLICY_BYTES`.
    pub fn encode(&self) -> Result<Vec<u8>, PolicyError> {
        self.validate()?;
        let mut total = PolicyHeader::SIZE;
        let mut joined: Vec<String> = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let ext = r.matcher.extensions.join("|");
            let lens = [
                utf16_len(&r.name) * 2,
                r.matcher.share.as_deref().map_or(0, utf16_len) * 2,
                r.matcher.path.as_deref().map_or(0, utf16_len) * 2,
                r.matcher.process.as_deref().map_or(0, utf16_len) * 2,
                utf16_len(&ext) * 2,
            ];
            if utf16_len(&ext) > MAX_EXTENSIONS_UNITS as usize {
                return Err(PolicyError::Wire(DecodeError::Overflow {
                    field: "extensions",
                }));
            }
            total = RuleWire::encoded_len(lens)
                .and_then(|l| total.checked_add(l))
                .ok_or(PolicyError::Wire(DecodeError::Overflow {
                    field: "policy length",
                }))?;
            joined.push(ext);
        }
        if total > MAX_POLICY_BYTES as usize {
            return Err(PolicyError::invalid(
                None,
                None,
                "rules",
                NameError::Invalid(DecodeError::LimitExceeded {
                    what: "encoded policy bytes",
                    max: MAX_POLICY_BYTES,
                    got: u32::try_from(total).unwrap_or(u32::MAX),
                }),
            ));
        }
        let mut buf = vec![0u8; total];
        let mut w = Writer::new(&mut buf);
        let mut flags = PolicyFlags::empty();
        flags.set(PolicyFlags::ATTACH_LOCAL_VOLUMES, self.attach_local_volumes);
        PolicyHeader {
            total_length: total as u32,
            rule_count: self.rules.len() as u32,
            flags,
            default_action: self.default_action.to_wire(),
        }
        .write(&mut w)?;
        let mut scratch: [Vec<u8>; 5] = Default::default();
        for (r, ext) in self.rules.iter().zip(&joined) {
            let texts = [
                r.name.as_str(),
                r.matcher.share.as_deref().unwrap_or(""),
                r.matcher.path.as_deref().unwrap_or(""),
                r.matcher.process.as_deref().unwrap_or(""),
                ext.as_str(),
            ];
            for (s, t) in scratch.iter_mut().zip(texts) {
                s.clear();
                s.extend(t.encode_utf16().flat_map(u16::to_le_bytes));
            }
            RuleWire::write_raw(
                &mut w,
                r.matcher.provider.code(),
                &r.action.to_wire(),
                [
                    &scratch[0],
                    &scratch[1],
                    &scratch[2],
                    &scratch[3],
                    &scratch[4],
                ],
            )?;
        }
        debug_assert_eq!(w.position(), total);
        Ok(buf)
    }

    /// Decodes and validates a blob. Nothing is partially accepted.
    ///
    /// Errors: `Wire(..)` for layout problems ([`PolicyBlob::parse`]), then any
    /// [`validate`](Self::validate) error; `InsufficientResources` when a buffer
    /// could not be allocated (every string and vector of the model is allocated
    /// fallibly: SetPolicy and the registry load run in the driver).
    pub fn decode(blob: &[u8]) -> Result<Policy, PolicyError> {
        let parsed = PolicyBlob::parse(blob)?;
        let h = parsed.header;
        let mut rules = Vec::new();
        rules.try_reserve_exact(h.rule_count as usize)?;
        for rw in parsed.rules() {
            rules.push(rule_from_wire(&rw?)?);
        }
        let p = Policy {
            rules,
            default_action: Action::from_wire(&h.default_action)?,
            attach_local_volumes: h.flags.contains(PolicyFlags::ATTACH_LOCAL_VOLUMES),
        };
        p.validate()?;
        Ok(p)
    }

    /// Index of the rule named `name`.
    pub fn rule_index(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }
}
