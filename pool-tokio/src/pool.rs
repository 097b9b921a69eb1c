//! The pool handle and the connection guard.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use pool_core::shell::{Lease, SharedPool};
use pool_core::{Config, Instant, Rejection, Status, Verdict};
use tracing::Instrument;

use crate::builder::Builder;
use crate::error::PoolError;
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::runtime::{Glue, Timed};

/// A pool of `M::Connection`s. Cheap to clone; every clone is the same pool. When the
/// last handle (and the last borrowed connection) is gone, the timer task ends and idle
/// connections are dropped.
pub struct Pool<M: Manager> {
    pub(crate) inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: Manager> {
    pub(crate) shared: SharedPool<M::Connection>,
    pub(crate) glue: Arc<Glue<M>>,
    pub(crate) acquire_timeout: Duration,
}

impl<M: Manager> Timed for Inner<M> {
    fn handle_timeout(&self) -> Option<Instant> {
        self.shared.handle_timeout()
    }
}

impl<M: Manager> Drop for Inner<M> {
    fn drop(&mut self) {
        // Let the timer task see that the pool is gone.
        self.glue.timer.notify.notify_one();
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Pool<M> {
    /// Start configuring a pool of connections opened by `manager`.
    pub fn builder(manager: M) -> Builder<M> {
        Builder::new(manager)
    }

    /// Wait for a connection, for at most the pool's `acquire_timeout`, counted from this
    /// call. Not an `async fn` on purpose: it records its caller's source location, which
    /// a leak report then names.
    #[track_caller]
    pub fn get(
        &self,
    ) -> impl Future<Output = Result<PooledConnection<M>, PoolError<M::Error>>> + Send + 'static
    {
        self.get_timeout(self.inner.acquire_timeout)
    }

    /// Wait for a connection for at most `timeout`, counted from this call, covering any
    /// connect it waits on.
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<PooledConnection<M>, PoolError<M::Error>>> + Send + 'static
    {
        let mut acquire = self.inner.shared.acquire_timeout(timeout);
        let pool = self.clone();
        let span = tracing::debug_span!("pool.get", timeout = ?timeout);
        async move {
            loop {
                let (deadline, origin) = (acquire.deadline(), acquire.origin());
                match acquire.await {
                    Ok(mut lease) => {
                        // A connection that died while idle and already knows it (e.g. a
                        // terminated backend, seen without I/O) is never lent, even inside
                        // the checkout-check bypass window: close it and ask again, within
                        // the same deadline.
                        if pool.inner.glue.manager.is_broken(&mut lease) == Verdict::Broken {
                            lease.set_verdict(Verdict::Broken);
                            drop(lease);
                            acquire = pool.inner.shared.acquire_from(deadline, origin);
                            continue;
                        }
                        tracing::debug!(waited = ?lease.waited(), "acquired");
                        return Ok(PooledConnection {
                            lease: Some(lease),
                            pool,
                        });
                    }
                    Err(rejection) => {
                        let error = pool.error(rejection);
                        match &error {
                            // Shedding and shutdown are expected under load: keep them quiet.
                            PoolError::QueueFull { .. } | PoolError::Closed => {
                                tracing::debug!(error = %error, "acquire refused")
                            }
                            _ => tracing::warn!(error = %error, "acquire failed"),
                        }
                        return Err(error);
                    }
                }
            }
        }
        .instrument(span)
    }

    /// An idle connection if one is ready and nobody is waiting; never waits, never opens.
    #[track_caller]
    pub fn try_get(&self) -> Option<PooledConnection<M>> {
        let origin = std::panic::Location::caller();
        loop {
            let mut lease = self.inner.shared.try_acquire_from(origin)?;
            // As in `get_timeout`: a connection known to be dead is closed, not lent.
            if self.inner.glue.manager.is_broken(&mut lease) == Verdict::Broken {
                lease.set_verdict(Verdict::Broken);
                continue;
            }
            return Some(PooledConnection {
                lease: Some(lease),
                pool: self.clone(),
            });
        }
    }

    /// Close the pool: waiters are rejected, idle connections closed, and borrowed ones
    /// closed as they come back, until `drain` has passed; then the rest are revoked.
    /// Resolves, once every connection is gone, to the number revoked.
    pub fn close(&self, drain: Duration) -> impl Future<Output = usize> + Send + 'static {
        tracing::info!(drain = ?drain, status = %self.status(), "closing pool");
        let close = self.inner.shared.close(drain);
        async move {
            let forced = close.await;
            if forced > 0 {
                tracing::warn!(
                    forced,
                    "pool closed; connections still borrowed at the drain deadline were revoked"
                );
            }
            forced
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closing()
    }

    /// The pool's counts now.
    pub fn status(&self) -> Status {
        self.inner.shared.status()
    }

    /// Counters and histograms since the pool was built.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.inner.shared.status(), &self.inner.shared.stats())
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> Config {
        self.inner.shared.config()
    }

    pub fn manager(&self) -> &M {
        &self.inner.glue.manager
    }

    /// Check the core's and the shell's invariants (tests, debugging).
    pub fn check_invariants(&self) -> Result<(), pool_core::InvariantViolation> {
        self.inner.shared.check_invariants()
    }

    fn error(&self, rejection: Rejection) -> PoolError<M::Error> {
        match rejection {
            Rejection::Timeout(report) => {
                let source = report
                    .last_connect_error
                    .as_ref()
                    .and_then(|e| self.inner.glue.source_of(e));
                PoolError::Timeout {
                    waited: report.waited,
                    last_connect_error: report.last_connect_error,
                    status: report.status,
                    source,
                }
            }
            Rejection::QueueFull { max_waiters } => PoolError::QueueFull { max_waiters },
            Rejection::Closed => PoolError::Closed,
            Rejection::ConnectFailed(error) => PoolError::Connect {
                source: self.inner.glue.source_of(&error),
                error,
            },
        }
    }
}

/// A borrowed connection. Derefs to it; goes back to the pool when dropped, judged by
/// [`Manager::is_broken`] (or as broken if dropped during a panic).
pub struct PooledConnection<M: Manager> {
    /// `Some` until dropped or detached.
    lease: Option<Lease<M::Connection>>,
    pool: Pool<M>,
}

impl<M: Manager> PooledConnection<M> {
    fn lease(&self) -> &Lease<M::Connection> {
        self.lease.as_ref().expect("a live guard holds its lease")
    }

    /// Take the connection out of the pool for good; its slot is freed at once.
    pub fn detach(mut self) -> M::Connection {
        self.lease
            .take()
            .expect("a live guard holds its lease")
            .detach()
    }

    /// Close this connection when it is returned instead of lending it again.
    pub fn mark_broken(&mut self) {
        self.set_verdict(Verdict::Broken);
    }

    /// Override the verdict it is returned with (otherwise `Manager::is_broken` decides).
    pub fn set_verdict(&mut self, verdict: Verdict) {
        if let Some(lease) = &mut self.lease {
            lease.set_verdict(verdict);
        }
    }

    /// How long `get()` waited for it.
    pub fn waited(&self) -> Duration {
        self.lease().waited()
    }

    pub fn pool(&self) -> &Pool<M> {
        &self.pool
    }
}

impl<M: Manager> Deref for PooledConnection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        self.lease()
    }
}

impl<M: Manager> DerefMut for PooledConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.lease.as_mut().expect("a live guard holds its lease")
    }
}

impl<M: Manager> Drop for PooledConnection<M> {
    fn drop(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        // A panic while held: the lease itself returns it as broken. Otherwise an
        // explicit verdict wins, and the manager judges the rest.
        if !std::thread::panicking() && lease.verdict() == Verdict::Reusable {
            let verdict = self.pool.inner.glue.manager.is_broken(&mut lease);
            lease.set_verdict(verdict);
        }
        drop(lease);
    }
}

impl<M: Manager> fmt::Debug for PooledConnection<M> {
    /// Omits the connection: its `Debug` may show credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("lease", &self.lease)
            .finish()
    }
}
