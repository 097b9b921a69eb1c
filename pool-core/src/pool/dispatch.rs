//! Who gets a connection, and when to open one. Every input ends with `dispatch`, so
//! these rules are applied in exactly one place.

use crate::action::{Action, CloseReason, Grant};
use crate::id::ConnId;

use super::conns::State;
use super::{Phase, Pool};

impl Pool {
    /// Restore the pool's rules after any change:
    /// 1. no barging: while anyone waits, idle connections go to waiters in arrival order
    ///    (a stale one is health-checked first, an expired one closed);
    /// 2. open connections for unserved demand only (see [`Pool::opens_wanted`]).
    pub(super) fn dispatch(&mut self) {
        if self.phase != Phase::Running {
            self.rescan_timers = true;
            self.finish_drain();
            return;
        }
        while !self.waiters.is_empty() {
            let Some(id) = self.conns.pop_idle(self.config.idle_order) else {
                break;
            };
            match self.idle_verdict(id) {
                IdleVerdict::Expired => self.close_conn(id, CloseReason::MaxLifetime),
                IdleVerdict::Stale => self.start_check(id),
                IdleVerdict::Fresh => {
                    self.make_available(id);
                }
            }
        }
        if !self.backoff.blocked(self.now) {
            for _ in 0..self.opens_wanted() {
                self.open();
            }
        } else {
            // The retry deadline counts only while opens are wanted: rescan.
            self.rescan_timers = true;
        }
    }

    /// Connection elision (HikariCP's lesson from its spike test): open only for demand
    /// that nothing already under way will meet. Demand is the waiters plus the `min_idle`
    /// deficit; what is under way is every connection opening, being checked or being
    /// reset. Capped by `max_size` and `max_connecting`. Leased connections are not
    /// counted as supply, but `max_connecting` keeps the bet small: under a spike most
    /// waiters are served by returns long before a new connection is ready.
    pub(super) fn opens_wanted(&self) -> usize {
        if self.phase != Phase::Running {
            return 0;
        }
        let demand =
            self.waiters.len() + self.config.min_idle.saturating_sub(self.conns.idle_len());
        let under_way = self.conns.opening + self.conns.checking + self.conns.resetting;
        let room = self.config.max_size - self.conns.len();
        let slots = self.config.max_connecting - self.conns.opening;
        demand.saturating_sub(under_way).min(room).min(slots)
    }

    fn open(&mut self) {
        let deadline = self.now + self.config.connect_timeout;
        let conn = self.conns.insert_opening(self.now, deadline);
        self.note_deadline(deadline);
        self.stats.connects_started += 1;
        self.actions.push_back(Action::Open { conn });
    }

    fn start_check(&mut self, id: ConnId) {
        let deadline = self.now + self.config.check_timeout;
        self.conns.set(id, State::Checking { deadline });
        self.note_deadline(deadline);
        self.stats.checks_started += 1;
        self.actions.push_back(Action::Check { conn: id });
    }

    /// The acquire fast path: the next idle connection, if it can be lent as is.
    pub(super) fn take_fresh_idle(&mut self) -> Option<Grant> {
        let id = self.conns.peek_idle(self.config.idle_order)?;
        if self.idle_verdict(id) != IdleVerdict::Fresh {
            // The slow path (a queued waiter and dispatch) checks or closes it.
            return None;
        }
        self.conns.pop_idle(self.config.idle_order);
        let grant = self.lend(id, self.now);
        self.dispatch();
        Some(grant)
    }

    /// A connection became ready (connected, checked, reset or returned): hand it to the
    /// first waiter, or make it idle.
    pub(super) fn make_available(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id) {
            c.last_used = self.now;
        }
        if let Some((waiter, w)) = self.waiters.pop_front() {
            let grant = self.lend(id, w.arrived);
            self.actions.push_back(Action::Grant { waiter, grant });
        } else {
            self.conns.set(id, State::Idle { since: self.now });
            // Idle, it may expire; and the pool may now hold more idle connections than
            // min_idle, which starts the oldest one's idle timeout.
            if let Some(expires_at) = self.conns.get(id).map(|c| c.expires_at) {
                self.note_deadline(expires_at);
            }
            if let Some(t) = self.idle_timeout_due() {
                self.note_deadline(t);
            }
        }
    }

    fn idle_verdict(&self, id: ConnId) -> IdleVerdict {
        let Some(conn) = self.conns.get(id) else {
            return IdleVerdict::Expired;
        };
        if conn.expires_at <= self.now {
            return IdleVerdict::Expired;
        }
        match self.config.check_after_idle {
            Some(window) if self.now.saturating_since(conn.last_used) > window => {
                IdleVerdict::Stale
            }
            _ => IdleVerdict::Fresh,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdleVerdict {
    Fresh,
    Stale,
    Expired,
}
