//! The futures a caller awaits: [`Acquire`] (a connection) and [`Close`] (the drain).

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::action::{CloseReason, Grant, Rejection};
use crate::id::WaiterId;
use crate::input::Verdict;
use crate::pool::Acquired;
use crate::time::Instant;

use super::sync::lock;
use super::{Effects, Lease, SharedPool, Slot, State};

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
///     fn execute(&self, pool: &SharedPool<String>, work: Work<String>) {
///         match work {
///             Work::Open { conn } => pool.connect_finished(conn, Ok(format!("connection {}", conn.get()))),
///             Work::Check { conn, connection } => pool.check_finished(conn, connection, true),
///             Work::Reset { conn, connection } => pool.reset_finished(conn, connection, true),
///             _ => {}
///         }
///     }
///     fn arm_timer(&self, _: &SharedPool<String>, _: Instant) {}
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
    pool: SharedPool<C>,
    deadline: Instant,
    /// When the acquire was asked for, if the clock was read then: the first poll uses
    /// it instead of reading the clock again.
    asked_at: Option<Instant>,
    origin: &'static Location<'static>,
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Start,
    Waiting(WaiterId),
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
            pool,
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
            Step::Waiting(w) => Some(w),
            _ => None,
        }
    }
}

impl<C: Send + 'static> Future for Acquire<C> {
    type Output = Result<Lease<C>, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Borrowed, not cloned: one reference count round trip less per poll.
        let pool = &this.pool;
        let (deadline, origin) = (this.deadline, this.origin);
        let (step, poll) = match this.step {
            Step::Start => {
                // Read the clock before locking (or reuse the reading taken when the
                // acquire was asked for): the critical section stays short, and a slightly
                // older `now` is harmless (the core never goes back in time).
                let now = this.asked_at.unwrap_or_else(|| pool.now());
                pool.with_state(|st, fx| match st.core.acquire(now, deadline) {
                    Ok(Acquired::Ready(grant)) => {
                        (Step::Done, Poll::Ready(Ok(st.lend(grant, origin))))
                    }
                    Ok(Acquired::Queued(waiter)) => {
                        // Register before routing: the answer may be among these actions.
                        st.waiters
                            .insert(waiter, Slot::Waiting(Some(cx.waker().clone())));
                        st.apply(fx);
                        st.answer(waiter, origin, cx)
                    }
                    Err(rejection) => (Step::Done, Poll::Ready(Err(rejection))),
                })
            }
            Step::Waiting(waiter) => pool.with_state(|st, _| st.answer(waiter, origin, cx)),
            Step::Done => panic!("Acquire polled after it completed"),
        };
        this.step = step;
        // The guard (and its pool handle) is made after unlocking.
        poll.map(|answer| {
            answer.map(|(grant, connection)| Lease::new(pool.clone(), grant, connection))
        })
    }
}

/// A waiter's answer as the critical section hands it out: the guard is made after.
type Answer<C> = Result<(Grant, C), Rejection>;

impl<C: Send + 'static> State<C> {
    /// The waiter's answer if it has one; otherwise keep its waker current.
    fn answer(
        &mut self,
        waiter: WaiterId,
        origin: &'static Location<'static>,
        cx: &Context<'_>,
    ) -> (Step, Poll<Answer<C>>) {
        // Still waiting: keep the slot in place and its waker current.
        match self.waiters.get_mut(waiter) {
            Some(Slot::Waiting(waker)) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                return (Step::Waiting(waiter), Poll::Pending);
            }
            Some(_) => {}
            None => unreachable!("a waiting Acquire always has a slot"),
        }
        match self.waiters.remove(waiter) {
            Some(Slot::Granted(grant, connection)) => {
                if self.core.config().leak_threshold.is_some() {
                    self.origins.insert(grant.lease, origin);
                }
                (Step::Done, Poll::Ready(Ok((grant, connection))))
            }
            Some(Slot::Rejected(rejection)) => (Step::Done, Poll::Ready(Err(rejection))),
            Some(Slot::Waiting(_)) | None => unreachable!("checked above"),
        }
    }

    /// The future was dropped while queued: leave the queue, or pass on a grant that
    /// arrived in the meantime.
    fn abandon(&mut self, now: Instant, waiter: WaiterId, fx: &mut Effects<C>) {
        match self.waiters.remove(waiter) {
            Some(Slot::Waiting(_)) => {
                let _ = self.core.cancel(now, waiter);
            }
            Some(Slot::Granted(grant, connection)) => {
                self.held.insert(grant.conn(), connection);
                if self
                    .core
                    .release(now, grant.lease, Verdict::Reusable)
                    .is_err()
                {
                    // Revoked at the drain deadline before anyone looked at it.
                    self.discard(grant.conn(), CloseReason::DrainTimeout, fx);
                }
            }
            Some(Slot::Rejected(_)) | None => {}
        }
    }
}

impl<C: Send + 'static> Drop for Acquire<C> {
    fn drop(&mut self) {
        if let Step::Waiting(waiter) = self.step {
            let pool = self.pool.clone();
            pool.with_state(|st, fx| st.abandon(pool.now(), waiter, fx));
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
