//! The raw counters a run accumulates as it goes; [`super::RunResult`] is made from them
//! at the end.

use std::collections::BTreeMap;

/// Raw counters a run accumulates.
#[derive(Clone, Debug, Default)]
pub(super) struct Metrics {
    pub(super) events: u64,
    pub(super) pool_inputs: u64,
    pub(super) pool_actions: u64,
    pub(super) invariant_checks: u64,
    pub(super) requests: u64,
    pub(super) completed: u64,
    pub(super) query_errors: u64,
    pub(super) grants: u64,
    pub(super) waits: Vec<u64>,
    pub(super) rejections: BTreeMap<&'static str, u64>,
    pub(super) rejection_examples: BTreeMap<&'static str, String>,
    pub(super) timeouts_with_cause: u64,
    pub(super) cancelled: u64,
    pub(super) cancelled_mid_query: u64,
    pub(super) leaked: u64,
    pub(super) leaks_suspected: u64,
    pub(super) closes: BTreeMap<&'static str, u64>,
    pub(super) drained: Vec<(u64, usize)>,
    pub(super) unanswered: u64,
    pub(super) half_opened: u64,
    pub(super) revoked_releases: u64,
    pub(super) first_ok_after_faults: Option<u64>,
    pub(super) probe: Option<Result<u64, String>>,
    pub(super) instances_retired: u64,
    pub(super) try_acquired: u64,
    pub(super) detached: u64,
    pub(super) lost_with_instance: u64,
    pub(super) unresolved_waiting: u64,
    pub(super) unresolved_holding: u64,
}

impl Metrics {
    /// A request got its connection (from the pool, or its own) after waiting `wait`.
    pub(super) fn granted(&mut self, wait: u64) {
        self.waits.push(wait);
        self.grants += 1;
    }

    /// An acquire failed for `reason`; the first example of each reason is kept.
    pub(super) fn rejected(&mut self, reason: &'static str, example: impl FnOnce() -> String) {
        *self.rejections.entry(reason).or_default() += 1;
        self.rejection_examples
            .entry(reason)
            .or_insert_with(example);
    }
}
