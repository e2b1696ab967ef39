//! The reader thread of [`super::TraceReader::with_reader_thread`]: it reads the trace,
//! runs the csv parser ([`super::read_raw`]) and interprets each record
//! ([`super::interpret`]: fields, UTF-8, Detail) while the caller works on the items
//! already read, and hands them over in batches of [`BATCH_ROWS`]. An item's text
//! (process, path, time, new name) is copied into its slot's own buffer, from which the
//! caller's [`Item`] borrows.
//!
//! Two bounded channels carry the batches: full ones to the caller, emptied ones back
//! to the thread, which refills their slots in place (a slot's buffer is reused, so no
//! allocation per row once the first batches exist). At most [`BATCHES`] + 2 batches
//! exist: memory does not grow with the trace. The last batch carries how the trace
//! ended: its end, or the [`TraceError`] that stopped the reading, which the caller
//! gets after the records read before it, as the direct reader would return it.
//!
//! Dropping the caller's side stops the thread without waiting for it: the thread
//! checks a stop flag before each record and returns at its next hand-over, so a
//! caller that stops early (`replay --strict` on a malformed line) never waits for
//! input still to come (a pipe whose writer is slow).

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use super::input::LineIndex;
use super::{interpret, read_raw, Columns, Event, Item, Malformed, Op, OpResult, Raw, TraceError};

/// Records per batch.
pub const BATCH_ROWS: usize = 1024;
/// Filled batches queued for the caller at most. With the one the thread fills and the
/// one the caller reads, at most `BATCHES + 2` batches exist.
pub const BATCHES: usize = 4;

/// An [`Item`] whose text lives in the slot's `text` (ranges into it).
enum Stored {
    Event {
        line: u64,
        pid: u32,
        /// The operation; a rename's `new_path` is `new_path` (here `""`).
        op: Op<'static>,
        new_path: Range<usize>,
        process: Range<usize>,
        path: Range<usize>,
        result: OpResult,
        time_of_day: Option<Range<usize>>,
    },
    Other,
    Malformed(Malformed),
}

/// One item of a batch, in reused buffers.
struct Slot {
    text: String,
    item: Stored,
}

impl Slot {
    fn new() -> Self {
        Slot {
            text: String::new(),
            item: Stored::Other,
        }
    }

    /// Stores `item` (its text copied into `self.text`).
    fn store(&mut self, item: Item<'_>) {
        self.text.clear();
        let text = &mut self.text;
        let mut put = |s: &str| {
            let start = text.len();
            text.push_str(s);
            start..text.len()
        };
        self.item = match item {
            Item::Other => Stored::Other,
            Item::Malformed(m) => Stored::Malformed(m),
            Item::Event(e) => {
                let (op, new_path) = match e.op {
                    Op::Rename { new_path } => (Op::Rename { new_path: "" }, put(new_path)),
                    Op::Create(d) => (Op::Create(d), 0..0),
                    Op::Write { detail, fast_io } => (Op::Write { detail, fast_io }, 0..0),
                    Op::Flush => (Op::Flush, 0..0),
                    Op::Cleanup => (Op::Cleanup, 0..0),
                    Op::Close => (Op::Close, 0..0),
                    Op::Other => (Op::Other, 0..0),
                };
                Stored::Event {
                    line: e.line,
                    pid: e.pid,
                    op,
                    new_path,
                    process: put(e.process),
                    path: put(e.path),
                    result: e.result,
                    time_of_day: e.time_of_day.map(&mut put),
                }
            }
        };
    }

    /// The stored item (a malformed line's reason is moved out: taken once).
    fn take(&mut self) -> Item<'_> {
        let text = self.text.as_str();
        let at = |r: &Range<usize>| text.get(r.clone()).unwrap_or_default();
        match &mut self.item {
            Stored::Other => Item::Other,
            Stored::Malformed(m) => Item::Malformed(std::mem::replace(
                m,
                Malformed {
                    line: 0,
                    reason: String::new(),
                },
            )),
            Stored::Event {
                line,
                pid,
                op,
                new_path,
                process,
                path,
                result,
                time_of_day,
            } => Item::Event(Event {
                line: *line,
                process: at(process),
                pid: *pid,
                op: match op {
                    Op::Rename { .. } => Op::Rename {
                        new_path: at(new_path),
                    },
                    other => other.clone(),
                },
                path: at(path),
                result: *result,
                time_of_day: time_of_day.as_ref().map(at),
            }),
        }
    }
}

struct Batch {
    /// Slots; the first `len` hold this batch's items.
    slots: Vec<Slot>,
    len: usize,
    /// Bytes of the trace read when the batch was handed over.
    bytes_read: u64,
    /// Set on the last batch: `Ok` at the end of the trace, else why reading stopped.
    end: Option<Result<(), TraceError>>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            slots: Vec::new(),
            len: 0,
            bytes_read: 0,
            end: None,
        }
    }
}

/// The caller's side: the batch being read and the channels.
pub(super) struct Piped {
    full: Receiver<Batch>,
    empty: SyncSender<Batch>,
    batch: Batch,
    /// Next record of `batch` to return.
    pos: usize,
    /// The last batch was read to its end: every later call returns `Ok(None)`.
    done: bool,
    /// Set when this side is dropped: the thread stops before its next record.
    stop: Arc<AtomicBool>,
}

impl Piped {
    /// Starts the reader thread on `rdr` (positioned after the header), whose columns
    /// are `cols`.
    pub(super) fn start<R: Read + Send + 'static>(
        rdr: csv::Reader<LineIndex<R>>,
        cols: Columns,
    ) -> Result<Self, TraceError> {
        let (full_tx, full) = mpsc::sync_channel(BATCHES);
        // Room for every batch but the caller's: handing one back never blocks.
        let (empty, empty_rx) = mpsc::sync_channel(BATCHES + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let mut batch = Batch::new();
        batch.bytes_read = rdr.get_ref().offset;
        // Detached: it ends by itself (end of trace, error, or `stop` / closed channels).
        std::thread::Builder::new()
            .name("trace-reader".into())
            .spawn(move || produce(rdr, cols, &full_tx, &empty_rx, &thread_stop))
            .map_err(|e| {
                TraceError::Io(std::io::Error::other(format!(
                    "cannot start the trace reader thread: {e}"
                )))
            })?;
        Ok(Piped {
            full,
            empty,
            batch,
            pos: 0,
            done: false,
            stop,
        })
    }

    /// Bytes of the trace the thread had read when it handed over the current batch
    /// (the header's end before the first).
    pub(super) fn bytes_read(&self) -> u64 {
        self.batch.bytes_read
    }

    /// The next item; `Ok(None)` at the end of the trace.
    pub(super) fn next(&mut self) -> Result<Option<Item<'_>>, TraceError> {
        while self.pos >= self.batch.len {
            if self.done {
                return Ok(None);
            }
            if let Some(end) = self.batch.end.take() {
                self.done = true;
                end?;
                return Ok(None);
            }
            let next = self.full.recv().map_err(|_| {
                // The thread ended without its last batch: it panicked.
                TraceError::Io(std::io::Error::other("the trace reader thread stopped"))
            })?;
            let used = std::mem::replace(&mut self.batch, next);
            self.pos = 0;
            // The thread may have ended already (then it needs no more batches); the
            // placeholder of the start holds no record and is not worth sending.
            if !used.slots.is_empty() {
                let _ = self.empty.try_send(used);
            }
        }
        let i = self.pos;
        self.pos += 1;
        Ok(Some(self.batch.slots[i].take()))
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        // The thread stops before its next record; the channels close with the fields
        // (a hand-over it is blocked in then fails), so it returns either way.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reader thread: fills batches until the trace ends, reading fails or the caller
/// is gone.
fn produce<R: Read>(
    mut rdr: csv::Reader<LineIndex<R>>,
    cols: Columns,
    full: &SyncSender<Batch>,
    empty: &Receiver<Batch>,
    stop: &AtomicBool,
) {
    let mut record = csv::ByteRecord::new();
    loop {
        // A new batch only when none was handed back: every other batch is then
        // queued (at most BATCHES, `full` blocks beyond) or being read, which bounds
        // them (module docs).
        let mut batch = match empty.try_recv() {
            Ok(b) => b,
            Err(mpsc::TryRecvError::Empty) => Batch::new(),
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        batch.len = 0;
        while batch.len < BATCH_ROWS {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let item = match read_raw(&mut rdr, &mut record) {
                Ok(Some(Raw::Record { line })) => Some(interpret(cols, &record, line)),
                Ok(Some(Raw::Malformed(m))) => Some(Item::Malformed(m)),
                Ok(None) => None,
                Err(e) => {
                    batch.end = Some(Err(e));
                    break;
                }
            };
            match item {
                Some(item) => {
                    if batch.slots.len() == batch.len {
                        batch.slots.push(Slot::new());
                    }
                    batch.slots[batch.len].store(item);
                    batch.len += 1;
                }
                None => {
                    batch.end = Some(Ok(()));
                    break;
                }
            }
        }
        batch.bytes_read = rdr.get_ref().offset;
        let last = batch.end.is_some();
        if full.send(batch).is_err() || last {
            return;
        }
    }
}
