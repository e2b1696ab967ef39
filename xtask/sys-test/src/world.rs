//! The simulated kernel's state, shared by every import implementation: one global
//! [`World`] per process (each scenario runs in a process of its own).
//!
//! Import implementations never panic (a panic inside an `extern "win64"` function
//! aborts the process): they record [`World::violation`]s, which the harness reports
//! once control is back in Rust frames.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: u8 = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

/// A pool block handed to the driver; the memory lives as long as the entry.
pub struct PoolBlock {
    /// The memory (16-byte aligned, as `MEMORY_ALLOCATION_ALIGNMENT`).
    pub memory: Box<[u128]>,
    /// Requested size, bytes.
    pub size: usize,
    /// Pool tag (4 ASCII bytes, little-endian).
    pub tag: u32,
    /// Who allocated it (`ExAllocatePool2`, `SeLocateProcessImageName`, ...).
    pub by: &'static str,
}

/// A Filter Manager context (`FltAllocateContext`).
pub struct Context {
    /// The context memory.
    pub memory: Box<[u128]>,
    /// References (the driver's and Filter Manager's).
    pub refs: i64,
    /// Filter Manager's own references (attached to a stream handle).
    pub fm_refs: i64,
}

/// A `FLT_FILE_NAME_INFORMATION` handed out by `FltGetFileNameInformation`.
pub struct NameInfo {
    /// The structure (stable address).
    pub info: Box<crate::layout::FltFileNameInformation>,
    /// The UTF-16 name the structure's strings point into.
    pub _name: Box<[u16]>,
    /// References.
    pub refs: i64,
}

// SAFETY: the raw pointers inside `info` point into `_name`, which the same value owns
// and moves with it; nothing else aliases them outside the world's lock.
unsafe impl Send for NameInfo {}

/// What a kernel handle refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handle {
    /// A registry key (full path).
    Key(String),
    /// A file object (`ObOpenObjectByPointer`).
    File(usize),
    /// A system thread (`PsCreateSystemThread`): its number, from 1.
    Thread(usize),
}

/// One simulated file object.
#[derive(Clone, Debug, Default)]
pub struct File {
    /// Normalized name, e.g. `\Device\Mup\srv\share\data\a.db`.
    pub name: String,
    /// MUP provider id; `None` on a local volume.
    pub provider: Option<u32>,
    /// IRP_MJ_CREATE reached the file system and succeeded.
    pub opened: bool,
    /// The user's handle is open (false from IRP_MJ_CLEANUP on).
    pub user_handle_open: bool,
    /// Kernel handles open on it (`ObOpenObjectByPointer`).
    pub kernel_handles: u32,
}

/// The registered filter, as captured by `FltRegisterFilter`.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    /// `(major, flags, pre, post)` per operation-table entry.
    pub operations: Vec<(u8, u32, usize, usize)>,
    /// `(type, size, tag)` per context-table entry.
    pub contexts: Vec<(u16, usize, u32)>,
    /// `FilterUnloadCallback`.
    pub unload: usize,
    /// `InstanceSetupCallback`.
    pub instance_setup: usize,
    /// `InstanceQueryTeardownCallback`.
    pub query_teardown: usize,
    /// `InstanceTeardownStartCallback`.
    pub teardown_start: usize,
    /// `InstanceTeardownCompleteCallback`.
    pub teardown_complete: usize,
}

/// The server port, as created by `FltCreateCommunicationPort`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerPort {
    /// The port handle.
    pub handle: usize,
    /// `ConnectNotifyCallback`.
    pub connect: usize,
    /// `DisconnectNotifyCallback`.
    pub disconnect: usize,
    /// `MessageNotifyCallback`.
    pub message: usize,
    /// `MaxConnections`.
    pub max_connections: i32,
}

/// One flush that reached the simulated file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flush {
    /// `"FltFlushBuffers2"`, `"FltFlushBuffers"` or `"ZwFlushBuffersFileEx"`.
    pub routine: &'static str,
    /// The file object.
    pub file: usize,
    /// `FLT_FLUSH_TYPE_*` / `FLUSH_FLAGS_*` as passed.
    pub flags: u32,
}

/// A `KEVENT` initialised by `KeInitializeEvent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `NotificationEvent` (else `SynchronizationEvent`: a satisfied wait clears it).
    pub notification: bool,
    /// Signalled.
    pub signalled: bool,
    /// The pool block holding it (0: not in pool, e.g. on a stack or in the image).
    pub block: usize,
}

/// Bytes of a group-commit coordinator's pool block (driver/src/group.rs `Block`: an
/// `EX_SPIN_LOCK` LONG, padding to 8, two 24-byte `KEVENT`s). The harness tells these
/// blocks from the driver's other pool blocks by this size while DriverEntry runs,
/// to count and fail them like the host fake's `CallSite::AllocateCommitSync`; every
/// run checks the identification (each such block gets exactly its two
/// `KeInitializeEvent`s, and DriverEntry initialises no event elsewhere).
pub const COORDINATOR_BLOCK_SIZE: usize = 56;
/// The call site of the coordinator blocks' allocations (`ExAllocatePool2` or, without
/// it, `ExAllocatePoolWithTag`), as counted and failed by [`World::fail_now`].
pub const COORDINATOR_BLOCK_SITE: &str = "pool block of a group-commit coordinator";

/// A `KSEMAPHORE` initialised by `KeInitializeSemaphore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Semaphore {
    /// Count (the header's `SignalState`).
    pub count: i32,
    /// Limit.
    pub limit: i32,
    /// The pool block holding it (0: not in pool, e.g. in the image's data).
    pub block: usize,
}

/// The state of the thread that runs driver code that the harness keeps per thread:
/// the scenario's thread and each system thread have their own, saved and restored
/// when the processor changes hands (kernel/thread.rs). The fields of [`World`] of the
/// same names are the running thread's.
#[derive(Clone, Debug, Default)]
pub struct ThreadRegs {
    /// [`World::irql`].
    pub irql: u8,
    /// [`World::top_level_irp`].
    pub top_level_irp: usize,
    /// [`World::critical_region`].
    pub critical_region: u32,
    /// [`World::flush_depth`].
    pub flush_depth: u32,
    /// [`World::wait_next`].
    pub wait_next: Option<&'static str>,
    /// [`World::driver_segments`].
    pub driver_segments: Vec<(usize, usize, usize)>,
}

/// Where a system thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRun {
    /// Created by `PsCreateSystemThread`, not given the processor yet.
    Created,
    /// Running (it has the processor, or gave it to a thread it waits for).
    Running,
    /// Blocked in `KeWaitForSingleObject` on the semaphore at this address.
    Waiting(usize),
    /// Ended by `PsTerminateSystemThread` with this status.
    Terminated(i32),
}

/// A system thread the driver created (`PsCreateSystemThread`).
#[derive(Clone, Debug)]
pub struct SystemThread {
    /// `StartRoutine`.
    pub start: usize,
    /// `StartContext`.
    pub context: usize,
    /// Where it is.
    pub run: ThreadRun,
    /// Its per-thread state while another thread has the processor.
    pub regs: ThreadRegs,
    /// The thread that gave it the processor last, to which it gives it back when it
    /// blocks or ends.
    pub resume: usize,
}

/// Lifecycle of the filter registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterState {
    /// Before `FltRegisterFilter`.
    #[default]
    None,
    /// Registered, not filtering.
    Registered,
    /// `FltStartFiltering` succeeded.
    Filtering,
    /// `FltUnregisterFilter` returned.
    Unregistered,
}

/// The simulated kernel.
#[derive(Default)]
pub struct World {
    /// The IRQL the harness simulates on the thread running driver code (per thread:
    /// [`ThreadRegs`]).
    pub irql: u8,
    /// The mapped image `[start, end)`: every callback the driver registers must lie
    /// inside it.
    pub image: (usize, usize),
    /// `IoGetTopLevelIrp()` on the thread running driver code.
    pub top_level_irp: usize,
    /// Import calls in order (routine names).
    pub calls: Vec<&'static str>,
    /// Import calls in order with their key argument, file and IRQL, for the
    /// comparison of the call sequence with the host fake's
    /// (`flushguard_tests::fake::Fake::call_log`).
    pub sequence: Vec<flushguard_tests::fake::FmCall>,
    /// Violations, in order.
    pub violations: Vec<String>,
    /// `DbgPrintEx` output.
    pub debug_output: Vec<String>,
    /// Live pool blocks by address.
    pub pool: HashMap<usize, PoolBlock>,
    /// Pool allocations by tag: (allocations, frees, bytes allocated).
    pub pool_by_tag: BTreeMap<u32, (u64, u64, u64)>,
    /// Open kernel handles.
    pub handles: HashMap<usize, Handle>,
    /// Next handle value.
    pub next_handle: usize,
    /// Every opaque object the harness handed out (filter, volume, instance, ports,
    /// process) keeps its address alive here.
    pub objects: Vec<Box<[u64; 8]>>,
    /// The filter handle returned by `FltRegisterFilter`.
    pub filter: usize,
    /// Registration lifecycle.
    pub filter_state: FilterState,
    /// The registration tables.
    pub registration: Registration,
    /// Live security descriptors from `FltBuildDefaultSecurityDescriptor`.
    pub security_descriptors: HashMap<usize, Box<[u128; 4]>>,
    /// The server port, while open.
    pub server_port: Option<ServerPort>,
    /// The server port's `DisconnectNotifyCallback` (Filter Manager keeps it for the
    /// client ports after the server port closes).
    pub server_port_disconnect: usize,
    /// The server port's `MessageNotifyCallback` (client ports keep using it).
    pub server_port_message: usize,
    /// Attached instances `(volume, instance)`.
    pub instances: Vec<(usize, usize)>,
    /// The server port existed once (for order checks).
    pub server_port_created: bool,
    /// Client ports handed to the connect callback and not yet closed.
    pub client_ports: HashMap<usize, usize>,
    /// Filter Manager contexts by address.
    pub contexts: HashMap<usize, Context>,
    /// Stream-handle contexts by (instance, file object).
    pub stream_handle_contexts: HashMap<(usize, usize), usize>,
    /// Name information by address.
    pub names: HashMap<usize, NameInfo>,
    /// Simulated file objects by address.
    pub files: HashMap<usize, File>,
    /// Volumes: address -> `FILE_DEVICE_*`.
    pub volumes: HashMap<usize, u32>,
    /// Operations (callback data addresses) marked dirty by `FltSetCallbackDataDirty`.
    pub dirty: Vec<usize>,
    /// Synchronous operations (callback data addresses).
    pub synchronous: Vec<usize>,
    /// Flushes issued.
    pub flushes: Vec<Flush>,
    /// Depth of flushes in progress (recursion check).
    pub flush_depth: u32,
    /// The service key (DriverEntry's RegistryPath).
    pub service_key: String,
    /// `<service key>\Parameters` exists.
    pub parameters_key: bool,
    /// `Parameters\Policy` (REG_BINARY).
    pub policy_value: Option<Vec<u8>>,
    /// `FltGetRoutineAddress("FltFlushBuffers2")` resolves.
    pub has_flush2: bool,
    /// `MmGetSystemRoutineAddress("ExAllocatePool2")` resolves (Windows 10 2004+).
    pub has_pool2: bool,
    /// Deferred safe post-operation callbacks `(callback, data, objects, context, flags)`.
    pub deferred: Vec<(usize, usize, usize, usize, u32)>,
    /// Teardown order as observed (routine names).
    pub teardown: Vec<&'static str>,
    /// `ZwClose` calls that closed a file handle (`ObOpenObjectByPointer`).
    pub file_handle_closes: u64,
    /// Calls into the driver in progress, outermost first: (stack pointer at the call,
    /// bytes of driver frames below the enclosing calls, stack pointer at the driver's
    /// latest import call in this segment).
    pub driver_segments: Vec<(usize, usize, usize)>,
    /// The driver's own frames, in bytes, at its deepest import call: the sum over
    /// nested calls into the driver (a flush re-entering the pre-write) of the stack
    /// between each call into the driver and the import it made, harness frames
    /// excluded. A lower bound of its stack use (leaf frames that call no import are
    /// not seen).
    pub deepest_import_call: usize,
    /// The injected failure is one only the binary has (`compare::BINARY_ONLY_SITES`):
    /// no comparison with the host fake, and DriverEntry must fail cleanly.
    pub binary_only_injection: bool,
    /// Failure injection: the `n`-th call (from 0) of the call site named like the
    /// routine fails with the status.
    pub inject: Option<(&'static str, u64, i32)>,
    /// Calls per injectable call site.
    pub site_counts: HashMap<&'static str, u64>,
    /// The injected failure happened.
    pub injected: bool,
    /// Spin locks by address: (held exclusive, shared holders).
    pub spin_locks: HashMap<usize, (bool, u32)>,
    /// `KeEnterCriticalRegion` depth.
    pub critical_region: u32,
    /// Initialized push locks by address: held.
    pub push_locks: HashMap<usize, bool>,
    /// Post-operations pended (returned `FLT_POSTOP_MORE_PROCESSING_REQUIRED`) and not
    /// completed yet (callback data addresses).
    pub pended: Vec<usize>,
    /// Operations completed with `FltCompletePendedPostOperation` (callback data).
    pub completed_pended: Vec<usize>,
    /// Operations whose post-operation callback is running (callback data), on any
    /// thread: completing one of these is completing it before its post-operation
    /// returned.
    pub in_post: Vec<usize>,
    /// Initialised `KSEMAPHORE`s by address.
    pub semaphores: HashMap<usize, Semaphore>,
    /// Semaphores whose pool block was freed (a later use is a use after free).
    pub freed_semaphores: std::collections::HashSet<usize>,
    /// `KeReleaseSemaphore` calls made inside a post-operation callback on the
    /// scenario's thread: the pending of a write to the system threads, compared with
    /// the host fake's `CallSite::QueueDeferredIoWorkItem` count.
    pub pend_releases: u64,
    /// System threads (`PsCreateSystemThread`); thread `n` is `threads[n - 1]`.
    pub threads: Vec<SystemThread>,
    /// The thread that has the processor: 0 the scenario's thread, `n` system thread
    /// `n` (kernel/thread.rs).
    pub running: usize,
    /// The scenario thread's per-thread state while a system thread runs.
    pub main_regs: ThreadRegs,
    /// The deepest painted-stack high-water mark of a system thread, bytes (measured
    /// when it ends).
    pub system_thread_stack: usize,
    /// The top of each system thread's painted stack: (thread, address).
    pub stack_tops: Vec<(usize, usize)>,
    /// Findings reported without failing the run (deviations from DESIGN the binary
    /// shows, for the maintainers to decide).
    pub findings: std::collections::BTreeSet<String>,
    /// Connections made through the port.
    pub connections: u64,
    /// Messages answered by the port.
    pub messages: u64,
    /// DriverEntry is running.
    pub in_driver_entry: bool,
    /// Initialised `KEVENT`s by address.
    pub events: HashMap<usize, Event>,
    /// Events whose pool block was freed (a later use is a use after free).
    pub freed_events: std::collections::HashSet<usize>,
    /// Group-commit coordinator blocks allocated in DriverEntry (identified by
    /// [`COORDINATOR_BLOCK_SIZE`]): (address, events initialised in it).
    pub coordinator_blocks: Vec<(usize, u32)>,
    /// `KeDelayExecutionThread` intervals (100 ns units, negative = relative).
    pub delays: Vec<i64>,
    /// The latest call was `KeSetEvent` / `KeReleaseSemaphore` with `Wait = TRUE`
    /// (the routine): the next must be a wait.
    pub wait_next: Option<&'static str>,
    /// Waits without a timeout on an event nobody can set (one thread).
    pub unsatisfiable_waits: u32,
}

static WORLD: LazyLock<Mutex<World>> = LazyLock::new(|| Mutex::new(World::default()));

/// The world, locked. Never held while the driver runs.
pub fn world() -> MutexGuard<'static, World> {
    WORLD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl World {
    /// Records a violation.
    pub fn violation(&mut self, message: impl Into<String>) {
        self.violations.push(message.into());
    }

    /// Records a call of `routine` and checks its maximum IRQL (DDI page of each
    /// routine).
    pub fn call(&mut self, routine: &'static str, max_irql: u8) {
        if let Some(before) = self.wait_next.take() {
            if routine != "KeWaitForSingleObject" {
                self.violation(format!(
                    "{before}(Wait = TRUE) not followed at once by a KeWaitXxx call ({routine} \
                     came next)"
                ));
            }
        }
        self.calls.push(routine);
        self.sequence.push(flushguard_tests::fake::FmCall {
            routine,
            arg: None,
            file: None,
            irql: self.irql,
        });
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        if let Some(segment) = self.driver_segments.last_mut() {
            segment.2 = sp;
            let depth = segment.1 + segment.0.saturating_sub(sp);
            self.deepest_import_call = self.deepest_import_call.max(depth);
        }
        if self.irql > max_irql {
            let irql = self.irql;
            self.violation(format!(
                "{routine} called at IRQL {irql} (its maximum is {max_irql})"
            ));
        }
    }

    /// Sets the key argument and the file of the latest call in [`World::sequence`].
    pub fn call_arguments(&mut self, arg: Option<u32>, file: usize) {
        if let Some(last) = self.sequence.last_mut() {
            last.arg = arg;
            last.file = Some(file as u64);
        }
    }

    /// Exchanges the running thread's per-thread state with `regs`.
    pub fn swap_regs(&mut self, regs: &mut ThreadRegs) {
        std::mem::swap(&mut self.irql, &mut regs.irql);
        std::mem::swap(&mut self.top_level_irp, &mut regs.top_level_irp);
        std::mem::swap(&mut self.critical_region, &mut regs.critical_region);
        std::mem::swap(&mut self.flush_depth, &mut regs.flush_depth);
        std::mem::swap(&mut self.wait_next, &mut regs.wait_next);
        std::mem::swap(&mut self.driver_segments, &mut regs.driver_segments);
    }

    /// Counts a call of the injectable call site `site`; returns the status to fail
    /// with if this is the call the scenario injects a failure into.
    pub fn fail_now(&mut self, site: &'static str) -> Option<i32> {
        let n = self.site_counts.entry(site).or_insert(0);
        let this = *n;
        *n += 1;
        match self.inject {
            Some((s, nth, status)) if s == site && nth == this => {
                self.inject = None;
                self.injected = true;
                Some(status)
            }
            _ => None,
        }
    }

    /// A fresh opaque object address (16 zeroed u32 words, stable).
    pub fn object(&mut self) -> usize {
        let object = Box::new([0u64; 8]);
        let address = object.as_ptr() as usize;
        self.objects.push(object);
        address
    }

    /// A fresh kernel handle for `what`.
    pub fn open_handle(&mut self, what: Handle) -> usize {
        self.next_handle += 4;
        let handle = 0xFFFF_FFFF_8000_0000 + self.next_handle;
        self.handles.insert(handle, what);
        handle
    }

    /// References the driver holds right now (contexts beyond Filter Manager's own,
    /// name information), for the per-callback balance check.
    pub fn driver_references(&self) -> i64 {
        let contexts: i64 = self.contexts.values().map(|c| c.refs - c.fm_refs).sum();
        let names: i64 = self.names.values().map(|n| n.refs).sum();
        contexts + names
    }

    /// Allocates a pool block of `size` bytes with `tag`; returns its address.
    pub fn allocate(&mut self, size: usize, tag: u32, by: &'static str) -> usize {
        let memory = vec![0u128; size.div_ceil(16).max(1)].into_boxed_slice();
        let address = memory.as_ptr() as usize;
        self.pool.insert(
            address,
            PoolBlock {
                memory,
                size,
                tag,
                by,
            },
        );
        let entry = self.pool_by_tag.entry(tag).or_default();
        entry.0 += 1;
        entry.2 += size as u64;
        address
    }

    /// Frees a pool block; `tag` is checked when given.
    pub fn free(&mut self, address: usize, tag: Option<u32>, routine: &'static str) {
        match self.pool.remove(&address) {
            Some(block) => {
                if let Some(tag) = tag {
                    if tag != block.tag {
                        self.violation(format!(
                            "{routine}(0x{address:X}) with tag {} but the block was allocated with tag {}",
                            tag_text(tag),
                            tag_text(block.tag)
                        ));
                    }
                }
                self.pool_by_tag.entry(block.tag).or_default().1 += 1;
                // The events inside die with the block: a later use is a use after free.
                let dead: Vec<usize> = self
                    .events
                    .iter()
                    .filter(|(_, event)| event.block == address)
                    .map(|(&event, _)| event)
                    .collect();
                for event in dead {
                    self.events.remove(&event);
                    self.freed_events.insert(event);
                }
                let dead: Vec<usize> = self
                    .semaphores
                    .iter()
                    .filter(|(_, semaphore)| semaphore.block == address)
                    .map(|(&semaphore, _)| semaphore)
                    .collect();
                for semaphore in dead {
                    self.semaphores.remove(&semaphore);
                    self.freed_semaphores.insert(semaphore);
                }
                if block.by == "SeLocateProcessImageName" {
                    // The fake's `release_process_image_name`.
                    self.sequence.push(flushguard_tests::fake::FmCall {
                        routine: "ExFreePool(image name)",
                        arg: None,
                        file: None,
                        irql: self.irql,
                    });
                }
                drop(block.memory);
            }
            None => self.violation(format!(
                "{routine}(0x{address:X}): not a live pool block (double free or foreign pointer)"
            )),
        }
    }

    /// The live pool block that holds `[address, address + size)`, if any.
    pub fn pool_block_of(&self, address: usize, size: usize) -> Option<usize> {
        self.pool
            .iter()
            .find(|(&start, block)| {
                address >= start && address.saturating_add(size) <= start + block.size
            })
            .map(|(&start, _)| start)
    }

    /// Counts an allocation of `size` bytes at the group-commit coordinator blocks'
    /// call site if it is one (DriverEntry, [`COORDINATOR_BLOCK_SIZE`]); true if it must
    /// fail (failure injection).
    pub fn coordinator_block_fails(&mut self, size: usize) -> bool {
        self.in_driver_entry
            && size == COORDINATOR_BLOCK_SIZE
            && self.fail_now(COORDINATOR_BLOCK_SITE).is_some()
    }

    /// Records a successful pool allocation for the coordinator-block identification.
    pub fn allocated(&mut self, address: usize, size: usize) {
        if self.in_driver_entry && size == COORDINATOR_BLOCK_SIZE {
            self.coordinator_blocks.push((address, 0));
        }
    }

    /// Everything still allocated, open or referenced: the leak report after unload.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let mut blocks: Vec<_> = self.pool.iter().collect();
        blocks.sort_by_key(|(address, _)| **address);
        for (address, block) in blocks {
            leaks.push(format!(
                "pool block 0x{address:X}: {} bytes, tag {}, from {}",
                block.size,
                tag_text(block.tag),
                block.by
            ));
        }
        for (handle, what) in &self.handles {
            leaks.push(format!("handle 0x{handle:X} not closed ({what:?})"));
        }
        if !self.security_descriptors.is_empty() {
            leaks.push(format!(
                "{} port security descriptor(s) not freed (FltFreeSecurityDescriptor)",
                self.security_descriptors.len()
            ));
        }
        for (n, thread) in self.threads.iter().enumerate() {
            if !matches!(thread.run, ThreadRun::Terminated(_)) {
                leaks.push(format!(
                    "system thread {} not terminated ({:?}; PsTerminateSystemThread)",
                    n + 1,
                    thread.run
                ));
            }
        }
        if !self.pended.is_empty() {
            leaks.push(format!(
                "{} pended post-operation(s) never completed (FltCompletePendedPostOperation)",
                self.pended.len()
            ));
        }
        if !self.push_locks.is_empty() {
            leaks.push(format!(
                "{} push lock(s) not deleted (FltDeletePushLock)",
                self.push_locks.len()
            ));
        }
        if self.spin_locks.values().any(|&(e, s)| e || s > 0) {
            leaks.push("a spin lock is still held".to_string());
        }
        if self.critical_region != 0 {
            leaks.push(format!(
                "{} KeEnterCriticalRegion without KeLeaveCriticalRegion",
                self.critical_region
            ));
        }
        if self.server_port.is_some() {
            leaks.push("server port not closed (FltCloseCommunicationPort)".to_string());
        }
        for port in self.client_ports.keys() {
            leaks.push(format!("client port 0x{port:X} not closed"));
        }
        for (address, context) in &self.contexts {
            leaks.push(format!(
                "context 0x{address:X}: {} reference(s) left",
                context.refs
            ));
        }
        for (address, name) in &self.names {
            leaks.push(format!(
                "file name information 0x{address:X}: {} reference(s) left",
                name.refs
            ));
        }
        if self.filter_state != FilterState::Unregistered && self.filter_state != FilterState::None
        {
            leaks.push("filter still registered (FltUnregisterFilter not called)".to_string());
        }
        leaks
    }
}

/// A pool tag as its four characters.
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}
