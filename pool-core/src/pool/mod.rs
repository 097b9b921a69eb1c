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

use crate::action::{Action, Grant, Rejection, TimeoutReport};
use crate::close_reason::CloseReason;
use crate::config::{Config, ConfigError};
use crate::id::{ConnId, LeaseId, WaiterId};
use crate::input::{ConnectError, InputError, Refused, Verdict};
use crate::rng::Rng;
use crate::status::{Stats, Status};
use crate::time::Instant;

use backoff::Backoff;
use conns::{Connections, Owed, State};
pub use invariants::InvariantViolation;
use timers::Alarm;
pub use timers::Timer;
use waiters::Waiters;

/// The outcome of an acquire that was not rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired<C> {
    /// A connection was free: here it is.
    Ready(Grant, C),
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

/// Whether an idle connection is still alive, judged without I/O just before it is
/// lent (e.g. a client that already saw its socket close). See [`Pool::set_judge`].
pub type Judge<C> = Box<dyn FnMut(&mut C) -> bool + Send>;

/// The pool state machine over connections `C`, with a token `W` per waiter. See the
/// module docs.
pub struct Pool<C, W = ()> {
    config: Config,
    /// The latest `now` seen; time never goes backwards inside the core.
    now: Instant,
    phase: Phase,
    conns: Connections<C>,
    waiters: Waiters<W>,
    backoff: Backoff,
    next_lease: u64,
    rng: Rng,
    actions: VecDeque<Action<C, W>>,
    /// Boxed: its histograms make it kilobytes, and the pool is moved into place whole.
    stats: Box<Stats>,
    alarm: Alarm,
    judge: Option<Judge<C>>,
    /// How far the pool exceeds limits a `reconfigure` lowered: only falls (see
    /// [`Over`]).
    over: Over,
}

/// What exceeds the limits after a `reconfigure` lowered them below what is under way,
/// each only falling as the excess drains: `live <= max_size + size` (no open starts
/// while over), `opening <= max_connecting + opening` (no open starts while over),
/// `waiters <= max_waiters + waiters` (new ones are refused while over).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Over {
    pub size: usize,
    pub opening: usize,
    pub waiters: usize,
}

impl<C, W> std::fmt::Debug for Pool<C, W> {
    /// Counts only: connections and tokens may not be `Debug`, and may show credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("now", &self.now)
            .field("phase", &self.phase)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<C, W> Pool<C, W> {
    /// Build a pool. `seed` drives the only randomness (backoff and lifetime jitter): give
    /// the same seed to get the same run. With `min_idle > 0` the first opens are queued
    /// at once.
    pub fn new(config: Config, now: Instant, seed: u64) -> Result<Self, ConfigError> {
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
            stats: Box::default(),
            alarm: Alarm::default(),
            judge: None,
            over: Over::default(),
        };
        pool.dispatch();
        Ok(pool)
    }

    /// Judge each idle connection just before it is lent: one the judge calls dead is
    /// closed (`CheckFailed`) and the waiter keeps its place at the front for the next
    /// one. Without a judge every idle connection is taken to be alive.
    pub fn set_judge(&mut self, judge: impl FnMut(&mut C) -> bool + Send + 'static) {
        self.judge = Some(Box::new(judge));
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next thing the embedder must do, if any. Drain after every input.
    pub fn poll_action(&mut self) -> Option<Action<C, W>> {
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
            closing: self.conns.closing,
            waiters: self.waiters.len(),
        }
    }

    /// The tokens of the waiters in the queue, in arrival order (for consistency checks).
    pub fn waiter_tokens(&self) -> impl Iterator<Item = &W> {
        self.waiters.tokens()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The last connect error since the last successful connect (cleared by one), and
    /// when it happened: what a readiness probe reports.
    pub fn last_connect_error(&self) -> Option<(&ConnectError, Instant)> {
        self.backoff.last_failure()
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
    /// nothing idle can serve. `token` makes the waiter's token, only if it has to wait.
    pub fn acquire(
        &mut self,
        now: Instant,
        deadline: Instant,
        token: impl FnOnce(WaiterId) -> W,
    ) -> Result<Acquired<C>, Rejection> {
        self.tick(now);
        self.stats.acquires += 1;
        if self.phase != Phase::Running {
            self.stats.rejected_closed += 1;
            return Err(Rejection::Closed);
        }
        if self.waiters.is_empty() {
            if let Some((grant, connection)) = self.take_fresh_idle() {
                return Ok(Acquired::Ready(grant, connection));
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
        let token = token(self.waiters.next_id());
        let id = self.waiters.push(self.now, deadline, token);
        self.alarm.note(deadline);
        self.dispatch();
        Ok(Acquired::Queued(id))
    }

    /// Take a connection only if one is idle and ready, and nobody is waiting; never
    /// queues, never opens. `None` means "would wait".
    pub fn try_acquire(&mut self, now: Instant) -> Option<(Grant, C)> {
        self.tick(now);
        if self.phase != Phase::Running || !self.waiters.is_empty() {
            return None;
        }
        let lent = self.take_fresh_idle()?;
        self.stats.acquires += 1;
        Some(lent)
    }

    /// The waiter gave up (its future was dropped). Its place in the queue is gone; its
    /// token comes back.
    pub fn cancel(&mut self, now: Instant, waiter: WaiterId) -> Result<W, InputError> {
        self.tick(now);
        let w = self
            .waiters
            .remove(waiter)
            .ok_or(InputError::UnknownWaiter(waiter))?;
        self.stats.cancelled += 1;
        Ok(w.token)
    }

    /// A borrower returns its connection with a verdict on its health. A lease the pool
    /// does not know (released twice, or revoked at the drain deadline) is refused and
    /// the connection handed back, for the embedder to close.
    pub fn release(
        &mut self,
        now: Instant,
        lease: LeaseId,
        connection: C,
        verdict: Verdict,
    ) -> Result<(), Refused<C>> {
        self.tick(now);
        // One look at the connection answers every question the return asks of it.
        let id = lease.conn();
        let (since, expired, evicted) = match self.conns.get(id) {
            Some(c) => match c.state {
                State::Leased { seq, since, .. } if seq == lease.seq => (
                    since,
                    c.expires_at <= self.now,
                    c.generation < self.conns.generation,
                ),
                _ => return Err(Refused::unknown_lease(lease, connection)),
            },
            None => return Err(Refused::unknown_lease(lease, connection)),
        };
        self.stats.hold.record(self.now.saturating_since(since));
        if self.phase != Phase::Running {
            self.close_conn(id, CloseReason::PoolClosed, Some(connection));
        } else if verdict == Verdict::Broken {
            self.close_conn(id, CloseReason::Broken, Some(connection));
        } else if let Some(reason) = self.retire_reason_of(evicted) {
            self.close_conn(id, reason, Some(connection));
        } else if expired {
            self.close_conn(id, CloseReason::MaxLifetime, Some(connection));
        } else if verdict == Verdict::NeedsReset {
            let deadline = self.now + self.config.check_timeout;
            self.conns.set(id, State::Resetting { deadline });
            self.alarm.note(deadline);
            self.stats.resets_started += 1;
            self.actions.push_back(Action::Reset {
                conn: id,
                connection,
            });
        } else {
            self.make_available_unretired(id, connection);
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

    /// The embedder finished an `Action::Open`. A connection opened for an open the pool
    /// already gave up on (its connect timeout passed) is refused and handed back.
    pub fn connect_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        result: Result<C, ConnectError>,
    ) -> Result<(), Refused<Option<C>>> {
        self.tick(now);
        self.alarm.stale();
        let started = match self.conns.get(conn).map(|c| c.state) {
            Some(State::Opening { started, .. }) => started,
            Some(State::Closing {
                owed: Owed::Answer(conns::Work::Open),
                ..
            }) => {
                self.closing_answered(conn, result.ok());
                self.dispatch();
                return Ok(());
            }
            _ => {
                return Err(Refused {
                    error: InputError::UnexpectedConnection(conn),
                    connection: result.ok(),
                })
            }
        };
        match result {
            Ok(connection) => {
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
                    self.make_available(conn, connection);
                } else {
                    self.close_conn(conn, CloseReason::PoolClosed, Some(connection));
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

    /// The embedder finished an `Action::Check`. A check the pool already gave up on
    /// (its timeout passed) is refused and the connection handed back.
    pub fn check_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        connection: C,
        healthy: bool,
    ) -> Result<(), Refused<C>> {
        self.upkeep_finished(now, conn, connection, healthy, Upkeep::Check)
    }

    /// The embedder finished an `Action::Reset`; refused as [`Pool::check_finished`].
    pub fn reset_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        connection: C,
        ok: bool,
    ) -> Result<(), Refused<C>> {
        self.upkeep_finished(now, conn, connection, ok, Upkeep::Reset)
    }

    fn upkeep_finished(
        &mut self,
        now: Instant,
        conn: ConnId,
        connection: C,
        ok: bool,
        kind: Upkeep,
    ) -> Result<(), Refused<C>> {
        self.tick(now);
        self.alarm.stale();
        let state = self.conns.get(conn).map(|c| c.state);
        let owed = match kind {
            Upkeep::Check => conns::Work::Check,
            Upkeep::Reset => conns::Work::Reset,
        };
        if let Some(State::Closing {
            owed: Owed::Answer(work),
            ..
        }) = state
        {
            if work == owed {
                self.closing_answered(conn, Some(connection));
                self.dispatch();
                return Ok(());
            }
        }
        let expected = matches!(
            (kind, state),
            (Upkeep::Check, Some(State::Checking { .. }))
                | (Upkeep::Reset, Some(State::Resetting { .. }))
        );
        if !expected {
            return Err(Refused {
                error: InputError::UnexpectedConnection(conn),
                connection,
            });
        }
        if ok {
            self.make_available(conn, connection);
        } else {
            let reason = match kind {
                Upkeep::Check => CloseReason::CheckFailed,
                Upkeep::Reset => CloseReason::ResetFailed,
            };
            self.close_conn(conn, reason, Some(connection));
        }
        self.dispatch();
        Ok(())
    }

    /// The embedder finished an `Action::Close`: the connection is gone from the server
    /// (or, for a close without the connection, the embedder knows it is gone without
    /// handing it back). Until then it counted against `max_size`. Refused for a
    /// connection that is not closing (never closed, already finished, or abandoned at
    /// its close timeout).
    pub fn close_finished(&mut self, now: Instant, conn: ConnId) -> Result<(), InputError> {
        self.tick(now);
        match self.conns.get(conn).map(|c| c.state) {
            Some(State::Closing { .. }) => {
                self.conns.remove(conn);
                self.dispatch();
                Ok(())
            }
            _ => Err(InputError::UnexpectedConnection(conn)),
        }
    }

    /// Close the pool: reject every waiter, close every connection not lent out, and wait
    /// for leased ones until `drain_deadline`; then revoke what is left. `Action::Drained`
    /// reports the end, once every close is finished (or abandoned at `close_timeout`).
    pub fn close(&mut self, now: Instant, drain_deadline: Instant) -> Result<(), InputError> {
        self.tick(now);
        self.alarm.stale();
        if self.phase != Phase::Running {
            return Err(InputError::AlreadyClosed);
        }
        self.phase = Phase::Draining {
            deadline: drain_deadline,
            forced: 0,
        };
        self.reject_all(|| Rejection::Closed);
        let not_leased = self
            .conns
            .ids_where(|c| !matches!(c.state, State::Leased { .. }));
        for id in not_leased {
            self.close_conn(id, CloseReason::PoolClosed, None);
        }
        if timers::due(drain_deadline, self.now) {
            self.revoke_leases();
        }
        self.finish_drain();
        Ok(())
    }

    /// Change `max_size` at run time; every other option stays. See
    /// [`Pool::reconfigure`].
    pub fn resize(&mut self, now: Instant, max_size: usize) -> Result<(), ConfigError> {
        let config = Config {
            max_size,
            ..self.config.clone()
        };
        self.reconfigure(now, config)
    }

    /// Change the options at run time (a configuration reload). Refused, with the state
    /// as it was, when they are invalid as [`Config::validate`] says.
    ///
    /// A new `max_size`: growing lets waiters get new opens at once; shrinking closes idle
    /// connections (`Resized`, idle longest first) until the pool fits, and connections in
    /// use, opening, being checked or reset stay counted and are closed (`Resized`) when
    /// they come back or finish while the pool is still over; no open starts until it
    /// fits. Durations apply from now on: what is under way (a connect, a check or reset, a
    /// close, a waiter) keeps the deadline it was given, and a connection keeps the
    /// lifetime it was opened with; idle connections are judged by the new `idle_timeout`,
    /// `check_after_idle` and `min_idle` at once. Allowed while closing (it changes nothing
    /// then but what [`Pool::config`] reports).
    pub fn reconfigure(&mut self, now: Instant, config: Config) -> Result<(), ConfigError> {
        self.tick(now);
        config.validate()?;
        self.over = Over {
            size: self.conns.len().saturating_sub(config.max_size),
            opening: self.conns.opening.saturating_sub(config.max_connecting),
            waiters: self.waiters.len().saturating_sub(config.max_waiters),
        };
        self.config = config;
        self.alarm.stale();
        self.dispatch();
        Ok(())
    }

    /// Soft-evict every connection now live (credential rotation, failover): idle ones
    /// are closed now (`Evicted`); one in use is closed when returned; one opening, being
    /// checked or being reset is closed when that finishes, instead of being lent or
    /// filed idle, and is not counted as on its way to a waiter (new opens start at once
    /// for the waiters). Connections opened from now on are not affected. Refused after
    /// `close`.
    pub fn evict_all(&mut self, now: Instant) -> Result<(), InputError> {
        self.tick(now);
        if self.phase != Phase::Running {
            return Err(InputError::AlreadyClosed);
        }
        self.conns.evict();
        let idle = self
            .conns
            .ids_where(|c| matches!(c.state, State::Idle { .. }));
        for id in idle {
            self.close_conn(id, CloseReason::Evicted, None);
        }
        self.alarm.stale();
        self.dispatch();
        Ok(())
    }

    // ---- helpers shared by the inputs --------------------------------------------------

    /// Why a connection that is becoming ready must be closed instead: it was evicted, or
    /// the pool holds more than `max_size` after a shrink.
    fn retire_reason(&self, id: ConnId) -> Option<CloseReason> {
        self.retire_reason_of(self.conns.is_evicted(id))
    }

    /// [`Pool::retire_reason`] for a connection already looked at.
    fn retire_reason_of(&self, evicted: bool) -> Option<CloseReason> {
        if evicted {
            Some(CloseReason::Evicted)
        } else if self.conns.len() > self.config.max_size {
            Some(CloseReason::Resized)
        } else {
            None
        }
    }

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
            self.alarm.note(self.now + threshold);
        }
        let waited = self.now.saturating_since(arrived);
        self.stats.grants += 1;
        self.stats.wait.record(waited);
        Grant {
            lease: LeaseId { conn, seq },
            waited,
        }
    }

    /// Close a connection. `connection` is the one handed in with the input, if any; an
    /// idle one is taken from the idle list. It stays counted, `Closing`, until the
    /// embedder reports it gone or `close_timeout` passes; one still opening, being
    /// checked or reset comes back with that work's answer first. A lease revoked at the
    /// drain deadline is forgotten at once: its borrower may keep it for ever, and a
    /// draining pool opens nothing that could exceed `max_size`.
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason, connection: Option<C>) {
        let Some(state) = self.conns.get(conn).map(|c| c.state) else {
            return;
        };
        let (connection, owed) = match state {
            State::Closing { .. } => return,
            State::Idle { .. } => (connection.or(self.conns.take_idle(conn)), Owed::Close),
            _ if connection.is_some() => (connection, Owed::Close),
            State::Opening { .. } => (None, Owed::Answer(conns::Work::Open)),
            State::Checking { .. } => (None, Owed::Answer(conns::Work::Check)),
            State::Resetting { .. } => (None, Owed::Answer(conns::Work::Reset)),
            State::Leased { .. } => {
                self.conns.remove(conn);
                self.stats.count_close(reason);
                self.actions.push_back(Action::Close {
                    conn,
                    reason,
                    connection: None,
                });
                return;
            }
        };
        self.stats.count_close(reason);
        let deadline = self.now + self.config.close_timeout;
        self.conns.set(
            conn,
            State::Closing {
                deadline,
                reason,
                owed,
            },
        );
        self.alarm.note(deadline);
        self.actions.push_back(Action::Close {
            conn,
            reason,
            connection,
        });
    }

    /// The answer owed for a connection closed while its open, check or reset was under
    /// way has come: the connection it hands back is closed now (a second `Close`, with
    /// it), and a failed open leaves nothing to close.
    fn closing_answered(&mut self, conn: ConnId, connection: Option<C>) {
        let Some(State::Closing {
            deadline, reason, ..
        }) = self.conns.get(conn).map(|c| c.state)
        else {
            return;
        };
        match connection {
            Some(connection) => {
                self.conns.set(
                    conn,
                    State::Closing {
                        deadline,
                        reason,
                        owed: Owed::Close,
                    },
                );
                self.actions.push_back(Action::Close {
                    conn,
                    reason,
                    connection: Some(connection),
                });
            }
            None => {
                self.conns.remove(conn);
            }
        }
    }

    /// Answer every waiter with a rejection, in arrival order.
    fn reject_all(&mut self, rejection: impl Fn() -> Rejection) {
        while let Some((waiter, w)) = self.waiters.pop_front() {
            let rejection = rejection();
            match rejection {
                Rejection::Closed => self.stats.rejected_closed += 1,
                _ => self.stats.rejected_connect_failed += 1,
            }
            self.actions.push_back(Action::Reject {
                waiter,
                token: w.token,
                rejection,
            });
        }
    }

    fn connect_failed(&mut self, error: ConnectError) {
        self.stats.connects_failed += 1;
        let fatal = error.is_fatal();
        self.backoff
            .on_failure(self.now, error.clone(), &self.config, &mut self.rng);
        if fatal {
            self.reject_all(|| Rejection::ConnectFailed(error.clone()));
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
        let leased = self
            .conns
            .ids_where(|c| matches!(c.state, State::Leased { .. }));
        if let Phase::Draining { forced, .. } = &mut self.phase {
            *forced += leased.len();
        }
        for id in leased {
            self.close_conn(id, CloseReason::DrainTimeout, None);
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

/// Work on an established connection between two loans.
#[derive(Clone, Copy)]
enum Upkeep {
    Check,
    Reset,
}

#[cfg(test)]
mod tests;
