//! Who gets a connection, and when to open one. Every input ends with `dispatch`, so
//! these rules are applied in exactly one place.

use crate::action::{Action, Grant};
use crate::close_reason::CloseReason;
use crate::id::ConnId;

use super::conns::State;
use super::{Phase, Pool};

impl<C, W> Pool<C, W> {
    /// Restore the pool's rules after any change:
    /// 1. no barging: while anyone waits, idle connections go to waiters in arrival order
    ///    (a stale one is health-checked first; an expired or dead one closed);
    /// 2. open connections for unserved demand only (see [`Pool::opens_wanted`]).
    pub(super) fn dispatch(&mut self) {
        if self.phase != Phase::Running {
            self.alarm.stale();
            self.finish_drain();
            self.settle_over();
            return;
        }
        // 0. After a shrink: shed idle connections, idle longest first, until the pool
        //    fits. (Connections in use or in flight are closed as they come back.)
        while self.conns.len() > self.config.max_size {
            let Some(id) = self.conns.oldest_idle() else {
                break;
            };
            self.close_conn(id, CloseReason::Resized, None);
        }
        while !self.waiters.is_empty() {
            let Some((id, mut connection)) = self.conns.pop_idle(self.config.idle_order) else {
                break;
            };
            match self.idle_verdict(id, &mut connection) {
                IdleVerdict::Expired => {
                    self.close_conn(id, CloseReason::MaxLifetime, Some(connection))
                }
                IdleVerdict::Dead => {
                    self.close_conn(id, CloseReason::CheckFailed, Some(connection))
                }
                IdleVerdict::Stale => self.start_check(id, connection),
                IdleVerdict::Fresh => self.make_available(id, connection),
            }
        }
        if !self.backoff.blocked(self.now) {
            for _ in 0..self.opens_wanted() {
                self.open();
            }
        } else {
            // The retry deadline counts only while opens are wanted: rescan.
            self.alarm.stale();
        }
        self.settle_over();
    }

    /// `over` only falls: to what still exceeds the limits.
    fn settle_over(&mut self) {
        let over = &mut self.over;
        over.size = over
            .size
            .min(self.conns.len().saturating_sub(self.config.max_size));
        over.opening = over.opening.min(
            self.conns
                .opening
                .saturating_sub(self.config.max_connecting),
        );
        over.waiters = over
            .waiters
            .min(self.waiters.len().saturating_sub(self.config.max_waiters));
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
        // Evicted connections in flight will be closed when they finish: no supply.
        let under_way =
            self.conns.opening + self.conns.checking + self.conns.resetting - self.conns.doomed;
        // Zero while a shrink left the pool over `max_size`.
        let room = self.config.max_size.saturating_sub(self.conns.len());
        // Zero while a reconfigure left more opening than `max_connecting`.
        let slots = self
            .config
            .max_connecting
            .saturating_sub(self.conns.opening);
        demand.saturating_sub(under_way).min(room).min(slots)
    }

    fn open(&mut self) {
        let deadline = self.now + self.config.connect_timeout;
        let conn = self.conns.insert_opening(self.now, deadline);
        self.alarm.note(deadline);
        self.stats.connects_started += 1;
        self.actions.push_back(Action::Open { conn });
    }

    fn start_check(&mut self, id: ConnId, connection: C) {
        let deadline = self.now + self.config.check_timeout;
        self.conns.set(id, State::Checking { deadline });
        self.alarm.note(deadline);
        self.stats.checks_started += 1;
        self.actions.push_back(Action::Check {
            conn: id,
            connection,
        });
    }

    /// The acquire fast path: the next idle connection, if it can be lent as is. One the
    /// judge knows is dead needs no I/O to deal with: it is closed here and the next one
    /// looked at. Anything else that is not fresh takes the slow path (a queued waiter
    /// and dispatch), which checks or closes it.
    pub(super) fn take_fresh_idle(&mut self) -> Option<(Grant, C)> {
        let order = self.config.idle_order;
        let mut closed = false;
        let alive = loop {
            let Some(id) = self.conns.peek_idle(order) else {
                break false;
            };
            let conn = self.conns.get(id)?;
            if IdleVerdict::of(conn, self.now, self.config.check_after_idle) != IdleVerdict::Fresh {
                break false;
            }
            if judge_alive(&mut self.judge, self.conns.peek_idle_mut(order)?) {
                break true;
            }
            let (id, connection) = self.conns.pop_idle(order)?;
            self.close_conn(id, CloseReason::CheckFailed, Some(connection));
            closed = true;
        };
        if !alive {
            if closed {
                // What was closed may be wanted back (min_idle).
                self.dispatch();
            }
            return None;
        }
        let (id, connection) = self.conns.pop_idle(order)?;
        let grant = self.lend(id, self.now);
        self.dispatch();
        Some((grant, connection))
    }

    /// A connection became ready (connected, checked, reset or returned): hand it to the
    /// first waiter, or make it idle.
    pub(super) fn make_available(&mut self, id: ConnId, connection: C) {
        if let Some(reason) = self.retire_reason(id) {
            self.close_conn(id, reason, Some(connection));
            return;
        }
        self.make_available_unretired(id, connection);
    }

    /// [`Pool::make_available`] for a connection known not to be retired.
    pub(super) fn make_available_unretired(&mut self, id: ConnId, connection: C) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.last_used = self.now;
        let expires_at = c.expires_at;
        if let Some((waiter, w)) = self.waiters.pop_front() {
            let grant = self.lend(id, w.arrived);
            self.actions.push_back(Action::Grant {
                waiter,
                token: w.token,
                grant,
                connection,
            });
        } else {
            self.conns.set_idle(id, self.now, connection);
            // Idle, it may expire.
            self.alarm.note(expires_at);
            // One more idle than min_idle starts the oldest one's idle timeout; beyond
            // that the oldest is unchanged, and its deadline was noted when it started.
            if self.conns.idle_len() == self.config.min_idle + 1 {
                if let Some((t, _)) = self.idle_timeout_due() {
                    self.alarm.note(t);
                }
            }
        }
    }

    fn idle_verdict(&mut self, id: ConnId, connection: &mut C) -> IdleVerdict {
        let Some(conn) = self.conns.get(id) else {
            return IdleVerdict::Expired;
        };
        match IdleVerdict::of(conn, self.now, self.config.check_after_idle) {
            IdleVerdict::Fresh if !judge_alive(&mut self.judge, connection) => IdleVerdict::Dead,
            verdict => verdict,
        }
    }
}

fn judge_alive<C>(judge: &mut Option<super::Judge<C>>, connection: &mut C) -> bool {
    judge.as_mut().is_none_or(|judge| judge(connection))
}

/// What an idle connection needs before it can be lent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdleVerdict {
    Fresh,
    /// Idle past `check_after_idle`: health-check it first.
    Stale,
    Expired,
    /// The embedder's judge knows it is dead.
    Dead,
}

impl IdleVerdict {
    fn of(
        conn: &super::conns::Conn,
        now: crate::time::Instant,
        check_after_idle: Option<std::time::Duration>,
    ) -> Self {
        if conn.expires_at <= now {
            return IdleVerdict::Expired;
        }
        match check_after_idle {
            Some(window) if now.saturating_since(conn.last_used) > window => IdleVerdict::Stale,
            _ => IdleVerdict::Fresh,
        }
    }
}
