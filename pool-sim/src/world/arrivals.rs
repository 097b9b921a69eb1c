//! The workload's arrivals: closed-loop tasks, an open-loop Poisson stream, and spikes.

use crate::client::Workload;
use crate::vtime::ns;

use super::event::Ev;
use super::Sim;

impl Sim {
    /// Requests start at `warmup`; a closed-loop task's later requests follow its
    /// previous one (see `finish_request_after`).
    pub(super) fn schedule_workload(&mut self) {
        let start = ns(self.setup.warmup);
        match self.setup.workload.clone() {
            Workload::Closed { tasks, .. } => {
                for t in 0..tasks {
                    self.queue.push(start, Ev::TaskNext(t as u32));
                }
            }
            Workload::Open { rate, spikes } => {
                if rate > 0.0 {
                    let gap = self.rng.exp(1e9 / rate) as u64;
                    self.queue.push(start + gap, Ev::Arrival);
                }
                for s in spikes {
                    self.queue.push(ns(s.at), Ev::Spike(s.n as u32));
                }
            }
        }
    }

    /// `Ev::Arrival`: one open-loop request, and the next arrival until the workload ends.
    pub(super) fn arrival(&mut self) {
        if self.now < ns(self.setup.workload_end) {
            self.new_request(None, false);
            if let Workload::Open { rate, .. } = self.setup.workload {
                let gap = (self.rng.exp(1e9 / rate) as u64).max(1);
                self.queue.push(self.now + gap, Ev::Arrival);
            }
        }
    }

    /// `Ev::Spike`: `n` requests at one instant.
    pub(super) fn spike(&mut self, n: u32) {
        for _ in 0..n {
            self.new_request(None, false);
        }
    }
}
