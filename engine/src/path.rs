//! Windows name semantics for matching: normalization of file names, shares and
//! path globs.
//!
//! # Rules
//! - **Case**: names compare case-insensitively with Unicode *simple* case folding
//!   (one character to one character, as NTFS/SMB servers' upcase tables do):
//!   [`fold_char`]. Folding never changes a string's character count.
//! - **Separators**: `\` (NT); `/` in policy text and in names is treated as `\`.
//! - **Shares**: `\Device\Mup\server\share\...` (MUP normalized name, with any
//!   `;Provider` / `;X:0000...` redirector prefix components skipped),
//!   `\\server\share\...`, `\\?\UNC\server\share\...` and `\??\UNC\server\share\...`
//!   all name the share `\\server\share`. Server names are compared as written:
//!   `fs1`, `fs1.corp.example` and an IP address are different servers (as they
//!   are different SMB sessions).
//! - **No escapes**: `.` and `..` components are rejected in patterns; a file
//!   name containing them does not parse ([`FileName::parse`] errors) and is then
//!   matched only by rules without share/path/extension constraints.
//! - **Trailing dots and spaces** of every component are ignored for matching,
//!   as Win32 path normalization strips them: `report.db.` and `report.db ` match
//!   `*.db`. (Only `\\?\` callers can create such names; treating them like the
//!   stripped name governs more files, never fewer.)
//! - **Streams**: a `:stream[:$DATA]` suffix on the final component is ignored, so
//!   `a.db:Zone.Identifier` is matched as `a.db`.
//! - **8.3 short names** are not expanded here: the driver passes the
//!   *normalized* name (FltGetFileNameInformation with FLT_FILE_NAME_NORMALIZED),
//!   in which Filter Manager has already replaced short components by long ones.
//!   An opened name with a `PROGRA~1`-style component is matched literally;
//!   [`FileName::has_short_name_component`] reports it so the caller can re-query.

use alloc::string::String;
use alloc::vec::Vec;
use flushguard_protocol::{DecodeError, NameProblem};

/// Simple case folding of one character: maps every character to a canonical
/// member of its case class without changing the number of characters
/// (`ς`/`σ`/`Σ` -> `σ`, `ſ` -> `s`, `K` (Kelvin) -> `k`, `ẞ` -> `ß`; `İ` and `ß`
/// stay, as in CaseFolding.txt status C+S). Exactly the lowercase of the uppercase,
/// each taken only when it is one character, from the table in `fold_table.rs`
/// (checked against `char::to_uppercase` / `to_lowercase` for every code point by
/// engine/tests/fold_table.rs). O(log 206); no allocation; any IRQL.
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let cp = u32::from(c);
    let runs = &fold_table::FOLD_RUNS;
    let i = runs.partition_point(|r| r.start <= cp);
    let Some(run) = i.checked_sub(1).and_then(|i| runs.get(i)) else {
        return c;
    };
    let offset = cp - run.start;
    let stride = u32::from(run.stride);
    if offset % stride != 0 || offset / stride >= u32::from(run.len) {
        return c;
    }
    cp.checked_add_signed(run.delta)
        .and_then(char::from_u32)
        .unwrap_or(c)
}

/// Folds a string with [`fold_char`].
pub fn fold(s: &str) -> String {
    s.chars().map(fold_char).collect()
}

/// [`fold`] with one fallible allocation of the exact UTF-8 length (folding keeps
/// the number of characters, not necessarily the number of bytes).
///
/// # Errors
/// [`InsufficientResources`] when the buffer could not be allocated.
pub fn try_fold(s: &str) -> Result<String, InsufficientResources> {
    let len: usize = s.chars().map(|c| fold_char(c).len_utf8()).sum();
    let mut out = String::new();
    out.try_reserve_exact(len)?;
    out.extend(s.chars().map(fold_char));
    Ok(out)
}

/// `String::from(s)` with one fallible allocation of the exact length.
///
/// # Errors
/// [`InsufficientResources`] when the buffer could not be allocated.
pub fn try_string(s: &str) -> Result<String, InsufficientResources> {
    let mut out = String::new();
    out.try_reserve_exact(s.len())?;
    out.push_str(s);
    Ok(out)
}

/// The allocator could not provide a buffer (`STATUS_INSUFFICIENT_RESOURCES`): in
/// the driver the non-paged pool is exhausted. Callers on an I/O path pass the
/// operation through unmodified and count `CallbackCounter::AllocationFailed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsufficientResources;

impl From<alloc::collections::TryReserveError> for InsufficientResources {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        InsufficientResources
    }
}

impl core::fmt::Display for InsufficientResources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("insufficient resources (allocation failed)")
    }
}

/// Appends `s` to `out` folded with [`fold_char`], growing `out` only through
/// `String::try_reserve` (no allocation when the capacity suffices).
///
/// # Errors
/// [`InsufficientResources`] when growing `out` failed; `out` then holds a prefix.
pub fn try_push_folded(out: &mut String, s: &str) -> Result<(), InsufficientResources> {
    for c in s.chars().map(fold_char) {
        try_push(out, c)?;
    }
    Ok(())
}

/// Appends one character, growing `out` only through `String::try_reserve`.
///
/// # Errors
/// [`InsufficientResources`] when growing `out` failed (`out` unchanged).
pub fn try_push(out: &mut String, c: char) -> Result<(), InsufficientResources> {
    out.try_reserve(c.len_utf8())?;
    out.push(c);
    Ok(())
}

/// `String::from_utf16_lossy` with one fallible allocation of the exact UTF-8
/// length (unpaired surrogates become U+FFFD, 3 bytes). `units` is a UTF-16 name
/// as Filter Manager returns it (`UNICODE_STRING` buffer, length in code units).
///
/// # Errors
/// [`InsufficientResources`] when the buffer could not be allocated.
pub fn try_string_from_utf16_lossy(units: &[u16]) -> Result<String, InsufficientResources> {
    let decoded = || {
        char::decode_utf16(units.iter().copied()).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
    };
    let len: usize = decoded().map(char::len_utf8).sum();
    let mut out = String::new();
    out.try_reserve_exact(len)?;
    out.extend(decoded());
    Ok(out)
}

/// Why [`FileName::parse`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is malformed (`.`/`..` component, UNC form without server or
    /// share, NUL or control character).
    Invalid(DecodeError),
    /// A buffer for the normalized name could not be allocated
    /// (`STATUS_INSUFFICIENT_RESOURCES`).
    InsufficientResources,
}

impl From<DecodeError> for NameError {
    fn from(e: DecodeError) -> Self {
        NameError::Invalid(e)
    }
}

impl From<alloc::collections::TryReserveError> for NameError {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        NameError::InsufficientResources
    }
}

impl From<InsufficientResources> for NameError {
    fn from(_: InsufficientResources) -> Self {
        NameError::InsufficientResources
    }
}

impl core::fmt::Display for NameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NameError::Invalid(e) => core::fmt::Display::fmt(e, f),
            NameError::InsufficientResources => InsufficientResources.fmt(f),
        }
    }
}

fn is_sep(c: char) -> bool {
    c == '\\' || c == '/'
}

/// Characters Windows forbids in file and share names (besides separators,
/// wildcards and `:`).
fn is_illegal(c: char) -> bool {
    matches!(c, '<' | '>' | '"' | '|') || (c as u32) < 0x20
}

fn trim_component(c: &str) -> &str {
    c.trim_end_matches(['.', ' '])
}

/// `.`/`..` (or any component made only of dots and spaces, which Win32 would
/// resolve to one of them) checked on the raw component, before trimming.
fn dot_problem(raw: &str) -> Option<NameProblem> {
    if raw.is_empty() || !raw.chars().all(|c| c == '.' || c == ' ') {
        return None;
    }
    if raw.trim_end_matches(' ') == "." {
        Some(NameProblem::DotComponent)
    } else {
        Some(NameProblem::DotDotComponent)
    }
}

/// A file name normalized for matching (folded, `\`-separated).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileName {
    /// `\\server\share` folded, or `None` for a local volume.
    share: Option<String>,
    /// Path below the share (or volume) root, folded, components trimmed,
    /// stream suffix removed, no leading separator. Empty for the share root.
    rel: String,
    short_name: bool,
}

impl FileName {
    /// Parses a name as the driver sees it (normalized name) or as an
    /// administrator types it (`\\server\share\dir\f.txt`, `\\?\UNC\...`,
    /// `C:\dir\f.txt`, `\Device\HarddiskVolume3\dir\f.txt`).
    ///
    /// Every buffer grows only through `try_reserve` (no infallible allocation:
    /// this runs on the driver's I/O path at PASSIVE_LEVEL).
    ///
    /// Errors: `Invalid(Name { DotDotComponent | DotComponent })` for `.`/`..`
    /// components, `Invalid(Name { NotAShare })` for a UNC form without server and
    /// share, `Invalid(Name { IllegalCharacter })` for a NUL or control character;
    /// `InsufficientResources` when a buffer could not be allocated.
    pub fn parse(name: &str) -> Result<FileName, NameError> {
        let err = |problem| DecodeError::Name {
            field: "file name",
            problem,
        };
        if name.chars().any(|c| c == '\0') {
            return Err(err(NameProblem::IllegalCharacter).into());
        }
        let (share, rest) = match split_share(name)? {
            Some((server, sharename, rest)) => {
                let mut s = String::new();
                s.try_reserve(server.len() + sharename.len() + 3)?;
                try_push_folded(&mut s, "\\\\")?;
                try_push_folded(&mut s, trim_component(server))?;
                try_push(&mut s, '\\')?;
                try_push_folded(&mut s, trim_component(sharename))?;
                (Some(s), rest)
            }
            None => (None, strip_local_volume(name)),
        };
        let mut rel = String::new();
        rel.try_reserve(rest.len())?;
        let mut short_name = false;
        let mut comps = rest.split(is_sep).filter(|c| !c.is_empty()).peekable();
        while let Some(raw) = comps.next() {
            let mut comp = raw;
            if comps.peek().is_none() {
                // Stream suffix on the final component: `name:stream[:type]`.
                if let Some(p) = comp.find(':') {
                    comp = comp.get(..p).unwrap_or(comp);
                }
            }
            if let Some(p) = dot_problem(comp) {
                return Err(err(p).into());
            }
            let comp = trim_component(comp);
            if comp.is_empty() {
                continue;
            }
            if comp.chars().any(|c| (c as u32) < 0x20) {
                return Err(err(NameProblem::IllegalCharacter).into());
            }
            short_name |= looks_like_short_name(comp);
            if !rel.is_empty() {
                try_push(&mut rel, '\\')?;
            }
            try_push_folded(&mut rel, comp)?;
        }
        Ok(FileName {
            share,
            rel,
            short_name,
        })
    }

    /// `\\server\share` (folded) or `None` for a local volume.
    pub fn share(&self) -> Option<&str> {
        self.share.as_deref()
    }

    /// Path below the share root, folded, `\`-separated, no leading `\`.
    pub fn relative(&self) -> &str {
        &self.rel
    }

    /// Final component (folded), empty for the share root.
    pub fn file_name(&self) -> &str {
        self.rel.rsplit('\\').next().unwrap_or("")
    }

    /// Extension of the final component without the dot (folded), if any.
    pub fn extension(&self) -> Option<&str> {
        let f = self.file_name();
        let dot = f.rfind('.')?;
        f.get(dot + 1..).filter(|e| !e.is_empty())
    }

    /// True when some component looks like an 8.3 short name (`NAME~N`).
    pub fn has_short_name_component(&self) -> bool {
        self.short_name
    }
}

fn looks_like_short_name(comp: &str) -> bool {
    let base = comp.split('.').next().unwrap_or("");
    match base.rfind('~') {
        Some(t) if base.len() <= 8 => {
            let digits = base.get(t + 1..).unwrap_or("");
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Strips a case-insensitive ASCII prefix.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Splits a UNC-ish name into (server, share, rest). `Ok(None)` for non-UNC
/// names. Error `NotAShare` for a UNC prefix without server and share.
fn split_share(name: &str) -> Result<Option<(&str, &str, &str)>, DecodeError> {
    let norm_prefixes = [
        "\\device\\mup\\",
        "/device/mup/",
        "\\\\?\\unc\\",
        "\\??\\unc\\",
        "\\\\.\\unc\\",
        "//?/unc/",
    ];
    let mut after = None;
    let mut mup = false;
    for (i, p) in norm_prefixes.iter().enumerate() {
        if let Some(rest) = strip_prefix_ci(name, p) {
            after = Some(rest);
            mup = i < 2;
            break;
        }
    }
    if after.is_none() {
        // `\\server\share`, but not `\\?\C:\...` / `\\.\pipe`.
        let b = name.as_bytes();
        if b.len() >= 2 && is_sep(b[0] as char) && is_sep(b[1] as char) {
            let rest = name.get(2..).unwrap_or("");
            if rest.starts_with('?') || rest.starts_with('.') {
                return Ok(None);
            }
            after = Some(rest);
        }
    }
    let Some(mut rest) = after else {
        return Ok(None);
    };
    if mup {
        // Skip redirector prefix components: `;LanmanRedirector\;Z:000...\`.
        while rest.starts_with(';') {
            rest = match rest.find(is_sep) {
                Some(p) => rest.get(p + 1..).unwrap_or(""),
                None => "",
            };
        }
    }
    let mut it = rest.splitn(3, is_sep);
    let server = it.next().unwrap_or("");
    let share = it.next().unwrap_or("");
    let tail = it.next().unwrap_or("");
    if trim_component(server).is_empty() || trim_component(share).is_empty() {
        return Err(DecodeError::Name {
            field: "file name",
            problem: NameProblem::NotAShare,
        });
    }
    Ok(Some((server, share, tail)))
}

/// Drops a local volume prefix: `C:`, `\\?\C:`, `\??\C:`, `\Device\<Volume>`.
fn strip_local_volume(name: &str) -> &str {
    let mut s = name;
    for p in ["\\\\?\\", "\\??\\", "//?/"] {
        if let Some(r) = strip_prefix_ci(s, p) {
            s = r;
            break;
        }
    }
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return s.get(2..).unwrap_or("");
    }
    if let Some(r) = strip_prefix_ci(s, "\\device\\") {
        return match r.find(is_sep) {
            Some(p) => r.get(p..).unwrap_or(""),
            None => "",
        };
    }
    s
}

/// Normalizes a policy share to `\\server\share` (folded).
///
/// Accepts `\\server\share`, `//server/share`, `\Device\Mup\server\share`,
/// `\\?\UNC\server\share`, `\??\UNC\server\share`; a trailing separator is allowed.
/// Errors: `Invalid(Name { NotAShare })` (missing parts, extra components, not
/// UNC), `Invalid(Name { IllegalCharacter })` (wildcards, `< > " |`, control
/// characters, `:`); `InsufficientResources` when the result's buffer could not be
/// allocated (one fallible allocation of the exact size).
pub fn normalize_share(s: &str) -> Result<String, NameError> {
    let not_share = DecodeError::Name {
        field: "share",
        problem: NameProblem::NotAShare,
    };
    let (server, share, rest) = split_share(s)
        .map_err(|_| not_share)?
        .ok_or(NameError::Invalid(not_share))?;
    if !rest.split(is_sep).all(str::is_empty) {
        return Err(NameError::Invalid(not_share));
    }
    for part in [server, share] {
        if part
            .chars()
            .any(|c| is_illegal(c) || matches!(c, '*' | '?' | ':'))
        {
            return Err(NameError::Invalid(DecodeError::Name {
                field: "share",
                problem: NameProblem::IllegalCharacter,
            }));
        }
        if let Some(problem) = dot_problem(part) {
            return Err(NameError::Invalid(DecodeError::Name {
                field: "share",
                problem,
            }));
        }
    }
    let (server, share) = (trim_component(server), trim_component(share));
    let folded_len = |p: &str| -> usize { p.chars().map(|c| fold_char(c).len_utf8()).sum() };
    let mut out = String::new();
    out.try_reserve_exact(3 + folded_len(server) + folded_len(share))?;
    out.push_str("\\\\");
    out.extend(server.chars().map(fold_char));
    out.push('\\');
    out.extend(share.chars().map(fold_char));
    Ok(out)
}

/// One component of a compiled path glob.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GlobComp {
    /// `**`: zero or more whole components.
    AnyDepth,
    /// A component pattern (folded) with `*` (any run within the component) and
    /// `?` (one character).
    Pattern(String),
}

/// A compiled path glob below the share root: `**/*.db`, `logs/*`, `data\*.mdf`.
///
/// Syntax: components separated by `\` or `/`; a leading separator is ignored;
/// `*` matches any run of characters within one component, `?` exactly one
/// character, a whole component `**` zero or more components. Matching is
/// against the whole relative path (anchored at both ends), case-insensitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob {
    comps: Vec<GlobComp>,
}

impl PathGlob {
    /// Compiles a glob.
    ///
    /// Errors: `Invalid(Name { .. })` with field `path`: `EmptyComponent` (empty
    /// pattern or `a\\b`), `DotComponent`/`DotDotComponent`, `BadRecursiveWildcard`
    /// (`a**`), `IllegalCharacter` (`< > " |`, `:` or control characters);
    /// `InsufficientResources` when a buffer could not be allocated (every one is
    /// allocated fallibly).
    pub fn new(pattern: &str) -> Result<PathGlob, NameError> {
        let err = |problem| {
            NameError::Invalid(DecodeError::Name {
                field: "path",
                problem,
            })
        };
        let p = pattern.strip_prefix(is_sep).unwrap_or(pattern);
        if p.is_empty() {
            return Err(err(NameProblem::EmptyComponent));
        }
        let mut comps = Vec::new();
        for raw in p.split(is_sep) {
            if let Some(p) = dot_problem(raw) {
                return Err(err(p));
            }
            let c = trim_component(raw);
            match c {
                "" => return Err(err(NameProblem::EmptyComponent)),
                "**" => {
                    if comps.last() != Some(&GlobComp::AnyDepth) {
                        comps.try_reserve(1)?;
                        comps.push(GlobComp::AnyDepth);
                    }
                    continue;
                }
                _ => {}
            }
            if c.contains("**") {
                return Err(err(NameProblem::BadRecursiveWildcard));
            }
            if c.chars().any(|ch| is_illegal(ch) || ch == ':') {
                return Err(err(NameProblem::IllegalCharacter));
            }
            let folded = try_fold(c)?;
            comps.try_reserve(1)?;
            comps.push(GlobComp::Pattern(folded));
        }
        Ok(PathGlob { comps })
    }

    /// True when `rel` (a [`FileName::relative`], folded, `\`-separated) matches.
    /// Time O(pattern x path) in the worst case, no allocation.
    pub fn matches(&self, rel: &str) -> bool {
        // Greedy wildcard matching at component level with one backtrack point
        // (correct for `*`-style patterns, here `**`).
        let next_comp = |pos: usize| -> Option<(&str, usize)> {
            if pos >= rel.len() {
                return None;
            }
            let rest = rel.get(pos..)?;
            match rest.find('\\') {
                Some(i) => Some((rest.get(..i)?, pos + i + 1)),
                None => Some((rest, rel.len() + 1)),
            }
        };
        let (mut pi, mut pos) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        let has_more = |pos: usize| pos < rel.len();
        loop {
            if has_more(pos) {
                if let Some(GlobComp::AnyDepth) = self.comps.get(pi) {
                    star = Some((pi + 1, pos));
                    pi += 1;
                    continue;
                }
                if let (Some(GlobComp::Pattern(p)), Some((c, next))) =
                    (self.comps.get(pi), next_comp(pos))
                {
                    if glob_component(p, c) {
                        pi += 1;
                        pos = next;
                        continue;
                    }
                }
                if let Some((sp, spos)) = star {
                    match next_comp(spos) {
                        Some((_, next)) => {
                            star = Some((sp, next));
                            pi = sp;
                            pos = next;
                            continue;
                        }
                        None => return false,
                    }
                }
                return false;
            }
            while let Some(GlobComp::AnyDepth) = self.comps.get(pi) {
                pi += 1;
            }
            return pi == self.comps.len();
        }
    }
}

/// Matches one component (`*`, `?`) against a subject; the pattern is folded,
/// the subject's characters are folded on the fly. No allocation.
pub fn glob_component(pattern: &str, subject: &str) -> bool {
    let next = |s: &str, i: usize| {
        s.get(i..)
            .and_then(|r| r.chars().next())
            .map(|c| (c, c.len_utf8()))
    };
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some((sc, sl)) = next(subject, si) {
            let sc = fold_char(sc);
            if let Some((pc, pl)) = next(pattern, pi) {
                if pc == '*' {
                    star = Some((pi + pl, si));
                    pi += pl;
                    continue;
                }
                if pc == '?' || pc == sc {
                    pi += pl;
                    si += sl;
                    continue;
                }
            }
            if let Some((sp, ss)) = star {
                let l = next(subject, ss).map_or(1, |(_, l)| l);
                star = Some((sp, ss + l));
                pi = sp;
                si = ss + l;
                continue;
            }
            return false;
        }
        while let Some(('*', pl)) = next(pattern, pi) {
            pi += pl;
        }
        return pi >= pattern.len();
    }
}

/// Validates and folds a process-image pattern (`sqlservr.exe`, `*.exe`): one
/// component, `*`/`?` allowed. Errors: `Invalid(Name { EmptyComponent |
/// IllegalCharacter })` (field `process`; separators are illegal);
/// `InsufficientResources` (one fallible allocation of the exact size).
pub fn normalize_process(p: &str) -> Result<String, NameError> {
    let err = |problem| {
        NameError::Invalid(DecodeError::Name {
            field: "process",
            problem,
        })
    };
    let t = trim_component(p);
    if t.is_empty() {
        return Err(err(NameProblem::EmptyComponent));
    }
    if t.chars().any(|c| is_illegal(c) || is_sep(c) || c == ':') {
        return Err(err(NameProblem::IllegalCharacter));
    }
    Ok(try_fold(t)?)
}

/// Final component of a process image path (`\Device\...\sqlservr.exe` ->
/// `sqlservr.exe`), unfolded.
pub fn image_file_name(image: &str) -> &str {
    image.rsplit(is_sep).next().unwrap_or(image)
}

/// Validates and folds an extension (`db` or `.db`), returned without the dot.
/// Errors: `Invalid(Name { BadExtension })` (empty, `.` inside, separators,
/// wildcards, `|`, `:` or illegal characters); `InsufficientResources` (one
/// fallible allocation of the exact size).
pub fn normalize_extension(e: &str) -> Result<String, NameError> {
    let t = e.strip_prefix('.').unwrap_or(e);
    if t.is_empty()
        || t.chars()
            .any(|c| is_illegal(c) || is_sep(c) || matches!(c, '.' | '*' | '?' | ':' | ' '))
    {
        return Err(NameError::Invalid(DecodeError::Name {
            field: "extensions",
            problem: NameProblem::BadExtension,
        }));
    }
    Ok(try_fold(t)?)
}

mod fold_table;
#[cfg(test)]
mod tests;
