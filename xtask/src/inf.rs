//! A reader for Windows INF files, enough to check `inf/flushguard.inf` against the
//! constants in `flushguard-protocol` (INF syntax: Microsoft's "General Syntax Rules for
//! INF Files").
//!
//! Supported: `[section]` headers (names compared case-insensitively), `key = value`
//! and value-only lines, comma-separated values, double-quoted strings (with `""` as an
//! escaped quote), `;` comments outside quotes, `\` line continuation, and `%token%`
//! substitution from the `[Strings]` section (`%%` is a literal `%`; numeric tokens such
//! as `%13%` are directory ids and stay as written).

use std::collections::HashMap;

/// One line of a section: an optional key and its comma-separated values (unquoted,
/// trimmed, not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The part before `=`, if any.
    pub key: Option<String>,
    /// The values after `=` (or the whole line), split at top-level commas.
    pub values: Vec<String>,
    /// 1-based line number where the entry starts.
    pub line: usize,
}

/// A `[section]` and its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name as written.
    pub name: String,
    /// Entries in order.
    pub entries: Vec<Entry>,
}

/// A syntax problem, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfError {
    /// A byte outside printable ASCII, tab, CR, LF (FlushGuard's INF is ASCII).
    #[error("line {line}: non-ASCII byte 0x{byte:02X}")]
    NonAscii {
        /// Line number.
        line: usize,
        /// The byte.
        byte: u8,
    },
    /// A line with content before the first section header.
    #[error("line {0}: entry outside any section")]
    OutsideSection(usize),
    /// `[` without a matching `]`.
    #[error("line {0}: malformed section header")]
    BadHeader(usize),
    /// A quoted string without its closing quote.
    #[error("line {0}: unterminated quoted string")]
    UnterminatedQuote(usize),
    /// `%token%` with no `[Strings]` entry.
    #[error("undefined string token %{0}%")]
    UndefinedToken(String),
}

/// A parsed INF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inf {
    /// Sections in file order.
    pub sections: Vec<Section>,
}

/// A line's optional key and its values.
type KeyValues = (Option<String>, Vec<String>);

/// Splits one logical line into (key, values), honouring quotes and comments; `None` for
/// a blank or comment-only line.
fn split_line(text: &str, line: usize) -> Result<Option<KeyValues>, InfError> {
    let mut fields: Vec<String> = Vec::new();
    let mut key: Option<String> = None;
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => break,
            '=' if !in_quotes && key.is_none() && fields.is_empty() => {
                key = Some(current.trim().to_owned());
                current.clear();
            }
            ',' if !in_quotes => {
                fields.push(current.trim().to_owned());
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(InfError::UnterminatedQuote(line));
    }
    fields.push(current.trim().to_owned());
    if key.is_none() && fields.len() == 1 && fields[0].is_empty() {
        return Ok(None);
    }
    Ok(Some((key, fields)))
}

impl Inf {
    /// Parses INF text.
    ///
    /// # Errors
    /// The first [`InfError`] in file order.
    pub fn parse(text: &str) -> Result<Self, InfError> {
        for (index, line) in text.lines().enumerate() {
            if let Some(&byte) = line
                .as_bytes()
                .iter()
                .find(|&&b| !(b == b'\t' || b == b'\r' || (0x20..0x7F).contains(&b)))
            {
                return Err(InfError::NonAscii {
                    line: index + 1,
                    byte,
                });
            }
        }
        let mut sections: Vec<Section> = Vec::new();
        let mut pending = String::new();
        let mut pending_start = 0;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            if pending.is_empty() {
                pending_start = number;
            }
            let trimmed = raw.trim_end_matches('\r').trim_end();
            if let Some(continued) = trimmed.strip_suffix('\\') {
                pending.push_str(continued);
                continue;
            }
            pending.push_str(trimmed);
            let logical = std::mem::take(&mut pending);
            let content = logical.trim_start();
            if content.starts_with('[') {
                let end = content
                    .find(']')
                    .ok_or(InfError::BadHeader(pending_start))?;
                sections.push(Section {
                    name: content[1..end].trim().to_owned(),
                    entries: Vec::new(),
                });
                continue;
            }
            if let Some((key, values)) = split_line(content, pending_start)? {
                let section = sections
                    .last_mut()
                    .ok_or(InfError::OutsideSection(pending_start))?;
                section.entries.push(Entry {
                    key,
                    values,
                    line: pending_start,
                });
            }
        }
        Ok(Inf { sections })
    }

    /// The section called `name` (case-insensitive).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|section| section.name.eq_ignore_ascii_case(name))
    }

    /// `[Strings]` as a map from lower-cased token to value.
    pub fn strings(&self) -> HashMap<String, String> {
        self.section("Strings")
            .map(|section| {
                section
                    .entries
                    .iter()
                    .filter_map(|entry| {
                        Some((
                            entry.key.as_ref()?.to_ascii_lowercase(),
                            entry.values.join(","),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Substitutes `%token%` from `[Strings]`.
    ///
    /// # Errors
    /// [`InfError::UndefinedToken`] for a non-numeric token without a string.
    pub fn expand(&self, value: &str) -> Result<String, InfError> {
        let strings = self.strings();
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let token = &after[..end];
            if token.is_empty() {
                out.push('%');
            } else if token.chars().all(|c| c.is_ascii_digit()) {
                out.push('%');
                out.push_str(token);
                out.push('%');
            } else {
                let replacement = strings
                    .get(&token.to_ascii_lowercase())
                    .ok_or_else(|| InfError::UndefinedToken(token.to_owned()))?;
                out.push_str(replacement);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The expanded values of the first `key` entry in `section` (both case-insensitive).
    ///
    /// # Errors
    /// [`InfError::UndefinedToken`] from [`Inf::expand`].
    pub fn values(&self, section: &str, key: &str) -> Result<Option<Vec<String>>, InfError> {
        let Some(entry) = self.section(section).and_then(|section| {
            section.entries.iter().find(|entry| {
                entry
                    .key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case(key))
            })
        }) else {
            return Ok(None);
        };
        entry
            .values
            .iter()
            .map(|value| self.expand(value))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The first expanded value of `key` in `section`.
    ///
    /// # Errors
    /// [`InfError::UndefinedToken`] from [`Inf::expand`].
    pub fn value(&self, section: &str, key: &str) -> Result<Option<String>, InfError> {
        Ok(self
            .values(section, key)?
            .and_then(|values| values.into_iter().next()))
    }

    /// Expanded `AddReg` lines of `section` (`root, subkey, value name, flags, data`).
    ///
    /// # Errors
    /// [`InfError::UndefinedToken`] from [`Inf::expand`].
    pub fn registry_lines(&self, section: &str) -> Result<Vec<Vec<String>>, InfError> {
        let Some(section) = self.section(section) else {
            return Ok(Vec::new());
        };
        section
            .entries
            .iter()
            .filter(|entry| entry.key.is_none())
            .map(|entry| {
                entry
                    .values
                    .iter()
                    .map(|value| self.expand(value))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_comments_continuations_and_tokens() {
        let inf = Inf::parse(
            "[Version]\nSignature = \"$Windows NT$\" ; comment\n[S]\nHKR,\"A\\B\",\"Altitude\",0x0,%Alt%\n\
             Key = one,\\\n two\n[Strings]\nAlt = \"123\"\nQ = \"say \"\"hi\"\"\"\n",
        )
        .unwrap();
        assert_eq!(
            inf.value("version", "signature").unwrap().as_deref(),
            Some("$Windows NT$")
        );
        assert_eq!(
            inf.registry_lines("S").unwrap(),
            vec![vec![
                "HKR".to_owned(),
                "A\\B".to_owned(),
                "Altitude".to_owned(),
                "0x0".to_owned(),
                "123".to_owned()
            ]]
        );
        assert_eq!(
            inf.values("S", "key").unwrap(),
            Some(vec!["one".to_owned(), "two".to_owned()])
        );
        assert_eq!(inf.expand("%q%").unwrap(), "say \"hi\"");
        assert_eq!(inf.expand("%13%\\x.sys").unwrap(), "%13%\\x.sys");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Inf::parse("[A]\nx = \"open\n"),
            Err(InfError::UnterminatedQuote(2))
        );
        assert_eq!(Inf::parse("x = 1\n"), Err(InfError::OutsideSection(1)));
        assert_eq!(
            Inf::parse("[A]\nx = caf\u{e9}\n"),
            Err(InfError::NonAscii {
                line: 2,
                byte: 0xC3
            })
        );
        let inf = Inf::parse("[A]\nx = %nope%\n").unwrap();
        assert_eq!(
            inf.value("A", "x"),
            Err(InfError::UndefinedToken("nope".to_owned()))
        );
    }
}
