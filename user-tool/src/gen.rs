//! A generator of synthetic Process Monitor CSV traces (`flushctl gen-trace`, hidden).
//!
//! The output is **generated**, not captured: every remote path lies on the share
//! `\\gen-fs01\generated` or on drive `Z:` (replay it with `--map Z:=\\gen-fs01\home`),
//! and the first process row names the generator. It exists to give the README a sample
//! workload the project makes itself and to give the replay benchmark traces of any size.
//! The format is ProcMon's default CSV export: seven quoted columns, CRLF, en-US number
//! grouping.
//!
//! The workload interleaves four kinds of writers plus unrelated noise rows:
//! - **save** (`WINWORD.EXE`): create (OverwriteIf), sequential cached writes, set end of
//!   file, close; the lazy writer (`System`, PID 4) later writes the pages out with
//!   `Non-cached, Paging I/O`;
//! - **database** (`sqlservr.exe` / `sqlite3.exe`): either write-through + no buffering
//!   opens with non-cached write-through writes, or cached page writes each followed by
//!   `FlushBuffersFile` and the flush's synchronous paging write;
//! - **logger** (`logagent.exe`): small appends, rarely flushed, the file kept open for
//!   hundreds of writes and closed only at rotation — the files a durability policy is
//!   for;
//! - **copy** (`robocopy.exe`): 1 MiB non-cached sequential writes, then close.

use std::io::Write;

use crate::cli::GenTraceArgs;

const HEADER: [&str; 7] = [
    "Time of Day",
    "Process Name",
    "PID",
    "Operation",
    "Path",
    "Result",
    "Detail",
];

/// en-US grouping, as ProcMon prints `Offset`/`Length`.
fn grouped(mut n: u64) -> String {
    let mut parts = Vec::new();
    loop {
        if n < 1000 {
            parts.push(n.to_string());
            break;
        }
        parts.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    parts.reverse();
    parts.join(",")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Save,
    DbWriteThrough,
    DbFlush,
    Logger,
    Copy,
}

#[derive(Debug)]
struct Session {
    kind: Kind,
    process: &'static str,
    pid: u32,
    path: String,
    step: u32,
    writes_left: u32,
    offset: u64,
    /// Bytes written through the cache and not yet written by the lazy writer.
    dirty: u64,
}

/// The generator's state; [`Generator::next_row`] yields rows forever.
#[derive(Debug)]
pub struct Generator {
    rng: fastrand::Rng,
    files: u32,
    sessions: Vec<Session>,
    /// Time of day in 100 ns units since midnight.
    clock: u64,
    started: bool,
    queue: std::collections::VecDeque<[String; 7]>,
}

impl Generator {
    /// A generator for `files` distinct files per writer kind, seeded with `seed`.
    pub fn new(seed: u64, files: u32) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            files: files.max(1),
            sessions: Vec::new(),
            clock: 9 * 3600 * 10_000_000,
            started: false,
            queue: std::collections::VecDeque::new(),
        }
    }

    fn time(&mut self) -> String {
        self.clock += self.rng.u64(200..40_000);
        let t = self.clock % (24 * 3600 * 10_000_000);
        let (secs, frac) = (t / 10_000_000, t % 10_000_000);
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let (h12, ampm) = match h {
            0 => (12, "AM"),
            1..=11 => (h, "AM"),
            12 => (12, "PM"),
            _ => (h - 12, "PM"),
        };
        format!("{h12}:{m:02}:{s:02}.{frac:07} {ampm}")
    }

    fn push(
        &mut self,
        process: &str,
        pid: u32,
        op: &str,
        path: &str,
        result: &str,
        detail: String,
    ) {
        let t = self.time();
        self.queue.push_back([
            t,
            process.to_owned(),
            pid.to_string(),
            op.to_owned(),
            path.to_owned(),
            result.to_owned(),
            detail,
        ]);
    }

    fn new_session(&mut self) -> Session {
        let kind = match self.rng.u32(0..100) {
            0..=34 => Kind::Save,
            35..=49 => Kind::DbWriteThrough,
            50..=69 => Kind::DbFlush,
            70..=84 => Kind::Logger,
            _ => Kind::Copy,
        };
        let n = self.rng.u32(0..self.files);
        let (process, path, writes) = match kind {
            Kind::Save => (
                "WINWORD.EXE",
                format!("\\\\gen-fs01\\generated\\projects\\report-{n:04}.docx"),
                self.rng.u32(2..12),
            ),
            Kind::DbWriteThrough => (
                "sqlservr.exe",
                format!("\\\\gen-fs01\\generated\\db\\ledger-{n:04}.mdf"),
                self.rng.u32(4..24),
            ),
            Kind::DbFlush => (
                "sqlite3.exe",
                format!("Z:\\apps\\inventory-{n:04}.db"),
                self.rng.u32(2..10),
            ),
            Kind::Logger => (
                "logagent.exe",
                format!("Z:\\logs\\agent-{n:04}.log"),
                self.rng.u32(20..200),
            ),
            Kind::Copy => (
                "robocopy.exe",
                if n.is_multiple_of(3) {
                    format!("C:\\Users\\gen\\AppData\\Local\\Temp\\stage-{n:04}.bin")
                } else {
                    format!("\\\\gen-fs01\\generated\\backup\\image-{n:04}.vhdx")
                },
                self.rng.u32(2..16),
            ),
        };
        let pid = 1000 + 4 * (kind as u32) + 4 * 16 * self.rng.u32(0..4);
        Session {
            kind,
            process,
            pid,
            path,
            step: 0,
            writes_left: writes,
            offset: 0,
            dirty: 0,
        }
    }

    fn noise(&mut self) {
        let page = 4096 * u64::from(self.rng.u32(0..200));
        match self.rng.u32(0..4) {
            0 => self.push(
                "svchost.exe",
                812,
                "RegQueryValue",
                "HKLM\\System\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Hostname",
                "SUCCESS",
                "Type: REG_SZ, Length: 18, Data: gen-client".into(),
            ),
            1 => self.push(
                "Explorer.EXE",
                3140,
                "QueryDirectory",
                "\\\\gen-fs01\\generated\\projects",
                "NO MORE FILES",
                "Filter: *, FileInformationClass: FileIdBothDirectoryInformation".into(),
            ),
            2 => self.push(
                "MsMpEng.exe",
                2600,
                "ReadFile",
                "C:\\Windows\\System32\\kernel32.dll",
                "SUCCESS",
                format!(
                    "Offset: {}, Length: 4,096, I/O Flags: Non-cached, Paging I/O, Synchronous Paging I/O, Priority: Normal",
                    grouped(page)
                ),
            ),
            _ => self.push(
                "Explorer.EXE",
                3140,
                "QueryBasicInformationFile",
                "C:\\Users\\gen\\Desktop",
                "SUCCESS",
                "CreationTime: 1/2/2026 9:00:00 AM, LastAccessTime: 1/2/2026 9:00:00 AM, LastWriteTime: 1/2/2026 9:00:00 AM, ChangeTime: 1/2/2026 9:00:00 AM, FileAttributes: D".into(),
            ),
        }
    }

    /// Emits the next row(s) of session `i`; returns false when the session ended.
    fn advance(&mut self, i: usize) -> bool {
        let mut s = std::mem::replace(
            &mut self.sessions[i],
            Session {
                kind: Kind::Save,
                process: "",
                pid: 0,
                path: String::new(),
                step: 0,
                writes_left: 0,
                offset: 0,
                dirty: 0,
            },
        );
        let alive = self.step(&mut s);
        self.sessions[i] = s;
        alive
    }

    fn step(&mut self, s: &mut Session) -> bool {
        let (p, pid, path) = (s.process, s.pid, s.path.clone());
        if s.step == 0 {
            s.step = 1;
            let detail = match s.kind {
                Kind::Save => "Desired Access: Generic Write, Read Attributes, Disposition: OverwriteIf, Options: Synchronous IO Non-Alert, Non-Directory File, Attributes: N, ShareMode: Read, AllocationSize: 0, OpenResult: Overwritten",
                // Half the database opens ask for write-through themselves.
                Kind::DbWriteThrough if s.pid.is_multiple_of(8) => "Desired Access: Generic Read/Write, Disposition: OpenIf, Options: Write Through, No Buffering, Random Access, Non-Directory File, Attributes: N, ShareMode: Read, AllocationSize: 0, OpenResult: Opened",
                Kind::DbWriteThrough => "Desired Access: Generic Read/Write, Disposition: OpenIf, Options: Random Access, Synchronous IO Non-Alert, Non-Directory File, Attributes: N, ShareMode: Read, AllocationSize: 0, OpenResult: Opened",
                Kind::DbFlush => "Desired Access: Generic Read/Write, Disposition: OpenIf, Options: Synchronous IO Non-Alert, Non-Directory File, Random Access, Attributes: N, ShareMode: Read, Write, AllocationSize: 0, OpenResult: Opened",
                Kind::Logger => "Desired Access: Append Data, Synchronize, Disposition: OpenIf, Options: Synchronous IO Non-Alert, Non-Directory File, Attributes: N, ShareMode: Read, Write, Delete, AllocationSize: 0, OpenResult: Opened",
                Kind::Copy => "Desired Access: Generic Write, Read Attributes, Disposition: OverwriteIf, Options: Sequential Access, No Buffering, Synchronous IO Non-Alert, Non-Directory File, Attributes: A, ShareMode: None, AllocationSize: 0, OpenResult: Created",
            };
            if s.kind == Kind::Save && self.rng.u32(0..20) == 0 {
                // A failed open (sharing violation) first; the application retries.
                self.push(
                    p,
                    pid,
                    "CreateFile",
                    &path,
                    "SHARING VIOLATION",
                    detail.replace(", OpenResult: Overwritten", ""),
                );
            }
            self.push(p, pid, "CreateFile", &path, "SUCCESS", detail.to_owned());
            return true;
        }
        if s.writes_left > 0 {
            s.writes_left -= 1;
            match s.kind {
                Kind::Save => {
                    let len =
                        u64::from(self.rng.u32(1..17)) * 4096 - u64::from(self.rng.u32(0..4000));
                    self.push(
                        p,
                        pid,
                        "WriteFile",
                        &path,
                        "SUCCESS",
                        format!(
                            "Offset: {}, Length: {}, Priority: Normal",
                            grouped(s.offset),
                            grouped(len)
                        ),
                    );
                    s.offset += len;
                    s.dirty += len;
                }
                Kind::DbWriteThrough => {
                    let off = 8192 * u64::from(self.rng.u32(0..4096));
                    let flags = if s.pid.is_multiple_of(8) {
                        ", I/O Flags: Non-cached, Write Through"
                    } else {
                        ""
                    };
                    self.push(
                        p,
                        pid,
                        "WriteFile",
                        &path,
                        "SUCCESS",
                        format!(
                            "Offset: {}, Length: 8,192{flags}, Priority: Normal",
                            grouped(off)
                        ),
                    );
                }
                Kind::DbFlush => {
                    let pages = self.rng.u32(1..4);
                    let mut total = 0;
                    for _ in 0..pages {
                        let off = 4096 * u64::from(self.rng.u32(0..2048));
                        self.push(
                            p,
                            pid,
                            "WriteFile",
                            &path,
                            "SUCCESS",
                            format!("Offset: {}, Length: 4,096, Priority: Normal", grouped(off)),
                        );
                        total += 4096;
                    }
                    self.push(p, pid, "FlushBuffersFile", &path, "SUCCESS", String::new());
                    self.push(p, pid, "WriteFile", &path, "SUCCESS", format!("Offset: 0, Length: {}, I/O Flags: Non-cached, Paging I/O, Synchronous Paging I/O, Priority: Normal", grouped(total)));
                }
                Kind::Logger => {
                    let len = u64::from(self.rng.u32(60..400));
                    self.push(
                        p,
                        pid,
                        "WriteFile",
                        &path,
                        "SUCCESS",
                        format!(
                            "Offset: {}, Length: {}, Priority: Normal",
                            grouped(s.offset),
                            grouped(len)
                        ),
                    );
                    s.offset += len;
                    if self.rng.u32(0..40) == 0 {
                        self.push(p, pid, "FlushBuffersFile", &path, "SUCCESS", String::new());
                    }
                }
                Kind::Copy => {
                    self.push(p, pid, "WriteFile", &path, "SUCCESS", format!("Offset: {}, Length: 1,048,576, I/O Flags: Non-cached, Priority: Normal", grouped(s.offset)));
                    s.offset += 1 << 20;
                }
            }
            return true;
        }
        match (s.kind, s.step) {
            // Loggers keep their file open for a long time (their unflushed tail is what
            // a crash loses) and close it only when they rotate, after a few rounds.
            (Kind::Logger, round) if round < 6 => {
                s.step += 1;
                s.writes_left = self.rng.u32(5..50);
                true
            }
            (Kind::Save, 1) => {
                s.step = 2;
                self.push(
                    p,
                    pid,
                    "SetEndOfFileInformationFile",
                    &path,
                    "SUCCESS",
                    format!("EndOfFile: {}", grouped(s.offset)),
                );
                self.push(p, pid, "CloseFile", &path, "SUCCESS", String::new());
                true
            }
            (Kind::Save, 2) => {
                // The lazy writer flushes the cached pages after the handle is gone.
                if s.dirty == 0 {
                    return false;
                }
                let chunk = s.dirty.min(65_536).div_ceil(4096) * 4096;
                let off = (s.offset - s.dirty) / 4096 * 4096;
                self.push("System", 4, "WriteFile", &path, "SUCCESS", format!("Offset: {}, Length: {}, I/O Flags: Non-cached, Paging I/O, Priority: Normal", grouped(off), grouped(chunk)));
                s.dirty = s.dirty.saturating_sub(65_536);
                true
            }
            _ => {
                self.push(p, pid, "CloseFile", &path, "SUCCESS", String::new());
                false
            }
        }
    }

    /// The next data row (time, process, PID, operation, path, result, detail).
    pub fn next_row(&mut self) -> [String; 7] {
        loop {
            if let Some(row) = self.queue.pop_front() {
                return row;
            }
            if !self.started {
                self.started = true;
                self.push(
                    "flushctl-gen.exe",
                    1,
                    "Process Start",
                    "",
                    "SUCCESS",
                    "Parent PID: 0, Command line: flushctl gen-trace (GENERATED synthetic workload, not a capture), Current directory: C:\\".into(),
                );
                continue;
            }
            if self.rng.u32(0..10) < 3 {
                self.noise();
                continue;
            }
            let target = 4 + (self.files / 4).min(60) as usize;
            if self.sessions.len() < target {
                let s = self.new_session();
                self.sessions.push(s);
            }
            let i = self.rng.usize(0..self.sessions.len());
            if !self.advance(i) {
                self.sessions.swap_remove(i);
            }
        }
    }
}

/// Writes the header and `events` data rows to `out` (ProcMon CSV: all fields quoted,
/// CRLF line ends).
///
/// # Errors
/// I/O errors of `out`.
pub fn write_trace<W: Write>(out: W, events: u64, seed: u64, files: u32) -> std::io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    w.write_record(HEADER)?;
    let mut g = Generator::new(seed, files);
    for _ in 0..events {
        w.write_record(g.next_row())?;
    }
    w.flush()
}

/// `flushctl gen-trace`.
///
/// # Errors
/// I/O errors creating or writing the output.
pub fn run(args: &GenTraceArgs) -> std::io::Result<()> {
    if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        write_trace(stdout.lock(), args.events, args.seed, args.files)
    } else {
        let f = std::fs::File::create(&args.out)?;
        write_trace(
            std::io::BufWriter::with_capacity(1 << 20, f),
            args.events,
            args.seed,
            args.files,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_048_576), "1,048,576");
    }

    #[test]
    fn deterministic_and_readable() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_trace(&mut a, 500, 7, 8).unwrap();
        write_trace(&mut b, 500, 7, 8).unwrap();
        assert_eq!(a, b);
        let mut r = crate::trace::TraceReader::new(&a[..]).unwrap();
        let (mut rows, mut bad) = (0, 0);
        while let Some(item) = r.next_event().unwrap() {
            rows += 1;
            if matches!(item, crate::trace::Item::Malformed(_)) {
                bad += 1;
            }
        }
        assert_eq!((rows, bad), (500, 0));
    }
}
