//! The seam between the shell and whatever runs it: a clock, a way to run the work the
//! core asks for, and a timer. The shell itself never spawns, sleeps or reads a clock.

use std::panic::Location;
use std::time::Duration;

use crate::action::CloseReason;
use crate::id::{ConnId, LeaseId};
use crate::time::Instant;

use super::SharedPool;

/// Work the pool hands to its runtime. Every `Open`, `Check` and `Reset` must be answered
/// through the matching `SharedPool` method (`connect_finished`, `check_finished`,
/// `reset_finished`), whatever happens; the core enforces its own timeouts, so a late
/// answer is harmless.
pub enum Work<C> {
    Open {
        conn: ConnId,
    },
    Check {
        conn: ConnId,
        connection: C,
    },
    Reset {
        conn: ConnId,
        connection: C,
    },
    /// Close and drop the connection. `connection` is `None` when the pool does not hold
    /// it: an open that was abandoned (abort it), or a lease revoked at the drain deadline
    /// (the borrower still has it; it comes back later as another `Close`).
    Close {
        conn: ConnId,
        connection: Option<C>,
        reason: CloseReason,
    },
    /// A lease has been held longer than `leak_threshold`; `origin` is where it was
    /// acquired, when the acquire recorded it.
    LeakSuspected {
        lease: LeaseId,
        held: Duration,
        origin: Option<&'static Location<'static>>,
    },
    /// The pool is closed and every connection is gone.
    Drained {
        forced: usize,
    },
}

impl<C> std::fmt::Debug for Work<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Open { conn } => write!(f, "Open({conn})"),
            Work::Check { conn, .. } => write!(f, "Check({conn})"),
            Work::Reset { conn, .. } => write!(f, "Reset({conn})"),
            Work::Close {
                conn,
                connection,
                reason,
            } => write!(
                f,
                "Close({conn}, {}, held: {})",
                reason.as_str(),
                connection.is_some()
            ),
            Work::LeakSuspected {
                lease,
                held,
                origin,
            } => {
                write!(f, "LeakSuspected({lease}, {held:?}, {origin:?})")
            }
            Work::Drained { forced } => write!(f, "Drained(forced: {forced})"),
        }
    }
}

/// What the embedding runtime provides. Called without the pool's lock held, so an
/// implementation may call straight back into the pool.
pub trait Runtime<C>: Send + Sync + 'static {
    /// The current time on a monotonic clock.
    fn now(&self) -> Instant;
    /// Run `work` (usually: spawn a task for it) and report back through `pool`.
    fn execute(&self, pool: &SharedPool<C>, work: Work<C>);
    /// The pool's earliest deadline is now `at`, earlier than the timer was set for (or
    /// the timer was idle): call `pool.handle_timeout()` at `at`, and then again at the
    /// instant that call returns, until it returns `None`.
    fn arm_timer(&self, pool: &SharedPool<C>, at: Instant);
}
