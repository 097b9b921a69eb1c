//! The checks that fail a run: the pool's own invariants after every input, and the
//! simulator's rules from outside (no runaway, no busy timer, no stall, no lost wake-up,
//! no waiter left past its deadline at the end).

use std::time::Duration;

use super::event::Ev;
use super::request::Stage;
use super::Sim;

impl Sim {
    /// More events than the setup allows: e.g. a timer that keeps firing at one instant.
    pub(super) fn runaway(&mut self, ev: Ev) -> bool {
        if self.m.events <= self.setup.max_events {
            return false;
        }
        let s = self.hosts.first().map(|h| h.pool.status().to_string());
        self.fail(format!(
            "runaway: more than {} events (last: {ev:?}; pool: {s:?})",
            self.setup.max_events
        ));
        true
    }

    pub(super) fn invariants_hold(&mut self, h: usize, what: &str) -> bool {
        self.m.invariant_checks += 1;
        if let Err(e) = self.hosts[h].pool.check_invariants() {
            self.fail(format!("{e} (after {what})"));
            return false;
        }
        true
    }

    /// Liveness from outside: waiters, room to grow and nothing in flight that will
    /// come back on its own means a connect retry must be due within `backoff_max`;
    /// otherwise the waiters would sit until their deadlines with the database healthy.
    pub(super) fn stalled(&mut self, h: usize, what: &str) -> bool {
        let host = &self.hosts[h];
        let s = host.pool.status();
        if s.waiters > 0
            && s.total < s.max_size
            && s.opening + s.checking + s.leased == 0
            && !host.pool.is_closing()
        {
            let bound = self.now + host.pool.config().backoff_max.as_nanos() as u64;
            let next = host.pool.poll_timeout();
            if next.is_none_or(|t| t.as_nanos() > bound) {
                self.fail(format!(
                    "stalled pool: {s} with nothing in flight and no retry due within backoff_max (next timer {next:?}, after {what})"
                ));
                return true;
            }
        }
        false
    }

    /// A timeout that `handle_timeout` does not clear would fire forever at one instant.
    pub(super) fn busy_loop(&mut self, h: usize) -> bool {
        let host = &mut self.hosts[h];
        if host.busy_timer_t == self.now {
            host.busy_timer_n += 1;
            if host.busy_timer_n > 10_000 {
                let t = host.pool.poll_timeout();
                self.fail(format!(
                    "busy loop: poll_timeout() keeps returning {t:?} at now and handle_timeout does not clear it"
                ));
                return true;
            }
        } else {
            host.busy_timer_t = self.now;
            host.busy_timer_n = 0;
        }
        false
    }

    /// How long past its deadline a request is being answered (a lost wake-up).
    pub(super) fn overdue(&self, req: usize) -> Option<Duration> {
        let deadline = self.reqs[req].deadline;
        (self.now > deadline).then(|| Duration::from_nanos(self.now - deadline))
    }

    /// At the end: count the requests without an outcome, and name (up to three) waiters
    /// still waiting after their deadline.
    pub(super) fn unresolved_at_end(&mut self) -> Vec<String> {
        let mut liveness = Vec::new();
        let mut stuck_waiting = 0;
        let mut stuck_holding = 0;
        for r in &self.reqs {
            match r.stage {
                Stage::Done => {}
                Stage::Waiting(_) => {
                    stuck_waiting += 1;
                    if r.deadline < self.now {
                        liveness.push(format!(
                            "a waiter that arrived at {:?} is still waiting after its deadline {:?}",
                            Duration::from_nanos(r.arrived),
                            Duration::from_nanos(r.deadline)
                        ));
                    }
                }
                _ => stuck_holding += 1,
            }
        }
        liveness.truncate(3);
        self.m.unresolved_waiting = stuck_waiting;
        self.m.unresolved_holding = stuck_holding;
        liveness
    }
}
