//! The sans-IO pool state machine.
//!
//! Every input is a `&mut self` method that takes `now`; every effect is an [`Action`]
//! queued for the embedder, drained with [`Pool::poll_action`]. The embedder sleeps until
//! [`Pool::poll_timeout`] and then calls [`Pool::handle_timeout`]. Nothing here reads a
//! clock, touches a socket, spawns or locks.
//!
//! Policies, each in one place:
//! - who gets a connection, and when to open one: [`Pool::dispatch`] (dispatch.rs);
//! - what happens when a deadline passes: [`Pool::handle_timeout`] (timers.rs);
//! - connect retry: backoff.rs;
//! - what must always hold: invariants.rs.

mod backoff;
pub(crate) mod conns;
mod dispatch;
mod invariants;
mod timers;
pub(crate) mod waiters;

use std::collections::VecDeque;

use crate::action::{Action, CloseReason, Grant, Rejection, TimeoutReport};
use crate::config::{Config, ConfigError};
use crate::id::{ConnId, LeaseId, WaiterId};
use crate::input::{ConnectError, InputError, Verdict};
use crate::rng::Rng;
use crate::status::{Stats, Status};
use crate::time::Instant;

use backoff::Backoff;
use conns::{Connections, State};
pub use invariants::InvariantViolation;
use waiters::Waiters;

/// The outcome of an acquire that was not rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// A connection was free: here it is.
    Ready(Grant),
    /// The caller waits; the answer comes later as `Action::Grant` or `Action::Reject`
    /// for this waiter.
    Queued(WaiterId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// `close` was called: no new waiters, leased connections may still come back.
    Draining {
        deadline: Instant,
        forced: usize,
    },
    Closed,
}

/// The pool state machine. See the module docs.
#[derive(Clone, Debug)]
pub struct Pool {
    config: Config,
    /// The latest `now` seen; time never goes backwards inside the core.
    now: Instant,
    phase: Phase,
    conns: Connections,
    waiters: Waiters,
    backoff: Backoff,
    next_lease: u64,
    rng: Rng,
    actions: VecDeque<Action>,
    stats: Stats,
    /// The earliest deadline that became live since the last [`Pool::poll_timeout_before`]
    /// (see timers.rs), so the embedder need not rescan every deadline after each input.
    new_deadline: Option<Instant>,
    /// Set by inputs whose deadlines are not tracked one by one: rescan at the next call.
    rescan_timers: bool,
}

impl Pool {
    /// Build a pool. `seed` drives the only randomness (backoff and lifetime jitter): give
    /// the same seed to get the same run. With `min_idle > 0` the first opens are queued
    /// at once.
    pub fn new(config: Config, now: Instant, seed: u64) -> Result<Pool, ConfigError> {
        config.validate()?;
        let mut pool = Pool {
            config,
            now,
            phase: Phase::Running,
            conns: Connections::default(),
            waiters: Waiters::default(),
            backoff: Backoff::default(),
            next_lease: 0,
            rng: Rng::new(seed),
            actions: VecDeque::new(),
            stats: Stats::default(),
            new_deadline: None,
            rescan_timers: true,
        };
        pool.dispatch();
        Ok(pool)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next thing the embedder must do, if any. Drain after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn status(&self) -> Status {
        Status {
            max_size: self.config.max_size,
            total: self.conns.len(),
            idle: self.conns.idle_len(),
            leased: self.conns.leased,
            opening: self.conns.opening,
            checking: self.conns.checking + self.conns.resetting,
            waiters: self.waiters.len(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The latest time the core has seen.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// True once `close` was called and every connection is gone.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True once `close` was called.
    pub fn is_closing(&self) -> bool {
        self.phase != Phase::Running
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Ask for a connection, waiting until `deadline` at the latest. Rejected at once when
    /// the pool is closed, the queue is full, or the last connect failed fatally and
    /// nothing idle can serve.
    pub fn acquire(&mut self, now: Instant, deadline: Instant) -> Result<Acquired, Rejection> {
        self.tick(now);
        self.stats.acquires += 1;
        if self.phase != Phase::Running {
            self.stats.rejected_closed += 1;
            return Err(Rejection::Closed);
        }
        if self.waiters.is_empty() {
            if let Some(grant) = self.take_fresh_idle() {
                return Ok(Acquired::Ready(grant));
            }
        }
        if let Some(error) = self.backoff.fatal(self.now) {
            self.stats.rejected_connect_failed += 1;
            return Err(Rejection::ConnectFailed(error.clone()));
        }
        if self.waiters.len() >= self.config.max_waiters {
            self.stats.rejected_queue_full += 1;
            return Err(Rejection::QueueFull {
                max_waiters: self.config.max_waiters,
            });
        }
        if timers::due(deadline, self.now) {
            self.stats.rejected_timeout += 1;
            return Err(self.timeout_rejection(self.now));
        }
        let id = self.waiters.push(self.now, deadline);
        self.note_deadline(deadline);
        self.dispatch();
        Ok(Acquired::Queued(id))
    }

    /// Take a connection only if one is idle and ready, and nobody is waiting; never
    /// queues, never opens. `None` means "would wait".
    pub fn try_acquire(&mut self, now: Instant) -> Option<Grant> {
        self.tick(now);
        if self.phase != Phase::Running || !self.waiters.is_empty() {
            return None;
        }
        let grant = self.take_fresh_idle()?;
        self.stats.acquires += 1;
        Some(grant)
    }

    /// The waiter gave up (its future was dropped). Its place in the queue is gone.
    pub fn cancel(&mut self, now: Instant, waiter: WaiterId) -> Result<(), InputError> {
        self.tick(now);
        self.waiters
            .remove(waiter)
            .ok_or(InputError::UnknownWaiter(waiter))?;
        self.stats.cancelled += 1;
        Ok(())
    }

    /// A borrower returns its connection with a verdict on its health.
    pub fn release(
        &mut self,
        now: Instant,
        lease: LeaseId,
        verdict: Verdict,
    ) -> Result<(), InputError> {
        self.tick(now);
        let since = self.leased_since(lease)?;
        let id = lease.conn();
        self.stats.hold.record(self.now.saturating_since(since));
        let expired = self.conns.get(id).is_some_and(|c| c.expires_at <= self.now);
        if self.phase != Phase::Running {
            self.close_conn(id, CloseReason::PoolClosed);
        } else if verdict == Verdict::Broken {
            self.close_conn(id, CloseReason::Broken);
        } else if expired {
            self.close_conn(id, CloseReason::MaxLifetime);
        } else if verdict == Verdict::NeedsReset {
            let deadline = self.now + self.config.check_timeout;
            self.conns.set(id, State::Resetting { deadline });
            self.note_deadline(deadline);
            self.stats.resets_started += 1;
            self.actions.push_back(Action::Reset { conn: id });
        } else {
            self.make_available(id);
        }
        self.dispatch();
        Ok(())
    }

    /// The borrower keeps the connection for good: its capacity is freed and the pool
    /// forgets it (no `Close` action; the embedder hands it over).
    pub fn detach(&mut self, now: Instant, lease: LeaseId) -> Result<(), InputError> {
        self.tick(now);
        let since = self.leased_since(lease)?;
        self.stats.hold.record(self.now.saturating_since(since));
        self.conns.remove(lease.conn());
        self.stats.detached += 1;
        self.dispatch();
        Ok(())
    }

    /// The embedder finished an `Action::Open`.
    pub fn connect_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        result: Result<(), ConnectError>,
    ) -> Result<(), InputError> {
        self.tick(now);
        self.rescan_timers = true;
        let Some(State::Opening { started, .. }) = self.conns.get(conn).map(|c| c.state) else {
            return Err(InputError::UnexpectedConnection(conn));
        };
        match result {
            Ok(()) => {
                self.stats.connects_ok += 1;
                self.stats
                    .connect
                    .record(self.now.saturating_since(started));
                self.backoff.on_success();
                let expires_at = self.jittered_expiry();
                if let Some(c) = self.conns.get_mut(conn) {
                    c.created = self.now;
                    c.expires_at = expires_at;
                }
                if self.phase == Phase::Running {
                    self.make_available(conn);
                } else {
                    self.close_conn(conn, CloseReason::PoolClosed);
                }
            }
            Err(error) => {
                self.conns.remove(conn);
                self.connect_failed(error);
            }
        }
        self.dispatch();
        Ok(())
    }

    /// The embedder finished an `Action::Check`.
    pub fn check_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        healthy: bool,
    ) -> Result<(), InputError> {
        self.tick(now);
        self.rescan_timers = true;
        if !matches!(
            self.conns.get(conn).map(|c| c.state),
            Some(State::Checking { .. })
        ) {
            return Err(InputError::UnexpectedConnection(conn));
        }
        if healthy {
            self.make_available(conn);
        } else {
            self.close_conn(conn, CloseReason::CheckFailed);
        }
        self.dispatch();
        Ok(())
    }

    /// The embedder finished an `Action::Reset`.
    pub fn reset_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        ok: bool,
    ) -> Result<(), InputError> {
        self.tick(now);
        self.rescan_timers = true;
        if !matches!(
            self.conns.get(conn).map(|c| c.state),
            Some(State::Resetting { .. })
        ) {
            return Err(InputError::UnexpectedConnection(conn));
        }
        if ok {
            self.make_available(conn);
        } else {
            self.close_conn(conn, CloseReason::ResetFailed);
        }
        self.dispatch();
        Ok(())
    }

    /// Close the pool: reject every waiter, close every connection not lent out, and wait
    /// for leased ones until `drain_deadline`; then revoke what is left. `Action::Drained`
    /// reports the end.
    pub fn close(&mut self, now: Instant, drain_deadline: Instant) -> Result<(), InputError> {
        self.tick(now);
        self.rescan_timers = true;
        if self.phase != Phase::Running {
            return Err(InputError::AlreadyClosed);
        }
        self.phase = Phase::Draining {
            deadline: drain_deadline,
            forced: 0,
        };
        while let Some((id, _)) = self.waiters.pop_front() {
            self.stats.rejected_closed += 1;
            self.actions.push_back(Action::Reject {
                waiter: id,
                rejection: Rejection::Closed,
            });
        }
        let not_leased: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.state, State::Leased { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in not_leased {
            self.close_conn(id, CloseReason::PoolClosed);
        }
        if timers::due(drain_deadline, self.now) {
            self.revoke_leases();
        }
        self.finish_drain();
        Ok(())
    }

    // ---- helpers shared by the inputs --------------------------------------------------

    /// The grant time of a live lease, or the misuse error.
    fn leased_since(&self, lease: LeaseId) -> Result<Instant, InputError> {
        match self.conns.get(lease.conn()).map(|c| c.state) {
            Some(State::Leased { seq, since, .. }) if seq == lease.seq => Ok(since),
            _ => Err(InputError::UnknownLease(lease)),
        }
    }

    fn lend(&mut self, conn: ConnId, arrived: Instant) -> Grant {
        let seq = self.next_lease;
        self.next_lease += 1;
        self.conns.set(
            conn,
            State::Leased {
                seq,
                since: self.now,
                leak_reported: false,
            },
        );
        if let Some(threshold) = self.config.leak_threshold {
            self.note_deadline(self.now + threshold);
        }
        let waited = self.now.saturating_since(arrived);
        self.stats.grants += 1;
        self.stats.wait.record(waited);
        Grant {
            lease: LeaseId { conn, seq },
            waited,
        }
    }

    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.remove(conn).is_some() {
            self.stats.count_close(reason);
            self.actions.push_back(Action::Close { conn, reason });
        }
    }

    fn connect_failed(&mut self, error: ConnectError) {
        self.stats.connects_failed += 1;
        let fatal = error.is_fatal();
        self.backoff
            .on_failure(self.now, error.clone(), &self.config, &mut self.rng);
        if fatal {
            while let Some((id, _)) = self.waiters.pop_front() {
                self.stats.rejected_connect_failed += 1;
                self.actions.push_back(Action::Reject {
                    waiter: id,
                    rejection: Rejection::ConnectFailed(error.clone()),
                });
            }
        }
    }

    fn jittered_expiry(&mut self) -> Instant {
        let Some(lifetime) = self.config.max_lifetime else {
            return Instant::NEVER;
        };
        let nanos = u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX);
        let spread = nanos / 1000 * u64::from(self.config.lifetime_jitter_permille);
        let early = self.rng.up_to(spread);
        self.now + std::time::Duration::from_nanos(nanos - early)
    }

    fn timeout_rejection(&self, arrived: Instant) -> Rejection {
        Rejection::Timeout(Box::new(TimeoutReport {
            waited: self.now.saturating_since(arrived),
            last_connect_error: self.backoff.last_error().cloned(),
            status: self.status(),
        }))
    }

    fn revoke_leases(&mut self) {
        let leased: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Leased { .. }))
            .map(|(id, _)| *id)
            .collect();
        if let Phase::Draining { forced, .. } = &mut self.phase {
            *forced += leased.len();
        }
        for id in leased {
            self.close_conn(id, CloseReason::DrainTimeout);
        }
    }

    fn finish_drain(&mut self) {
        if let Phase::Draining { forced, .. } = self.phase {
            if self.conns.len() == 0 {
                self.phase = Phase::Closed;
                self.actions.push_back(Action::Drained { forced });
            }
        }
    }
}

#[cfg(test)]
mod tests;
