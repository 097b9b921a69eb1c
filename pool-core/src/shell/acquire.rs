//! The futures a caller awaits: [`Acquire`] (a connection) and [`Close`] (the drain).

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::action::{Grant, Rejection};
use crate::close_reason::CloseReason;
use crate::id::WaiterId;
use crate::input::Verdict;
use crate::pool::Acquired;
use crate::time::Instant;

use super::sync::{lock, Arc};
use super::{Answer, Cell, Effects, Lease, Queued, SharedPool, State};

/// Resolves to a [`Lease`] or to the [`Rejection`] that says why not. Works on any
/// executor; dropping it at any point loses nothing:
///
/// ```
/// # use pool_core::{Config, Instant};
/// # use pool_core::shell::{Runtime, SharedPool, Work};
/// // A runtime that opens connections inline: enough for a doc example.
/// struct Inline;
/// impl Runtime<String> for Inline {
///     fn now(&self) -> Instant { Instant::ZERO }
///     fn execute(&self, work: Work<String>) {
///         match work {
///             Work::Open(open) => {
///                 let connection = format!("connection {}", open.conn().get());
///                 open.finish(Ok(connection))
///             }
///             Work::Check(check) | Work::Reset(check) => check.finish(true),
///             _ => {}
///         }
///     }
///     fn arm_timer(&self, _: Instant) {}
/// }
///
/// let pool = SharedPool::new(Config::default(), 7, Inline).unwrap();
/// let lease = futures::executor::block_on(pool.acquire()).unwrap();
/// assert_eq!(*lease, "connection 0");
/// drop(lease); // back in the pool
/// assert_eq!(pool.status().idle, 1);
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<C: Send + 'static> {
    /// Handed on to the lease when granted.
    pool: Option<SharedPool<C>>,
    deadline: Instant,
    /// When the acquire was asked for, if the clock was read then: the first poll uses
    /// it instead of reading the clock again.
    asked_at: Option<Instant>,
    origin: &'static Location<'static>,
    step: Step<C>,
}

enum Step<C> {
    Start,
    /// Queued: the answer arrives in the cell.
    Waiting(WaiterId, Arc<Cell<C>>),
    Done,
}

impl<C: Send + 'static> Acquire<C> {
    pub(super) fn new(
        pool: SharedPool<C>,
        deadline: Instant,
        asked_at: Option<Instant>,
        origin: &'static Location<'static>,
    ) -> Self {
        Acquire {
            pool: Some(pool),
            deadline,
            asked_at,
            origin,
            step: Step::Start,
        }
    }

    /// The deadline this acquire waits until.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Where this acquire was made, for leak reports.
    pub fn origin(&self) -> &'static Location<'static> {
        self.origin
    }

    /// The waiter this future is queued as, once it has been polled and had to wait.
    pub fn waiter(&self) -> Option<WaiterId> {
        match self.step {
            Step::Waiting(w, _) => Some(w),
            _ => None,
        }
    }
}

impl<C: Send + 'static> Future for Acquire<C> {
    type Output = Result<Lease<C>, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Step::Start = this.step {
            // Read the clock before locking (or reuse the reading taken when the acquire
            // was asked for): the critical section stays short, and a slightly older `now`
            // is harmless (the core never goes back in time).
            let pool = this
                .pool
                .as_ref()
                .expect("an Acquire keeps its pool until done");
            let now = this.asked_at.unwrap_or_else(|| pool.now());
            let (deadline, origin) = (this.deadline, this.origin);
            let queued = pool.with_state(now, |st, now, _| {
                // The cell is made (or reused) only if the waiter has to wait; the core
                // keeps it in the queue and hands it back with the answer.
                let mut made = None;
                let spares = &mut st.spares;
                let acquired = st.core.acquire(now, deadline, |_| {
                    let cell = spares.take(cx.waker());
                    made = Some(cell.clone());
                    Queued { cell, origin }
                });
                match acquired {
                    Ok(Acquired::Ready(grant, connection)) => {
                        st.note_origin(grant, origin);
                        Err(Ok((grant, connection)))
                    }
                    Ok(Acquired::Queued(waiter)) => {
                        Ok((waiter, made.expect("a queued waiter has a cell")))
                    }
                    Err(rejection) => Err(Err(rejection)),
                }
            });
            this.step = match queued {
                Ok((waiter, cell)) => Step::Waiting(waiter, cell),
                Err(answer) => return this.finish(answer),
            };
        }
        match &this.step {
            // Without the pool lock: the answer, if any, is in the cell.
            Step::Waiting(_, cell) => match cell.take(cx) {
                Some(answer) => this.finish(answer),
                None => Poll::Pending,
            },
            Step::Start | Step::Done => panic!("Acquire polled after it completed"),
        }
    }
}

/// A waiter's answer as the critical section hands it out: the guard is made after.
type Outcome<C> = Result<(Grant, C), Rejection>;

impl<C: Send + 'static> Acquire<C> {
    fn finish(&mut self, outcome: Outcome<C>) -> Poll<Result<Lease<C>, Rejection>> {
        self.step = Step::Done;
        // The guard is made outside any critical section, and takes this future's pool
        // handle rather than a clone: one reference-count round trip less per acquire.
        Poll::Ready(outcome.map(|(grant, connection)| {
            let pool = self
                .pool
                .take()
                .expect("an Acquire keeps its pool until done");
            Lease::new(pool, grant, connection)
        }))
    }
}

impl<C: Send + 'static> State<C> {
    /// The future was dropped while queued: leave the queue, or pass on a grant that
    /// arrived in the meantime.
    fn abandon(&mut self, now: Instant, waiter: WaiterId, cell: &Cell<C>, fx: &mut Effects<C>) {
        // Inside the pool's critical section, so no answer can arrive after this look.
        match cell.abandon() {
            Answer::Waiting(_) => {
                if let Ok(queued) = self.core.cancel(now, waiter) {
                    self.spares.keep(queued.cell);
                }
            }
            Answer::Granted(grant, connection) => {
                if let Err(refused) =
                    self.core
                        .release(now, grant.lease, connection, Verdict::Reusable)
                {
                    // Revoked at the drain deadline before anyone looked at it.
                    fx.close(grant.conn(), refused.connection, CloseReason::DrainTimeout);
                }
            }
            Answer::Rejected(_) | Answer::Taken => {}
        }
    }
}

impl<C: Send + 'static> Drop for Acquire<C> {
    fn drop(&mut self) {
        if let (Step::Waiting(waiter, cell), Some(pool)) = (&self.step, &self.pool) {
            pool.with_state(pool.now(), |st, now, fx| st.abandon(now, *waiter, cell, fx));
        }
    }
}

/// Resolves once the pool is closed and every connection is gone, to the number of leases
/// revoked at the drain deadline.
#[must_use = "futures do nothing unless polled"]
pub struct Close<C: Send + 'static> {
    pool: SharedPool<C>,
}

impl<C: Send + 'static> Close<C> {
    pub(super) fn new(pool: SharedPool<C>) -> Self {
        Close { pool }
    }
}

impl<C: Send + 'static> Future for Close<C> {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let mut st = lock(&self.pool.shared.state);
        match st.drained {
            Some(forced) => Poll::Ready(forced),
            None => {
                if !st.close_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.close_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
