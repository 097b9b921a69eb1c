//! Deadlines: what `handle_timeout` does when each kind passes; `next_timeout`, which
//! names the earliest one still pending and what it is for; and the [`Alarm`], which
//! tells the embedder's one timer when it must move. All three read the same deadlines,
//! so the timer can never be later than the work it is for.

use std::time::Duration;

use crate::action::Action;
use crate::close_reason::CloseReason;
use crate::id::{ConnId, LeaseId, WaiterId};
use crate::input::ConnectError;
use crate::time::Instant;

use super::conns::State;
use super::{Phase, Pool};

/// A deadline has passed. `NEVER` is never due, even at the end of the clock, so
/// `handle_timeout` and `poll_timeout` agree on what is pending.
pub(super) fn due(deadline: Instant, now: Instant) -> bool {
    deadline != Instant::NEVER && deadline <= now
}

/// What a pending deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A waiter's acquire deadline.
    Waiter(WaiterId),
    /// An open's `connect_timeout`.
    Connect(ConnId),
    /// A checkout check's `check_timeout`.
    Check(ConnId),
    /// A reset's `check_timeout`.
    Reset(ConnId),
    /// A lease's `leak_threshold`.
    Leak(LeaseId),
    /// An idle connection's (jittered) `max_lifetime`.
    Lifetime(ConnId),
    /// The longest-idle connection's `idle_timeout`.
    IdleTimeout(ConnId),
    /// A closing connection's `close_timeout`.
    Close(ConnId),
    /// The connect retry after a failure.
    Backoff,
    /// The drain deadline of `close`.
    Drain,
}

/// What the embedder's timer was last told, and what changed since. Lets
/// [`Pool::poll_timer`] answer most inputs without scanning every connection: each
/// deadline an input creates is noted as it is created, and inputs that change deadlines
/// wholesale (connect, check and reset answers, backoff, close, timeouts) mark the
/// alarm stale, which costs one scan at the next poll.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Alarm {
    /// The instant the embedder's timer is set for, as far as the core told it.
    set_for: Option<Instant>,
    /// The earliest deadline created since the last poll.
    noted: Option<Instant>,
    stale: bool,
}

impl Alarm {
    /// A deadline just became live.
    pub(super) fn note(&mut self, t: Instant) {
        if t != Instant::NEVER {
            self.noted = Some(self.noted.map_or(t, |n| n.min(t)));
        }
    }

    /// Deadlines changed in ways not noted one by one: rescan at the next poll.
    pub(super) fn stale(&mut self) {
        self.stale = true;
    }
}

/// A connection's own next deadline, if it has one.
fn conn_deadline_at(
    conn: &super::conns::Conn,
    leak_threshold: Option<Duration>,
) -> Option<Instant> {
    match conn.state {
        State::Opening { deadline, .. }
        | State::Checking { deadline }
        | State::Resetting { deadline }
        | State::Closing { deadline, .. } => Some(deadline),
        State::Leased {
            since,
            leak_reported: false,
            ..
        } => leak_threshold.map(|d| since + d),
        State::Leased { .. } => None,
        State::Idle { .. } => (conn.expires_at != Instant::NEVER).then_some(conn.expires_at),
    }
}

impl<C, W> Pool<C, W> {
    /// The earliest instant at which `handle_timeout` has something to do, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout().map(|(t, _)| t)
    }

    /// [`Pool::poll_timeout`], and what that deadline is for.
    pub fn next_timeout(&self) -> Option<(Instant, Timer)> {
        let mut next: Option<(Instant, Timer)> = None;
        let mut consider = |t: Instant, why: Timer| {
            if t != Instant::NEVER && next.is_none_or(|(n, _)| t < n) {
                next = Some((t, why));
            }
        };
        if let Some((t, waiter)) = self.waiters.earliest_deadline() {
            consider(t, Timer::Waiter(waiter));
        }
        for (id, conn) in self.conns.iter() {
            if let Some((t, why)) = self.conn_deadline(*id, conn) {
                consider(t, why);
            }
        }
        if let Some((t, id)) = self.idle_timeout_due() {
            consider(t, Timer::IdleTimeout(id));
        }
        if self.backoff.blocked(self.now) && self.opens_wanted() > 0 {
            consider(self.backoff.retry_at(), Timer::Backoff);
        }
        // The drain deadline revokes leases; once none is left it is spent (closes still
        // under way have their own deadlines).
        if let Phase::Draining { deadline, .. } = self.phase {
            if self.conns.leased > 0 {
                consider(deadline, Timer::Drain);
            }
        }
        next
    }

    /// Where the embedder's one timer must be set now: `Some(at)` when it must fire
    /// earlier than the core last said (or it was idle), `None` when it can stay as it
    /// is. Call once after each input's actions are drained. A timer that fires for a
    /// deadline that has since gone is harmless: `handle_timeout` then does nothing.
    pub fn poll_timer(&mut self) -> Option<Instant> {
        let noted = self.alarm.noted.take();
        let stale = std::mem::replace(&mut self.alarm.stale, false);
        let next = match self.alarm.set_for {
            Some(set_for) if !stale => noted.filter(|t| *t < set_for),
            _ => self
                .poll_timeout()
                .filter(|t| self.alarm.set_for.is_none_or(|set_for| *t < set_for)),
        };
        if next.is_some() {
            self.alarm.set_for = next;
        }
        next
    }

    /// Act on every deadline at or before `now`. Calling it early or twice is harmless.
    /// The embedder's timer counts as fired: [`Pool::poll_timer`] names the next one.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.alarm = Alarm {
            set_for: None,
            noted: None,
            stale: true,
        };
        while let Some((waiter, w)) = self.waiters.pop_expired(self.now) {
            self.stats.rejected_timeout += 1;
            let rejection = self.timeout_rejection(w.arrived);
            self.actions.push_back(Action::Reject {
                waiter,
                token: w.token,
                rejection,
            });
        }
        let now = self.now;
        let expired = self.conns.ids_where(|c| {
            conn_deadline_at(c, self.config.leak_threshold).is_some_and(|t| due(t, now))
        });
        for id in expired {
            if let Some(why) = self.conns.get(id).and_then(|c| self.conn_deadline(id, c)) {
                self.on_due(why.1);
            }
        }
        while let Some((t, id)) = self.idle_timeout_due() {
            if !due(t, self.now) {
                break;
            }
            self.close_conn(id, CloseReason::IdleTimeout, None);
        }
        if let Phase::Draining { deadline, .. } = self.phase {
            if due(deadline, self.now) {
                self.revoke_leases();
            }
        }
        self.dispatch();
    }

    fn on_due(&mut self, why: Timer) {
        match why {
            Timer::Connect(id) => {
                self.close_conn(id, CloseReason::ConnectTimeout, None);
                let message = format!(
                    "connect timed out after {}",
                    crate::time::HumanDuration(self.config.connect_timeout)
                );
                self.connect_failed(ConnectError::transient(message));
            }
            Timer::Check(id) => self.close_conn(id, CloseReason::CheckTimeout, None),
            Timer::Reset(id) => self.close_conn(id, CloseReason::ResetFailed, None),
            Timer::Lifetime(id) => self.close_conn(id, CloseReason::MaxLifetime, None),
            Timer::Close(id) => {
                // Abandoned: counted as gone. Whatever comes back for it later is refused
                // (and closed by the embedder).
                self.conns.remove(id);
                self.stats.closes_abandoned += 1;
            }
            Timer::Leak(lease) => {
                let Some(conn) = self.conns.get_mut(lease.conn) else {
                    return;
                };
                if let State::Leased {
                    since,
                    leak_reported,
                    ..
                } = &mut conn.state
                {
                    *leak_reported = true;
                    let held = self.now.saturating_since(*since);
                    self.stats.leaks_suspected += 1;
                    self.actions
                        .push_back(Action::LeakSuspected { lease, held });
                }
            }
            Timer::Waiter(_) | Timer::IdleTimeout(_) | Timer::Backoff | Timer::Drain => {}
        }
    }

    /// A connection's own next deadline and what it is for.
    fn conn_deadline(&self, id: ConnId, conn: &super::conns::Conn) -> Option<(Instant, Timer)> {
        let t = conn_deadline_at(conn, self.config.leak_threshold)?;
        let why = match conn.state {
            State::Opening { .. } => Timer::Connect(id),
            State::Checking { .. } => Timer::Check(id),
            State::Resetting { .. } => Timer::Reset(id),
            State::Leased { seq, .. } => Timer::Leak(LeaseId { conn: id, seq }),
            State::Idle { .. } => Timer::Lifetime(id),
            State::Closing { .. } => Timer::Close(id),
        };
        Some((t, why))
    }

    /// When the longest-idle connection exceeds `idle_timeout`, if the pool holds more
    /// idle connections than `min_idle` (so idle timeout never fights min idle).
    pub(super) fn idle_timeout_due(&self) -> Option<(Instant, ConnId)> {
        let timeout: Duration = self.config.idle_timeout?;
        if self.conns.idle_len() <= self.config.min_idle {
            return None;
        }
        let id = self.conns.oldest_idle()?;
        match self.conns.get(id)?.state {
            State::Idle { since } => Some((since + timeout, id)),
            _ => None,
        }
    }
}
