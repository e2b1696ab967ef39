//! Parsers for the `Detail` column of Process Monitor exports.
//!
//! Process Monitor renders each operation's parameters as `Key: value` pairs joined by
//! `", "`, but several values are themselves comma-separated lists (`Options: Synchronous
//! IO Non-Alert, Non-Directory File`, `ShareMode: Read, Write`, `I/O Flags: Non-cached,
//! Paging I/O`). Splitting on commas is therefore wrong; [`split_known_keys`] splits on the
//! known `Key: ` tokens of each operation instead.
//!
//! Numbers are printed with the capturing machine's thousands separator: `4,096`,
//! `4\u{a0}096` (U+00A0), `4\u{202f}096` (U+202F), `4.096`, `4'096` or `4 096`. Offsets and
//! lengths are integers, so a separator is accepted only where it groups digits by
//! three ([`parse_grouped_int`]); `1,5` is malformed, not 15.

use thiserror::Error;

/// `Parameters.Create.Options` bits (`CreateOptions` of `ZwCreateFile`, low 24 bits of
/// `IrpSp->Parameters.Create.Options`). Source: Microsoft DDI page "ZwCreateFile function
/// (wdm.h)", CreateOptions table.
pub mod create_options {
    pub use flushguard_engine::protocol::nt::{FILE_DIRECTORY_FILE, FILE_WRITE_THROUGH};
    /// `FILE_SEQUENTIAL_ONLY`.
    pub const FILE_SEQUENTIAL_ONLY: u32 = 0x0000_0004;
    /// `FILE_NO_INTERMEDIATE_BUFFERING` (ProcMon: "No Buffering").
    pub const FILE_NO_INTERMEDIATE_BUFFERING: u32 = 0x0000_0008;
    /// `FILE_SYNCHRONOUS_IO_ALERT`.
    pub const FILE_SYNCHRONOUS_IO_ALERT: u32 = 0x0000_0010;
    /// `FILE_SYNCHRONOUS_IO_NONALERT`.
    pub const FILE_SYNCHRONOUS_IO_NONALERT: u32 = 0x0000_0020;
    /// `FILE_NON_DIRECTORY_FILE`.
    pub const FILE_NON_DIRECTORY_FILE: u32 = 0x0000_0040;
    /// `FILE_CREATE_TREE_CONNECTION`.
    pub const FILE_CREATE_TREE_CONNECTION: u32 = 0x0000_0080;
    /// `FILE_COMPLETE_IF_OPLOCKED`.
    pub const FILE_COMPLETE_IF_OPLOCKED: u32 = 0x0000_0100;
    /// `FILE_NO_EA_KNOWLEDGE`.
    pub const FILE_NO_EA_KNOWLEDGE: u32 = 0x0000_0200;
    /// `FILE_OPEN_REMOTE_INSTANCE`.
    pub const FILE_OPEN_REMOTE_INSTANCE: u32 = 0x0000_0400;
    /// `FILE_RANDOM_ACCESS`.
    pub const FILE_RANDOM_ACCESS: u32 = 0x0000_0800;
    /// `FILE_DELETE_ON_CLOSE`.
    pub const FILE_DELETE_ON_CLOSE: u32 = 0x0000_1000;
    /// `FILE_OPEN_BY_FILE_ID`.
    pub const FILE_OPEN_BY_FILE_ID: u32 = 0x0000_2000;
    /// `FILE_OPEN_FOR_BACKUP_INTENT`.
    pub const FILE_OPEN_FOR_BACKUP_INTENT: u32 = 0x0000_4000;
    /// `FILE_NO_COMPRESSION`.
    pub const FILE_NO_COMPRESSION: u32 = 0x0000_8000;
    /// `FILE_OPEN_REQUIRING_OPLOCK`.
    pub const FILE_OPEN_REQUIRING_OPLOCK: u32 = 0x0001_0000;
    /// `FILE_DISALLOW_EXCLUSIVE`.
    pub const FILE_DISALLOW_EXCLUSIVE: u32 = 0x0002_0000;
    /// `FILE_SESSION_AWARE`.
    pub const FILE_SESSION_AWARE: u32 = 0x0004_0000;
    /// `FILE_RESERVE_OPFILTER`.
    pub const FILE_RESERVE_OPFILTER: u32 = 0x0010_0000;
    /// `FILE_OPEN_REPARSE_POINT`.
    pub const FILE_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    /// `FILE_OPEN_NO_RECALL`.
    pub const FILE_OPEN_NO_RECALL: u32 = 0x0040_0000;
    /// `FILE_OPEN_FOR_FREE_SPACE_QUERY`.
    pub const FILE_OPEN_FOR_FREE_SPACE_QUERY: u32 = 0x0080_0000;
}

/// `Irp->Flags` bits that Process Monitor shows as "I/O Flags": `IRP_NOCACHE`
/// ("Non-cached"), `IRP_PAGING_IO` ("Paging I/O"), `IRP_SYNCHRONOUS_PAGING_IO`
/// ("Synchronous Paging I/O"); defined once in `flushguard-protocol`.
pub mod irp_flags {
    pub use flushguard_engine::protocol::nt::{
        IRP_NOCACHE, IRP_PAGING_IO, IRP_SYNCHRONOUS_PAGING_IO,
    };
}

/// `SL_WRITE_THROUGH` in `IrpSp->Flags` / `Iopb->OperationFlags` (ProcMon: I/O flag
/// "Write Through"); defined once in `flushguard-protocol`.
pub use flushguard_engine::protocol::nt::SL_WRITE_THROUGH;

/// A Detail string that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DetailError {
    /// A key that the operation always carries is absent (e.g. `Length` of a WriteFile).
    #[error("missing `{0}:` in Detail")]
    MissingKey(&'static str),
    /// A number could not be parsed.
    #[error("`{key}: {value}` is not a number")]
    BadNumber {
        /// The key whose value is wrong.
        key: &'static str,
        /// The raw value text.
        value: String,
    },
    /// A number with thousands separators in the wrong places (`1,5`, `12,34,567`) or
    /// with two different ones (`1,234.567`).
    #[error(
        "`{key}: {value}` has misplaced thousands separators (expected 1 to 3 digits, then \
         groups of 3 digits after one separator used throughout, e.g. `1,536`)"
    )]
    BadGrouping {
        /// The key whose value is wrong.
        key: &'static str,
        /// The raw value text.
        value: String,
    },
}

/// Splits `detail` into `(key, value)` pairs, recognising only the keys in `keys`.
///
/// A key is recognised at the start of the string or right after `", "`, followed by
/// `": "` (or `":"` at the end of the string). Everything between two recognised keys is
/// the value of the first, commas included. Unknown keys therefore stay inside the value
/// of the preceding known key. Pairs are returned in order of appearance.
pub fn split_known_keys<'a>(
    detail: &'a str,
    keys: &[&'static str],
) -> Vec<(&'static str, &'a str)> {
    let mut out = Vec::new();
    for_each_known_key(detail, keys, |key, value| out.push((key, value)));
    out
}

/// [`split_known_keys`] without collecting: calls `f(key, value)` for each pair, in
/// order of appearance. No allocation.
fn for_each_known_key<'a>(
    detail: &'a str,
    keys: &[&'static str],
    mut f: impl FnMut(&'static str, &'a str),
) {
    let bytes = detail.as_bytes();
    // The key ending at `colon`: the text after the last `", "` before it (or from the
    // start), if it is one of `keys`. Returns (start of key, key).
    let key_before = |colon: usize| -> Option<(usize, &'static str)> {
        let mut start = 0;
        let mut end = colon;
        while let Some(p) = memchr::memrchr(b',', &bytes[..end]) {
            if p + 1 < colon && bytes[p + 1] == b' ' {
                start = p + 2;
                break;
            }
            end = p;
        }
        let text = &detail[start..colon];
        keys.iter().find(|k| **k == text).map(|k| (start, *k))
    };
    // The pending key and where its value starts; its value ends 2 bytes (`", "`)
    // before the next recognised key starts.
    let mut pending: Option<(usize, &'static str)> = None;
    let mut mark = |start: usize, vstart: usize, key: &'static str| {
        if let Some((pstart, pkey)) = pending.replace((vstart, key)) {
            f(
                pkey,
                detail[pstart..start.saturating_sub(2).max(pstart)].trim_end(),
            );
        }
    };
    // One pass over the `": "` separators; the text between the previous `", "` (or the
    // start) and a separator is a key candidate.
    for colon in memchr::memchr_iter(b':', bytes) {
        if bytes.get(colon + 1) != Some(&b' ') {
            continue;
        }
        if let Some((start, key)) = key_before(colon) {
            mark(start, colon + 2, key);
        }
    }
    if detail.ends_with(':') {
        let colon = detail.len() - 1;
        if let Some((start, key)) = key_before(colon) {
            mark(start, detail.len(), key);
        }
    }
    if let Some((pstart, pkey)) = pending {
        f(pkey, detail[pstart..].trim_end());
    }
}

/// Splits a list value such as `Non-cached, Paging I/O` into its items.
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(", ").map(str::trim).filter(|s| !s.is_empty())
}

/// Parses an integer printed with a locale's thousands separator (`,`, `.`, `'`, U+00A0,
/// U+202F, U+2019 or space), e.g. `4,096` or `1\u{a0}048\u{a0}576`. Only well-formed
/// grouping is accepted: 1 to 3 digits, then groups of exactly 3 digits, each after the
/// same separator (or no separator at all: `4096`). A leading `-` is kept (ProcMon
/// prints `-1` for some end-of-file offsets).
///
/// # Errors
/// [`DetailError::BadGrouping`] when a separator is misplaced (`1,5`, `12,34,567`,
/// `1,234,`) or two different ones are used (`1,234.567`); [`DetailError::BadNumber`]
/// for anything else that is not such an integer (no digits, other characters, beyond
/// `i64`).
pub fn parse_grouped_int(key: &'static str, value: &str) -> Result<i64, DetailError> {
    let bad = || DetailError::BadNumber {
        key,
        value: value.to_owned(),
    };
    let bad_grouping = || DetailError::BadGrouping {
        key,
        value: value.to_owned(),
    };
    let v = value.trim();
    let (neg, digits) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let mut n: i64 = 0;
    // The separator seen so far, and the digits of the current group.
    let mut sep: Option<char> = None;
    let mut group = 0usize;
    for c in digits.chars() {
        match c {
            '0'..='9' => {
                group += 1;
                if sep.is_some() && group > 3 {
                    return Err(bad_grouping());
                }
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(c as u8 - b'0')))
                    .ok_or_else(bad)?;
            }
            ',' | '.' | '\'' | ' ' | '\u{a0}' | '\u{202f}' | '\u{2019}' => {
                let group_ok = match sep {
                    None => (1..=3).contains(&group),
                    Some(s) => s == c && group == 3,
                };
                if !group_ok {
                    return Err(bad_grouping());
                }
                sep = Some(c);
                group = 0;
            }
            _ => return Err(bad()),
        }
    }
    match (sep, group) {
        (None, 0) => return Err(bad()),
        (Some(_), g) if g != 3 => return Err(bad_grouping()),
        _ => {}
    }
    Ok(if neg { -n } else { n })
}

/// Keys of a `CreateFile` / `IRP_MJ_CREATE` Detail.
pub const CREATE_KEYS: &[&str] = &[
    "Desired Access",
    "Disposition",
    "Options",
    "Attributes",
    "ShareMode",
    "AllocationSize",
    "Impersonating",
    "OpenResult",
];

/// `CreateDisposition` of `ZwCreateFile` (`FILE_SUPERSEDE` .. `FILE_OVERWRITE_IF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Disposition {
    /// `FILE_SUPERSEDE` (0).
    Supersede,
    /// `FILE_OPEN` (1).
    Open,
    /// `FILE_CREATE` (2).
    Create,
    /// `FILE_OPEN_IF` (3).
    OpenIf,
    /// `FILE_OVERWRITE` (4).
    Overwrite,
    /// `FILE_OVERWRITE_IF` (5).
    OverwriteIf,
}

impl Disposition {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Supersede" => Self::Supersede,
            "Open" => Self::Open,
            "Create" => Self::Create,
            "OpenIf" => Self::OpenIf,
            "Overwrite" => Self::Overwrite,
            "OverwriteIf" => Self::OverwriteIf,
            _ => return None,
        })
    }
}

/// A parsed `CreateFile` Detail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateDetail {
    /// `Parameters.Create.Options` low 24 bits, rebuilt from the `Options:` list (see
    /// [`create_options`]).
    pub create_options: u32,
    /// Option names that this parser does not know (kept, not an error).
    pub unknown_options: u32,
    /// The `Disposition:` value, if present and known.
    pub disposition: Option<Disposition>,
    /// True when `Desired Access:` grants write or append data (`Generic Write`, `Generic
    /// Read/Write`, `Generic All`, `All Access`, `Write Data/Add File`, `Append
    /// Data/Add Subdirectory`).
    pub write_access: bool,
}

/// Parses a `CreateFile` Detail. Every key is optional (ProcMon omits Detail entirely for
/// some failed opens); an empty Detail yields the default value.
pub fn parse_create(detail: &str) -> CreateDetail {
    // The first value of each key in `split_known_keys` order (no vector of pairs per
    // row).
    let (mut options, mut disposition, mut access) = (None, None, None);
    for_each_known_key(detail, CREATE_KEYS, |key, value| {
        let slot = match key {
            "Options" => &mut options,
            "Disposition" => &mut disposition,
            "Desired Access" => &mut access,
            _ => return,
        };
        slot.get_or_insert(value);
    });
    let mut out = CreateDetail::default();
    if let Some(opts) = options {
        for item in list_items(opts) {
            use create_options::*;
            let bit = match item {
                "Directory" => FILE_DIRECTORY_FILE,
                "Write Through" => FILE_WRITE_THROUGH,
                "Sequential Access" => FILE_SEQUENTIAL_ONLY,
                "No Buffering" => FILE_NO_INTERMEDIATE_BUFFERING,
                "Synchronous IO Alert" => FILE_SYNCHRONOUS_IO_ALERT,
                "Synchronous IO Non-Alert" => FILE_SYNCHRONOUS_IO_NONALERT,
                "Non-Directory File" => FILE_NON_DIRECTORY_FILE,
                "Create Tree Connection" => FILE_CREATE_TREE_CONNECTION,
                "Complete If Oplocked" => FILE_COMPLETE_IF_OPLOCKED,
                "No EA Knowledge" => FILE_NO_EA_KNOWLEDGE,
                "Open Remote Instance" => FILE_OPEN_REMOTE_INSTANCE,
                "Random Access" => FILE_RANDOM_ACCESS,
                "Delete On Close" => FILE_DELETE_ON_CLOSE,
                "Open By ID" => FILE_OPEN_BY_FILE_ID,
                "Open For Backup" => FILE_OPEN_FOR_BACKUP_INTENT,
                "No Compression" => FILE_NO_COMPRESSION,
                "Open Requiring Oplock" => FILE_OPEN_REQUIRING_OPLOCK,
                "Disallow Exclusive" => FILE_DISALLOW_EXCLUSIVE,
                "Session Aware" => FILE_SESSION_AWARE,
                "Reserve OpFilter" => FILE_RESERVE_OPFILTER,
                "Open Reparse Point" => FILE_OPEN_REPARSE_POINT,
                "Open No Recall" => FILE_OPEN_NO_RECALL,
                "Open For Free Space Query" => FILE_OPEN_FOR_FREE_SPACE_QUERY,
                _ => {
                    out.unknown_options += 1;
                    0
                }
            };
            out.create_options |= bit;
        }
    }
    out.disposition = disposition.and_then(Disposition::parse);
    if let Some(access) = access {
        out.write_access = list_items(access).any(|a| {
            matches!(
                a,
                "Generic Write"
                    | "Generic Read/Write"
                    | "Generic All"
                    | "All Access"
                    | "Write Data/Add File"
                    | "Append Data/Add Subdirectory"
                    | "Append Data"
                    | "Write Data"
            )
        });
    }
    out
}

/// Keys of a `ReadFile` / `WriteFile` / `IRP_MJ_WRITE` / `FASTIO_WRITE` Detail.
pub const RW_KEYS: &[&str] = &["Offset", "Length", "I/O Flags", "Priority"];

/// A parsed `WriteFile` Detail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteDetail {
    /// `Parameters.Write.ByteOffset` in bytes (ProcMon prints -1 for "current position").
    pub offset: i64,
    /// `Parameters.Write.Length` in bytes.
    pub length: u64,
    /// `Irp->Flags` bits shown as I/O Flags (see [`irp_flags`]).
    pub irp_flags: u32,
    /// `IrpSp->Flags` bits (only [`SL_WRITE_THROUGH`]).
    pub operation_flags: u8,
}

/// Parses a `WriteFile` Detail: `Offset: n, Length: n[, I/O Flags: ...][, Priority: ...]`.
///
/// # Errors
/// [`DetailError::MissingKey`] when `Length` is absent, [`DetailError::BadNumber`] when
/// `Offset` or `Length` is not an integer or `Length` is negative.
pub fn parse_write(detail: &str) -> Result<WriteDetail, DetailError> {
    // The first value of each key in `split_known_keys` order.
    let (mut offset, mut length, mut io_flags) = (None, None, None);
    for_each_known_key(detail, RW_KEYS, |key, value| {
        let slot = match key {
            "Offset" => &mut offset,
            "Length" => &mut length,
            "I/O Flags" => &mut io_flags,
            _ => return,
        };
        slot.get_or_insert(value);
    });
    let length = length.ok_or(DetailError::MissingKey("Length"))?;
    let length_n = parse_grouped_int("Length", length)?;
    let length = u64::try_from(length_n).map_err(|_| DetailError::BadNumber {
        key: "Length",
        value: length.to_owned(),
    })?;
    let offset = match offset {
        Some(v) => parse_grouped_int("Offset", v)?,
        None => return Err(DetailError::MissingKey("Offset")),
    };
    let mut out = WriteDetail {
        offset,
        length,
        ..WriteDetail::default()
    };
    if let Some(flags) = io_flags {
        for f in list_items(flags) {
            match f {
                "Non-cached" => out.irp_flags |= irp_flags::IRP_NOCACHE,
                "Paging I/O" => out.irp_flags |= irp_flags::IRP_PAGING_IO,
                "Synchronous Paging I/O" => out.irp_flags |= irp_flags::IRP_SYNCHRONOUS_PAGING_IO,
                "Write Through" => out.operation_flags |= SL_WRITE_THROUGH,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Keys of a `SetRenameInformationFile` Detail.
pub const RENAME_KEYS: &[&str] = &["ReplaceIfExists", "Flags", "FileName"];

/// The new name of a `SetRenameInformationFile` Detail (`ReplaceIfExists: True,
/// FileName: C:\dir\new.txt`); `None` when `FileName` is missing or empty. The file name
/// is the last key, so commas inside it are kept.
pub fn parse_rename(detail: &str) -> Option<&str> {
    split_known_keys(detail, RENAME_KEYS)
        .into_iter()
        .find(|(k, _)| *k == "FileName")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_detail_from_trace_07() {
        // Row 2 of 07-notepad-save-bbbb-pp32.csv.
        let d = parse_create(
            "Desired Access: Generic Read/Write, Disposition: OpenIf, Options: Synchronous IO \
             Non-Alert, Non-Directory File, Disallow Exclusive, Attributes: N, ShareMode: Read, \
             AllocationSize: 0, OpenResult: Opened",
        );
        use create_options::*;
        assert_eq!(
            d.create_options,
            FILE_SYNCHRONOUS_IO_NONALERT | FILE_NON_DIRECTORY_FILE | FILE_DISALLOW_EXCLUSIVE
        );
        assert_eq!(d.disposition, Some(Disposition::OpenIf));
        assert!(d.write_access);
        assert_eq!(d.unknown_options, 0);
    }

    #[test]
    fn create_detail_with_write_through_and_empty_options() {
        let d = parse_create(
            "Desired Access: Generic Write, Disposition: Create, Options: Write Through, \
             No Buffering, Attributes: N, ShareMode: None, AllocationSize: 0",
        );
        use create_options::*;
        assert_eq!(
            d.create_options,
            FILE_WRITE_THROUGH | FILE_NO_INTERMEDIATE_BUFFERING
        );
        let e = parse_create(
            "Desired Access: Read Attributes, Disposition: Open, Options: , Attributes: n/a, \
             ShareMode: Read, Write, Delete, AllocationSize: n/a",
        );
        assert_eq!(e.create_options, 0);
        assert!(!e.write_access);
        assert_eq!(parse_create(""), CreateDetail::default());
    }

    #[test]
    fn write_detail_locales() {
        let w = parse_write(
            "Offset: 0, Length: 4,096, I/O Flags: Non-cached, Paging I/O, Synchronous Paging \
             I/O, Priority: Normal",
        )
        .unwrap();
        assert_eq!(w.length, 4096);
        assert_eq!(
            w.irp_flags,
            irp_flags::IRP_NOCACHE
                | irp_flags::IRP_PAGING_IO
                | irp_flags::IRP_SYNCHRONOUS_PAGING_IO
        );
        // 11-gcc-compile-locale-comma-nbsp.csv uses U+00A0.
        let w = parse_write("Offset: 46\u{a0}569, Length: 3\u{a0}749").unwrap();
        assert_eq!((w.offset, w.length), (46_569, 3_749));
        let w = parse_write("Offset: 1.048.576, Length: 65.536, I/O Flags: Write Through").unwrap();
        assert_eq!(
            (w.offset, w.length, w.operation_flags),
            (1_048_576, 65_536, SL_WRITE_THROUGH)
        );
        assert_eq!(parse_write("Offset: -1, Length: 5").unwrap().offset, -1);
    }

    #[test]
    fn write_detail_errors() {
        assert_eq!(
            parse_write("Offset: 0"),
            Err(DetailError::MissingKey("Length"))
        );
        assert!(matches!(
            parse_write("Offset: 0, Length: abc"),
            Err(DetailError::BadNumber { key: "Length", .. })
        ));
        assert!(parse_write("Offset: 0, Length: -4").is_err());
        assert!(parse_write("Offset: 0, Length: 99999999999999999999999").is_err());
        assert!(parse_write("Offset: ,1, Length: 1").is_err());
        assert!(parse_write("").is_err());
    }

    #[test]
    fn misplaced_group_separators_are_malformed() {
        // Well-formed: 1 to 3 digits, then groups of exactly 3 after one separator
        // used throughout, for every separator ProcMon writes.
        for (text, n) in [
            ("1,536", 1536),
            ("12.345.678", 12_345_678),
            ("123'456", 123_456),
            ("1 000", 1000),
            ("4\u{a0}096", 4096),
            ("1\u{202f}048\u{202f}576", 1_048_576),
            ("1234567", 1_234_567),
            ("-1,000", -1000),
            ("0", 0),
        ] {
            assert_eq!(parse_grouped_int("Length", text), Ok(n), "{text}");
        }
        // Issue 10: `1,5` was read as 15.
        for text in [
            "1,5",
            "1,53",
            "1,5366",
            "12,34,567",
            "1234,567",
            "1,234,56",
            "1,,234",
            "1,234,",
            "1,234.567",
            "1 234,567",
            ",234",
            "-,234",
        ] {
            assert_eq!(
                parse_grouped_int("Length", text),
                Err(DetailError::BadGrouping {
                    key: "Length",
                    value: text.into()
                }),
                "{text}"
            );
        }
        let e = parse_write("Offset: 0, Length: 1,5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`Length: 1,5`"), "{e}");
        assert!(e.contains("groups of 3"), "{e}");
    }

    #[test]
    fn rename_detail() {
        // Row 74 of 13-ransomware-sim-write-rename.csv.
        assert_eq!(
            parse_rename(
                "ReplaceIfExists: True, FileName: C:\\ransomware_test\\doc1.txt.encrypted"
            ),
            Some("C:\\ransomware_test\\doc1.txt.encrypted")
        );
        assert_eq!(parse_rename("FileName: C:\\a, b.txt"), Some("C:\\a, b.txt"));
        assert_eq!(parse_rename("ReplaceIfExists: False"), None);
    }

    #[test]
    fn split_keeps_commas_inside_values() {
        let p = split_known_keys(
            "ShareMode: Read, Write, Delete, AllocationSize: n/a",
            CREATE_KEYS,
        );
        assert_eq!(
            p,
            vec![
                ("ShareMode", "Read, Write, Delete"),
                ("AllocationSize", "n/a")
            ]
        );
        // A key name inside a value that is not after ", " is not a key.
        let p = split_known_keys("Options: XOptions: y", CREATE_KEYS);
        assert_eq!(p, vec![("Options", "XOptions: y")]);
    }
}
