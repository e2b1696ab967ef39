//! `impl FilterManager for Fake`: every kernel service the callback logic uses, with
//! the checks Filter Verifier makes.

use super::*;

impl FilterManager for Fake {
    type Data = FakeData;
    type NameInfo = FakeName;
    type ImageName = FakeImage;
    type Context = FakeContext;
    type KernelHandle = FakeHandle;
    type CommitSync = FakeCommitSync;

    fn current_irql(&self) -> Irql {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("KeGetCurrentIrql", None, None);
        irql()
    }
    fn top_level_irp(&self) -> TopLevelIrp {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("IoGetTopLevelIrp", None, None);
        TOP_LEVEL.with(|c| c.get())
    }
    fn policy_locks(&self) -> &'static dyn flushguard_engine::locks::PolicyLocks {
        &FAKE_LOCKS
    }
    fn current_thread_id(&self) -> u64 {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("PsGetCurrentThreadId", None, None);
        thread_id()
    }
    fn now_us(&self) -> u64 {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("KeQueryInterruptTimePrecise", None, None);
        self.inner.clock_us.fetch_add(7, Ordering::Relaxed)
    }
    fn system_time(&self) -> u64 {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("KeQuerySystemTimePrecise", None, None);
        crate::harness::fake_clock()
    }
    fn all_apcs_disabled(&self) -> bool {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("KeAreAllApcsDisabled", None, None);
        self.check_irql(Irql::DISPATCH_LEVEL, "KeAreAllApcsDisabled");
        all_apcs_disabled()
    }
    fn apcs_disabled(&self) -> bool {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("KeAreApcsDisabled", None, None);
        self.check_irql(Irql::DISPATCH_LEVEL, "KeAreApcsDisabled");
        all_apcs_disabled() || in_critical_region()
    }
    fn is_operation_synchronous(&self, data: &FakeData) -> bool {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltIsOperationSynchronous", None, None);
        self.check_irql(Irql::DISPATCH_LEVEL, "FltIsOperationSynchronous");
        (data.synchronous || data.fo_flags & FO_SYNCHRONOUS_IO != 0) && !data.fast_io
    }
    fn stream_key(&self, data: &FakeData) -> usize {
        let _gate = crate::alloc_gate::fm_scope();
        // Every file object opened on one name is one stream.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Some(f) = self.world().files.get(&data.file) {
            f.name.to_lowercase().hash(&mut h);
        }
        h.finish() as usize
    }
    fn new_commit_sync(&self) -> Option<FakeCommitSync> {
        let _gate = crate::alloc_gate::fm_scope();
        self.check_irql(Irql::PASSIVE_LEVEL, "new_commit_sync (ExAllocatePool2)");
        self.count_and_fail(CallSite::AllocateCommitSync).ok()?;
        Some(FakeCommitSync::new(self.clone()))
    }
    fn set_callback_data_dirty(&self, data: &mut FakeData) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltSetCallbackDataDirty", None, None);
        self.check_irql(Irql::DISPATCH_LEVEL, "FltSetCallbackDataDirty");
        data.dirty = true;
    }

    fn get_file_name_information(&self, data: &FakeData) -> Result<FakeName, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltGetFileNameInformation", None, None);
        self.check_irql(Irql::APC_LEVEL, "FltGetFileNameInformation");
        if data.irp_flags & IRP_PAGING_IO != 0 {
            self.violation("FltGetFileNameInformation during paging I/O");
        }
        self.count_and_fail(CallSite::GetFileNameInformation)?;
        let name = self
            .world()
            .files
            .get(&data.file)
            .map(|f| f.name.encode_utf16().collect());
        let name = name.ok_or(NtStatus::FILE_CLOSED)?;
        Ok(FakeName {
            id: self.acquire(RefKind::NameInfo),
            name,
        })
    }
    fn file_name<'a>(&self, name: &'a FakeName) -> &'a [u16] {
        let _gate = crate::alloc_gate::fm_scope();
        &name.name
    }
    fn release_file_name_information(&self, owned: FakeName) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltReleaseFileNameInformation", None, None);
        // Freed inside the Filter Manager scope (a parameter would drop after it).
        let name = owned;
        self.check_irql(Irql::APC_LEVEL, "FltReleaseFileNameInformation");
        self.release(name.id, RefKind::NameInfo, "FltReleaseFileNameInformation");
    }

    fn mup_provider_id_from_name(&self, device_name: &str) -> Result<u32, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FsRtlMupGetProviderIdFromName", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "FsRtlMupGetProviderIdFromName");
        self.inner
            .provider_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(device_name))
            .map(|(_, id)| *id)
            .ok_or(flushguard_engine::callbacks::STATUS_OBJECT_NAME_NOT_FOUND)
    }
    fn mup_provider_id_of_file(&self, data: &FakeData) -> Result<Option<u32>, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log(
            "FsRtlMupGetProviderInfoFromFileObject",
            None,
            Some(data.file),
        );
        self.check_irql(Irql::PASSIVE_LEVEL, "FsRtlMupGetProviderInfoFromFileObject");
        self.count_and_fail(CallSite::MupProviderOfFile)?;
        match self.world().files.get(&data.file) {
            Some(f) if f.provider.is_some() && !f.opened => {
                // "not a fully opened remote file system file object"
                Err(flushguard_engine::callbacks::STATUS_OBJECT_NAME_NOT_FOUND)
            }
            Some(f) => Ok(f.provider),
            None => Err(NtStatus::FILE_CLOSED),
        }
    }
    fn process_image_name(&self, data: &FakeData) -> Result<FakeImage, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("SeLocateProcessImageName", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "SeLocateProcessImageName");
        self.count_and_fail(CallSite::ProcessImageName)?;
        let name = self
            .world()
            .files
            .get(&data.file)
            .map(|f| f.process.encode_utf16().collect());
        let name = name.ok_or(STATUS_NOT_FOUND)?;
        Ok(FakeImage {
            id: self.acquire(RefKind::ImageName),
            name,
        })
    }
    fn image_name<'a>(&self, image: &'a FakeImage) -> &'a [u16] {
        let _gate = crate::alloc_gate::fm_scope();
        &image.name
    }
    fn release_process_image_name(&self, owned: FakeImage) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("ExFreePool(image name)", None, None);
        // Freed inside the Filter Manager scope (a parameter would drop after it).
        let image = owned;
        self.check_irql(Irql::PASSIVE_LEVEL, "ExFreePool(image name)");
        self.release(image.id, RefKind::ImageName, "ExFreePool(image name)");
    }

    fn allocate_stream_handle_context(&self, init: StreamContext) -> Result<FakeContext, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltAllocateContext", None, None);
        self.check_irql(Irql::APC_LEVEL, "FltAllocateContext");
        self.count_and_fail(CallSite::AllocateContext)?;
        Ok(FakeContext {
            id: self.acquire(RefKind::Context),
            ctx: Arc::new(init),
        })
    }
    fn set_stream_handle_context(
        &self,
        data: &FakeData,
        ctx: &FakeContext,
    ) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltSetStreamHandleContext", None, Some(data.file));
        self.check_irql(Irql::APC_LEVEL, "FltSetStreamHandleContext");
        self.count_and_fail(CallSite::SetStreamHandleContext)?;
        let mut w = self.world();
        let file = w.files.get_mut(&data.file).ok_or(NtStatus::FILE_CLOSED)?;
        if file.context.is_some() {
            return Err(STATUS_FLT_CONTEXT_ALREADY_DEFINED);
        }
        file.context = Some(ctx.ctx.clone());
        Ok(())
    }
    fn get_stream_handle_context(&self, data: &FakeData) -> Result<Option<FakeContext>, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltGetStreamHandleContext", None, Some(data.file));
        self.check_irql(Irql::DISPATCH_LEVEL, "FltGetStreamHandleContext");
        self.count_and_fail(CallSite::GetStreamHandleContext)?;
        let ctx = self
            .world()
            .files
            .get(&data.file)
            .and_then(|f| f.context.clone());
        Ok(ctx.map(|ctx| FakeContext {
            id: self.acquire(RefKind::Context),
            ctx,
        }))
    }
    fn release_context(&self, owned: FakeContext) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltReleaseContext", None, None);
        // Freed inside the Filter Manager scope (a parameter would drop after it).
        let ctx = owned;
        self.check_irql(Irql::DISPATCH_LEVEL, "FltReleaseContext");
        self.release(ctx.id, RefKind::Context, "FltReleaseContext");
    }

    fn queue_deferred_flush(&self, data: &mut FakeData, ctx: CompletionContext) -> bool {
        let _gate = crate::alloc_gate::fm_scope();
        self.check_irql(
            Irql::DISPATCH_LEVEL,
            "queue_deferred_flush (KeReleaseSemaphore)",
        );
        // The driver queues to its own worker threads (driver/src/worker.rs): IRP-based
        // operations only, never paging I/O; refused with a top-level IRP on this
        // thread (as FltQueueDeferredIoWorkItem would: STATUS_FLT_NOT_SAFE_TO_POST_
        // OPERATION) or once the filter is going (the worker is stopping). A queued
        // write is announced to the workers with KeReleaseSemaphore.
        if data.irp_flags & IRP_PAGING_IO != 0 {
            self.violation("a paging write pended to the flush worker");
            return false;
        }
        if data.fast_io {
            self.violation("a fast I/O (non-IRP) write pended to the flush worker");
            return false;
        }
        if TOP_LEVEL.with(|c| c.get()) != TopLevelIrp::None
            || self.inner.unregistered.load(Ordering::Acquire)
            || self
                .count_and_fail(CallSite::QueueDeferredIoWorkItem)
                .is_err()
        {
            return false;
        }
        // The driver releases its semaphore holding the queue's EX_SPIN_LOCK, at
        // DISPATCH_LEVEL (driver/src/worker.rs, `push`).
        let before = irql();
        set_irql(Irql::DISPATCH_LEVEL);
        self.log("KeReleaseSemaphore", None, None);
        set_irql(before);
        self.world().pended += 1;
        self.push_pending(Pending {
            data: data.clone(),
            ctx: Some(ctx),
            safe_callback: true,
        });
        DEFERRED_BY_THIS_THREAD.with(|c| c.set(c.get() + 1));
        true
    }

    fn has_flt_flush_buffers2(&self) -> bool {
        let _gate = crate::alloc_gate::fm_scope();
        self.inner.has_flush2
    }
    fn flt_flush_buffers2(&self, data: &FakeData, flush_type: u32) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltFlushBuffers2", Some(flush_type), Some(data.file));
        let start = tick();
        let _depth = self.enter_flush("FltFlushBuffers2");
        self.flush_checks("FltFlushBuffers2", data.file, Some(data), flush_type);
        if !self.inner.has_flush2 {
            self.violation("FltFlushBuffers2 called although it did not resolve");
        }
        let result = self.count_and_fail(CallSite::FltFlushBuffers2);
        self.run_during_flush();
        if result.is_ok() {
            self.simulate_paging_writes(data.file);
        }
        self.record_span(data.file, start, result.is_ok());
        result
    }
    fn flt_flush_buffers(&self, data: &FakeData) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltFlushBuffers", None, Some(data.file));
        let start = tick();
        let _depth = self.enter_flush("FltFlushBuffers");
        self.flush_checks("FltFlushBuffers", data.file, Some(data), 0);
        let result = self.count_and_fail(CallSite::FltFlushBuffers);
        self.run_during_flush();
        if result.is_ok() {
            self.simulate_paging_writes(data.file);
        }
        self.record_span(data.file, start, result.is_ok());
        result
    }
    fn open_flush_handle(&self, data: &FakeData, name: &[u16]) -> Result<FakeHandle, NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltCreateFileEx2", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "FltCreateFileEx2");
        self.count_and_fail(CallSite::OpenKernelHandle)?;
        let expected = self
            .world()
            .files
            .get(&data.file)
            .map(|f| f.name.encode_utf16().collect::<Vec<u16>>())
            .ok_or(NtStatus::FILE_CLOSED)?;
        if name != expected.as_slice() {
            self.violation("FltCreateFileEx2 of a name other than the file's normalized name");
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        // A file object of FlushGuard's own, opened below our instance: the flush goes
        // to the same file, its cleanup and close never touch the application's.
        Ok(FakeHandle {
            id: self.acquire(RefKind::KernelHandle),
            file: data.file,
        })
    }
    fn zw_flush_buffers_file_ex(&self, handle: &FakeHandle, flags: u32) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("ZwFlushBuffersFileEx", Some(flags), Some(handle.file));
        let _depth = self.enter_flush("ZwFlushBuffersFileEx");
        self.flush_checks("ZwFlushBuffersFileEx", handle.file, None, flags);
        self.check_apcs_enabled("ZwFlushBuffersFileEx");
        if !self.world().outstanding.contains_key(&handle.id) {
            self.violation("ZwFlushBuffersFileEx on a closed handle");
        }
        // The request enters the stack at the top: our own pre-flush sees it.
        if let Some(filter) = self.filter() {
            let mut data = FakeData::new(handle.file, IRP_MJ_FLUSH_BUFFERS);
            data.kernel = true;
            data.minor = match flags {
                0x1 => 2, // FLUSH_FLAGS_FILE_DATA_ONLY -> IRP_MN_FLUSH_DATA_ONLY
                0x2 => 3, // FLUSH_FLAGS_NO_SYNC -> IRP_MN_FLUSH_NO_SYNC
                0x4 => 4, // FLUSH_FLAGS_FILE_DATA_SYNC_ONLY -> IRP_MN_FLUSH_DATA_SYNC_ONLY
                _ => 0,
            };
            let before = data.clone();
            let guard = self.enter_callback("pre-flush (our ZwFlushBuffersFileEx)");
            let pre = crate::alloc_gate::engine(|| filter.pre_flush(&mut data));
            drop(guard);
            if pre.status() != PreOpStatus::SuccessNoCallback || data != before {
                self.violation(format!(
                    "our own flush was not passed through untouched: {:?}, dirty {}",
                    pre.status(),
                    data.dirty
                ));
            }
        }
        let result = self.count_and_fail(CallSite::ZwFlushBuffersFileEx);
        self.run_during_flush();
        result?;
        self.simulate_paging_writes(handle.file);
        Ok(())
    }
    fn close_kernel_handle(&self, owned: FakeHandle) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltClose", None, None);
        // Freed inside the Filter Manager scope (a parameter would drop after it).
        let handle = owned;
        self.check_irql(Irql::PASSIVE_LEVEL, "FltClose");
        self.release(handle.id, RefKind::KernelHandle, "FltClose");
        self.count_and_fail(CallSite::CloseKernelHandle)
    }

    fn read_policy_value(&self, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("ZwOpenKey", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "ZwQueryValueKey");
        self.count_and_fail(CallSite::ReadPolicy)?;
        out.clear();
        match &self.world().registry {
            Some(v) => {
                out.extend_from_slice(v);
                Ok(())
            }
            None => Err(flushguard_engine::callbacks::STATUS_OBJECT_NAME_NOT_FOUND),
        }
    }
    fn write_policy_value(&self, value: &[u8]) -> Result<(), NtStatus> {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("ZwCreateKey", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "ZwSetValueKey");
        if SERIALIZING.with(|c| c.get()) {
            count_lock(|c| c.registry_writes_serialized += 1);
        }
        self.count_and_fail(CallSite::WritePolicy)?;
        self.world().registry = Some(value.to_vec());
        Ok(())
    }

    fn close_server_port(&self) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltCloseCommunicationPort", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "FltCloseCommunicationPort");
        let mut w = self.world();
        w.port_closed = true;
        w.events.push("close_server_port");
    }
    fn unregister_filter(&self) {
        let _gate = crate::alloc_gate::fm_scope();
        self.log("FltUnregisterFilter", None, None);
        self.check_irql(Irql::PASSIVE_LEVEL, "FltUnregisterFilter");
        if !self.world().port_closed {
            self.violation("FltUnregisterFilter called before FltCloseCommunicationPort");
        }
        self.world().events.push("unregister_filter");
        // No new operations; wait for callbacks in progress (rundown).
        self.inner.stop_new.store(true, Ordering::Release);
        while self.inner.active_callbacks.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
        // Drain: in-flight post-operations get FLTFL_POST_OPERATION_DRAINING.
        if let Some(filter) = self.filter() {
            while let Some(mut p) = self.pop_pending() {
                if p.safe_callback {
                    // A queued deferred-I/O work item is not drained: the system
                    // worker runs it, and instance teardown waits for it.
                    self.run_flush_worker(&filter, &mut p);
                    continue;
                }
                set_irql(Irql::PASSIVE_LEVEL);
                let flags = PostOpFlags(FLTFL_POST_OPERATION_DRAINING);
                let _g = self.enter_callback("draining post-operation");
                crate::harness::dispatch_post(&filter, &mut p.data, p.ctx, flags);
            }
        }
        if self.world().pended != 0 {
            self.violation("unload finished with post-operations still pended");
        }
        // Instance teardown frees the Filter Manager's context references.
        for f in self.world().files.values_mut() {
            f.context = None;
        }
        self.inner.unregistered.store(true, Ordering::Release);
    }
}
