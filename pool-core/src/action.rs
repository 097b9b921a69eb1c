//! What the core asks of the embedder. Drained with `Pool::poll_action` after every input.

use std::fmt;
use std::time::Duration;

use crate::close_reason::CloseReason;
use crate::id::{ConnId, LeaseId, WaiterId};
use crate::input::ConnectError;
use crate::status::Status;
use crate::time::HumanDuration;

/// `C` is the connection: the pool holds idle ones and hands them out with the action
/// that moves them. `W` is the embedder's token for a waiter, handed back with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<C, W> {
    /// Open a connection; answer with `connect_finished(conn, ..)`.
    Open { conn: ConnId },
    /// Health-check an idle connection before lending it; answer with `check_finished`.
    Check { conn: ConnId, connection: C },
    /// Reset a returned connection's session state; answer with `reset_finished`.
    Reset { conn: ConnId, connection: C },
    /// Close this connection, then answer `close_finished(conn)` once it is gone from the
    /// server: until then it counts against `max_size` (`Status::closing`), and at
    /// `close_timeout` the pool stops waiting (abandoned, counted gone). `connection` is
    /// `None` when the pool does not hold it: for a connection still opening, being
    /// checked or reset, abandon that work; its answer (`connect_finished`,
    /// `check_finished`, `reset_finished`) hands the connection back and another `Close`
    /// follows with it (or answer `close_finished` if it is known gone). For a leased one
    /// (revoked by close) the pool has already forgotten it: the borrower still has it,
    /// and it comes back as the `Refused` connection of its `release`; no answer then.
    Close {
        conn: ConnId,
        reason: CloseReason,
        connection: Option<C>,
    },
    /// Hand a connection to a waiter.
    Grant {
        waiter: WaiterId,
        token: W,
        grant: Grant,
        connection: C,
    },
    /// Tell a waiter it will not get a connection, and why.
    Reject {
        waiter: WaiterId,
        token: W,
        rejection: Rejection,
    },
    /// A lease has been held longer than `leak_threshold`. Reported once per lease.
    LeakSuspected { lease: LeaseId, held: Duration },
    /// The pool is closed and every connection is gone; `forced` leases were revoked at
    /// the drain deadline.
    Drained { forced: usize },
}

/// A connection lent to a waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub lease: LeaseId,
    /// How long the waiter waited.
    pub waited: Duration,
}

impl Grant {
    pub fn conn(&self) -> ConnId {
        self.lease.conn()
    }
}

/// Why an acquire ended without a connection.
#[derive(Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The deadline passed. Carries the reason it is likely to have passed.
    Timeout(Box<TimeoutReport>),
    /// `max_waiters` were already waiting.
    QueueFull { max_waiters: usize },
    /// The pool is closed or closing.
    Closed,
    /// Connecting failed with an error that retrying will not fix (e.g. a wrong password).
    ConnectFailed(ConnectError),
}

/// What a timed-out waiter is told: how long it waited, the last connect error (a database
/// that refuses connections is the usual reason a pool runs dry) and the pool's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutReport {
    pub waited: Duration,
    pub last_connect_error: Option<ConnectError>,
    pub status: Status,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Timeout(r) => {
                write!(
                    f,
                    "timed out after {} waiting for a connection ({})",
                    HumanDuration(r.waited),
                    r.status
                )?;
                if let Some(e) = &r.last_connect_error {
                    write!(f, "; last connect error: {e}")?;
                }
                Ok(())
            }
            Rejection::QueueFull { max_waiters } => {
                write!(
                    f,
                    "pool queue is full ({max_waiters} waiters); request shed"
                )
            }
            Rejection::Closed => f.write_str("pool is closed"),
            Rejection::ConnectFailed(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait is measured on a real clock: the message rounds it as people read it.
    #[test]
    fn a_timeout_names_its_wait_as_people_read_it() {
        let rejection = Rejection::Timeout(Box::new(TimeoutReport {
            waited: Duration::from_nanos(2_000_123_456),
            last_connect_error: None,
            status: Status::default(),
        }));
        let text = rejection.to_string();
        assert!(
            text.starts_with("timed out after 2.0s waiting for a connection"),
            "{text}"
        );
    }
}
