//! Streaming reader for Process Monitor CSV exports.
//!
//! The reader is header-driven: it locates the `Process Name`, `PID`, `Operation`,
//! `Path`, `Result` and `Detail` columns by name, so the default seven-column export and
//! exports with extra columns (TID, Duration, Sequence, ...) in any order both work. It
//! keeps one reusable record buffer: memory does not grow with the trace.
//!
//! A line is *malformed* when it does not have as many fields as the header, when a field
//! this reader needs is not UTF-8, when the PID of a file operation is not a number, when
//! a successful (or pending) WriteFile Detail lacks a valid Offset/Length, when a
//! successful rename has no `FileName:`, or when the file ends inside one of the record's
//! quoted fields (an unterminated quote: the record is cut off, as Python's csv module
//! with `strict=True` reports). Malformed lines are reported with the
//! physical line number at which the record starts (records may span lines: `Process
//! Start` details contain bare CRs).

pub mod detail;
mod input;
pub mod path;
pub mod piped;

use std::io::Read;

use thiserror::Error;

use input::{is_sentinel_record, LineIndex};

pub use detail::{CreateDetail, WriteDetail};

/// A trace that cannot be read at all (as opposed to one malformed line).
///
/// Every variant but [`TraceError::Io`] rejects the file's contents as a whole
/// ([`TraceError::is_invalid_input`]).
#[derive(Debug, Error)]
pub enum TraceError {
    /// Reading the file failed.
    #[error("cannot read the trace: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not a Process Monitor CSV header.
    #[error(
        "the first line is not a Process Monitor CSV header: missing column(s) {missing:?} \
         (export with File > Save... > Comma-Separated Values)"
    )]
    Header {
        /// Required column names that were not found.
        missing: Vec<&'static str>,
    },
    /// The file has no header line (it is empty or has only blank lines).
    #[error("the trace is empty: no header line")]
    Empty,
    /// The header line is cut off: the file ends inside one of its quoted fields.
    #[error("the header line is cut off: the file ends inside one of its quoted fields")]
    HeaderCutOff,
    /// The file is UTF-16 (it starts with a UTF-16 byte order mark, or its header line
    /// has NUL bytes, as UTF-16 without a byte order mark does), which the csv reader
    /// cannot read.
    #[error("the trace is UTF-16; re-save it as UTF-8 CSV (ProcMon's CSV export is UTF-8)")]
    Utf16,
}

impl TraceError {
    /// True when the file's contents are rejected (not a Process Monitor CSV export that
    /// this reader can read), false when reading the file failed.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, TraceError::Io(_))
    }
}

/// One line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Malformed {
    /// 1-based physical line number where the record starts.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The I/O operation of an event, reduced to what FlushGuard's callbacks see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'r> {
    /// `CreateFile` / `IRP_MJ_CREATE`.
    Create(CreateDetail),
    /// `WriteFile` / `IRP_MJ_WRITE` (`fast_io == false`) or `FASTIO_WRITE` /
    /// `FASTIO_PREPARE_MDL_WRITE` (`fast_io == true`).
    Write {
        /// Offset, length and flags.
        detail: WriteDetail,
        /// True for a fast I/O write.
        fast_io: bool,
    },
    /// `FlushBuffersFile` / `IRP_MJ_FLUSH_BUFFERS`.
    Flush,
    /// `CloseFile` / `Cleanup` / `IRP_MJ_CLEANUP`: the last handle to a file object closed.
    Cleanup,
    /// `IRP_MJ_CLOSE`: the file object itself goes away.
    Close,
    /// `SetRenameInformationFile` / `SetRenameInformationEx`: the open file gets a new
    /// name (its handles and cached rule decision stay with the file object).
    Rename {
        /// The new path (`FileName:` of the Detail).
        new_path: &'r str,
    },
    /// Any other operation (reads, queries, registry, process events): counted, ignored.
    Other,
}

impl Op<'_> {
    /// Short name used in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Create(_) => "create",
            Op::Write { .. } => "write",
            Op::Flush => "flush",
            Op::Cleanup => "cleanup",
            Op::Close => "close",
            Op::Rename { .. } => "rename",
            Op::Other => "other",
        }
    }
}

/// Classifies Process Monitor's `Operation` column. Returns `None` for operations that
/// FlushGuard does not see (everything but create, write, flush, cleanup, close).
pub fn classify_operation(op: &str) -> Option<OpKind> {
    Some(match op {
        "CreateFile" | "IRP_MJ_CREATE" => OpKind::Create,
        "WriteFile" | "IRP_MJ_WRITE" => OpKind::Write { fast_io: false },
        "FASTIO_WRITE" | "FASTIO_PREPARE_MDL_WRITE" | "FASTIO_MDL_WRITE_COMPLETE" => {
            OpKind::Write { fast_io: true }
        }
        "FlushBuffersFile" | "IRP_MJ_FLUSH_BUFFERS" => OpKind::Flush,
        "CloseFile" | "Cleanup" | "IRP_MJ_CLEANUP" => OpKind::Cleanup,
        "IRP_MJ_CLOSE" => OpKind::Close,
        "SetRenameInformationFile"
        | "SetRenameInformationEx"
        | "SetRenameInformationExBypassAccessCheck" => OpKind::Rename,
        _ => return None,
    })
}

/// Operation classes recognised by [`classify_operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Create.
    Create,
    /// Write.
    Write {
        /// Fast I/O.
        fast_io: bool,
    },
    /// Flush.
    Flush,
    /// Cleanup.
    Cleanup,
    /// Close.
    Close,
    /// Rename.
    Rename,
}

/// The `Result` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// An NTSTATUS that Process Monitor printed by name (or as hex).
    Status(i32),
    /// `FAST IO DISALLOWED`: the fast I/O path returned FALSE; the IRP follows.
    FastIoDisallowed,
    /// An empty Result: the operation had not completed when the capture ended.
    Pending,
    /// A name this reader does not know; treated as a failure.
    Unknown,
}

impl OpResult {
    /// `NT_SUCCESS` of the status (informational and success codes, i.e. `>= 0`).
    pub fn is_success(self) -> bool {
        matches!(self, OpResult::Status(s) if s >= 0)
    }

    /// The NTSTATUS, when known.
    pub fn status(self) -> Option<i32> {
        match self {
            OpResult::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// NTSTATUS values (ntstatus.h) of the Result names Process Monitor prints.
const RESULTS: &[(&str, u32)] = &[
    ("SUCCESS", 0x0000_0000),
    ("REPARSE", 0x0000_0104),
    ("FILE LOCKED WITH ONLY READERS", 0x0000_012A),
    ("FILE LOCKED WITH WRITERS", 0x0000_012B),
    ("OPLOCK HANDLE CLOSED", 0x0000_0216),
    ("BUFFER OVERFLOW", 0x8000_0005),
    ("NO MORE FILES", 0x8000_0006),
    ("NO MORE ENTRIES", 0x8000_001A),
    ("INVALID DEVICE REQUEST", 0xC000_0010),
    ("INVALID PARAMETER", 0xC000_000D),
    ("NO SUCH FILE", 0xC000_000F),
    ("END OF FILE", 0xC000_0011),
    ("ACCESS DENIED", 0xC000_0022),
    ("BUFFER TOO SMALL", 0xC000_0023),
    ("NAME INVALID", 0xC000_0033),
    ("NAME NOT FOUND", 0xC000_0034),
    ("NAME COLLISION", 0xC000_0035),
    ("PATH NOT FOUND", 0xC000_003A),
    ("SHARING VIOLATION", 0xC000_0043),
    ("DELETE PENDING", 0xC000_0056),
    ("DISK FULL", 0xC000_007F),
    ("INSUFFICIENT RESOURCES", 0xC000_009A),
    ("MEDIA WRITE PROTECTED", 0xC000_00A2),
    ("NOT SUPPORTED", 0xC000_00BB),
    ("IS DIRECTORY", 0xC000_00BA),
    ("BAD NETWORK PATH", 0xC000_00BE),
    ("NETWORK ACCESS DENIED", 0xC000_00CA),
    ("BAD NETWORK NAME", 0xC000_00CC),
    ("OPLOCK NOT GRANTED", 0xC000_00E2),
    ("NOT IMPLEMENTED", 0xC000_0002),
    ("NOT A DIRECTORY", 0xC000_0103),
    ("CANCELLED", 0xC000_0120),
    ("FILE CLOSED", 0xC000_0128),
    ("VOLUME DISMOUNTED", 0xC000_026E),
    ("NOT REPARSE POINT", 0xC000_0275),
    ("CANNOT DELETE", 0xC000_0121),
    ("NETWORK NAME DELETED", 0xC000_00C9),
    ("UNEXPECTED NETWORK ERROR", 0xC000_00C4),
    ("LOCK NOT GRANTED", 0xC000_0055),
    ("FILE LOCK CONFLICT", 0xC000_0054),
    ("OBJECT NAME NOT FOUND", 0xC000_0034),
    ("OBJECT PATH NOT FOUND", 0xC000_003A),
];

/// Parses the `Result` column.
pub fn parse_result(s: &str) -> OpResult {
    if s.is_empty() {
        return OpResult::Pending;
    }
    if s == "FAST IO DISALLOWED" {
        return OpResult::FastIoDisallowed;
    }
    if let Some(&(_, v)) = RESULTS.iter().find(|(n, _)| *n == s) {
        return OpResult::Status(v as i32);
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if let Ok(v) = u32::from_str_radix(hex, 16) {
            return OpResult::Status(v as i32);
        }
    }
    OpResult::Unknown
}

/// One usable trace row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'r> {
    /// 1-based physical line number where the record starts.
    pub line: u64,
    /// `Process Name` (image file name, e.g. `NOTEPAD.EXE`).
    pub process: &'r str,
    /// `PID` (0 when the export has no PID column).
    pub pid: u32,
    /// The operation and its parsed Detail.
    pub op: Op<'r>,
    /// `Path` as exported.
    pub path: &'r str,
    /// `Result`.
    pub result: OpResult,
    /// `Time of Day` of a write as exported (parse with [`parse_time_of_day`] when
    /// needed: only group-commit modelling does); `None` for other operations or
    /// without the column.
    pub time_of_day: Option<&'r str>,
}

/// Parses Process Monitor's `Time of Day` (`4:33:18.8762838 PM`, or 24-hour
/// `16:33:18,8762838` in locales with a decimal comma) into microseconds since
/// midnight (100 ns digits beyond the sixth are dropped). `None` for anything else,
/// including AM/PM designators other than `AM` / `PM` / `a.m.` / `p.m.`.
pub fn parse_time_of_day(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.' || c == ','))
        .unwrap_or(s.len());
    let (clock, designator) = s.split_at(split);
    let (hms, fraction) = match clock.find(['.', ',']) {
        Some(i) => (&clock[..i], &clock[i + 1..]),
        None => (clock, ""),
    };
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |t: &str, max: u64| -> Option<u64> {
        if t.is_empty() || t.len() > 2 {
            return None;
        }
        t.parse::<u64>().ok().filter(|v| *v <= max)
    };
    let (mut h, m, sec) = (num(h, 23)?, num(m, 59)?, num(sec, 60)?);
    match designator.trim().to_ascii_lowercase().as_str() {
        "" => {}
        "am" | "a.m." if (1..=12).contains(&h) => h %= 12,
        "pm" | "p.m." if (1..=12).contains(&h) => h = h % 12 + 12,
        _ => return None,
    }
    let micros = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + micros)
}

#[derive(Debug, Clone, Copy)]
struct Columns {
    time: Option<usize>,
    process: usize,
    pid: Option<usize>,
    operation: usize,
    path: usize,
    result: usize,
    detail: usize,
}

impl Columns {
    fn from_header(h: &csv::ByteRecord) -> Result<Self, TraceError> {
        let find = |name: &str| {
            h.iter().position(|f| {
                let f = String::from_utf8_lossy(f);
                f.trim_start_matches('\u{feff}').trim() == name
            })
        };
        let required = ["Process Name", "Operation", "Path", "Result", "Detail"];
        let missing: Vec<&'static str> =
            required.into_iter().filter(|n| find(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(TraceError::Header { missing });
        }
        let get = |n| find(n).unwrap_or_default();
        Ok(Columns {
            time: find("Time of Day"),
            process: get("Process Name"),
            pid: find("PID"),
            operation: get("Operation"),
            path: get("Path"),
            result: get("Result"),
            detail: get("Detail"),
        })
    }
}

/// What [`TraceReader::next_event`] produced.
#[derive(Debug)]
pub enum Item<'r> {
    /// A row FlushGuard's callbacks would see (create, write, flush, cleanup, close).
    Event(Event<'r>),
    /// Any other well-formed row (counted, not replayed).
    Other,
    /// A malformed line.
    Malformed(Malformed),
}

/// Streaming Process Monitor CSV reader.
///
/// [`TraceReader::new`] parses in the calling thread;
/// [`TraceReader::with_reader_thread`] moves the reading, the csv parsing and the
/// interpretation of the fields to a thread of its own, which hands items over in
/// batches ([`piped`]), so that on a machine with a second core the caller's work on
/// one batch overlaps the parsing of the next. Both yield the same items in the same
/// order.
pub struct TraceReader<R: Read> {
    source: Source<R>,
    cols: Columns,
}

enum Source<R: Read> {
    /// Parsed in the caller's thread, into one reused record.
    Direct {
        rdr: csv::Reader<LineIndex<R>>,
        record: csv::ByteRecord,
    },
    /// Parsed by a reader thread.
    Piped(piped::Piped),
}

/// One csv record as read, before its fields are interpreted ([`read_raw`]).
#[derive(Debug)]
enum Raw {
    /// A record of the trace (in the caller's record buffer), starting at `line`.
    Record { line: u64 },
    /// A line the csv layer already finds malformed (wrong field count, cut off).
    Malformed(Malformed),
}

/// Reads the next record into `record`: `Ok(None)` at the end of the trace.
fn read_raw<R: Read>(
    rdr: &mut csv::Reader<LineIndex<R>>,
    record: &mut csv::ByteRecord,
) -> Result<Option<Raw>, TraceError> {
    match rdr.read_byte_record(record) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            return match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len,
                    len,
                    pos,
                } => {
                    let (expected_len, len) = (*expected_len, *len);
                    let byte = pos.as_ref().map_or(0, csv::Position::byte);
                    let reason = match record_end(rdr, record) {
                        RecordEnd::Sentinel => return Ok(None),
                        RecordEnd::CutOff => CUT_OFF.to_owned(),
                        RecordEnd::InTrace => {
                            format!("{len} fields where the header has {expected_len}")
                        }
                    };
                    let line = rdr.get_mut().line_at(byte);
                    Ok(Some(Raw::Malformed(Malformed { line, reason })))
                }
                _ => Err(csv_to_trace_error(e)),
            };
        }
    }
    let byte = record.position().map_or(0, csv::Position::byte);
    let line = rdr.get_mut().line_at(byte);
    Ok(Some(match record_end(rdr, record) {
        RecordEnd::InTrace => Raw::Record { line },
        RecordEnd::Sentinel => return Ok(None),
        RecordEnd::CutOff => Raw::Malformed(Malformed {
            line,
            reason: CUT_OFF.to_owned(),
        }),
    }))
}

impl<R: Read> std::fmt::Debug for TraceReader<R> {
    // (`Source` holds a csv reader, which has no useful Debug.)
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("bytes_read", &self.bytes_read())
            .finish()
    }
}

fn field<'r>(rec: &'r csv::ByteRecord, i: usize, name: &str) -> Result<&'r str, String> {
    let raw = rec.get(i).unwrap_or_default();
    std::str::from_utf8(raw).map_err(|e| format!("column `{name}` is not UTF-8 ({e})"))
}

impl<R: Read> TraceReader<R> {
    /// Reads the header line and prepares to stream records.
    ///
    /// # Errors
    /// [`TraceError::Empty`] when there is no header line, [`TraceError::HeaderCutOff`]
    /// when the file ends inside a quoted field of the header, [`TraceError::Utf16`] for
    /// UTF-16 files (with or without a byte order mark), [`TraceError::Header`] when a
    /// required column is missing, [`TraceError::Io`] when reading fails.
    pub fn new(input: R) -> Result<Self, TraceError> {
        let (rdr, cols) = Self::open(input)?;
        Ok(Self {
            source: Source::Direct {
                rdr,
                record: csv::ByteRecord::new(),
            },
            cols,
        })
    }

    /// Like [`TraceReader::new`] (same errors, read in the calling thread), then hands
    /// the rest of the trace to a reader thread ([`piped`]). Memory stays bounded: at
    /// most [`piped::BATCHES`] + 2 batches of [`piped::BATCH_ROWS`] items exist.
    /// Dropping the reader stops the thread before its next record, without waiting
    /// for it.
    ///
    /// # Errors
    /// As [`TraceReader::new`]; [`TraceError::Io`] (`ErrorKind::Other`) if the
    /// thread cannot be started.
    pub fn with_reader_thread(input: R) -> Result<Self, TraceError>
    where
        R: Send + 'static,
    {
        let (rdr, cols) = Self::open(input)?;
        Ok(Self {
            source: Source::Piped(piped::Piped::start(rdr, cols)?),
            cols,
        })
    }

    /// Reads the header line: the csv reader positioned after it, and the columns.
    fn open(input: R) -> Result<(csv::Reader<LineIndex<R>>, Columns), TraceError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(false)
            .buffer_capacity(1 << 20)
            .from_reader(LineIndex::new(input));
        let mut header = csv::ByteRecord::new();
        match rdr.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err(TraceError::Empty),
            Err(e) => return Err(csv_to_trace_error(e)),
        }
        match record_end(&rdr, &header) {
            RecordEnd::InTrace => {}
            RecordEnd::Sentinel => return Err(TraceError::Empty),
            RecordEnd::CutOff => return Err(TraceError::HeaderCutOff),
        }
        let first = header.get(0).unwrap_or_default();
        // UTF-16 text has a NUL byte in every ASCII character.
        if first.starts_with(&[0xFF, 0xFE])
            || first.starts_with(&[0xFE, 0xFF])
            || memchr::memchr(0, header.as_slice()).is_some()
        {
            return Err(TraceError::Utf16);
        }
        let cols = Columns::from_header(&header)?;
        Ok((rdr, cols))
    }

    /// Bytes consumed so far (for progress reporting; with a reader thread, as far as
    /// the thread has read).
    pub fn bytes_read(&self) -> u64 {
        match &self.source {
            Source::Direct { rdr, .. } => rdr.get_ref().offset,
            Source::Piped(p) => p.bytes_read(),
        }
    }

    /// Reads the next row. `Ok(None)` at end of file.
    ///
    /// # Errors
    /// [`TraceError::Io`] when reading fails; malformed lines are returned as
    /// [`Item::Malformed`], not as errors, and reading can go on after them.
    pub fn next_event(&mut self) -> Result<Option<Item<'_>>, TraceError> {
        let cols = self.cols;
        match &mut self.source {
            Source::Direct { rdr, record } => Ok(match read_raw(rdr, record)? {
                Some(Raw::Record { line }) => Some(interpret(cols, record, line)),
                Some(Raw::Malformed(m)) => Some(Item::Malformed(m)),
                None => None,
            }),
            Source::Piped(p) => p.next(),
        }
    }
}

/// The item of a well-formed csv record starting at `line`.
fn interpret(c: Columns, rec: &csv::ByteRecord, line: u64) -> Item<'_> {
    let bad = |reason: String| Item::Malformed(Malformed { line, reason });
    let op_name = match field(rec, c.operation, "Operation") {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let Some(kind) = classify_operation(op_name) else {
        return Item::Other;
    };
    // One UTF-8 check for the whole record; a field is then a slice of it (the
    // per-field check, and its message, only when that fails).
    let text = std::str::from_utf8(rec.as_slice()).ok();
    let get = |i: usize, name: &str| -> Result<&str, String> {
        if let Some(t) = text {
            let r = rec.range(i).unwrap_or(0..0);
            if let Some(f) = t.get(r) {
                return Ok(f);
            }
        }
        field(rec, i, name)
    };
    let (process, path, result, detail) = match (
        get(c.process, "Process Name"),
        get(c.path, "Path"),
        get(c.result, "Result"),
        get(c.detail, "Detail"),
    ) {
        (Ok(a), Ok(b), Ok(r), Ok(d)) => (a, b, r, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return bad(e),
    };
    let pid = match c.pid {
        None => 0,
        Some(i) => match get(i, "PID").map(|s| s.trim().parse::<u32>()) {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return bad(format!(
                    "PID `{}` is not a number",
                    String::from_utf8_lossy(rec.get(i).unwrap_or_default())
                ))
            }
            Err(e) => return bad(e),
        },
    };
    let result = parse_result(result);
    let time_of_day = match (kind, c.time) {
        (OpKind::Write { .. }, Some(i)) => get(i, "Time of Day").ok(),
        _ => None,
    };
    let op = match kind {
        OpKind::Create => Op::Create(detail::parse_create(detail)),
        OpKind::Write { fast_io } => match detail::parse_write(detail) {
            Ok(d) => Op::Write { detail: d, fast_io },
            // A failed or disallowed fast I/O attempt may carry no Length; it is not
            // replayed anyway.
            Err(_) if !result.is_success() && result != OpResult::Pending => Op::Other,
            Err(e) => return bad(format!("{op_name}: {e}")),
        },
        OpKind::Flush => Op::Flush,
        OpKind::Cleanup => Op::Cleanup,
        OpKind::Close => Op::Close,
        OpKind::Rename => match detail::parse_rename(detail) {
            Some(new_path) => Op::Rename { new_path },
            None if !result.is_success() => Op::Other,
            None => return bad(format!("{op_name}: missing `FileName:` in Detail")),
        },
    };
    Item::Event(Event {
        line,
        process,
        pid,
        op,
        path,
        result,
        time_of_day,
    })
}

/// Where the record just read ends, against the end of the trace ([`input::SENTINEL`]).
enum RecordEnd {
    /// Within the trace (or at its end, outside quotes).
    InTrace,
    /// It is the record the sentinel adds after the trace: the trace has no more.
    Sentinel,
    /// The trace ends inside one of its quoted fields.
    CutOff,
}

fn record_end<R: Read>(rdr: &csv::Reader<LineIndex<R>>, rec: &csv::ByteRecord) -> RecordEnd {
    let end = rdr.position().byte();
    match rdr.get_ref().end() {
        Some(len) if end > len + 1 => {
            if is_sentinel_record(rec, end, len) {
                RecordEnd::Sentinel
            } else {
                RecordEnd::CutOff
            }
        }
        _ => RecordEnd::InTrace,
    }
}

/// The reason given for a record that the end of the file cuts off inside a quoted field.
const CUT_OFF: &str = "unterminated quoted field: the file ends inside a quoted field of this \
                       record (the record is cut off)";

fn csv_to_trace_error(e: csv::Error) -> TraceError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => TraceError::Io(io),
        other => TraceError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{other:?}"),
        )),
    }
}

#[cfg(test)]
mod time_tests {
    use super::parse_time_of_day;

    #[test]
    fn time_of_day_in_the_formats_process_monitor_writes() {
        let us = |h: u64, m: u64, s: u64, f: u64| ((h * 60 + m) * 60 + s) * 1_000_000 + f;
        assert_eq!(
            parse_time_of_day("1:18:14.4143323 AM"),
            Some(us(1, 18, 14, 414_332))
        );
        assert_eq!(
            parse_time_of_day("4:33:18.8762838 PM"),
            Some(us(16, 33, 18, 876_283))
        );
        assert_eq!(parse_time_of_day("12:00:00.0000001 AM"), Some(0));
        assert_eq!(
            parse_time_of_day("12:00:01.5 PM"),
            Some(us(12, 0, 1, 500_000))
        );
        assert_eq!(
            parse_time_of_day("16:33:18,8762838"),
            Some(us(16, 33, 18, 876_283))
        );
        assert_eq!(parse_time_of_day("9:05:07"), Some(us(9, 5, 7, 0)));
        for bad in [
            "",
            "x",
            "25:00:00",
            "1:60:00",
            "13:00:00 PM",
            "1:2",
            "1:00:00 nachm.",
            "1:00:00.12a AM",
        ] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(s: &str) -> (Vec<String>, Vec<Malformed>, usize) {
        let mut r = TraceReader::new(s.as_bytes()).unwrap();
        let (mut ev, mut bad, mut other) = (Vec::new(), Vec::new(), 0);
        while let Some(item) = r.next_event().unwrap() {
            match item {
                Item::Event(e) => {
                    ev.push(format!("{}:{}:{}:{}", e.line, e.pid, e.op.kind(), e.path))
                }
                Item::Other => other += 1,
                Item::Malformed(m) => bad.push(m),
            }
        }
        (ev, bad, other)
    }

    #[test]
    fn columns_in_any_order_with_extras() {
        let csv = "\u{feff}\"Sequence\",\"Detail\",\"Path\",\"TID\",\"Result\",\"Operation\",\"PID\",\"Process Name\"\r\n\
                   \"1\",\"Offset: 0, Length: 1,024\",\"\\\\s\\h\\a\",\"7\",\"SUCCESS\",\"WriteFile\",\"42\",\"x.exe\"\r\n\
                   \"2\",\"\",\"HKLM\",\"7\",\"SUCCESS\",\"RegOpenKey\",\"42\",\"x.exe\"\r\n";
        let (ev, bad, other) = read_all(csv);
        assert_eq!(ev, vec!["2:42:write:\\\\s\\h\\a"]);
        assert!(bad.is_empty());
        assert_eq!(other, 1);
    }

    #[test]
    fn malformed_lines_are_numbered_and_reading_goes_on() {
        let csv = "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\n\
                   \"1\",\"a.exe\",\"1\",\"WriteFile\",\"C:\\x\",\"SUCCESS\",\"Offset: 0\"\n\
                   \"1\",\"a.exe\",\"1\",\"WriteFile\"\n\
                   \"1\",\"a.exe\",\"x\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"\n\
                   \"1\",\"a.exe\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"\n";
        let (ev, bad, _) = read_all(csv);
        assert_eq!(
            bad.iter().map(|m| m.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(bad[0].reason.contains("Length"), "{}", bad[0].reason);
        assert!(bad[1].reason.contains("4 fields"), "{}", bad[1].reason);
        assert_eq!(ev, vec!["5:1:cleanup:C:\\x"]);
    }

    #[test]
    fn line_numbers_with_crlf_blank_lines_and_embedded_newlines() {
        let csv = "\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
                   \"a\",\"1\",\"Process Start\",\"\",\"SUCCESS\",\"x\ry\r\nz\"\r\n\
                   \r\n\
                   \"a\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"\r\n\
                   \"a\",\"1\",\"WriteFile\",\"C:\\x\",\"SUCCESS\"\r\n\
                   \"a\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"";
        let (ev, bad, other) = read_all(csv);
        assert_eq!(other, 1);
        assert_eq!(ev, vec!["5:1:cleanup:C:\\x", "7:1:cleanup:C:\\x"]);
        assert_eq!(bad.iter().map(|m| m.line).collect::<Vec<_>>(), vec![6]);
    }

    #[test]
    fn a_record_cut_off_inside_a_quoted_field_is_malformed() {
        // Generated inputs. Python's csv module with `strict=True` (3.11) raises
        // "unexpected end of data" for the cut-off ones and accepts the others.
        let h = "\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n\
                 \"a\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"\"\r\n";
        let cut = |tail: &str| {
            let (ev, bad, other) = read_all(&format!("{h}{tail}"));
            assert_eq!((ev.len(), other), (1, 0), "{tail}");
            assert_eq!(bad.len(), 1, "{tail}");
            assert!(
                bad[0].reason.contains("unterminated quoted field"),
                "{}",
                bad[0].reason
            );
            bad[0].clone()
        };
        // In the last field, across lines.
        let m = cut("\"a\",\"1\",\"Process Start\",\"\",\"SUCCESS\",\"x\r\ny");
        assert_eq!(m.line, 3);
        // After an escaped quote (`""`), and in an earlier field (too few fields too).
        assert_eq!(
            cut("\"a\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"say \"\"hi\"\"").line,
            3
        );
        assert_eq!(cut("\r\n\"a\",\"1\",\"CloseFile\",\"C:\\x").line, 4);
        // Closed quotes at the end of the file, a quote inside an unquoted field, a
        // last field left empty or a NUL at the end are not cut off.
        for ok in [
            "\"a\",\"1\",\"CloseFile\",\"C:\\x\",\"SUCCESS\",\"say \"\"hi\"\"\"",
            "a,1,CloseFile,C:\\x\"y,SUCCESS,",
            "a,1,CloseFile,C:\\x,SUCCESS,\0",
            "a,1,CloseFile,C:\\x,SUCCESS,\r\n\r",
        ] {
            let (ev, bad, _) = read_all(&format!("{h}{ok}"));
            assert!(bad.is_empty(), "{ok}: {bad:?}");
            assert_eq!(ev.len(), 2, "{ok}");
        }
    }

    #[test]
    fn header_errors() {
        let e = TraceReader::new("a,b,c\n".as_bytes()).unwrap_err();
        assert!(matches!(e, TraceError::Header { ref missing } if missing.len() == 5));
        assert!(TraceReader::new("".as_bytes()).is_err());
        assert!(matches!(
            TraceReader::new(&b"\xff\xfe\"\x00T\x00"[..]).unwrap_err(),
            TraceError::Utf16
        ));
    }

    #[test]
    fn utf16_without_a_byte_order_mark_and_empty_files() {
        // Generated: a header saved as UTF-16 without BOM has NUL bytes in every field.
        let header = "\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n";
        let le: Vec<u8> = header.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = header.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [le, be] {
            let e = TraceReader::new(&bytes[..]).unwrap_err();
            assert!(matches!(e, TraceError::Utf16), "{e}");
        }
        let e = TraceReader::new("\"Process Name\",\"PID\",\"Operation".as_bytes()).unwrap_err();
        assert!(matches!(e, TraceError::HeaderCutOff), "{e}");
        for empty in ["", "\r\n\r\n"] {
            let e = TraceReader::new(empty.as_bytes()).unwrap_err();
            assert!(matches!(e, TraceError::Empty), "{e}");
            assert_eq!(e.to_string(), "the trace is empty: no header line");
        }
    }

    #[test]
    fn results() {
        assert!(parse_result("SUCCESS").is_success());
        assert!(parse_result("FILE LOCKED WITH ONLY READERS").is_success());
        assert!(!parse_result("BUFFER OVERFLOW").is_success());
        assert_eq!(
            parse_result("ACCESS DENIED").status(),
            Some(0xC000_0022_u32 as i32)
        );
        assert_eq!(
            parse_result("0xC000020C").status(),
            Some(0xC000_020C_u32 as i32)
        );
        assert_eq!(parse_result(""), OpResult::Pending);
        assert_eq!(
            parse_result("FAST IO DISALLOWED"),
            OpResult::FastIoDisallowed
        );
        assert_eq!(parse_result("WHATEVER"), OpResult::Unknown);
    }
}
