//! The replay of each trace operation through the driver's callbacks: create, write,
//! flush, cleanup, close and rename.

use super::*;

impl<'f> Replayer<'f> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
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
        let (key, name) = (info.key, &*info.name);
        let name16 = Arc::clone(&info.name16);
        let mut data = self.base_data(
            pid,
            process,
            fo,
            0,
            KnownContext::Unknown,
            Arc::clone(&name16),
            redirector,
        );
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
        let context = context.ok().flatten();
        let has_context = context.is_some();
        let slot = match &context {
            Some(ctx) => ctx.rule().1,
            _ => self.lookup_slot(name, redirector, process),
        };
        let state = FoState {
            key,
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
            context,
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
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
        let (key, name) = (info.key, &*info.name);
        let paging = d.irp_flags & IRP_PAGING_IO != 0;
        let (fo, view) = self.handle_of(pid, key, paging);
        let (st, name16, context) = HandleView::split(view, &info.name16);
        let fo_flags = st.as_ref().map_or(0, |s| s.fo_flags);
        let mut data = self.base_data(pid, process, fo, fo_flags, context, name16, redirector);
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
        let group_slot = st.as_ref().filter(|_| governed).map(|s| s.slot);
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
        if let Some(slot) = group_slot {
            self.model_group_write(slot, &info.folded);
        }
    }

    /// An application flush: the pre-flush now, the post-flush when its cache
    /// write-back rows are over ([`Replayer::finish_flush`]). A flush on a handle opened
    /// before the capture is replayed too ([`Replayer::handle_of`]): when it succeeds it
    /// empties the file's cache like any other.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn flush(
        &mut self,
        pid: u32,
        process: &str,
        path: &str,
        info: &PathInfo,
        redirector: FileProvider,
        result: OpResult,
        status: NtStatus,
    ) {
        let (key, name) = (info.key, &*info.name);
        let (fo, view) = self.handle_of(pid, key, false);
        let (st, name16, context) = HandleView::split(view, &info.name16);
        let provider = st.as_ref().map_or(redirector, |s| s.redirector);
        let fo_flags = st.as_ref().map_or(0, |s| s.fo_flags);
        let mut data = self.base_data(pid, process, fo, fo_flags, context, name16, provider);
        data.major = IRP_MJ_FLUSH_BUFFERS;
        self.begin(pid, Irql::PASSIVE_LEVEL, false);
        let pre = self.filter.pre_flush(&mut data);
        let upgraded = data.minor != 0;
        data.status = status;
        let file = self.row_of(fo, st.is_some(), path, name, redirector, process);
        self.pending_flush = Some(PendingFlush {
            pid,
            key: info.key,
            file,
            data,
            ctx: pre.completion_context(),
            result,
            upgraded,
        });
    }

    /// Completes the application flush in progress, if any: post-flush, figures.
    pub(super) fn finish_flush(&mut self) {
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
    pub(super) fn take_open(&mut self, pid: u32, key: KeyId) -> Option<FileObjectId> {
        let p = self.paths.get_mut(&key)?;
        let i = p.open.iter().rposition(|(owner, _)| *owner == pid)?;
        Some(p.open.remove(i).1)
    }

    pub(super) fn cleanup(
        &mut self,
        pid: u32,
        process: &str,
        key: KeyId,
        info: &PathInfo,
        redirector: FileProvider,
    ) {
        let Some(fo) = self.take_open(pid, key) else {
            // A handle opened before the capture ([`Replayer::handle_of`]): its
            // file object has no context, so the pre-cleanup passes it through.
            self.counts.without_known_open += 1;
            let fo = self.anonymous_fo();
            let name16 = Arc::clone(&info.name16);
            let mut data = self.base_data(
                pid,
                process,
                fo,
                0,
                KnownContext::Known(None),
                name16,
                redirector,
            );
            data.major = IRP_MJ_CLEANUP;
            self.begin(pid, Irql::PASSIVE_LEVEL, false);
            let _ = self.filter.pre_cleanup(&mut data);
            return;
        };
        let Some(st) = self.fos.get(&fo).cloned() else {
            return;
        };
        let fo_flags = st.fo_flags();
        let (name16, context) = (
            Arc::clone(&st.name16),
            KnownContext::Known(st.context.clone()),
        );
        let mut data = self.base_data(pid, "", fo, fo_flags, context, name16, st.redirector);
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
        let previous = self.paths.entry(st.key).or_default().cleaned.replace(fo);
        if let Some(old) = previous {
            self.forget(old);
        } else {
            self.cleaned_order.push_back(st.key);
            if self.cleaned_order.len() > self.opts.max_files.max(1024) {
                if let Some(oldest) = self.cleaned_order.pop_front() {
                    if let Some(old) = self.paths.get(&oldest).and_then(|p| p.cleaned) {
                        self.forget(old);
                    }
                }
            }
        }
    }

    pub(super) fn close(&mut self, key: KeyId) {
        if let Some(old) = self.paths.get(&key).and_then(|p| p.cleaned) {
            self.forget(old);
        }
    }

    pub(super) fn rename(&mut self, pid: u32, key: KeyId, new_path: &str) {
        let Some(fo) = self.take_open(pid, key) else {
            return;
        };
        if let Some(p) = self.paths.get(&key) {
            if p.open.is_empty() && p.cleaned.is_none() {
                self.paths.remove(&key);
            }
        }
        let new_key = self.key_id(&fold_key(new_path).into());
        self.paths.entry(new_key).or_default().open.push((pid, fo));
        if let Some(st) = self.fos.get_mut(&fo) {
            st.key = new_key;
        }
    }
}
