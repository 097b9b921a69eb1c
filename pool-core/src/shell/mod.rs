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
mod lease;
mod list;
mod runtime;
mod sync;

use std::panic::Location;
use std::task::Waker;
use std::time::Duration;

use crate::action::{Action, Grant};
use crate::close_reason::CloseReason;
use crate::config::{Config, ConfigError};
use crate::id::{ConnId, LeaseId};
use crate::input::{ConnectError, InputError, Refused, Verdict};
use crate::pool::Pool;
use crate::status::{Stats, Status};
use crate::time::Instant;

use crate::id_map::IdMap;
pub use acquire::{Acquire, Close};
use cell::{Answer, Cell, Spares};
pub use lease::Lease;
use list::InlineList;
use runtime::UpkeepKind;
pub use runtime::{Closing, Moment, Opening, Runtime, Upkeep, Work};
use sync::{lock, Arc, Mutex};

/// A pool of `C` shared between threads and tasks. Cheap to clone.
pub struct SharedPool<C: Send + 'static> {
    shared: Arc<Shared<C>>,
}

impl<C: Send + 'static> Clone for SharedPool<C> {
    fn clone(&self) -> Self {
        SharedPool {
            shared: self.shared.clone(),
        }
    }
}

/// A handle that does not keep the pool alive: for a runtime's timer, which should end
/// with the pool. (Not in the model-checking builds: loom's `Arc` has no weak side.)
#[cfg(not(any(loom, shuttle)))]
pub struct WeakPool<C: Send + 'static> {
    shared: std::sync::Weak<Shared<C>>,
}

#[cfg(not(any(loom, shuttle)))]
impl<C: Send + 'static> WeakPool<C> {
    pub fn upgrade(&self) -> Option<SharedPool<C>> {
        self.shared.upgrade().map(|shared| SharedPool { shared })
    }
}

struct Shared<C: Send + 'static> {
    state: Mutex<State<C>>,
    /// Plain `std` sharing: the core's judge holds it too. It is not a synchronization
    /// point the model checkers need to see.
    runtime: std::sync::Arc<dyn Runtime<C>>,
    /// Fixed at build time, so `acquire()` need not lock to read it.
    acquire_timeout: Duration,
}

struct State<C: Send + 'static> {
    /// The core holds the idle connections, and the queue with each waiter's cell.
    core: Pool<C, Queued<C>>,
    spares: Spares<C>,
    /// Where each connection's latest lease was acquired, for leak reports (only with a
    /// leak threshold). Keyed by connection, so a new lease overwrites the last one's
    /// entry and a return removes nothing; the entry goes when the connection does.
    origins: IdMap<ConnId, (LeaseId, &'static Location<'static>)>,
    /// Set once the core reports `Drained`.
    drained: Option<usize>,
    close_wakers: Vec<Waker>,
}

/// A queued waiter's token in the core: where to put its answer, and where it asked
/// from.
struct Queued<C> {
    cell: Arc<Cell<C>>,
    origin: &'static Location<'static>,
}

/// Side effects gathered inside a critical section and run after unlocking. Wakers are
/// kept inline: a hand-off wakes one waiter, and collecting them must not allocate on
/// every acquire and release. Work (opens, checks, resets, closes) is rare on that path,
/// so it goes in a plain `Vec`, which costs nothing until used; an inline slot for it
/// made every critical section build, move and drop a `Work` slot (measured with
/// callgrind: about a tenth of an uncontended get+drop).
struct Effects<C: Send + 'static> {
    wake: InlineList<Waker, 2>,
    work: Vec<Work<C>>,
    arm: Option<Instant>,
}

impl<C: Send + 'static> Default for Effects<C> {
    fn default() -> Self {
        Effects {
            wake: InlineList::new(),
            work: Vec::new(),
            arm: None,
        }
    }
}

impl<C: Send + 'static> SharedPool<C> {
    /// Build a pool run by `runtime`. `seed` drives the core's jitter. The runtime's
    /// judge decides at checkout whether an idle connection is still alive.
    pub fn new(config: Config, seed: u64, runtime: impl Runtime<C>) -> Result<Self, ConfigError> {
        let runtime: std::sync::Arc<dyn Runtime<C>> = std::sync::Arc::new(runtime);
        let acquire_timeout = config.acquire_timeout;
        let mut core = Pool::new(config, runtime.now(), seed)?;
        let judge = runtime.clone();
        core.set_judge(move |connection| {
            judge.judge(connection, Moment::Checkout) != Verdict::Broken
        });
        let pool = SharedPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    core,
                    spares: Spares::new(),
                    origins: IdMap::default(),
                    drained: None,
                    close_wakers: Vec::new(),
                }),
                runtime,
                acquire_timeout,
            }),
        };
        // min_idle may have asked for opens already.
        pool.with_state(pool.now(), |_, _, _| ());
        Ok(pool)
    }

    #[cfg(not(any(loom, shuttle)))]
    pub fn downgrade(&self) -> WeakPool<C> {
        WeakPool {
            shared: Arc::downgrade(&self.shared),
        }
    }

    pub fn config(&self) -> Config {
        lock(&self.shared.state).core.config().clone()
    }

    /// Wait for a connection for at most the configured `acquire_timeout`.
    #[track_caller]
    pub fn acquire(&self) -> Acquire<C> {
        self.acquire_timeout(self.shared.acquire_timeout)
    }

    /// Wait for a connection for at most `timeout`, covering any connect it waits on.
    #[track_caller]
    pub fn acquire_timeout(&self, timeout: Duration) -> Acquire<C> {
        let now = self.now();
        Acquire::new(self.clone(), now + timeout, Some(now), Location::caller())
    }

    /// Wait for a connection until `deadline` on the runtime's clock.
    #[track_caller]
    pub fn acquire_until(&self, deadline: Instant) -> Acquire<C> {
        Acquire::new(self.clone(), deadline, None, Location::caller())
    }

    /// A connection if one is idle and nobody waits; never waits, never opens.
    #[track_caller]
    pub fn try_acquire(&self) -> Option<Lease<C>> {
        let origin = Location::caller();
        self.with_state(self.now(), |st, now, _| {
            let (grant, connection) = st.core.try_acquire(now)?;
            st.note_origin(grant, origin);
            Some((grant, connection))
        })
        .map(|(grant, connection)| Lease::new(self.clone(), grant, connection))
    }

    /// Close the pool; see [`Pool::close`]. The returned future resolves to the number of
    /// leases revoked at the drain deadline, once every connection is gone.
    pub fn close(&self, drain_timeout: Duration) -> Close<C> {
        self.with_state(self.now(), |st, now, _| {
            // A second close just waits for the first one's drain.
            let _ = st.core.close(now, now + drain_timeout);
        });
        Close::new(self.clone())
    }

    /// Change `max_size` at run time; see [`Pool::resize`]. Growing serves waiters with
    /// new opens at once; shrinking closes idle connections now and the rest as they come
    /// back, until the pool fits.
    pub fn resize(&self, max_size: usize) -> Result<(), ConfigError> {
        self.with_state(self.now(), |st, now, _| st.core.resize(now, max_size))
    }

    /// Change the options at run time; see [`Pool::reconfigure`]. `acquire_timeout` is
    /// fixed when the pool is built (so `acquire()` reads it without locking): a change
    /// of it is refused, naming it; `acquire_timeout()` takes a timeout per call.
    pub fn reconfigure(&self, config: Config) -> Result<(), ConfigError> {
        if config.acquire_timeout != self.shared.acquire_timeout {
            return Err(ConfigError {
                field: "acquire_timeout",
                problem: "is fixed when the pool is built; pass a timeout per acquire instead"
                    .into(),
            });
        }
        self.with_state(self.now(), |st, now, _| st.core.reconfigure(now, config))
    }

    /// Soft-evict every connection now live (credential rotation, failover); see
    /// [`Pool::evict_all`]. Idle ones are closed now, leased ones when returned, ones
    /// being opened, checked or reset when that finishes. Refused after `close`.
    pub fn evict_all(&self) -> Result<(), InputError> {
        self.with_state(self.now(), |st, now, _| st.core.evict_all(now))
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

    /// The pool's counts, and the last connect error since the last successful connect
    /// with how long ago it happened, read in one critical section (a readiness probe).
    pub fn health(&self) -> (Status, Option<(ConnectError, Duration)>) {
        let now = self.now();
        let st = lock(&self.shared.state);
        let failure = st
            .core
            .last_connect_error()
            .map(|(e, at)| (e.clone(), now.saturating_since(at)));
        (st.core.status(), failure)
    }

    /// Run the core's invariant checks, and the shell's own: every waiter the core
    /// queues is still waiting for its answer (tests, debugging).
    pub fn check_invariants(&self) -> Result<(), crate::InvariantViolation> {
        let st = lock(&self.shared.state);
        st.core.check_invariants()?;
        if let Some(q) = st.core.waiter_tokens().find(|q| !q.cell.is_waiting()) {
            return Err(crate::InvariantViolation(format!(
                "a queued waiter (asked at {}) already holds an answer",
                q.origin
            )));
        }
        Ok(())
    }

    /// Act on due deadlines. Called by the runtime's timer; the next deadline is armed
    /// through [`Runtime::arm_timer`].
    pub fn handle_timeout(&self) {
        self.with_state(self.now(), |st, now, _| st.core.handle_timeout(now));
    }

    // ---- answers to work, through its completion handles --------------------------------

    fn connect_finished(&self, conn: ConnId, result: Result<C, ConnectError>) {
        self.with_state(self.now(), |st, now, fx| {
            if let Err(Refused {
                connection: Some(connection),
                ..
            }) = st.core.connect_finished(now, conn, result)
            {
                // Abandoned after its connect timeout: nobody wants it.
                fx.close(conn, connection, CloseReason::ConnectTimeout);
            }
        })
    }

    fn close_finished(&self, conn: ConnId) {
        self.with_state(self.now(), |st, now, _| {
            // Refused only if the close timeout abandoned it first: nothing to do.
            let _ = st.core.close_finished(now, conn);
        })
    }

    fn upkeep_finished(&self, conn: ConnId, connection: C, ok: bool, kind: UpkeepKind) {
        self.with_state(self.now(), |st, now, fx| {
            let (answer, late) = match kind {
                UpkeepKind::Check => (
                    st.core.check_finished(now, conn, connection, ok),
                    CloseReason::CheckTimeout,
                ),
                UpkeepKind::Reset => (
                    st.core.reset_finished(now, conn, connection, ok),
                    CloseReason::ResetFailed,
                ),
            };
            if let Err(refused) = answer {
                fx.close(conn, refused.connection, late);
            }
        })
    }

    // ---- plumbing ----------------------------------------------------------------------

    /// One critical section at `now`: run `f`, drain the core's actions, then, unlocked,
    /// wake waiters, hand work to the runtime and move its timer. The clock is read by
    /// the caller, before locking: one reading per input, never inside the lock.
    fn with_state<R>(
        &self,
        now: Instant,
        f: impl FnOnce(&mut State<C>, Instant, &mut Effects<C>) -> R,
    ) -> R {
        let mut fx = Effects::default();
        let result = {
            let mut st = lock(&self.shared.state);
            let result = f(&mut st, now, &mut fx);
            st.apply(self, &mut fx);
            result
        };
        fx.wake.drain(Waker::wake);
        let runtime = &self.shared.runtime;
        for work in fx.work.drain(..) {
            runtime.execute(work);
        }
        if let Some(at) = fx.arm {
            runtime.arm_timer(at);
        }
        result
    }

    /// Give a connection back (from a [`Lease`]). Without a stated verdict, the
    /// runtime judges it, before locking.
    fn release(&self, lease: LeaseId, mut connection: C, verdict: Option<Verdict>) {
        let verdict =
            verdict.unwrap_or_else(|| self.shared.runtime.judge(&mut connection, Moment::Return));
        self.with_state(self.now(), |st, now, fx| {
            if let Err(refused) = st.core.release(now, lease, connection, verdict) {
                // Revoked at the drain deadline while the borrower held it.
                fx.close(lease.conn(), refused.connection, CloseReason::DrainTimeout);
            }
        })
    }

    fn detach(&self, lease: LeaseId) {
        self.with_state(self.now(), |st, now, _| {
            st.origins.remove(&lease.conn());
            let _ = st.core.detach(now, lease);
        })
    }

    fn now(&self) -> Instant {
        self.shared.runtime.now()
    }
}

impl<C: Send + 'static> Effects<C> {
    /// Close a connection the core refused (it no longer counts it).
    fn close(&mut self, conn: ConnId, connection: C, reason: CloseReason) {
        self.work.push(Work::Close {
            conn,
            connection: Some(connection),
            reason,
            done: Closing::new(None, conn),
        });
    }
}

impl<C: Send + 'static> State<C> {
    /// Route every action the core produced, in order, and move the timer if needed.
    fn apply(&mut self, pool: &SharedPool<C>, fx: &mut Effects<C>) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Open { conn } => fx.work.push(Work::Open(Opening::new(pool.clone(), conn))),
                Action::Check { conn, connection } => fx.work.push(Work::Check(Upkeep::new(
                    pool.clone(),
                    conn,
                    UpkeepKind::Check,
                    connection,
                ))),
                Action::Reset { conn, connection } => fx.work.push(Work::Reset(Upkeep::new(
                    pool.clone(),
                    conn,
                    UpkeepKind::Reset,
                    connection,
                ))),
                Action::Close {
                    conn,
                    reason,
                    connection,
                } => {
                    self.origins.remove(&conn);
                    // Only a close the runtime is handed the connection for is answered;
                    // the others come back through the work that holds the connection.
                    let done = Closing::new(connection.is_some().then(|| pool.clone()), conn);
                    fx.work.push(Work::Close {
                        conn,
                        connection,
                        reason,
                        done,
                    })
                }
                Action::Grant {
                    token,
                    grant,
                    connection,
                    ..
                } => {
                    self.note_origin(grant, token.origin);
                    self.answer(token, Answer::Granted(grant, connection), fx);
                }
                Action::Reject {
                    token, rejection, ..
                } => self.answer(token, Answer::Rejected(rejection), fx),
                Action::LeakSuspected { lease, held } => fx.work.push(Work::LeakSuspected {
                    lease,
                    held,
                    origin: self
                        .origins
                        .get(&lease.conn())
                        .filter(|(latest, _)| *latest == lease)
                        .map(|(_, origin)| *origin),
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
        fx.arm = self.core.poll_timer();
    }

    fn answer(&mut self, queued: Queued<C>, answer: Answer<C>, fx: &mut Effects<C>) {
        if let Some(waker) = queued.cell.answer(answer) {
            fx.wake.push(waker);
        }
        self.spares.keep(queued.cell);
    }

    fn note_origin(&mut self, grant: Grant, origin: &'static Location<'static>) {
        if self.core.config().leak_threshold.is_some() {
            self.origins.insert(grant.conn(), (grant.lease, origin));
        }
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests;
