//! Fault windows: each opens and closes on the simulated database at its scheduled times.

use crate::faults::FaultKind;
use crate::vtime::ns;

use super::event::Ev;
use super::Sim;

impl Sim {
    pub(super) fn schedule_faults(&mut self) {
        for (i, f) in self.setup.faults.clone().iter().enumerate() {
            self.queue.push(ns(f.start), Ev::FaultStart(i));
            self.queue.push(ns(f.end), Ev::FaultEnd(i));
        }
    }

    pub(super) fn fault_starts(&mut self, i: usize) {
        let f = self.setup.faults[i];
        let db = &mut self.dbs[f.db];
        match f.kind {
            FaultKind::Down => db.set_down(true),
            FaultKind::Restart => {
                db.kill_all();
                db.set_down(true);
            }
            FaultKind::HalfOpen { count } => {
                let n = db.make_half_open(count, &mut self.rng);
                self.m.half_opened += n as u64;
            }
            FaultKind::AuthFail => db.set_auth_broken(true),
            FaultKind::SlowConnect { factor } => db.set_slow(factor, true),
            FaultKind::ReplayPaused => self.replay_paused(f.db, true),
            FaultKind::SlowClose { delay_ms } => self.slow_close[f.db] = Some(delay_ms),
        }
    }

    /// Half-open backends stay half-open: the pool has to find and drop them.
    pub(super) fn fault_ends(&mut self, i: usize) {
        let f = self.setup.faults[i];
        let db = &mut self.dbs[f.db];
        match f.kind {
            FaultKind::Down | FaultKind::Restart => db.set_down(false),
            FaultKind::HalfOpen { .. } => {}
            FaultKind::AuthFail => db.set_auth_broken(false),
            FaultKind::SlowConnect { factor } => db.set_slow(factor, false),
            FaultKind::ReplayPaused => self.replay_paused(f.db, false),
            FaultKind::SlowClose { .. } => self.slow_close[f.db] = None,
        }
    }
}
