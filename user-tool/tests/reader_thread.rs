//! `TraceReader::with_reader_thread` (what `flushctl replay` uses) yields exactly what
//! the single-threaded `TraceReader::new` yields, item by item, error by error, on the
//! real captures of `../shared/traces`, on a generated trace spanning many batches, on
//! random malformed input and on input whose reading fails; and dropping it early stops
//! its thread.

use std::io::Read;
use std::path::PathBuf;

use flushctl::trace::piped::{BATCHES, BATCH_ROWS};
use flushctl::trace::TraceReader;
use proptest::prelude::*;

/// Everything a reader yields, as text: each item's `Debug`, then how it ended.
fn items<R: Read>(mut r: TraceReader<R>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match r.next_event() {
            Ok(Some(item)) => out.push(format!("{item:?}")),
            Ok(None) => {
                out.push("end".into());
                // Reading on after the end keeps returning the end.
                assert!(matches!(r.next_event(), Ok(None)));
                return out;
            }
            Err(e) => {
                out.push(format!("error: {e}"));
                return out;
            }
        }
    }
}

/// Asserts equal item lists, showing only the first difference.
fn assert_same(direct: &[String], piped: &[String], what: &str) {
    if let Some(i) = (0..direct.len().max(piped.len())).find(|&i| direct.get(i) != piped.get(i)) {
        panic!(
            "{what}: item {i} differs:\n  direct: {:?}\n  piped:  {:?}",
            direct.get(i),
            piped.get(i)
        );
    }
}

fn both(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let direct = match TraceReader::new(bytes) {
        Ok(r) => items(r),
        Err(e) => vec![format!("open: {e}")],
    };
    let piped = match TraceReader::with_reader_thread(std::io::Cursor::new(bytes.to_vec())) {
        Ok(r) => items(r),
        Err(e) => vec![format!("open: {e}")],
    };
    (direct, piped)
}

#[test]
fn the_real_captures_read_the_same_both_ways() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("../shared/traces") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (direct, piped) = both(&bytes);
        assert!(
            direct.len() > 10,
            "{}: {} items",
            path.display(),
            direct.len()
        );
        assert_same(&direct, &piped, &path.display().to_string());
        n += 1;
    }
    assert!(n >= 7, "{n} captures");
}

#[test]
fn a_generated_trace_of_many_batches_reads_the_same_both_ways() {
    // GENERATED synthetic workload (flushctl's own generator), with malformed lines
    // spliced in at batch boundaries and a record cut off at the end.
    let mut bytes = Vec::new();
    flushctl::gen::write_trace(&mut bytes, (BATCH_ROWS * (BATCHES + 3)) as u64, 7, 50).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let mut lines: Vec<&str> = text.split_inclusive("\r\n").collect();
    for at in [BATCH_ROWS, BATCH_ROWS + 1, 3 * BATCH_ROWS] {
        lines.insert(at, "\"only\",\"three\",\"fields\"\r\n");
    }
    let mut spliced = lines.concat();
    spliced.push_str(
        "\"9:00:00 AM\",\"a.exe\",\"7\",\"WriteFile\",\"C:\\x\",\"SUCCESS\",\"Offset: 0, Len",
    );
    let (direct, piped) = both(spliced.as_bytes());
    assert!(
        direct.len() > BATCH_ROWS * (BATCHES + 3),
        "{} items",
        direct.len()
    );
    assert_eq!(
        direct.iter().filter(|s| s.starts_with("Malformed")).count(),
        4,
        "three short lines and the cut-off record"
    );
    assert_same(&direct, &piped, "generated");
}

/// Yields `data`, then fails.
struct FailsAfter {
    data: std::io::Cursor<Vec<u8>>,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(std::io::Error::other("disk on fire")),
            n => Ok(n),
        }
    }
}

#[test]
fn a_read_error_comes_after_the_items_read_before_it_both_ways() {
    let mut bytes = Vec::new();
    flushctl::gen::write_trace(&mut bytes, 3000, 3, 20).unwrap();
    let run = |piped: bool| {
        let input = FailsAfter {
            data: std::io::Cursor::new(bytes.clone()),
        };
        let r = if piped {
            TraceReader::with_reader_thread(input)
        } else {
            TraceReader::new(input)
        };
        items(r.unwrap())
    };
    let (direct, piped) = (run(false), run(true));
    assert_eq!(
        direct.last().unwrap(),
        "error: cannot read the trace: disk on fire"
    );
    assert!(direct.len() > 3000);
    assert_same(&direct, &piped, "failing input");
}

#[test]
fn open_errors_are_the_same_both_ways() {
    for input in [
        &b""[..],
        b"a,b,c\n",
        b"\xff\xfe\"\x00T\x00",
        b"\"Process Name\",\"PID",
    ] {
        let direct = TraceReader::new(input).map(|_| ()).unwrap_err().to_string();
        let piped = TraceReader::with_reader_thread(std::io::Cursor::new(input.to_vec()))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(direct, piped);
    }
}

/// Counts the bytes read through it (shared with the test).
struct Counting {
    data: std::io::Cursor<Vec<u8>>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn counting(rows: usize) -> (Counting, std::sync::Arc<std::sync::atomic::AtomicU64>, u64) {
    let mut bytes = Vec::new();
    flushctl::gen::write_trace(&mut bytes, rows as u64, 5, 20).unwrap();
    let len = bytes.len() as u64;
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let input = Counting {
        data: std::io::Cursor::new(bytes),
        read: std::sync::Arc::clone(&read),
    };
    (input, read, len)
}

/// Waits until `read` has not moved for 100 ms; returns its value.
fn settled(read: &std::sync::atomic::AtomicU64) -> u64 {
    let mut last = u64::MAX;
    loop {
        let now = read.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How far the thread may read ahead of a caller that takes nothing: the batches (at
/// most BATCHES + 2; generated rows are under 400 bytes) and the csv reader's 1 MiB
/// buffer.
const READ_AHEAD_MAX: u64 = (BATCHES as u64 + 2) * BATCH_ROWS as u64 * 400 + (1 << 20);

#[test]
fn the_thread_reads_ahead_a_bounded_amount() {
    let (input, read, len) = counting(BATCH_ROWS * BATCHES * 40);
    assert!(len > 4 * READ_AHEAD_MAX, "trace of {len} bytes");
    let mut r = TraceReader::with_reader_thread(input).unwrap();
    assert!(r.next_event().unwrap().is_some());
    let ahead = settled(&read);
    assert!(
        ahead <= READ_AHEAD_MAX,
        "read {ahead} bytes ahead (at most {READ_AHEAD_MAX})"
    );
}

#[test]
fn dropping_the_reader_early_stops_its_thread_without_waiting_for_it() {
    let (input, read, len) = counting(BATCH_ROWS * BATCHES * 40);
    let mut r = TraceReader::with_reader_thread(input).unwrap();
    for _ in 0..10 {
        assert!(r.next_event().unwrap().is_some());
    }
    // Dropped on another thread: a drop that waits for the reader thread (which
    // could be blocked reading a pipe) fails here instead of hanging the suite.
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(r);
        let _ = done_tx.send(());
    });
    done.recv_timeout(std::time::Duration::from_secs(5))
        .expect("drop returned");
    // The thread stopped: it reads no more than it had read ahead.
    let stopped_at = settled(&read);
    assert!(
        stopped_at <= READ_AHEAD_MAX,
        "read {stopped_at} of {len} bytes"
    );
}

/// Yields `data`, then blocks (a pipe whose writer has not written more yet) until
/// `release` is dropped, then reports the end.
struct Stalls {
    data: std::io::Cursor<Vec<u8>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Read for Stalls {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.data.read(buf)? {
            0 => {
                let _ = self.release.recv();
                Ok(0)
            }
            n => Ok(n),
        }
    }
}

#[test]
fn a_drop_does_not_wait_for_input_still_to_come() {
    let mut bytes = Vec::new();
    flushctl::gen::write_trace(&mut bytes, (BATCH_ROWS * 2 + 100) as u64, 4, 20).unwrap();
    let (keep, release) = std::sync::mpsc::channel();
    let input = Stalls {
        data: std::io::Cursor::new(bytes),
        release,
    };
    let mut r = TraceReader::with_reader_thread(input).unwrap();
    for _ in 0..10 {
        assert!(r.next_event().unwrap().is_some());
    }
    // The thread has read everything and waits in `read` for more.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(r);
        let _ = done_tx.send(());
    });
    let dropped = done.recv_timeout(std::time::Duration::from_secs(5));
    drop(keep);
    dropped.expect("drop returned while the input was still open");
}

#[test]
fn progress_grows_to_the_file_length() {
    let mut bytes = Vec::new();
    flushctl::gen::write_trace(&mut bytes, (BATCH_ROWS * 3) as u64, 9, 20).unwrap();
    let len = bytes.len() as u64;
    let header = bytes.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
    let mut r = TraceReader::with_reader_thread(std::io::Cursor::new(bytes)).unwrap();
    let mut last = r.bytes_read();
    assert!(last >= header, "{last} before the first item");
    while r.next_event().unwrap().is_some() {
        let now = r.bytes_read();
        assert!(now >= last, "progress went back from {last} to {now}");
        last = now;
    }
    assert_eq!(r.bytes_read(), len);
}

proptest! {
    #[test]
    fn random_input_reads_the_same_both_ways(
        body in prop::collection::vec(
            prop::sample::select(vec![
                "\"", ",", "\r\n", "\n", "\r", "x", "\"WriteFile\"", "\"CreateFile\"",
                "\"SUCCESS\"", "\"Offset: 1,024, Length: 4,096\"", "\"C:\\a\"", "\"7\"",
                "\"SetRenameInformationFile\"", "\"FileName: C:\\b\"", "\u{e9}", "\u{0}",
            ]),
            0..400,
        )
    ) {
        let mut input = "\"Time of Day\",\"Process Name\",\"PID\",\"Operation\",\"Path\",\"Result\",\"Detail\"\r\n".to_string();
        input.push_str(&body.concat());
        let (direct, piped) = both(input.as_bytes());
        prop_assert_eq!(direct, piped);
    }
}
