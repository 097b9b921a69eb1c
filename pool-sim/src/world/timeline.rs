//! Sampling for the plot: after every event, the database's open connections and the
//! live pools' counts.

use super::Sim;

impl Sim {
    pub(super) fn sample(&mut self) {
        let s = self.live_status();
        let open = self.db.open_count();
        if let Some(tl) = &mut self.timeline {
            tl.record(self.now, open, s.leased, s.idle, s.waiters, s.opening);
        }
    }
}
