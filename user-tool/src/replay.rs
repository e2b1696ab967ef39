//! `flushctl replay`: runs a Process Monitor trace through the driver's own callback
//! logic and reports what FlushGuard would have done.
//!
//! Every create, write, flush and cleanup of the trace becomes a call of the matching
//! [`Filter`] callback (`pre_create`/`post_create`, `pre_write`/`post_write`,
//! `pre_flush`/`post_flush`, `pre_cleanup`) over the simulated Filter Manager of
//! [`crate::sim_fltmgr`]: the same rule lookup, the same per-handle stream context caching the
//! rule and the written-since-flush state, the same modes and flush sequencing as in
//! the kernel. Flushes are recorded, not issued.
//!
//! # How trace rows become file objects
//!
//! A ProcMon CSV has no handle column, so handles are tracked per (PID, path): a
//! successful CreateFile opens a new file object, writes/flushes by that PID on that
//! path use its newest open one, CloseFile (IRP_MJ_CLEANUP) closes it, and a rename
//! moves it to the new path. Paging writes (the lazy writer runs as `System`) use an
//! open file object of the path, else the last cleaned-up one (its context lives until
//! IRP_MJ_CLOSE), else a fresh file object without a context — as a cache-manager stream
//! file object would be — which FlushGuard passes through. A write, flush or cleanup by
//! a process with no open handle of the path in the trace is on a handle opened before
//! the capture started: it runs the same callbacks on a file object without a
//! FlushGuard context (not governed, counted in `without_known_open`), and its writes
//! and flushes count in the file's figures like any other (a successful flush empties
//! the file's cache whichever handle issues it). Local files are only seen
//! when the policy sets `attach-local-volumes` (InstanceSetup declines local volumes
//! otherwise).
//!
//! # Flushes and their cache write-back
//!
//! A flush writes the cache back inside itself: the file system calls `CcFlushCache`
//! in its flush dispatch, which issues synchronous paging writes in the flushing thread
//! before the flush completes. Process Monitor lists operations in the order they
//! started, so that write-back appears as `WriteFile` rows with `Paging I/O,
//! Synchronous Paging I/O` of the same file by the same process right *after* the
//! `FlushBuffersFile` row. The replay keeps the flush in progress over those rows:
//! it runs the pre-flush at the `FlushBuffersFile` row, the write-back rows through
//! the write callbacks, and the post-flush before the first row of any other kind
//! (or at the end of the trace). The engine then sees what the kernel sees: paging
//! writes that complete inside a successful flush are covered by it (see the
//! engine's `StreamContext`). The captures have no thread or duration column, so
//! anything else closes the window: a later paging write is not covered (the
//! conservative side, at worst one flush more at close).
//!
//! # Durability bookkeeping
//!
//! For each file, bytes of successful non-paging writes count as *unflushed* until a
//! flush of the file succeeds (the application's FlushBuffersFile, or one FlushGuard
//! issues); writes made write-through (by the application's `FILE_WRITE_THROUGH` /
//! `SL_WRITE_THROUGH`, or forced by FlushGuard) are durable when they complete. The
//! report gives this figure twice: as the trace happened (without FlushGuard) and with
//! the policy. *Extra round trips* are the flushes FlushGuard issues (one SMB2 FLUSH
//! each) plus the cached writes it makes write-through (each then goes to the server
//! synchronously instead of being coalesced by the lazy writer): an upper bound.
//!
//! # Memory
//!
//! The trace is streamed. Memory grows with the files and handles in flight, not with
//! the number of rows: at most `max_files` files are reported individually (the rest
//! are added up in one "(other files)" row), paths remember at most one cleaned-up
//! file object, and at most `4 * max_files` open file objects are tracked (the oldest
//! is forgotten beyond that, counted in `handles_evicted`). Resolved paths and process
//! images are cached, at most `2 * max_files` of each (at least 1 024, at most 16 384;
//! a cache is emptied when full).

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;

use flushguard_engine::callbacks::{
    CompletionContext, Filter, FilterManager, Irql, PostOpFlags, PreOpStatus, DEFAULT_RULE_SLOT,
    EXEMPT_SLOT,
};
use flushguard_engine::protocol::nt::{
    FILE_WRITE_THROUGH, FO_WRITE_THROUGH, IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_FLUSH_BUFFERS,
    IRP_MJ_WRITE, IRP_NOCACHE, IRP_PAGING_IO, IRP_SYNCHRONOUS_PAGING_IO, SL_WRITE_THROUGH,
};
use flushguard_engine::protocol::stats::Counter;
use flushguard_engine::protocol::NtStatus;
use flushguard_engine::{Exemption, FileKey, FileName, FileProvider, Mode};

/// Report label of files FlushGuard never governs ([`Exemption`]).
const EXEMPT_RULE: &str = "(never governed: named pipe / mailslot share)";
use serde::Serialize;

use crate::sim_fltmgr::{FileObjectId, KnownContext, SimData, SimFile, SimFm, FO_SYNCHRONOUS_IO};
use crate::trace::detail::create_options::{
    FILE_SYNCHRONOUS_IO_ALERT, FILE_SYNCHRONOUS_IO_NONALERT,
};
use crate::trace::path::{Location, PathResolver};
use crate::trace::{Item, Malformed, Op, OpResult, TraceError, TraceReader};

/// Most malformed lines listed in the report (all are counted).
pub const MAX_MALFORMED_LISTED: usize = 100;

/// `STATUS_REPARSE`: a create that did not open a file object.
const STATUS_REPARSE: i32 = 0x104;

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Stop at the first malformed line.
    pub strict: bool,
    /// Files reported individually.
    pub max_files: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            strict: false,
            max_files: 100_000,
        }
    }
}

/// Figures of one file, one rule or the whole trace.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Figures {
    /// Successful non-paging writes (IRP_MJ_WRITE and fast I/O).
    pub writes: u64,
    /// Their bytes.
    pub write_bytes: u64,
    /// Successful paging writes (lazy writer, mapped pages, flush write-back).
    pub paging_writes: u64,
    /// Their bytes.
    pub paging_bytes: u64,
    /// Non-paging writes on handles under a rule whose mode is not `pass`.
    pub writes_governed: u64,
    /// Creates that FlushGuard opened with `FILE_WRITE_THROUGH` plus writes it sent with
    /// `SL_WRITE_THROUGH` (neither set by the application).
    pub write_throughs_forced: u64,
    /// Flushes FlushGuard would issue.
    pub flushes_issued: u64,
    /// FlushBuffersFile calls the application issued (successful).
    pub app_flushes: u64,
    /// Application flushes FlushGuard upgraded to a stronger flush type.
    pub app_flushes_upgraded: u64,
    /// Fast I/O writes FlushGuard sent back as IRPs (`FLT_PREOP_DISALLOW_FASTIO`).
    pub fast_io_disallowed: u64,
    /// Extra round trips to the server this costs (see the module docs).
    pub extra_round_trips: u64,
    /// Files with unflushed bytes at the end of the trace, as it happened.
    pub unflushed_files_without: u64,
    /// Unflushed bytes at the end of the trace, as it happened.
    pub unflushed_bytes_without: u64,
    /// Files with unflushed bytes at the end of the trace, with FlushGuard.
    pub unflushed_files_with: u64,
    /// Unflushed bytes at the end of the trace, with FlushGuard.
    pub unflushed_bytes_with: u64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.writes += o.writes;
        self.write_bytes += o.write_bytes;
        self.paging_writes += o.paging_writes;
        self.paging_bytes += o.paging_bytes;
        self.writes_governed += o.writes_governed;
        self.write_throughs_forced += o.write_throughs_forced;
        self.flushes_issued += o.flushes_issued;
        self.app_flushes += o.app_flushes;
        self.app_flushes_upgraded += o.app_flushes_upgraded;
        self.fast_io_disallowed += o.fast_io_disallowed;
        self.extra_round_trips += o.extra_round_trips;
        self.unflushed_files_without += o.unflushed_files_without;
        self.unflushed_bytes_without += o.unflushed_bytes_without;
        self.unflushed_files_with += o.unflushed_files_with;
        self.unflushed_bytes_with += o.unflushed_bytes_with;
    }
}

/// One file of the report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The path as the trace shows it (at the first open that wrote or flushed).
    pub path: String,
    /// The name the driver matches (`\Device\Mup\server\share\...`, or the local path).
    pub name: String,
    /// Provider: smb, webdav, nfs, rdpdr or local.
    pub provider: &'static str,
    /// The rule governing it (`(default)` for the default action); `(several)` when
    /// handles by different processes fell under different rules.
    pub rule: String,
    /// That rule's mode.
    pub mode: &'static str,
    /// Open handles at the end of the trace.
    pub open_handles_at_end: u64,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(skip)]
    dirty_without: u64,
    #[serde(skip)]
    dirty_with: u64,
    #[serde(skip)]
    slot: u32,
}

/// One rule of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// Rule name (`(default)` for the default action).
    pub rule: String,
    /// Its mode.
    pub mode: &'static str,
    /// Files reported under it.
    pub files: u64,
    /// Figures added up over its files.
    #[serde(flatten)]
    pub figures: Figures,
    /// The engine's own per-rule counters after the replay (GetStats vocabulary:
    /// writes_seen, writes_governed, write_through_forced, flushes_filter, ...).
    pub engine_counters: BTreeMap<&'static str, u64>,
}

/// Row and event counts of the trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Data rows read (well-formed and malformed).
    pub rows: u64,
    /// Rows that went through the callbacks.
    pub events_replayed: u64,
    /// Rows of operations FlushGuard does not see (reads, queries, registry, ...).
    pub other_rows: u64,
    /// Rows on paths that are not files (registry keys, empty paths).
    pub not_a_file: u64,
    /// Rows on local volumes while the policy does not attach to them.
    pub local_not_attached: u64,
    /// Malformed lines.
    pub malformed: u64,
    /// Writes/flushes/cleanups with no open handle known (opened before the capture).
    pub without_known_open: u64,
    /// Open file objects forgotten to stay within the memory bound.
    pub handles_evicted: u64,
    /// Files added up in the "(other files)" row.
    pub files_folded: u64,
}

/// The replay report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The trace file.
    pub trace: String,
    /// Where the policy came from (file path or `driver`).
    pub policy: String,
    /// Its generation in the replay engine.
    pub policy_generation: u64,
    /// Whether local volumes were attached.
    pub attach_local_volumes: bool,
    /// Row counts.
    pub counts: Counts,
    /// The first malformed lines (at most [`MAX_MALFORMED_LISTED`]).
    pub malformed: Vec<Malformed>,
    /// Totals over all files.
    pub totals: Figures,
    /// Per rule, policy order, then the default action.
    pub rules: Vec<RuleReport>,
    /// Per file, in order of first write/flush.
    pub files: Vec<FileReport>,
    /// Files beyond `max_files`, added up.
    pub other_files: Option<FileReport>,
    /// The callback layer's own counters after the replay (non-zero ones), e.g.
    /// `WriteSynchronized`, `FlushDeferred`, `FlushSkippedPagingIo`, `ContextAttached`.
    pub callback_counters: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone)]
struct FoState {
    /// Folded trace path the handle is registered under.
    key: Arc<str>,
    /// Trace path as shown.
    path: Arc<str>,
    /// The name the driver sees.
    name: Arc<str>,
    /// `name` in UTF-16, as `FltGetFileNameInformation` returns it.
    name16: Arc<[u16]>,
    redirector: FileProvider,
    sync_io: bool,
    app_write_through: bool,
    effective_write_through: bool,
    slot: u32,
    mode: Mode,
    file: Option<usize>,
    cleaned: bool,
    /// The post-create attached a stream-handle context (a governed handle); it lives
    /// as long as this state ([`Replayer::forget`] frees both).
    has_context: bool,
}

impl FoState {
    /// `FILE_OBJECT::Flags` of the handle as the callbacks see them.
    fn fo_flags(&self) -> u32 {
        (if self.sync_io { FO_SYNCHRONOUS_IO } else { 0 })
            | (if self.effective_write_through {
                FO_WRITE_THROUGH
            } else {
                0
            })
    }
}

/// What an operation needs of its handle's [`FoState`] (cheaper to copy out).
#[derive(Debug, Clone)]
struct HandleView {
    name16: Arc<[u16]>,
    redirector: FileProvider,
    sync_io: bool,
    app_write_through: bool,
    effective_write_through: bool,
    mode: Mode,
    fo_flags: u32,
    file: Option<usize>,
    has_context: bool,
}

impl HandleView {
    fn of(s: &FoState) -> Self {
        HandleView {
            name16: Arc::clone(&s.name16),
            redirector: s.redirector,
            sync_io: s.sync_io,
            app_write_through: s.app_write_through,
            effective_write_through: s.effective_write_through,
            mode: s.mode,
            fo_flags: s.fo_flags(),
            file: s.file,
            has_context: s.has_context,
        }
    }
}

/// The file objects of one path: open handles `(PID, file object)` in open order, and
/// the newest cleaned-up one.
#[derive(Debug, Default)]
struct PathState {
    open: Vec<(u32, FileObjectId)>,
    cleaned: Option<FileObjectId>,
}

/// An application flush between its pre-flush and its post-flush (see "Flushes and
/// their cache write-back" in the module docs).
#[derive(Debug)]
struct PendingFlush {
    pid: u32,
    key: Arc<str>,
    /// The report row of the flushed file.
    file: Option<usize>,
    data: SimData,
    ctx: Option<CompletionContext>,
    result: OpResult,
    upgraded: bool,
}

/// Streams a trace through a [`Filter`] and builds the [`Report`].
pub struct Replayer<'f> {
    pending_flush: Option<PendingFlush>,
    filter: &'f Filter<SimFm>,
    resolver: PathResolver,
    attach_local: bool,
    opts: ReplayOptions,
    next_fo: FileObjectId,
    fos: HashMap<FileObjectId, FoState>,
    /// File objects in `fos` in creation (= id) order, oldest first, for eviction;
    /// may hold ids already forgotten (pruned when it outgrows `fos`).
    fo_order: VecDeque<FileObjectId>,
    paths: HashMap<Arc<str>, PathState>,
    cleaned_order: VecDeque<Arc<str>>,
    file_index: HashMap<String, usize>,
    files: Vec<FileReport>,
    other: Option<FileReport>,
    counts: Counts,
    malformed: Vec<Malformed>,
    rule_names: Vec<String>,
    rule_modes: Vec<Mode>,
    default_mode: Mode,
    /// Resolved trace paths (bounded, see [`cache_max`]): one hash lookup per
    /// event instead of resolving, folding and allocating the names again.
    path_cache: HashMap<Box<str>, Rc<PathInfo>>,
    /// Process images in UTF-16 (bounded like `path_cache`).
    images: HashMap<Box<str>, Arc<[u16]>>,
}

/// Most resolved paths (and process images) kept in a [`Replayer`]'s caches: twice
/// `max_files`, at least 1 024 and at most 16 384; a cache is emptied when full
/// (memory follows the files in flight, not the rows).
fn cache_max(max_files: usize) -> usize {
    max_files.saturating_mul(2).clamp(1024, 16_384)
}

/// What a trace path resolves to, computed once per distinct path.
#[derive(Debug)]
struct PathInfo {
    /// Where it is: `None` = not a file; else the redirector ([`FileProvider::Local`]
    /// for a local volume).
    redirector: Option<FileProvider>,
    /// The name the driver sees (`\Device\Mup\...` or the local path).
    name: Arc<str>,
    /// `name` in UTF-16.
    name16: Arc<[u16]>,
    /// The folded trace path (the per-path handle table's key).
    key: Arc<str>,
}

impl std::fmt::Debug for Replayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("counts", &self.counts)
            .finish()
    }
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn fold_key(path: &str) -> String {
    flushguard_engine::path::fold(path)
}

/// What a replay needs to know about the result of one callback sequence.
#[derive(Debug, Default, Clone, Copy)]
struct Effects {
    flushes: u64,
}

impl<'f> Replayer<'f> {
    /// A replayer over `filter` (whose policy is the one to replay) with drive maps.
    pub fn new(filter: &'f Filter<SimFm>, resolver: PathResolver, opts: ReplayOptions) -> Self {
        let policy = filter.state().policy();
        let p = policy.policy();
        Self {
            pending_flush: None,
            filter,
            resolver,
            attach_local: p.attach_local_volumes,
            opts,
            next_fo: 1,
            fos: HashMap::default(),
            fo_order: VecDeque::new(),
            paths: HashMap::default(),
            cleaned_order: VecDeque::new(),
            file_index: HashMap::default(),
            files: Vec::new(),
            other: None,
            counts: Counts::default(),
            malformed: Vec::new(),
            rule_names: p.rules.iter().map(|r| r.name.clone()).collect(),
            rule_modes: p.rules.iter().map(|r| r.action.mode).collect(),
            default_mode: p.default_action.mode,
            path_cache: HashMap::default(),
            images: HashMap::default(),
        }
    }

    /// The resolution of a trace path (cached).
    fn path_info(&mut self, path: &str) -> Rc<PathInfo> {
        if let Some(info) = self.path_cache.get(path) {
            return Rc::clone(info);
        }
        let (redirector, name) = match self.resolver.resolve(path) {
            Location::NotAFile => (None, String::new()),
            Location::Local { name } => (Some(FileProvider::Local), name),
            Location::Remote {
                redirector,
                device_name,
            } => (Some(redirector), device_name),
        };
        let info = Rc::new(PathInfo {
            redirector,
            name16: utf16(&name).into(),
            name: name.into(),
            key: fold_key(path).into(),
        });
        if self.path_cache.len() >= cache_max(self.opts.max_files) {
            self.path_cache.clear();
        }
        self.path_cache.insert(path.into(), Rc::clone(&info));
        info
    }

    /// `process` in UTF-16 (the requestor image the callbacks match rules against).
    fn image16(&mut self, process: &str) -> Arc<[u16]> {
        if let Some(image) = self.images.get(process) {
            return Arc::clone(image);
        }
        let image: Arc<[u16]> = utf16(process).into();
        if self.images.len() >= cache_max(self.opts.max_files) {
            self.images.clear();
        }
        self.images.insert(process.into(), Arc::clone(&image));
        image
    }

    fn rule_name(&self, slot: u32) -> String {
        if slot == DEFAULT_RULE_SLOT {
            "(default)".into()
        } else if slot == EXEMPT_SLOT {
            EXEMPT_RULE.into()
        } else {
            self.rule_names
                .get(slot as usize)
                .cloned()
                .unwrap_or_else(|| format!("rule {slot}"))
        }
    }

    fn rule_mode(&self, slot: u32) -> Mode {
        if slot == EXEMPT_SLOT {
            return Mode::Pass;
        }
        self.rule_modes
            .get(slot as usize)
            .copied()
            .unwrap_or(self.default_mode)
    }

    /// The rule slot the engine's matcher picks for a file (the same lookup the
    /// callbacks run; used to label handles the callbacks keep no context for).
    /// [`EXEMPT_SLOT`] for a named pipe / mailslot share, as in the callbacks.
    fn lookup_slot(&self, name: &str, redirector: FileProvider, process: &str) -> u32 {
        let policy = self.filter.state().policy();
        let parsed = FileName::parse(name).ok();
        if parsed.is_none() && matches!(Exemption::of_unparsed(name), Ok(Some(_))) {
            return EXEMPT_SLOT;
        }
        let r = policy.lookup(&FileKey {
            provider: redirector,
            name: parsed.as_ref(),
            process_image: process,
        });
        if r.exempt.is_some() {
            return EXEMPT_SLOT;
        }
        r.index.unwrap_or(DEFAULT_RULE_SLOT)
    }

    /// Reads the whole trace. `progress` is called now and then with the bytes read.
    ///
    /// # Errors
    /// [`TraceError`] when the file cannot be read; `Err(Ok(malformed))`-style strict
    /// stops are reported as [`ReplayError::Strict`].
    pub fn run<R: Read>(
        &mut self,
        reader: &mut TraceReader<R>,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ReplayError> {
        let mut n: u64 = 0;
        while let Some(item) = reader.next_event()? {
            self.counts.rows += 1;
            if !self.continues_flush(&item) {
                self.finish_flush();
            }
            match item {
                Item::Other => self.counts.other_rows += 1,
                Item::Malformed(m) => {
                    self.counts.malformed += 1;
                    if self.opts.strict {
                        return Err(ReplayError::Strict(m));
                    }
                    if self.malformed.len() < MAX_MALFORMED_LISTED {
                        self.malformed.push(m);
                    }
                }
                Item::Event(e) => {
                    let (pid, process, path, result) = (e.pid, e.process, e.path, e.result);
                    self.event(pid, process, path, e.op, result);
                }
            }
            n += 1;
            if n % 16_384 == 0 {
                progress(reader.bytes_read());
            }
        }
        self.finish_flush();
        progress(reader.bytes_read());
        Ok(())
    }

    /// True when `item` is cache write-back of the application flush in progress:
    /// a successful synchronous paging `WriteFile` of the same path by the same process.
    fn continues_flush(&mut self, item: &Item<'_>) -> bool {
        let (Some(p), Item::Event(e)) = (&self.pending_flush, item) else {
            return false;
        };
        const WRITE_BACK: u32 = IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO;
        let candidate = matches!(&e.op, Op::Write { detail, fast_io: false } if detail.irp_flags & WRITE_BACK == WRITE_BACK)
            && e.pid == p.pid
            && e.result.is_success();
        if !candidate {
            return false;
        }
        let key = Arc::clone(&p.key);
        *self.path_info(e.path).key == *key
    }

    fn begin(&self, pid: u32, irql: Irql, top_level_irp: bool) {
        let fm = self.filter.fm();
        fm.set_thread(u64::from(pid) + 1);
        fm.set_irql(irql);
        fm.set_top_level_irp(top_level_irp);
    }

    fn event(&mut self, pid: u32, process: &str, path: &str, op: Op<'_>, result: OpResult) {
        if matches!(op, Op::Other) {
            self.counts.other_rows += 1;
            return;
        }
        let info = self.path_info(path);
        let redirector = match info.redirector {
            None => {
                self.counts.not_a_file += 1;
                return;
            }
            Some(FileProvider::Local) if !self.attach_local => {
                self.counts.local_not_attached += 1;
                return;
            }
            Some(r) => r,
        };
        self.counts.events_replayed += 1;
        // The post-operation status: the Result column's NTSTATUS; a refused fast I/O
        // path, an unknown Result or one that never completed (empty Result) is not a
        // success, so post-operations do nothing for them.
        let status = result.status().map_or(NtStatus::UNSUCCESSFUL, NtStatus);
        let key = &info.key;
        match op {
            Op::Create(d) => self.create(pid, process, path, &info, redirector, &d, result, status),
            Op::Write { detail, fast_io } => self.write(
                pid, process, path, &info, redirector, &detail, fast_io, result, status,
            ),
            Op::Flush => self.flush(pid, process, path, &info, redirector, result, status),
            Op::Cleanup => self.cleanup(pid, process, key, &info, redirector),
            Op::Close => self.close(key),
            Op::Rename { new_path } => {
                if result.is_success() {
                    self.rename(pid, key, new_path);
                }
            }
            Op::Other => {}
        }
    }

    /// The callback data of an operation by `pid` on file object `fo` whose
    /// `FILE_OBJECT::Flags` are `file_object_flags` ([`FoState::fo_flags`], 0 for a file
    /// object without state).
    /// `has_context`: whether the file object has a stream-handle context (`None`:
    /// not known yet, as during its create).
    #[allow(clippy::too_many_arguments)]
    fn base_data(
        &mut self,
        pid: u32,
        process: &str,
        fo: FileObjectId,
        file_object_flags: u32,
        has_context: Option<bool>,
        name16: Arc<[u16]>,
        r: FileProvider,
    ) -> SimData {
        let image = self.image16(process);
        // A context is attached only by a post-create and freed with the file object's
        // state (`forget`): between the two it is known once for the whole operation.
        let context = match has_context {
            None => KnownContext::Unknown,
            Some(false) => KnownContext::Known(None),
            Some(true) => KnownContext::Known(self.filter.fm().context_of(fo)),
        };
        SimData {
            file: fo,
            fo_flags: file_object_flags,
            extra: SimFile {
                name: name16,
                image,
                provider: r,
                thread: u64::from(pid) + 1,
                context,
            },
            ..SimData::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        pid: u32,
        process: &str,
        path: &str,
        info: &PathInfo,
        redirector: FileProvider,
        d: &crate::trace::CreateDetail,
        result: OpResult,
        status: NtStatus,
    ) {
        let fo = self.next_fo;
        self.next_fo += 1;
        let (key, name) = (Arc::clone(&info.key), &*info.name);
        let name16 = Arc::clone(&info.name16);
        let mut data = self.base_data(pid, process, fo, 0, None, Arc::clone(&name16), redirector);
        data.major = IRP_MJ_CREATE;
        let disposition = d.disposition.map_or(0, |x| x as u32);
        data.create_options = d.create_options | (disposition << 24);
        let app_wt = d.create_options & FILE_WRITE_THROUGH != 0;
        self.begin(pid, Irql::PASSIVE_LEVEL, false);
        let pre = self.filter.pre_create(&mut data);
        let eff_wt = data.create_options & FILE_WRITE_THROUGH != 0;
        data.status = status;
        if let Some(ctx) = pre.completion_context() {
            self.filter
                .post_create(&mut data, Some(ctx), PostOpFlags(0));
        }
        let opened = result.is_success() && status.0 != STATUS_REPARSE;
        if !opened {
            return;
        }
        let context = self.filter.fm().get_stream_handle_context(&data);
        let has_context = matches!(context, Ok(Some(_)));
        let slot = match context {
            Ok(Some(ctx)) => ctx.rule().1,
            _ => self.lookup_slot(name, redirector, process),
        };
        let state = FoState {
            key: Arc::clone(&key),
            path: path.into(),
            name: Arc::clone(&info.name),
            name16,
            redirector,
            sync_io: d.create_options & (FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT)
                != 0,
            app_write_through: app_wt,
            effective_write_through: eff_wt,
            slot,
            mode: self.rule_mode(slot),
            file: None,
            cleaned: false,
            has_context,
        };
        let forced = eff_wt && !app_wt;
        self.fos.insert(fo, state);
        self.fo_order.push_back(fo);
        if self.fo_order.len() > 2 * self.fos.len() + 1024 {
            let fos = &self.fos;
            self.fo_order.retain(|f| fos.contains_key(f));
        }
        self.paths.entry(key).or_default().open.push((pid, fo));
        if forced {
            let f = self.file_of(fo);
            if let Some(fig) = self.figures_mut(f) {
                fig.write_throughs_forced += 1;
            }
        }
        self.bound_handles();
    }

    fn bound_handles(&mut self) {
        let cap = self.opts.max_files.saturating_mul(4).max(1024);
        while self.fos.len() > cap {
            // The oldest file object still tracked (ids grow with creation).
            let Some(fo) = self.fo_order.pop_front() else {
                break;
            };
            if self.fos.contains_key(&fo) {
                self.forget(fo);
                self.counts.handles_evicted += 1;
            }
        }
    }

    /// Drops a file object entirely (its context too).
    fn forget(&mut self, fo: FileObjectId) {
        let Some(st) = self.fos.remove(&fo) else {
            return;
        };
        if let Some(p) = self.paths.get_mut(&st.key) {
            p.open.retain(|&(_, x)| x != fo);
            if p.cleaned == Some(fo) {
                p.cleaned = None;
            }
            if p.open.is_empty() && p.cleaned.is_none() {
                self.paths.remove(&st.key);
            }
        }
        self.filter.fm().free_file_object(fo);
    }

    /// The report row of a file object's file (created on first use).
    fn file_of(&mut self, fo: FileObjectId) -> Option<usize> {
        let st = self.fos.get(&fo)?;
        if let Some(i) = st.file {
            return Some(i);
        }
        let (path, name, redirector, slot, mode) = (
            st.path.clone(),
            st.name.clone(),
            st.redirector,
            st.slot,
            st.mode,
        );
        let idx = self.file_entry(&path, &name, redirector, slot, mode);
        if let Some(st) = self.fos.get_mut(&fo) {
            st.file = idx;
        }
        idx
    }

    /// The report row of a file by name, created when missing; `None` = the
    /// "(other files)" row (created too).
    fn file_entry(
        &mut self,
        path: &str,
        name: &str,
        redirector: FileProvider,
        slot: u32,
        mode: Mode,
    ) -> Option<usize> {
        let name_key = fold_key(name);
        if let Some(&i) = self.file_index.get(&name_key) {
            if self.files[i].slot != slot {
                self.files[i].rule = "(several)".into();
            }
            return Some(i);
        }
        if self.files.len() < self.opts.max_files {
            let i = self.files.len();
            self.files.push(FileReport {
                path: path.to_owned(),
                name: name.to_owned(),
                provider: redirector.name(),
                rule: self.rule_name(slot),
                mode: mode.name(),
                open_handles_at_end: 0,
                figures: Figures::default(),
                dirty_without: 0,
                dirty_with: 0,
                slot,
            });
            self.file_index.insert(name_key, i);
            return Some(i);
        }
        self.other.get_or_insert_with(|| FileReport {
            path: "(other files)".into(),
            name: String::new(),
            provider: "",
            rule: "(several)".into(),
            mode: "",
            open_handles_at_end: 0,
            figures: Figures::default(),
            dirty_without: 0,
            dirty_with: 0,
            slot: DEFAULT_RULE_SLOT,
        });
        self.counts.files_folded += 1;
        None
    }

    fn file_mut(&mut self, f: Option<usize>) -> Option<&mut FileReport> {
        match f {
            Some(i) => self.files.get_mut(i),
            None => self.other.as_mut(),
        }
    }

    fn figures_mut(&mut self, f: Option<usize>) -> Option<&mut Figures> {
        self.file_mut(f).map(|r| &mut r.figures)
    }

    /// The file object a write/flush/cleanup by `pid` on `key` uses: that process's
    /// newest open handle; for paging I/O any open one, else the last cleaned-up one.
    fn find_fo(&self, pid: u32, key: &str, paging: bool) -> Option<FileObjectId> {
        let p = self.paths.get(key)?;
        if let Some(&(_, fo)) = p.open.iter().rev().find(|(owner, _)| *owner == pid) {
            return Some(fo);
        }
        if paging {
            return p.open.first().map(|&(_, fo)| fo).or(p.cleaned);
        }
        None
    }

    fn anonymous_fo(&mut self) -> FileObjectId {
        let fo = self.next_fo;
        self.next_fo += 1;
        fo
    }

    /// The file object an operation by `pid` on `key` runs on, and its state: the
    /// handle [`Replayer::find_fo`] finds, else — a handle opened before the capture
    /// started, or a cache-manager file object — a fresh file object without a
    /// FlushGuard context (passed through, as the driver passes through a file object
    /// it never saw opened), counted in `without_known_open`. Writes, flushes and
    /// cleanups all model such handles this way.
    fn handle_of(
        &mut self,
        pid: u32,
        key: &str,
        paging: bool,
    ) -> (FileObjectId, Option<HandleView>) {
        match self.find_fo(pid, key, paging) {
            Some(fo) => (fo, self.fos.get(&fo).map(HandleView::of)),
            None => {
                self.counts.without_known_open += 1;
                (self.anonymous_fo(), None)
            }
        }
    }

    /// The report row of an operation on `fo`: its handle's file, else (a handle
    /// without state, see [`Replayer::handle_of`]) the file of that name, labelled with
    /// the rule the matcher picks.
    fn row_of(
        &mut self,
        fo: FileObjectId,
        known: bool,
        path: &str,
        name: &str,
        redirector: FileProvider,
        process: &str,
    ) -> Option<usize> {
        if known {
            return self.file_of(fo);
        }
        let slot = self.lookup_slot(name, redirector, process);
        let mode = self.rule_mode(slot);
        self.file_entry(path, name, redirector, slot, mode)
    }

    fn apply_flushes(&mut self, f: Option<usize>) -> Effects {
        let n = self.filter.fm().take_flush_count() as u64;
        if n > 0 {
            if let Some(file) = self.file_mut(f) {
                file.figures.flushes_issued += n;
                file.figures.extra_round_trips += n;
                file.dirty_with = 0;
            }
        }
        Effects { flushes: n }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        pid: u32,
        process: &str,
        path: &str,
        info: &PathInfo,
        redirector: FileProvider,
        d: &crate::trace::WriteDetail,
        fast_io: bool,
        result: OpResult,
        status: NtStatus,
    ) {
        let (key, name) = (&*info.key, &*info.name);
        let paging = d.irp_flags & IRP_PAGING_IO != 0;
        let (fo, st) = self.handle_of(pid, key, paging);
        let name16 = st
            .as_ref()
            .map_or_else(|| Arc::clone(&info.name16), |s| Arc::clone(&s.name16));
        let fo_flags = st.as_ref().map_or(0, |s| s.fo_flags);
        let has_context = Some(st.as_ref().is_some_and(|s| s.has_context));
        let mut data = self.base_data(pid, process, fo, fo_flags, has_context, name16, redirector);
        data.major = IRP_MJ_WRITE;
        data.irp_flags = d.irp_flags;
        data.operation_flags = d.operation_flags;
        data.fast_io = fast_io;
        data.offset = d.offset;
        data.length = u32::try_from(d.length).unwrap_or(u32::MAX);
        data.synchronous = if paging {
            d.irp_flags & IRP_SYNCHRONOUS_PAGING_IO != 0
        } else {
            st.as_ref().is_some_and(|s| s.sync_io)
        };
        self.begin(pid, Irql::PASSIVE_LEVEL, paging);
        let pre = self.filter.pre_write(&mut data);
        let f = match st.as_ref().and_then(|s| s.file) {
            Some(row) => Some(row),
            None => self.row_of(fo, st.is_some(), path, name, redirector, process),
        };
        if pre.status() == PreOpStatus::DisallowFastIo {
            if let Some(fig) = self.figures_mut(f) {
                fig.fast_io_disallowed += 1;
            }
            return;
        }
        if result == OpResult::FastIoDisallowed {
            // The file system refused the fast I/O path; the IRP follows as its own row.
            return;
        }
        let forced = data.operation_flags & SL_WRITE_THROUGH != 0
            && d.operation_flags & SL_WRITE_THROUGH == 0;
        data.status = status;
        if let Some(ctx) = pre.completion_context() {
            let irql = if pre.status() == PreOpStatus::Synchronize {
                Irql::PASSIVE_LEVEL
            } else {
                Irql::DISPATCH_LEVEL
            };
            self.filter.fm().set_irql(irql);
            self.filter.post_write(&mut data, Some(ctx), PostOpFlags(0));
            self.filter.fm().set_irql(Irql::PASSIVE_LEVEL);
            // FlushGuard's flush worker: the pended asynchronous writes, at PASSIVE_LEVEL.
            while let Some(mut deferred) = self.filter.fm().pop_deferred() {
                self.filter
                    .flush_pended_write(&mut deferred.data, Some(deferred.ctx));
            }
        }
        let effects = self.apply_flushes(f);
        if !result.is_success() {
            return;
        }
        let len = d.length;
        let governed = st
            .as_ref()
            .is_some_and(|s| s.mode != Mode::Pass && s.has_context);
        let app_wt = st.as_ref().is_some_and(|s| s.app_write_through)
            || d.operation_flags & SL_WRITE_THROUGH != 0;
        let eff_wt = st.as_ref().is_some_and(|s| s.effective_write_through)
            || data.operation_flags & SL_WRITE_THROUGH != 0;
        let cached = d.irp_flags & IRP_NOCACHE == 0;
        let Some(file) = self.file_mut(f) else { return };
        let fig = &mut file.figures;
        if paging {
            fig.paging_writes += 1;
            fig.paging_bytes += len;
            return;
        }
        fig.writes += 1;
        fig.write_bytes += len;
        if governed {
            fig.writes_governed += 1;
        }
        if forced {
            fig.write_throughs_forced += 1;
        }
        if eff_wt && !app_wt && cached {
            fig.extra_round_trips += 1;
        }
        if !app_wt {
            file.dirty_without += len;
        }
        if !eff_wt && effects.flushes == 0 {
            file.dirty_with += len;
        }
    }

    /// An application flush: the pre-flush now, the post-flush when its cache
    /// write-back rows are over ([`Replayer::finish_flush`]). A flush on a handle opened
    /// before the capture is replayed too ([`Replayer::handle_of`]): when it succeeds it
    /// empties the file's cache like any other.
    #[allow(clippy::too_many_arguments)]
    fn flush(
        &mut self,
        pid: u32,
        process: &str,
        path: &str,
        info: &PathInfo,
        redirector: FileProvider,
        result: OpResult,
        status: NtStatus,
    ) {
        let (key, name) = (&*info.key, &*info.name);
        let (fo, st) = self.handle_of(pid, key, false);
        let (name16, provider) = st.as_ref().map_or_else(
            || (Arc::clone(&info.name16), redirector),
            |s| (Arc::clone(&s.name16), s.redirector),
        );
        let fo_flags = st.as_ref().map_or(0, |s| s.fo_flags);
        let has_context = Some(st.as_ref().is_some_and(|s| s.has_context));
        let mut data = self.base_data(pid, process, fo, fo_flags, has_context, name16, provider);
        data.major = IRP_MJ_FLUSH_BUFFERS;
        self.begin(pid, Irql::PASSIVE_LEVEL, false);
        let pre = self.filter.pre_flush(&mut data);
        let upgraded = data.minor != 0;
        data.status = status;
        let file = self.row_of(fo, st.is_some(), path, name, redirector, process);
        self.pending_flush = Some(PendingFlush {
            pid,
            key: Arc::clone(&info.key),
            file,
            data,
            ctx: pre.completion_context(),
            result,
            upgraded,
        });
    }

    /// Completes the application flush in progress, if any: post-flush, figures.
    fn finish_flush(&mut self) {
        let Some(PendingFlush {
            pid,
            file: f,
            mut data,
            ctx,
            result,
            upgraded,
            ..
        }) = self.pending_flush.take()
        else {
            return;
        };
        self.begin(pid, Irql::PASSIVE_LEVEL, false);
        if let Some(ctx) = ctx {
            self.filter.post_flush(&mut data, Some(ctx), PostOpFlags(0));
        }
        self.apply_flushes(f);
        if !result.is_success() {
            return;
        }
        if let Some(file) = self.file_mut(f) {
            file.figures.app_flushes += 1;
            if upgraded {
                file.figures.app_flushes_upgraded += 1;
            }
            file.dirty_without = 0;
            file.dirty_with = 0;
        }
    }

    /// Takes `pid`'s newest open handle of `key` out of the open list.
    fn take_open(&mut self, pid: u32, key: &str) -> Option<FileObjectId> {
        let p = self.paths.get_mut(key)?;
        let i = p.open.iter().rposition(|(owner, _)| *owner == pid)?;
        Some(p.open.remove(i).1)
    }

    fn cleanup(
        &mut self,
        pid: u32,
        process: &str,
        key: &str,
        info: &PathInfo,
        redirector: FileProvider,
    ) {
        let Some(fo) = self.take_open(pid, key) else {
            // A handle opened before the capture ([`Replayer::handle_of`]): its
            // file object has no context, so the pre-cleanup passes it through.
            self.counts.without_known_open += 1;
            let fo = self.anonymous_fo();
            let name16 = Arc::clone(&info.name16);
            let mut data = self.base_data(pid, process, fo, 0, Some(false), name16, redirector);
            data.major = IRP_MJ_CLEANUP;
            self.begin(pid, Irql::PASSIVE_LEVEL, false);
            let _ = self.filter.pre_cleanup(&mut data);
            return;
        };
        let Some(st) = self.fos.get(&fo).cloned() else {
            return;
        };
        let fo_flags = st.fo_flags();
        let (name16, has_context) = (Arc::clone(&st.name16), Some(st.has_context));
        let mut data = self.base_data(pid, "", fo, fo_flags, has_context, name16, st.redirector);
        data.major = IRP_MJ_CLEANUP;
        self.begin(pid, Irql::PASSIVE_LEVEL, false);
        let _ = self.filter.pre_cleanup(&mut data);
        if self.filter.fm().has_flushes() {
            let f = self.file_of(fo);
            self.apply_flushes(f);
        }
        // The file object lives on until IRP_MJ_CLOSE (paging writes may still use
        // it); keep the newest cleaned one per path.
        if let Some(s) = self.fos.get_mut(&fo) {
            s.cleaned = true;
        }
        let previous = self
            .paths
            .entry(Arc::clone(&st.key))
            .or_default()
            .cleaned
            .replace(fo);
        if let Some(old) = previous {
            self.forget(old);
        } else {
            self.cleaned_order.push_back(Arc::clone(&st.key));
            if self.cleaned_order.len() > self.opts.max_files.max(1024) {
                if let Some(oldest) = self.cleaned_order.pop_front() {
                    if let Some(old) = self.paths.get(&oldest).and_then(|p| p.cleaned) {
                        self.forget(old);
                    }
                }
            }
        }
    }

    fn close(&mut self, key: &str) {
        if let Some(old) = self.paths.get(key).and_then(|p| p.cleaned) {
            self.forget(old);
        }
    }

    fn rename(&mut self, pid: u32, key: &str, new_path: &str) {
        let new_key: Arc<str> = fold_key(new_path).into();
        let Some(fo) = self.take_open(pid, key) else {
            return;
        };
        if let Some(p) = self.paths.get(key) {
            if p.open.is_empty() && p.cleaned.is_none() {
                self.paths.remove(key);
            }
        }
        self.paths
            .entry(Arc::clone(&new_key))
            .or_default()
            .open
            .push((pid, fo));
        if let Some(st) = self.fos.get_mut(&fo) {
            st.key = new_key;
        }
    }

    /// Finishes the replay: end-of-trace figures, per-rule totals, engine counters.
    pub fn finish(mut self, trace: String, policy_source: String) -> Report {
        for st in self.fos.values() {
            if !st.cleaned {
                if let Some(i) = st.file {
                    self.files[i].open_handles_at_end += 1;
                }
            }
        }
        let mut finish_file = |f: &mut FileReport| {
            if f.dirty_without > 0 {
                f.figures.unflushed_files_without = 1;
                f.figures.unflushed_bytes_without = f.dirty_without;
            }
            if f.dirty_with > 0 {
                f.figures.unflushed_files_with = 1;
                f.figures.unflushed_bytes_with = f.dirty_with;
            }
        };
        self.files.iter_mut().for_each(&mut finish_file);
        if let Some(o) = self.other.as_mut() {
            finish_file(o);
        }
        let policy = self.filter.state().policy();
        let mut rules: Vec<RuleReport> = Vec::with_capacity(self.rule_names.len() + 1);
        let engine = |slot: Option<u32>| -> BTreeMap<&'static str, u64> {
            let snap = policy.counters(slot).snapshot();
            Counter::ALL
                .iter()
                .map(|c| (c.label(), snap[*c as usize]))
                .collect()
        };
        for (i, name) in self.rule_names.iter().enumerate() {
            rules.push(RuleReport {
                rule: name.clone(),
                mode: self.rule_modes[i].name(),
                files: 0,
                figures: Figures::default(),
                engine_counters: engine(Some(i as u32)),
            });
        }
        rules.push(RuleReport {
            rule: "(default)".into(),
            mode: self.default_mode.name(),
            files: 0,
            figures: Figures::default(),
            engine_counters: engine(None),
        });
        let default_row = rules.len() - 1;
        let exempt_row = self.files.iter().any(|f| f.slot == EXEMPT_SLOT).then(|| {
            // Never governed: no rule's counters, so none of the engine's either.
            rules.push(RuleReport {
                rule: EXEMPT_RULE.into(),
                mode: Mode::Pass.name(),
                files: 0,
                figures: Figures::default(),
                engine_counters: Counter::ALL.iter().map(|c| (c.label(), 0)).collect(),
            });
            rules.len() - 1
        });
        let mut totals = Figures::default();
        for f in &self.files {
            let idx = if f.slot == DEFAULT_RULE_SLOT {
                default_row
            } else if let (EXEMPT_SLOT, Some(row)) = (f.slot, exempt_row) {
                row
            } else {
                (f.slot as usize).min(default_row)
            };
            rules[idx].files += 1;
            rules[idx].figures.add(&f.figures);
            totals.add(&f.figures);
        }
        if let Some(o) = &self.other {
            totals.add(&o.figures);
        }
        let callbacks = self.filter.counters();
        let callback_counters = flushguard_engine::callbacks::Counter::ALL
            .iter()
            .map(|c| (c.name(), callbacks.get(*c)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Report {
            callback_counters,
            trace,
            policy: policy_source,
            policy_generation: policy.generation(),
            attach_local_volumes: self.attach_local,
            counts: self.counts,
            malformed: self.malformed,
            totals,
            rules,
            files: self.files,
            other_files: self.other,
        }
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// `--strict` and a malformed line.
    #[error("line {}: {}", .0.line, .0.reason)]
    Strict(Malformed),
}
