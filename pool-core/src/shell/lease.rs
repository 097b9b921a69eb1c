//! The lease guard: a borrowed connection that goes back to the pool when dropped, from
//! any thread, with the borrower's verdict or, without one, the runtime's judgement.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::action::Grant;
use crate::id::LeaseId;
use crate::input::Verdict;

use super::SharedPool;

/// A connection lent by the pool. Derefs to the connection; returns it on drop. A lease
/// dropped while its thread panics is returned as broken: whatever the panic interrupted
/// (a transaction, a half-read result) must not reach the next borrower.
pub struct Lease<C: Send + 'static> {
    pool: SharedPool<C>,
    grant: Grant,
    /// `Some` until the lease is dropped or detached.
    connection: Option<C>,
    /// The borrower's verdict, if it stated one; otherwise the runtime judges.
    verdict: Option<Verdict>,
}

impl<C: Send + 'static> Lease<C> {
    pub(super) fn new(pool: SharedPool<C>, grant: Grant, connection: C) -> Self {
        Lease {
            pool,
            grant,
            connection: Some(connection),
            verdict: None,
        }
    }

    pub fn id(&self) -> LeaseId {
        self.grant.lease
    }

    /// How long the acquire waited for this connection.
    pub fn waited(&self) -> Duration {
        self.grant.waited
    }

    /// Return the connection with this verdict instead of the runtime's judgement.
    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
    }

    /// The verdict stated so far, if any.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Take the connection out of the pool for good; its capacity is freed.
    pub fn detach(mut self) -> C {
        let connection = self
            .connection
            .take()
            .expect("a live lease holds its connection");
        self.pool.detach(self.grant.lease);
        connection
    }
}

impl<C: Send + 'static> Deref for Lease<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.connection
            .as_ref()
            .expect("a live lease holds its connection")
    }
}

impl<C: Send + 'static> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.connection
            .as_mut()
            .expect("a live lease holds its connection")
    }
}

impl<C: Send + 'static> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let verdict = if std::thread::panicking() {
                Some(Verdict::Broken)
            } else {
                self.verdict
            };
            self.pool.release(self.grant.lease, connection, verdict);
        }
    }
}

impl<C: Send + 'static> fmt::Debug for Lease<C> {
    /// Deliberately omits the connection: its `Debug` may show credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lease", &self.grant.lease)
            .field("verdict", &self.verdict)
            .finish()
    }
}
