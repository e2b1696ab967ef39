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
    CompletionContext, Filter, FilterManager, Irql, PostOpFlags, PreOpStatus, StreamContext,
    DEFAULT_RULE_SLOT, EXEMPT_SLOT,
};
use flushguard_engine::group_commit::{BatchModel, GroupOptions};
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

mod group;
mod ops;
mod report;

pub use report::{
    Counts, Figures, FileReport, GroupCommitModel, ReplayOptions, Report, RuleReport,
};

/// A folded trace path's id in [`Replayer::paths`] ([`Replayer::key_id`]): an integer,
/// so the per-event handle lookup hashes and compares no string. Ids are never reused.
type KeyId = u64;

#[derive(Debug, Clone)]
struct FoState {
    /// Id of the folded trace path the handle is registered under.
    key: KeyId,
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
    /// That context (kept here so that operations on the handle need no locked
    /// table lookup in the simulated Filter Manager).
    context: Option<Arc<StreamContext>>,
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

/// What an operation needs of its handle's [`FoState`]: the facts (copied) and one
/// reference each to the name and the context, which move into the callback data.
#[derive(Debug)]
struct HandleView {
    name16: Arc<[u16]>,
    context: Option<Arc<StreamContext>>,
    facts: HandleFacts,
}

/// The plain facts of a [`HandleView`].
#[derive(Debug, Clone, Copy)]
struct HandleFacts {
    redirector: FileProvider,
    sync_io: bool,
    app_write_through: bool,
    effective_write_through: bool,
    mode: Mode,
    slot: u32,
    fo_flags: u32,
    file: Option<usize>,
    has_context: bool,
}

impl HandleView {
    fn of(s: &FoState) -> Self {
        HandleView {
            name16: Arc::clone(&s.name16),
            context: s.context.clone(),
            facts: HandleFacts {
                redirector: s.redirector,
                sync_io: s.sync_io,
                app_write_through: s.app_write_through,
                effective_write_through: s.effective_write_through,
                mode: s.mode,
                slot: s.slot,
                fo_flags: s.fo_flags(),
                file: s.file,
                has_context: s.has_context,
            },
        }
    }

    /// The facts, the name the driver sees and the context the callbacks see, for an
    /// operation on a handle with view `v`; without one (a file object FlushGuard
    /// never saw opened: [`Replayer::handle_of`]) `name16` and no context, as the
    /// callbacks see such a file object.
    fn split(
        v: Option<Self>,
        name16: &Arc<[u16]>,
    ) -> (Option<HandleFacts>, Arc<[u16]>, KnownContext) {
        match v {
            Some(v) => (Some(v.facts), v.name16, KnownContext::Known(v.context)),
            None => (None, Arc::clone(name16), KnownContext::Known(None)),
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
    key: KeyId,
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
    paths: HashMap<KeyId, PathState>,
    cleaned_order: VecDeque<KeyId>,
    /// Ids of the folded paths ([`KeyId`]): those of `paths` and of the cached
    /// [`PathInfo`]s; pruned to the ones in `paths` whenever `path_cache` is emptied.
    key_ids: HashMap<Arc<str>, KeyId>,
    next_key_id: KeyId,
    file_index: HashMap<String, usize>,
    files: Vec<FileReport>,
    other: Option<FileReport>,
    counts: Counts,
    malformed: Vec<Malformed>,
    rule_names: Vec<String>,
    rule_modes: Vec<Mode>,
    default_mode: Mode,
    /// Group-commit options per rule (`None` unless its (audited) mode is group-commit).
    rule_groups: Vec<Option<GroupOptions>>,
    default_group: Option<GroupOptions>,
    /// The group-commit model of each (rule slot, file) with governed writes.
    group_models: HashMap<(u32, Arc<str>), BatchModel>,
    /// Governed group-commit writes without a usable time, per rule slot.
    group_untimed: HashMap<u32, u64>,
    /// Some rule (or the default action) is (audited) group-commit: keep each row's
    /// `Time of Day`.
    group_models_wanted: bool,
    /// The current row's `Time of Day`, as exported (parsed only for a group-commit
    /// write: [`Replayer::model_group_write`]).
    /// (A buffer reused row after row: no allocation per row.) Empty: no usable time.
    time_of_day: String,
    /// Added to `Time of Day` once the clock went back by more than 12 hours.
    day_offset_us: u64,
    last_time_us: u64,
    /// Resolved trace paths (bounded, see [`cache_max`]): one hash lookup per
    /// event instead of resolving, folding and allocating the names again.
    path_cache: HashMap<Box<str>, Rc<PathInfo>>,
    /// Process images in UTF-16 (bounded like `path_cache`).
    images: HashMap<Rc<str>, Arc<[u16]>>,
    /// The image of the previous event (consecutive rows are often by one process).
    last_image: Option<(Rc<str>, Arc<[u16]>)>,
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
    /// Id of the folded trace path (the per-path handle table's key).
    key: KeyId,
    /// The folded trace path (group-commit models are kept per file by it).
    folded: Arc<str>,
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
            key_ids: HashMap::default(),
            next_key_id: 0,
            file_index: HashMap::default(),
            files: Vec::new(),
            other: None,
            counts: Counts::default(),
            malformed: Vec::new(),
            rule_names: p.rules.iter().map(|r| r.name.clone()).collect(),
            rule_modes: p.rules.iter().map(|r| r.action.mode).collect(),
            default_mode: p.default_action.mode,
            rule_groups: p.rules.iter().map(|r| r.action.group).collect(),
            default_group: p.default_action.group,
            group_models: HashMap::default(),
            group_untimed: HashMap::default(),
            group_models_wanted: p.default_action.group.is_some()
                || p.rules.iter().any(|r| r.action.group.is_some()),
            time_of_day: String::new(),
            day_offset_us: 0,
            last_time_us: 0,
            path_cache: HashMap::default(),
            images: HashMap::default(),
            last_image: None,
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
        if self.path_cache.len() >= cache_max(self.opts.max_files) {
            self.clear_path_cache();
        }
        let folded: Arc<str> = fold_key(path).into();
        let info = Rc::new(PathInfo {
            redirector,
            name16: utf16(&name).into(),
            name: name.into(),
            key: self.key_id(&folded),
            folded,
        });
        self.path_cache.insert(path.into(), Rc::clone(&info));
        info
    }

    /// The id of a folded path, assigned on first use. When more ids are kept than
    /// `paths` has entries plus a full path cache, the cache is emptied first
    /// ([`Replayer::clear_path_cache`]), which bounds `key_ids`.
    fn key_id(&mut self, folded: &Arc<str>) -> KeyId {
        if let Some(&id) = self.key_ids.get(folded) {
            return id;
        }
        if self.key_ids.len() >= self.paths.len() + cache_max(self.opts.max_files) {
            self.clear_path_cache();
        }
        let id = self.next_key_id;
        self.next_key_id += 1;
        self.key_ids.insert(Arc::clone(folded), id);
        id
    }

    /// Empties the resolved-path cache and forgets the ids of folded paths no longer
    /// used: only `paths` (and the application flush in progress) hold ids once no
    /// cached [`PathInfo`] does, so a path keeps its id as long as any handle of it is
    /// tracked.
    fn clear_path_cache(&mut self) {
        self.path_cache.clear();
        let pending = self.pending_flush.as_ref().map(|p| p.key);
        let paths = &self.paths;
        self.key_ids
            .retain(|_, id| paths.contains_key(id) || pending == Some(*id));
    }

    /// `process` in UTF-16 (the requestor image the callbacks match rules against).
    fn image16(&mut self, process: &str) -> Arc<[u16]> {
        if let Some((name, image)) = &self.last_image {
            if **name == *process {
                return Arc::clone(image);
            }
        }
        let (name, image) = match self.images.get_key_value(process) {
            Some((name, image)) => (Rc::clone(name), Arc::clone(image)),
            None => {
                let (name, image): (Rc<str>, Arc<[u16]>) = (process.into(), utf16(process).into());
                if self.images.len() >= cache_max(self.opts.max_files) {
                    self.images.clear();
                }
                self.images.insert(Rc::clone(&name), Arc::clone(&image));
                (name, image)
            }
        };
        self.last_image = Some((name, Arc::clone(&image)));
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
                    if self.group_models_wanted {
                        self.time_of_day.clear();
                        self.time_of_day.push_str(e.time_of_day.unwrap_or_default());
                    }
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
        let key = p.key;
        self.path_info(e.path).key == key
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
        let key = info.key;
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
    /// `context`: the file object's stream-handle context ([`KnownContext::Unknown`]
    /// during its create, when the post-create may attach one).
    #[allow(clippy::too_many_arguments)]
    fn base_data(
        &mut self,
        pid: u32,
        process: &str,
        fo: FileObjectId,
        file_object_flags: u32,
        context: KnownContext,
        name16: Arc<[u16]>,
        r: FileProvider,
    ) -> SimData {
        let image = self.image16(process);
        // The extra given directly: the struct update syntax would build, then drop, a
        // default `SimFile` (two allocations).
        let mut data = SimData::with_extra(
            fo,
            0,
            SimFile {
                name: name16,
                image,
                provider: r,
                thread: u64::from(pid) + 1,
                context,
            },
        );
        data.fo_flags = file_object_flags;
        data
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
    fn find_fo(&self, pid: u32, key: KeyId, paging: bool) -> Option<FileObjectId> {
        let p = self.paths.get(&key)?;
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
        key: KeyId,
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
