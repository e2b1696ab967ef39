//! Group-commit rules in a replay: the batching their coordinator would do, modelled
//! per file from the trace's `Time of Day` ([`flushguard_engine::group_commit::BatchModel`],
//! `--flush-latency-us`). The replay itself runs one thread, so through the callbacks
//! every write leads its own batch.

use super::*;

impl Replayer<'_> {
    /// Group-commit options of rule `slot` (the default action's for
    /// [`DEFAULT_RULE_SLOT`]); `None` unless its (audited) mode is group-commit.
    pub(super) fn rule_group(&self, slot: u32) -> Option<GroupOptions> {
        match slot {
            EXEMPT_SLOT => None,
            DEFAULT_RULE_SLOT => self.default_group,
            s => self.rule_groups.get(s as usize).copied().flatten(),
        }
    }

    /// A governed write on `key` under rule `slot` completed now: feeds the rule's
    /// group-commit model of that file.
    pub(super) fn model_group_write(&mut self, slot: u32, key: &Arc<str>) {
        let Some(options) = self.rule_group(slot) else {
            return;
        };
        let Some(now) = self.now_us() else {
            *self.group_untimed.entry(slot).or_default() += 1;
            return;
        };
        let latency = self.opts.flush_latency_us;
        self.group_models
            .entry((slot, Arc::clone(key)))
            .or_insert_with(|| BatchModel::new(options, latency))
            .write(now);
    }

    /// The current row's time in microseconds since the first midnight of the trace,
    /// from its `Time of Day` (a clock going back by more than 12 hours since the
    /// last group-commit write is taken as midnight passing); `None` when it does not
    /// parse.
    fn now_us(&mut self) -> Option<u64> {
        const DAY_US: u64 = 86_400_000_000;
        let t = crate::trace::parse_time_of_day(&self.time_of_day)?;
        let mut now = t + self.day_offset_us;
        if now + DAY_US / 2 < self.last_time_us {
            self.day_offset_us += DAY_US;
            now += DAY_US;
        }
        self.last_time_us = self.last_time_us.max(now);
        Some(now)
    }
}
