//! The seam between the shell and whatever runs it: a clock, a way to run the work the
//! core asks for, a timer, and the embedder's judgement of a connection. The shell never
//! spawns, sleeps or reads a clock itself, and the runtime never needs the pool: work
//! that expects an answer carries its own completion handle.

use std::fmt;
use std::panic::Location;
use std::time::Duration;

use crate::close_reason::CloseReason;
use crate::id::{ConnId, LeaseId};
use crate::input::{ConnectError, Verdict};
use crate::time::Instant;

use super::SharedPool;

/// Work the pool hands to its runtime.
pub enum Work<C: Send + 'static> {
    /// Open a connection and answer through the handle.
    Open(Opening<C>),
    /// Health-check an idle connection before it is lent, and answer.
    Check(Upkeep<C>),
    /// Reset a returned connection's session state, and answer.
    Reset(Upkeep<C>),
    /// Close and drop the connection, then answer through `done` (dropping `done`
    /// answers too): until then it counts against `max_size`, since the server still has
    /// it. `connection` is `None` when the pool does not hold it: an open, check or reset
    /// the pool gave up on (abort it: its `Opening` or `Upkeep`, dropped, hands the
    /// connection back and another `Close` follows with it), or a lease revoked at the
    /// drain deadline (the borrower still has it; it comes back later as another
    /// `Close`); `done` is then inert.
    Close {
        conn: ConnId,
        connection: Option<C>,
        reason: CloseReason,
        done: Closing<C>,
    },
    /// A lease has been held longer than `leak_threshold`; `origin` is where it was
    /// acquired, when the acquire recorded it.
    LeakSuspected {
        lease: LeaseId,
        held: Duration,
        origin: Option<&'static Location<'static>>,
    },
    /// The pool is closed and every connection is gone.
    Drained { forced: usize },
}

impl<C: Send + 'static> fmt::Debug for Work<C> {
    /// Omits connections: their `Debug` may show credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Open(o) => write!(f, "Open({})", o.conn),
            Work::Check(u) => write!(f, "Check({})", u.conn),
            Work::Reset(u) => write!(f, "Reset({})", u.conn),
            Work::Close {
                conn,
                connection,
                reason,
                ..
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
            } => write!(f, "LeakSuspected({lease}, {held:?}, {origin:?})"),
            Work::Drained { forced } => write!(f, "Drained(forced: {forced})"),
        }
    }
}

/// An open the pool asked for. Answer with [`Opening::finish`]; an `Opening` dropped
/// unanswered (its task aborted or panicked) reports a transient connect failure, so the
/// pool never waits for an answer that cannot come.
pub struct Opening<C: Send + 'static> {
    pool: Option<SharedPool<C>>,
    conn: ConnId,
}

impl<C: Send + 'static> Opening<C> {
    pub(super) fn new(pool: SharedPool<C>, conn: ConnId) -> Self {
        Opening {
            pool: Some(pool),
            conn,
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn finish(mut self, result: Result<C, ConnectError>) {
        if let Some(pool) = self.pool.take() {
            pool.connect_finished(self.conn, result);
        }
    }
}

impl<C: Send + 'static> Drop for Opening<C> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let error = ConnectError::transient("the connect ended without an answer");
            pool.connect_finished(self.conn, Err(error));
        }
    }
}

/// A check or reset of a connection the pool lent to its runtime for it. Work on
/// [`Upkeep::connection`], then answer with [`Upkeep::finish`]; an `Upkeep` dropped
/// unanswered (its task aborted after the pool gave up on it, or panicked) reports a
/// failure and gives the connection back to be closed, so it is never lost.
pub struct Upkeep<C: Send + 'static> {
    pool: Option<SharedPool<C>>,
    conn: ConnId,
    kind: UpkeepKind,
    connection: Option<C>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UpkeepKind {
    Check,
    Reset,
}

impl<C: Send + 'static> Upkeep<C> {
    pub(super) fn new(pool: SharedPool<C>, conn: ConnId, kind: UpkeepKind, connection: C) -> Self {
        Upkeep {
            pool: Some(pool),
            conn,
            kind,
            connection: Some(connection),
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn connection(&mut self) -> &mut C {
        self.connection
            .as_mut()
            .expect("an unanswered upkeep holds its connection")
    }

    /// Report whether the connection may be lent again.
    pub fn finish(mut self, ok: bool) {
        self.answer(ok);
    }

    fn answer(&mut self, ok: bool) {
        if let (Some(pool), Some(connection)) = (self.pool.take(), self.connection.take()) {
            pool.upkeep_finished(self.conn, connection, ok, self.kind);
        }
    }
}

impl<C: Send + 'static> Drop for Upkeep<C> {
    fn drop(&mut self) {
        self.answer(false);
    }
}

/// A close the pool asked for, to answer once the connection is gone. Answer with
/// [`Closing::finish`]; dropped unanswered, it answers the same (a runtime that drops
/// the work has dropped the connection with it). Inert for a close whose connection the
/// runtime was not handed, or that the pool no longer counts.
pub struct Closing<C: Send + 'static> {
    pool: Option<SharedPool<C>>,
    conn: ConnId,
}

impl<C: Send + 'static> Closing<C> {
    pub(super) fn new(pool: Option<SharedPool<C>>, conn: ConnId) -> Self {
        Closing { pool, conn }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The connection is gone: it stops counting against `max_size`.
    pub fn finish(mut self) {
        self.answer();
    }

    /// The close did not finish in time and the runtime dropped the connection: no
    /// answer; the pool counts it gone (and abandoned) at its `close_timeout`.
    pub fn abandon(mut self) {
        self.pool = None;
    }

    fn answer(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.close_finished(self.conn);
        }
    }
}

impl<C: Send + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        self.answer();
    }
}

/// When the runtime is asked to judge a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// An idle connection is about to be lent.
    Checkout,
    /// A borrower returned it without stating a verdict.
    Return,
}

/// What the embedding runtime provides. Called without the pool's lock held (except
/// [`Runtime::judge`], which must not call into the pool).
pub trait Runtime<C: Send + 'static>: Send + Sync + 'static {
    /// The current time on a monotonic clock.
    fn now(&self) -> Instant;
    /// Run `work` (usually: spawn a task for it).
    fn execute(&self, work: Work<C>);
    /// The pool's earliest deadline is now `at`, earlier than the timer was set for (or
    /// the timer was idle): call [`SharedPool::handle_timeout`] at `at`. The pool arms
    /// the next deadline itself, through this method, as that call's last step.
    fn arm_timer(&self, at: Instant);
    /// Judge a connection without I/O (e.g. a client that already saw its socket close),
    /// at `moment`: at checkout, where `Broken` closes it and the waiter gets the next one
    /// (any other verdict lends it), and at return when the borrower stated no verdict.
    /// Cheap and synchronous; called inside the pool's critical section at checkout.
    fn judge(&self, connection: &mut C, moment: Moment) -> Verdict {
        let _ = (connection, moment);
        Verdict::Reusable
    }
}
