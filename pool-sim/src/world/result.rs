//! The end of a run: what it measured, gathered into a [`RunResult`].

use crate::report::RunResult;

use super::Sim;

impl Sim {
    pub(super) fn finish(mut self) -> RunResult {
        let liveness = self.unresolved_at_end();
        let status = self.live_status();
        let stats: Vec<_> = self.hosts.iter().map(|h| h.pool.stats().clone()).collect();
        RunResult::build(
            &self.setup,
            self.m,
            &self.db,
            status,
            &stats,
            self.error,
            liveness,
            self.timeline,
            self.now,
        )
    }
}
