//! Compiled policy: normalized rules, a share index, lookup and explain.
//!
//! Lookup cost: rules that name a share are indexed by their normalized share
//! (one vector of rule indices sorted by (share, index), binary-searched: O(log N)
//! for N rules with a share); rules without a share are kept in one list. A lookup
//! merges the file's share bucket with the share-less list in rule order, so the
//! first-match-wins order is exactly that of a linear scan
//! ([`CompiledPolicy::lookup_linear`], kept as the reference and for benchmarks)
//! while rules for other shares are never visited.

use alloc::string::String;
use alloc::vec::Vec;

use flushguard_protocol::stats::COUNTER_COUNT;

use crate::path::{self, glob_component, FileName, InsufficientResources, NameError, PathGlob};
use crate::policy::{Action, FileProvider, Policy, PolicyError, ProviderSelector};
use crate::stats::Counters;

mod reach;
mod snapshot;
pub use crate::exemption::Exemption;
pub use reach::Reach;
pub use snapshot::{
    index as slot_index, PolicySnapshot, DEFAULT_RULE_SLOT, EXEMPT_SLOT, UNCLASSIFIED_SLOT,
};

/// What the driver knows about a file for rule lookup.
#[derive(Clone, Copy, Debug)]
pub struct FileKey<'a> {
    /// Provider behind the file.
    pub provider: FileProvider,
    /// Normalized name, `None` when the name could not be parsed (then only
    /// rules without share, path and extension criteria can match).
    pub name: Option<&'a FileName>,
    /// Requestor process image: a full image path or just the file name
    /// (`sqlservr.exe`); only the final component is compared.
    pub process_image: &'a str,
}

impl Exemption {
    /// The exemption of a file, if any, from its parsed name (see
    /// [`Exemption::of_unparsed`] for a name [`FileName::parse`] rejected).
    pub fn of_key(key: &FileKey<'_>) -> Option<Exemption> {
        key.name.and_then(FileName::share).and_then(Self::of_share)
    }
}

/// Result of a lookup: which rule matched and its action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// Index of the matching rule; `None` = the default action, or an exempt file
    /// (`exempt` is `Some`).
    pub index: Option<u32>,
    /// The action to apply ([`Action::PASS`] for an exempt file).
    pub action: Action,
    /// `Some` when the file is never governed ([`Exemption`]): no rule and not the
    /// default action apply, in this or any later policy generation.
    pub exempt: Option<Exemption>,
}

/// A per-file cached decision (stored in the driver's stream context).
/// Valid while `generation` equals the active policy's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedRule {
    /// Policy generation the lookup ran under.
    pub generation: u64,
    /// The lookup result.
    pub rule: RuleRef,
}

impl CachedRule {
    /// True while the cache entry belongs to `policy`.
    pub fn is_current(&self, policy: &CompiledPolicy) -> bool {
        self.generation == policy.generation()
    }
}

/// Why a rule did not match (explain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The rule's provider does not cover the file's provider.
    Provider {
        /// Rule provider.
        rule: ProviderSelector,
        /// File provider.
        file: FileProvider,
    },
    /// Different share (or the file is not on a share).
    Share {
        /// Normalized rule share.
        rule: String,
        /// Normalized file share, `None` for local files.
        file: Option<String>,
    },
    /// The path glob does not match the file's relative path.
    Path {
        /// The glob as written.
        glob: String,
        /// Normalized relative path.
        file: String,
    },
    /// The process pattern does not match the image name.
    Process {
        /// The pattern as written.
        pattern: String,
        /// Image file name compared.
        image: String,
    },
    /// The file's extension is not in the rule's list.
    Extension {
        /// The extensions as written.
        rule: Vec<String>,
        /// The file's extension.
        file: Option<String>,
    },
    /// The rule needs a file name but the name could not be parsed.
    NoName,
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Mismatch::Provider { rule, file } => {
                write!(
                    f,
                    "provider: rule wants {}, file is on {}",
                    rule.name(),
                    file.name()
                )
            }
            Mismatch::Share {
                rule,
                file: Some(file),
            } => {
                write!(f, "share: rule wants {rule}, file is on {file}")
            }
            Mismatch::Share { rule, file: None } => {
                write!(f, "share: rule wants {rule}, file is not on a share")
            }
            Mismatch::Path { glob, file } => write!(f, "path: {file} does not match {glob}"),
            Mismatch::Process { pattern, image } => {
                write!(f, "process: {image} does not match {pattern}")
            }
            Mismatch::Extension { rule, file } => {
                write!(f, "extension: ")?;
                match file {
                    Some(e) => write!(f, "{e}")?,
                    None => write!(f, "(none)")?,
                }
                write!(f, " is not one of ")?;
                for (i, e) in rule.iter().enumerate() {
                    write!(f, "{}{e}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
            Mismatch::NoName => {
                write!(
                    f,
                    "the rule needs a file name and this name could not be parsed"
                )
            }
        }
    }
}

/// The outcome of [`CompiledPolicy::explain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Matching rule index, `None` = default action (or an exempt file).
    pub matched: Option<u32>,
    /// The action that applies ([`Action::PASS`] for an exempt file).
    pub action: Action,
    /// For every rule before the match (all rules when the default applies), in
    /// order: its index and the first criterion that failed. Empty for an exempt
    /// file (no rule is consulted).
    pub rejected: Vec<(u32, Mismatch)>,
    /// `Some` when the file is never governed, whatever the rules say.
    pub exempt: Option<Exemption>,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    provider: ProviderSelector,
    share: Option<String>,
    path: Option<PathGlob>,
    process: Option<String>,
    extensions: Vec<String>,
    action: Action,
}

/// A validated policy ready for lookups, with its generation, its blob (for
/// GetPolicy and the registry) and its per-rule counters.
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: Policy,
    generation: u64,
    blob: Vec<u8>,
    rules: Vec<CompiledRule>,
    /// Indices of the rules that name a share, sorted by (normalized share, index):
    /// one share's rules are a contiguous run in rule order.
    by_share: Vec<u32>,
    shareless: Vec<u32>,
    rule_counters: Vec<Counters>,
    default_counters: Counters,
    reach: Reach,
}

/// Compiles one rule's matcher: normalized share, path glob, process, extensions.
/// Error: the field and its problem (`NameError::InsufficientResources` when a
/// buffer could not be allocated: every one is allocated fallibly). (Its own
/// function so that the unoptimised kernel build keeps [`CompiledPolicy`]'s compile
/// frame small: kernel stacks are 12-24 KiB.)
fn compile_rule(r: &crate::policy::Rule) -> Result<CompiledRule, (&'static str, NameError)> {
    let m = &r.matcher;
    Ok(CompiledRule {
        provider: m.provider,
        share: m
            .share
            .as_deref()
            .map(path::normalize_share)
            .transpose()
            .map_err(|e| ("share", e))?,
        path: m
            .path
            .as_deref()
            .map(PathGlob::new)
            .transpose()
            .map_err(|e| ("path", e))?,
        process: m
            .process
            .as_deref()
            .map(path::normalize_process)
            .transpose()
            .map_err(|e| ("process", e))?,
        extensions: compile_extensions(&m.extensions).map_err(|e| ("extensions", e))?,
        action: r.action,
    })
}

/// Normalized extensions, in one fallibly allocated vector.
fn compile_extensions(extensions: &[String]) -> Result<Vec<String>, NameError> {
    let mut out = Vec::new();
    out.try_reserve_exact(extensions.len())?;
    for e in extensions {
        out.push(path::normalize_extension(e)?);
    }
    Ok(out)
}

/// A vector of `n` default values, allocated fallibly.
fn try_vec_with<T>(n: usize, f: impl FnMut() -> T) -> Result<Vec<T>, InsufficientResources> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    v.extend(core::iter::repeat_with(f).take(n));
    Ok(v)
}

impl CompiledPolicy {
    /// Validates and compiles `policy` under `generation`. Allocates: call at
    /// PASSIVE_LEVEL.
    ///
    /// Errors: any [`Policy::validate`] / [`Policy::encode`] error.
    pub fn new(policy: Policy, generation: u64) -> Result<CompiledPolicy, PolicyError> {
        let blob = policy.encode()?;
        Self::with_blob(policy, blob, generation)
    }

    /// Decodes a blob (SetPolicy body or registry value) and compiles it,
    /// keeping the exact blob bytes.
    ///
    /// Errors: any [`Policy::decode`] error; `PolicyError::InsufficientResources`
    /// when a buffer could not be allocated. Every allocation of the decoded policy,
    /// the compiled rules, the share index, the counters and the blob copy is
    /// fallible (this runs in the driver for SetPolicy and the registry load).
    pub fn from_blob(blob: &[u8], generation: u64) -> Result<CompiledPolicy, PolicyError> {
        let policy = Policy::decode(blob)?;
        let mut copy = Vec::new();
        copy.try_reserve_exact(blob.len())?;
        copy.extend_from_slice(blob);
        Self::with_blob(policy, copy, generation)
    }

    fn with_blob(
        policy: Policy,
        blob: Vec<u8>,
        generation: u64,
    ) -> Result<CompiledPolicy, PolicyError> {
        let n = policy.rules.len();
        let mut rules = Vec::new();
        rules.try_reserve_exact(n)?;
        for (i, r) in policy.rules.iter().enumerate() {
            let cr = compile_rule(r).map_err(|(field, error)| match error {
                NameError::Invalid(error) => PolicyError::Invalid {
                    rule: Some(i),
                    name: path::try_string(&r.name).ok(),
                    field,
                    error,
                },
                NameError::InsufficientResources => PolicyError::InsufficientResources,
            })?;
            rules.push(cr);
        }
        let (by_share, shareless) = share_index(&rules)?;
        let rule_counters = try_vec_with(n, Counters::new)?;
        let reach = Reach::of(&policy);
        Ok(CompiledPolicy {
            reach,
            policy,
            generation,
            blob,
            rules,
            by_share,
            shareless,
            rule_counters,
            default_counters: Counters::new(),
        })
    }

    /// The pass-through policy under `generation`.
    pub fn pass_through(generation: u64) -> CompiledPolicy {
        match CompiledPolicy::new(Policy::pass_through(), generation) {
            Ok(p) => p,
            // The empty policy always validates; keep a total function anyway.
            Err(_) => CompiledPolicy {
                policy: Policy::pass_through(),
                generation,
                blob: Vec::new(),
                rules: Vec::new(),
                by_share: Vec::new(),
                shareless: Vec::new(),
                rule_counters: Vec::new(),
                default_counters: Counters::new(),
                reach: Reach::default(),
            },
        }
    }

    /// What this policy can do ([`Reach`]).
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// Policy generation (monotonic per driver load; 0 = built-in pass-through).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The source policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The canonical blob of this policy (GetPolicy reply, registry value).
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Counters of rule `index` (`None` = default action). Unknown index -> the
    /// default counters.
    pub fn counters(&self, index: Option<u32>) -> &Counters {
        index
            .and_then(|i| self.rule_counters.get(i as usize))
            .unwrap_or(&self.default_counters)
    }

    /// [`CompiledPolicy::counters`] of rule `index` as decided under the policy whose
    /// generation's low 32 bits are `generation` (what a stream context caches):
    /// `None` when that is not this policy, whose same index may name another rule.
    pub fn counters_decided(&self, generation: u32, index: Option<u32>) -> Option<&Counters> {
        (self.generation() as u32 == generation).then(|| self.counters(index))
    }

    /// Snapshot of rule counters `first..first+max` (clamped).
    ///
    /// # Errors
    /// [`path::InsufficientResources`] when the window's buffer could not be
    /// allocated (one fallible allocation of the exact size).
    pub fn rule_counter_window(
        &self,
        first: u32,
        max: u32,
    ) -> Result<Vec<[u64; COUNTER_COUNT]>, path::InsufficientResources> {
        let window = self
            .rule_counters
            .iter()
            .skip(first as usize)
            .take(max as usize);
        let mut out = Vec::new();
        out.try_reserve_exact(window.len())?;
        out.extend(window.map(Counters::snapshot));
        Ok(out)
    }

    /// Zeroes the per-rule and default counters.
    pub fn reset_counters(&self) {
        self.rule_counters.iter().for_each(Counters::reset);
        self.default_counters.reset();
    }

    fn rule_matches(&self, r: &CompiledRule, key: &FileKey<'_>) -> Result<(), Mismatch> {
        if !r.provider.covers(key.provider) {
            return Err(Mismatch::Provider {
                rule: r.provider,
                file: key.provider,
            });
        }
        let needs_name = r.share.is_some() || r.path.is_some() || !r.extensions.is_empty();
        let name = match (key.name, needs_name) {
            (Some(n), _) => Some(n),
            (None, true) => return Err(Mismatch::NoName),
            (None, false) => None,
        };
        if let (Some(rs), Some(n)) = (&r.share, name) {
            if n.share() != Some(rs.as_str()) {
                return Err(Mismatch::Share {
                    rule: rs.clone(),
                    file: n.share().map(String::from),
                });
            }
        }
        if let (Some(g), Some(n)) = (&r.path, name) {
            if !g.matches(n.relative()) {
                return Err(Mismatch::Path {
                    glob: String::new(),
                    file: n.relative().into(),
                });
            }
        }
        if let Some(p) = &r.process {
            let image = path::image_file_name(key.process_image);
            if !glob_component(p, image) {
                return Err(Mismatch::Process {
                    pattern: p.clone(),
                    image: image.into(),
                });
            }
        }
        if let (false, Some(n)) = (r.extensions.is_empty(), name) {
            let ext = n.extension();
            if !ext.is_some_and(|e| r.extensions.iter().any(|x| x == e)) {
                return Err(Mismatch::Extension {
                    rule: Vec::new(),
                    file: ext.map(String::from),
                });
            }
        }
        Ok(())
    }

    fn matches_fast(&self, r: &CompiledRule, key: &FileKey<'_>) -> bool {
        // Same predicate as rule_matches without building a Mismatch.
        if !r.provider.covers(key.provider) {
            return false;
        }
        let needs_name = r.share.is_some() || r.path.is_some() || !r.extensions.is_empty();
        let name = match key.name {
            Some(n) => n,
            None if needs_name => return false,
            None => {
                return r
                    .process
                    .as_ref()
                    .is_none_or(|p| glob_component(p, path::image_file_name(key.process_image)))
            }
        };
        if let Some(rs) = &r.share {
            if name.share() != Some(rs.as_str()) {
                return false;
            }
        }
        if let Some(g) = &r.path {
            if !g.matches(name.relative()) {
                return false;
            }
        }
        if let Some(p) = &r.process {
            if !glob_component(p, path::image_file_name(key.process_image)) {
                return false;
            }
        }
        if !r.extensions.is_empty() {
            match name.extension() {
                Some(e) if r.extensions.iter().any(|x| x == e) => {}
                _ => return false,
            }
        }
        true
    }

    fn rule_ref(&self, idx: Option<u32>) -> RuleRef {
        let action = idx
            .and_then(|i| self.rules.get(i as usize))
            .map_or(self.policy.default_action, |r| r.action);
        RuleRef {
            index: idx,
            action,
            exempt: None,
        }
    }

    fn exempt_ref(exemption: Exemption) -> RuleRef {
        RuleRef {
            index: None,
            action: Action::PASS,
            exempt: Some(exemption),
        }
    }

    /// First matching rule (or the default) using the share index; an exempt file
    /// ([`Exemption`]: named pipe / mailslot shares) gets `exempt: Some(..)` and
    /// [`Action::PASS`] before any rule is consulted.
    /// No allocation, no locks; visits only the file's share bucket and the
    /// share-less rules, in rule order. Callable at any IRQL (non-paged data in
    /// the driver); O(log N + k) for N rules that name a share (binary search of
    /// the share index) and k candidates.
    pub fn lookup(&self, key: &FileKey<'_>) -> RuleRef {
        if let Some(e) = Exemption::of_key(key) {
            return Self::exempt_ref(e);
        }
        let bucket: &[u32] = key
            .name
            .and_then(FileName::share)
            .map_or(&[], |s| self.share_bucket(s));
        let (mut a, mut b) = (bucket.iter().peekable(), self.shareless.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) => {
                    if x < y {
                        a.next();
                        x
                    } else {
                        b.next();
                        y
                    }
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&y)) => {
                    b.next();
                    y
                }
                (None, None) => return self.rule_ref(None),
            };
            if let Some(r) = self.rules.get(next as usize) {
                if self.matches_fast(r, key) {
                    return self.rule_ref(Some(next));
                }
            }
        }
    }

    /// The share index's run for `share` (rule indices in rule order), by binary
    /// search: O(log N). No allocation.
    fn share_bucket(&self, share: &str) -> &[u32] {
        let share_of = |i: &u32| rule_share(&self.rules, *i);
        let first = self.by_share.partition_point(|i| share_of(i) < Some(share));
        let rest = self.by_share.get(first..).unwrap_or(&[]);
        let len = rest.partition_point(|i| share_of(i) == Some(share));
        rest.get(..len).unwrap_or(&[])
    }

    /// Reference lookup: scans every rule in order. Same result as [`lookup`](Self::lookup).
    pub fn lookup_linear(&self, key: &FileKey<'_>) -> RuleRef {
        if let Some(e) = Exemption::of_key(key) {
            return Self::exempt_ref(e);
        }
        for (i, r) in self.rules.iter().enumerate() {
            if self.matches_fast(r, key) {
                return self.rule_ref(Some(i as u32));
            }
        }
        self.rule_ref(None)
    }

    /// Lookup wrapped for a per-file cache.
    pub fn lookup_cached(&self, key: &FileKey<'_>) -> CachedRule {
        CachedRule {
            generation: self.generation,
            rule: self.lookup(key),
        }
    }

    /// Explains the lookup of `key`: the matching rule and, for every earlier
    /// rule, the first criterion (provider, share, path, process, extension)
    /// that did not match. An exempt file ([`Exemption`]) consults no rule.
    pub fn explain_key(&self, key: &FileKey<'_>) -> Explanation {
        let mut rejected = Vec::new();
        if let Some(e) = Exemption::of_key(key) {
            return Explanation {
                matched: None,
                action: Action::PASS,
                rejected,
                exempt: Some(e),
            };
        }
        for (i, r) in self.rules.iter().enumerate() {
            match self.rule_matches(r, key) {
                Ok(()) => {
                    return Explanation {
                        matched: Some(i as u32),
                        action: r.action,
                        rejected,
                        exempt: None,
                    };
                }
                Err(mut m) => {
                    // Report the rule's criteria as written.
                    let src = self.policy.rules.get(i).map(|x| &x.matcher);
                    match (&mut m, src) {
                        (Mismatch::Path { glob, .. }, Some(s)) => {
                            *glob = s.path.clone().unwrap_or_default()
                        }
                        (Mismatch::Extension { rule, .. }, Some(s)) => {
                            rule.clone_from(&s.extensions)
                        }
                        (Mismatch::Process { pattern, .. }, Some(s)) => {
                            *pattern = s.process.clone().unwrap_or_default()
                        }
                        _ => {}
                    }
                    rejected.push((i as u32, m));
                }
            }
        }
        Explanation {
            matched: None,
            action: self.policy.default_action,
            rejected,
            exempt: None,
        }
    }

    /// [`explain_key`](Self::explain_key) from text: `path` in any accepted
    /// spelling, `process` an image name or path, `provider` the file's provider.
    /// An unparseable path is explained as a file without a name (and the parse
    /// error returned alongside: `Invalid` or `InsufficientResources`).
    pub fn explain(
        &self,
        path: &str,
        process: &str,
        provider: FileProvider,
    ) -> (Explanation, Option<path::NameError>) {
        match FileName::parse(path) {
            Ok(n) => (
                self.explain_key(&FileKey {
                    provider,
                    name: Some(&n),
                    process_image: process,
                }),
                None,
            ),
            Err(e) => {
                if let Ok(Some(exempt)) = Exemption::of_unparsed(path) {
                    let ex = Explanation {
                        matched: None,
                        action: Action::PASS,
                        rejected: Vec::new(),
                        exempt: Some(exempt),
                    };
                    return (ex, Some(e));
                }
                (
                    self.explain_key(&FileKey {
                        provider,
                        name: None,
                        process_image: process,
                    }),
                    Some(e),
                )
            }
        }
    }
}

/// The normalized share of rule `i` (`None`: no share, or no such rule).
fn rule_share(rules: &[CompiledRule], i: u32) -> Option<&str> {
    rules.get(i as usize).and_then(|r| r.share.as_deref())
}

/// The share index of compiled rules: (indices of the rules with a share, sorted by
/// (share, index); indices of the rules without one, in order). Two fallible
/// allocations and an in-place unstable sort (the keys are unique, so the order is
/// fully determined; `sort_by` would allocate a merge buffer infallibly).
///
/// # Errors
/// [`InsufficientResources`] when a vector could not be allocated.
fn share_index(rules: &[CompiledRule]) -> Result<(Vec<u32>, Vec<u32>), InsufficientResources> {
    let with_share = rules.iter().filter(|r| r.share.is_some()).count();
    let mut by_share = Vec::new();
    by_share.try_reserve_exact(with_share)?;
    let mut shareless = Vec::new();
    shareless.try_reserve_exact(rules.len() - with_share)?;
    for (i, r) in rules.iter().enumerate() {
        match r.share {
            Some(_) => by_share.push(i as u32),
            None => shareless.push(i as u32),
        }
    }
    by_share.sort_unstable_by(|&a, &b| {
        rule_share(rules, a)
            .cmp(&rule_share(rules, b))
            .then(a.cmp(&b))
    });
    Ok((by_share, shareless))
}
