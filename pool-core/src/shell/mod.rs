//! The runtime-agnostic concurrent shell: the core behind one mutex, an answer cell per
//! queued waiter, the [`Acquire`] future and the [`Lease`] guard.
//!
//! Rules that make it correct (checked by the loom and shuttle suites):
//! - every input is fed to the core and all its actions are drained in one critical
//!   section, so no action is ever seen half-applied;
//! - locks nest in one order only: the pool's, then a waiter's cell. The woken waiter
//!   takes its answer from its cell alone, without the pool lock, so a hand-off costs one
//!   pool critical section, not two;
//! - a waiter's waker and its answer live under the cell's lock, so a wake cannot be lost
//!   between "decide to wait" and "register";
//! - wakers are woken and work is handed to the runtime only after unlocking;
//! - a dropped `Acquire` cancels its waiter, or gives back a grant that raced the drop,
//!   in one critical section, so the connection goes to the next waiter.

mod acquire;
mod cell;
mod held;
mod id_map;
mod lease;
mod list;
mod runtime;
mod slots;
mod sync;

use std::panic::Location;
use std::task::Waker;
use std::time::Duration;

use crate::action::{Action, CloseReason, Grant};
use crate::config::{Config, ConfigError};
use crate::id::{ConnId, LeaseId, WaiterId};
use crate::input::{ConnectError, Verdict};
use crate::pool::Pool;
use crate::status::{Stats, Status};
use crate::time::Instant;

pub use acquire::{Acquire, Close};
use cell::{Answer, Cell, Spares};
use held::Held;
use id_map::IdMap;
pub use lease::Lease;
use list::InlineList;
pub use runtime::{Runtime, Work};
use slots::Slots;
use sync::{lock, Arc, Mutex};

/// A pool of `C` shared between threads and tasks. Cheap to clone.
pub struct SharedPool<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for SharedPool<C> {
    fn clone(&self) -> Self {
        SharedPool {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<C> {
    state: Mutex<State<C>>,
    runtime: Box<dyn Runtime<C>>,
}

struct State<C> {
    core: Pool,
    /// The connections the pool holds right now: idle ones, and one handed in with an
    /// input until the core says where it goes.
    held: Held<C>,
    /// The cell of every waiter the core has queued and not yet answered.
    waiters: Slots<Queued<C>>,
    spares: Spares<C>,
    /// Where each lease was acquired, for leak reports (only with a leak threshold).
    origins: IdMap<LeaseId, &'static Location<'static>>,
    /// The deadline the runtime's timer is set for.
    timer: Option<Instant>,
    /// Set once the core reports `Drained`.
    drained: Option<usize>,
    close_wakers: Vec<Waker>,
}

/// A waiter the core has queued: where to put its answer, and where it asked from.
struct Queued<C> {
    cell: Arc<Cell<C>>,
    origin: &'static Location<'static>,
}

/// Side effects gathered inside a critical section and run after unlocking. Kept inline:
/// a typical critical section wakes at most one waiter and hands over at most one piece
/// of work, and collecting them must not allocate on every acquire and release.
struct Effects<C> {
    wake: InlineList<Waker, 2>,
    work: InlineList<Work<C>, 1>,
    arm: Option<Instant>,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Effects {
            wake: InlineList::new(),
            work: InlineList::new(),
            arm: None,
        }
    }
}

impl<C: Send + 'static> SharedPool<C> {
    /// Build a pool run by `runtime`. `seed` drives the core's jitter.
    pub fn new(config: Config, seed: u64, runtime: impl Runtime<C>) -> Result<Self, ConfigError> {
        let core = Pool::new(config, runtime.now(), seed)?;
        let pool = SharedPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    core,
                    held: Held::new(),
                    waiters: Slots::new(),
                    spares: Spares::new(),
                    origins: IdMap::default(),
                    timer: None,
                    drained: None,
                    close_wakers: Vec::new(),
                }),
                runtime: Box::new(runtime),
            }),
        };
        // min_idle may have asked for opens already.
        pool.with_state(|_, _| ());
        Ok(pool)
    }

    pub fn config(&self) -> Config {
        lock(&self.shared.state).core.config().clone()
    }

    /// Wait for a connection for at most the configured `acquire_timeout`.
    #[track_caller]
    pub fn acquire(&self) -> Acquire<C> {
        let timeout = lock(&self.shared.state).core.config().acquire_timeout;
        self.acquire_timeout(timeout)
    }

    /// Wait for a connection for at most `timeout`, covering any connect it waits on.
    #[track_caller]
    pub fn acquire_timeout(&self, timeout: Duration) -> Acquire<C> {
        let now = self.shared.runtime.now();
        Acquire::new(self.clone(), now + timeout, Some(now), Location::caller())
    }

    /// Wait for a connection until `deadline` on the runtime's clock.
    #[track_caller]
    pub fn acquire_until(&self, deadline: Instant) -> Acquire<C> {
        Acquire::new(self.clone(), deadline, None, Location::caller())
    }

    /// Wait until `deadline`, reporting `origin` as where the lease was acquired (for an
    /// adapter that retries an acquire on its caller's behalf).
    pub fn acquire_from(
        &self,
        deadline: Instant,
        origin: &'static Location<'static>,
    ) -> Acquire<C> {
        Acquire::new(self.clone(), deadline, None, origin)
    }

    /// A connection if one is idle and nobody waits; never waits, never opens.
    #[track_caller]
    pub fn try_acquire(&self) -> Option<Lease<C>> {
        self.try_acquire_from(Location::caller())
    }

    /// [`Self::try_acquire`], reporting `origin` as where the lease was acquired.
    pub fn try_acquire_from(&self, origin: &'static Location<'static>) -> Option<Lease<C>> {
        self.with_state(|st, _| {
            let now = self.shared.runtime.now();
            let grant = st.core.try_acquire(now)?;
            Some(st.lend(grant, origin))
        })
        .map(|(grant, connection)| Lease::new(self.clone(), grant, connection))
    }

    /// Close the pool; see [`Pool::close`]. The returned future resolves to the number of
    /// leases revoked at the drain deadline, once every connection is gone.
    pub fn close(&self, drain_timeout: Duration) -> Close<C> {
        self.with_state(|st, _| {
            let now = self.shared.runtime.now();
            // A second close just waits for the first one's drain.
            let _ = st.core.close(now, now + drain_timeout);
        });
        Close::new(self.clone())
    }

    pub fn is_closing(&self) -> bool {
        lock(&self.shared.state).core.is_closing()
    }

    pub fn status(&self) -> Status {
        lock(&self.shared.state).core.status()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.state).core.stats().clone()
    }

    /// Run the core's invariant checks (tests, debugging).
    pub fn check_invariants(&self) -> Result<(), crate::InvariantViolation> {
        let st = lock(&self.shared.state);
        st.core.check_invariants()?;
        let idle = st.core.status().idle;
        if st.held.len() != idle {
            return Err(crate::InvariantViolation(format!(
                "shell holds {} connections but the core has {idle} idle",
                st.held.len()
            )));
        }
        let queued = st.waiters.values().count();
        if queued != st.core.status().waiters {
            return Err(crate::InvariantViolation(format!(
                "shell has {queued} waiting cells but the core has {} waiters",
                st.core.status().waiters
            )));
        }
        if let Some(q) = st.waiters.values().find(|q| !q.cell.is_waiting()) {
            return Err(crate::InvariantViolation(format!(
                "a queued waiter (asked at {}) already holds an answer",
                q.origin
            )));
        }
        Ok(())
    }

    // ---- answers from the runtime ------------------------------------------------------

    pub fn connect_finished(&self, conn: ConnId, result: Result<C, ConnectError>) {
        self.with_state(|st, fx| {
            let now = self.shared.runtime.now();
            match result {
                Ok(connection) => {
                    st.held.insert(conn, connection);
                    if st.core.connect_finished(now, conn, Ok(())).is_err() {
                        // Abandoned after its connect timeout: nobody wants it.
                        st.discard(conn, CloseReason::ConnectTimeout, fx);
                    }
                }
                Err(error) => {
                    let _ = st.core.connect_finished(now, conn, Err(error));
                }
            }
        })
    }

    pub fn check_finished(&self, conn: ConnId, connection: C, healthy: bool) {
        self.with_state(|st, fx| {
            let now = self.shared.runtime.now();
            st.held.insert(conn, connection);
            if st.core.check_finished(now, conn, healthy).is_err() {
                st.discard(conn, CloseReason::CheckTimeout, fx);
            }
        })
    }

    pub fn reset_finished(&self, conn: ConnId, connection: C, ok: bool) {
        self.with_state(|st, fx| {
            let now = self.shared.runtime.now();
            st.held.insert(conn, connection);
            if st.core.reset_finished(now, conn, ok).is_err() {
                st.discard(conn, CloseReason::ResetFailed, fx);
            }
        })
    }

    /// Act on due deadlines; returns the next one. Called by the runtime's timer.
    pub fn handle_timeout(&self) -> Option<Instant> {
        let mut next = None;
        self.with_state(|st, _| {
            let now = self.shared.runtime.now();
            st.core.handle_timeout(now);
            st.timer = None;
            next = st.core.poll_timeout();
        });
        next
    }

    // ---- plumbing ----------------------------------------------------------------------

    /// One critical section: run `f`, drain the core's actions, then, unlocked, wake
    /// waiters and hand work to the runtime.
    fn with_state<R>(&self, f: impl FnOnce(&mut State<C>, &mut Effects<C>) -> R) -> R {
        let mut fx = Effects::default();
        let result = {
            let mut st = lock(&self.shared.state);
            let result = f(&mut st, &mut fx);
            st.apply(&mut fx);
            result
        };
        self.run(&mut fx);
        result
    }

    fn run(&self, fx: &mut Effects<C>) {
        fx.wake.drain(Waker::wake);
        fx.work
            .drain(|work| self.shared.runtime.execute(self, work));
        if let Some(at) = fx.arm.take() {
            self.shared.runtime.arm_timer(self, at);
        }
    }

    /// Give a connection back (from a [`Lease`] or a dropped [`Acquire`]).
    fn release(&self, lease: LeaseId, connection: C, verdict: Verdict) {
        // The clock is read before locking, to keep the critical section short.
        let now = self.now();
        self.with_state(|st, fx| {
            st.origins.remove(&lease);
            st.held.insert(lease.conn(), connection);
            match st.core.release(now, lease, verdict) {
                Ok(()) => {}
                // Revoked at the drain deadline while the borrower held it.
                Err(_) => st.discard(lease.conn(), CloseReason::DrainTimeout, fx),
            }
        })
    }

    fn detach(&self, lease: LeaseId) {
        self.with_state(|st, _| {
            let now = self.shared.runtime.now();
            st.origins.remove(&lease);
            let _ = st.core.detach(now, lease);
        })
    }

    fn now(&self) -> Instant {
        self.shared.runtime.now()
    }
}

impl<C: Send + 'static> State<C> {
    /// Route every action the core produced, in order.
    fn apply(&mut self, fx: &mut Effects<C>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Open { conn } => fx.work.push(Work::Open { conn }),
                Action::Check { conn } => {
                    let connection = self.take(conn);
                    fx.work.push(Work::Check { conn, connection });
                }
                Action::Reset { conn } => {
                    let connection = self.take(conn);
                    fx.work.push(Work::Reset { conn, connection });
                }
                Action::Close { conn, reason } => {
                    let connection = self.held.remove(&conn);
                    fx.work.push(Work::Close {
                        conn,
                        connection,
                        reason,
                    });
                }
                Action::Grant { waiter, grant } => {
                    let connection = self.take(grant.conn());
                    self.deliver(waiter, Answer::Granted(grant, connection), fx);
                }
                Action::Reject { waiter, rejection } => {
                    self.deliver(waiter, Answer::Rejected(rejection), fx);
                }
                Action::LeakSuspected { lease, held } => fx.work.push(Work::LeakSuspected {
                    lease,
                    held,
                    origin: self.origins.get(&lease).copied(),
                }),
                Action::Drained { forced } => {
                    self.drained = Some(forced);
                    for waker in self.close_wakers.drain(..) {
                        fx.wake.push(waker);
                    }
                    fx.work.push(Work::Drained { forced });
                }
            }
        }
        // A connection handed in with the input and not routed elsewhere is idle now.
        self.held.settle();
        // Rescans every deadline only if one may have become earlier than the timer.
        let next = self.core.poll_timeout_before(self.timer);
        debug_assert!(
            next.is_some()
                || self
                    .timer
                    .is_none_or(|armed| self.core.poll_timeout().is_none_or(|t| t >= armed)),
            "shell invariant: a deadline earlier than the armed timer went unnoticed"
        );
        if let Some(at) = next {
            if self.timer.is_none_or(|armed| at < armed) {
                self.timer = Some(at);
                fx.arm = Some(at);
            }
        }
    }

    /// A connection the core just routed must be one the shell holds: the core only
    /// checks, resets or grants idle connections and ones handed in with the input.
    fn take(&mut self, conn: ConnId) -> C {
        self.held.remove(&conn).unwrap_or_else(|| {
            panic!("shell invariant: the core routed {conn} but the shell does not hold it")
        })
    }

    fn deliver(&mut self, waiter: WaiterId, answer: Answer<C>, fx: &mut Effects<C>) {
        // The core answers each queued waiter once, and the shell keeps its cell here
        // until then; the future holds the cell too and picks the answer up.
        let queued = self
            .waiters
            .remove(waiter)
            .unwrap_or_else(|| panic!("shell invariant: no cell for {waiter:?}"));
        if let Answer::Granted(grant, _) = &answer {
            if self.core.config().leak_threshold.is_some() {
                self.origins.insert(grant.lease, queued.origin);
            }
        }
        if let Some(waker) = queued.cell.answer(answer) {
            fx.wake.push(waker);
        }
        self.spares.keep(queued.cell);
    }

    /// A connection answered after the core gave up on it: drop it.
    fn discard(&mut self, conn: ConnId, reason: CloseReason, fx: &mut Effects<C>) {
        if let Some(connection) = self.held.remove(&conn) {
            fx.work.push(Work::Close {
                conn,
                connection: Some(connection),
                reason,
            });
        }
    }

    /// The connection for a grant made to the caller; the caller makes the [`Lease`] once
    /// the lock is released.
    fn lend(&mut self, grant: Grant, origin: &'static Location<'static>) -> (Grant, C) {
        let connection = self.take(grant.conn());
        if self.core.config().leak_threshold.is_some() {
            self.origins.insert(grant.lease, origin);
        }
        (grant, connection)
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests;
