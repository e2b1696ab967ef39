//! What a replay reports: per-file and per-rule figures, counts, and
//! [`Replayer::finish`], which turns the replay's state into them.

use super::*;

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Stop at the first malformed line.
    pub strict: bool,
    /// Files reported individually.
    pub max_files: usize,
    /// Flush latency of the group-commit model, microseconds.
    pub flush_latency_us: u64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            strict: false,
            max_files: 100_000,
            flush_latency_us: 1000,
        }
    }
}

/// A group-commit rule's batching, modelled from the trace's write times
/// ([`flushguard_engine::group_commit::BatchModel`], one stream per file): the replay
/// itself runs one thread, so there every write leads its own batch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupCommitModel {
    /// The flush latency assumed (`--flush-latency-us`), microseconds.
    pub flush_latency_us: u64,
    /// The rule's `max-batch`.
    pub max_batch: u32,
    /// The rule's `max-batch-wait-us`.
    pub max_batch_wait_us: u32,
    /// Governed writes with a time stamp, modelled.
    pub writes: u64,
    /// Governed writes whose `Time of Day` did not parse (not modelled).
    pub writes_without_time: u64,
    /// Flushes the batching would issue (flush-after-write would issue `writes`).
    pub flushes: u64,
    /// `writes / flushes`.
    pub writes_per_flush: f64,
    /// Mean time from a write's completion to its batch flush's end, microseconds.
    pub mean_wait_us: f64,
    /// The longest such time, microseconds.
    pub max_wait_us: u64,
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
    pub(super) dirty_without: u64,
    #[serde(skip)]
    pub(super) dirty_with: u64,
    #[serde(skip)]
    pub(super) slot: u32,
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
    /// Group-commit rules (also audited ones): the modelled batching.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit: Option<GroupCommitModel>,
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

impl Replayer<'_> {
    /// The group-commit model of rule `slot` over all its files; `None` unless the
    /// rule's (audited) mode is group-commit.
    fn group_model(&self, slot: u32) -> Option<GroupCommitModel> {
        let options = self.rule_group(slot)?;
        let mut f = flushguard_engine::group_commit::ModelFigures::default();
        for ((s, _), model) in &self.group_models {
            if *s == slot {
                f.add(&model.clone().finish());
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Some(GroupCommitModel {
            flush_latency_us: self.opts.flush_latency_us,
            max_batch: options.max_batch,
            max_batch_wait_us: options.max_batch_wait_us,
            writes: f.writes,
            writes_without_time: self.group_untimed.get(&slot).copied().unwrap_or_default(),
            flushes: f.flushes,
            writes_per_flush: ratio(f.writes, f.flushes),
            mean_wait_us: ratio(f.total_wait_us, f.writes),
            max_wait_us: f.max_wait_us,
        })
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
                group_commit: self.group_model(i as u32),
            });
        }
        rules.push(RuleReport {
            rule: "(default)".into(),
            mode: self.default_mode.name(),
            files: 0,
            figures: Figures::default(),
            engine_counters: engine(None),
            group_commit: self.group_model(DEFAULT_RULE_SLOT),
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
                group_commit: None,
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
