//! Deadlines: what `handle_timeout` does when each kind passes, and `poll_timeout`, which
//! names the earliest one still pending. Both look at the same list of deadlines, so the
//! timer can never be later than the work it is for.

use std::time::Duration;

use crate::action::{Action, CloseReason};
use crate::id::ConnId;
use crate::input::ConnectError;
use crate::time::Instant;

use super::conns::State;
use super::{Phase, Pool};

/// A deadline has passed. `NEVER` is never due, even at the end of the clock, so
/// `handle_timeout` and `poll_timeout` agree on what is pending.
pub(super) fn due(deadline: Instant, now: Instant) -> bool {
    deadline != Instant::NEVER && deadline <= now
}

/// What a connection's next deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    ConnectTimeout,
    CheckTimeout,
    ResetTimeout,
    Leak,
    Lifetime,
}

impl Pool {
    /// The earliest instant at which `handle_timeout` has something to do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self
            .waiters
            .earliest_deadline()
            .filter(|t| *t != Instant::NEVER);
        let mut consider = |t: Instant| {
            if t != Instant::NEVER {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for (_, conn) in self.conns.iter() {
            if let Some((t, _)) = self.conn_deadline(conn) {
                consider(t);
            }
        }
        if let Some(t) = self.idle_timeout_due() {
            consider(t);
        }
        if self.backoff.blocked(self.now) && self.opens_wanted() > 0 {
            consider(self.backoff.retry_at());
        }
        if let Phase::Draining { deadline, .. } = self.phase {
            consider(deadline);
        }
        next
    }

    /// [`Pool::poll_timeout`] for an embedder whose timer is set for `armed`: `None` when
    /// no deadline can have become earlier than `armed` since the previous call (so the
    /// timer need not move), else the earliest deadline. Cheap after the common inputs:
    /// every deadline they create is noted as it is created, and the full scan of every
    /// connection runs only when one is earlier than `armed` or an input changed
    /// deadlines wholesale (connect, check and reset answers, backoff, close, timeouts).
    pub fn poll_timeout_before(&mut self, armed: Option<Instant>) -> Option<Instant> {
        let new = self.new_deadline.take();
        let rescan = std::mem::replace(&mut self.rescan_timers, false);
        match armed {
            Some(armed) if !rescan && new.is_none_or(|t| t >= armed) => None,
            _ => self.poll_timeout(),
        }
    }

    /// A deadline just became live (see [`Pool::poll_timeout_before`]).
    pub(super) fn note_deadline(&mut self, t: Instant) {
        if t != Instant::NEVER {
            self.new_deadline = Some(self.new_deadline.map_or(t, |n| n.min(t)));
        }
    }

    /// Act on every deadline at or before `now`. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.rescan_timers = true;
        while let Some((waiter, w)) = self.waiters.pop_expired(self.now) {
            self.stats.rejected_timeout += 1;
            let rejection = self.timeout_rejection(w.arrived);
            self.actions.push_back(Action::Reject { waiter, rejection });
        }
        let expired: Vec<(ConnId, Due)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match self.conn_deadline(c) {
                Some((t, what)) if due(t, self.now) => Some((*id, what)),
                _ => None,
            })
            .collect();
        for (id, what) in expired {
            self.on_due(id, what);
        }
        while let Some(t) = self.idle_timeout_due() {
            if !due(t, self.now) {
                break;
            }
            if let Some(id) = self.conns.oldest_idle() {
                self.close_conn(id, CloseReason::IdleTimeout);
            }
        }
        if let Phase::Draining { deadline, .. } = self.phase {
            if due(deadline, self.now) {
                self.revoke_leases();
            }
        }
        self.dispatch();
    }

    fn on_due(&mut self, id: ConnId, what: Due) {
        match what {
            Due::ConnectTimeout => {
                self.close_conn(id, CloseReason::ConnectTimeout);
                let message = format!("connect timed out after {:?}", self.config.connect_timeout);
                self.connect_failed(ConnectError::transient(message));
            }
            Due::CheckTimeout => self.close_conn(id, CloseReason::CheckTimeout),
            Due::ResetTimeout => self.close_conn(id, CloseReason::ResetFailed),
            Due::Lifetime => self.close_conn(id, CloseReason::MaxLifetime),
            Due::Leak => {
                let Some(conn) = self.conns.get_mut(id) else {
                    return;
                };
                if let State::Leased {
                    seq,
                    since,
                    leak_reported,
                } = &mut conn.state
                {
                    *leak_reported = true;
                    let lease = crate::id::LeaseId {
                        conn: id,
                        seq: *seq,
                    };
                    let held = self.now.saturating_since(*since);
                    self.stats.leaks_suspected += 1;
                    self.actions
                        .push_back(Action::LeakSuspected { lease, held });
                }
            }
        }
    }

    /// A connection's own next deadline and what it is for.
    fn conn_deadline(&self, conn: &super::conns::Conn) -> Option<(Instant, Due)> {
        match conn.state {
            State::Opening { deadline, .. } => Some((deadline, Due::ConnectTimeout)),
            State::Checking { deadline } => Some((deadline, Due::CheckTimeout)),
            State::Resetting { deadline } => Some((deadline, Due::ResetTimeout)),
            State::Leased {
                since,
                leak_reported: false,
                ..
            } => self.config.leak_threshold.map(|d| (since + d, Due::Leak)),
            State::Leased { .. } => None,
            State::Idle { .. } => {
                (conn.expires_at != Instant::NEVER).then_some((conn.expires_at, Due::Lifetime))
            }
        }
    }

    /// When the longest-idle connection exceeds `idle_timeout`, if the pool holds more
    /// idle connections than `min_idle` (so idle timeout never fights min idle).
    pub(super) fn idle_timeout_due(&self) -> Option<Instant> {
        let timeout: Duration = self.config.idle_timeout?;
        if self.conns.idle_len() <= self.config.min_idle {
            return None;
        }
        let conn = self.conns.get(self.conns.oldest_idle()?)?;
        match conn.state {
            State::Idle { since } => Some(since + timeout),
            _ => None,
        }
    }
}
