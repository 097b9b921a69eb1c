//! The pool handle and the connection guard.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use pool_core::shell::{Lease, SharedPool};
use pool_core::{Config, ConfigError, ConnectError, HumanDuration, Status, Verdict};
use tracing::Instrument;

use crate::builder::Builder;
use crate::error::PoolError;
use crate::hooks::{Conn, Extensions};
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::runtime::PoolInfo;

/// A pool of `M::Connection`s. Cheap to clone; every clone is the same pool. When the
/// last handle and the last borrowed connection are gone, the timer task ends and idle
/// connections are dropped.
pub struct Pool<M: Manager> {
    pub(crate) shared: SharedPool<Conn<M::Connection>>,
    pub(crate) inner: Arc<PoolInner<M>>,
}

/// What every handle of one pool shares besides the core.
pub(crate) struct PoolInner<M> {
    pub(crate) manager: Arc<M>,
    pub(crate) info: Arc<PoolInfo>,
    #[cfg(feature = "metrics")]
    pub(crate) exporter: crate::metrics::Exporter,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// What a readiness probe needs: [`Pool::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The pool's counts now.
    pub status: Status,
    /// `close()` was called.
    pub closed: bool,
    /// The last connect error since the last successful connect (a success clears it),
    /// and how long ago it happened.
    pub last_connect_error: Option<(ConnectError, Duration)>,
}

impl Health {
    /// Whether the pool can serve: not closed, and either no connect has failed since
    /// the last one that succeeded, or it still holds open connections.
    pub fn can_serve(&self) -> bool {
        let s = &self.status;
        !self.closed && (self.last_connect_error.is_none() || s.idle + s.leased + s.checking > 0)
    }
}

impl fmt::Display for Health {
    /// `ready (size 2/10: ...)`, or `not ready (...): last connect error 2.0s ago: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.can_serve(), self.closed) {
            (true, _) => write!(f, "ready ({})", self.status)?,
            (false, true) => write!(f, "not ready: pool is closed ({})", self.status)?,
            (false, false) => write!(f, "not ready ({})", self.status)?,
        }
        if let Some((e, ago)) = &self.last_connect_error {
            write!(f, "; last connect error {} ago: {e}", HumanDuration(*ago))?;
        }
        Ok(())
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
        Self::wait(self.shared.acquire(), &self.inner.info)
    }

    /// Wait for a connection for at most `timeout`, counted from this call, covering any
    /// connect it waits on.
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<PooledConnection<M>, PoolError<M::Error>>> + Send + 'static
    {
        Self::wait(self.shared.acquire_timeout(timeout), &self.inner.info)
    }

    fn wait(
        acquire: pool_core::shell::Acquire<Conn<M::Connection>>,
        info: &PoolInfo,
    ) -> impl Future<Output = Result<PooledConnection<M>, PoolError<M::Error>>> + Send + 'static
    {
        let span = info.get_span();
        async move {
            match acquire.await {
                Ok(lease) => {
                    tracing::debug!(waited = %HumanDuration(lease.waited()), "acquired");
                    Ok(PooledConnection::new(lease))
                }
                Err(rejection) => {
                    let error = PoolError::from(rejection);
                    match &error {
                        // Shedding and shutdown are expected under load: keep them quiet.
                        PoolError::QueueFull { .. } | PoolError::Closed => {
                            tracing::debug!(error = %error, "acquire refused")
                        }
                        _ => tracing::warn!(error = %error, "acquire failed"),
                    }
                    Err(error)
                }
            }
        }
        .instrument(span)
    }

    /// An idle connection if one is ready and nobody is waiting; never waits, never opens.
    #[track_caller]
    pub fn try_get(&self) -> Option<PooledConnection<M>> {
        self.shared.try_acquire().map(PooledConnection::new)
    }

    /// Close the pool: waiters are rejected, idle connections closed, and borrowed ones
    /// closed as they come back, until `drain` has passed; then the rest are revoked.
    /// Resolves, once every connection is gone, to the number revoked.
    pub fn close(&self, drain: Duration) -> impl Future<Output = usize> + Send + 'static {
        tracing::info!(
            pool = self.name(),
            drain = %HumanDuration(drain),
            status = %self.status(),
            "closing pool"
        );
        let close = self.shared.close(drain);
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

    /// Change `max_size` while running; every other option stays. Refused (and nothing
    /// changes) for 0, above `MAX_SIZE_LIMIT`, or below `min_idle`. Growing opens for
    /// waiters at once. Shrinking closes idle connections now; borrowed ones, and ones
    /// being opened, checked or reset, are closed when they come back or finish while
    /// the pool is still over the new size, and no connection is opened until it fits.
    pub fn resize(&self, max_size: usize) -> Result<(), ConfigError> {
        let from = self.status().max_size;
        self.shared.resize(max_size)?;
        tracing::info!(from, to = max_size, "pool resized");
        Ok(())
    }

    /// Change the options while running (a configuration reload), e.g.
    /// `pool.reconfigure(Config { idle_timeout: None, ..pool.config() })`. Refused (and
    /// nothing changes) when they are invalid, or when `acquire_timeout` changes (it is
    /// fixed at build; `get_timeout` takes one per call). `max_size` changes as with
    /// [`Pool::resize`]; durations apply from now on: a connect, check, reset, close or
    /// wait under way keeps its deadline, a connection keeps the lifetime it was opened
    /// with, idle connections are judged by the new `idle_timeout` and `min_idle` at once.
    pub fn reconfigure(&self, config: Config) -> Result<(), ConfigError> {
        self.shared.reconfigure(config)?;
        tracing::info!("pool reconfigured");
        Ok(())
    }

    /// Soft-evict every connection open now, e.g. after a credential rotation or a
    /// failover: idle connections are closed at once, borrowed ones when they are
    /// returned, and ones being opened, checked or reset when that finishes, instead of
    /// being lent. Borrowers from now on get connections opened after this call.
    /// `PoolError::Closed` once the pool is closing.
    // The error `get` returns, for one API; its `Timeout` carries a `Status` snapshot,
    // which makes it large, on a path that is cold by nature.
    #[allow(clippy::result_large_err)]
    pub fn evict_all(&self) -> Result<(), PoolError<M::Error>> {
        self.shared.evict_all().map_err(|_| PoolError::Closed)?;
        tracing::info!(status = %self.status(), "evicted every connection");
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.shared.is_closing()
    }

    /// The pool's counts now.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Counters and histograms since the pool was built.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.shared.status(), &self.shared.stats())
    }

    /// Whether the pool can serve, with the last connect error and how long ago it
    /// happened: for a readiness probe (`/healthz`). One lock, no I/O.
    pub fn health(&self) -> Health {
        let (status, last_connect_error) = self.shared.health();
        Health {
            status,
            closed: self.shared.is_closing(),
            last_connect_error,
        }
    }

    /// The pool's name ([`Builder::name`]).
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// Record the pool's gauges, counters and histograms through the `metrics` facade
    /// now (feature `metrics`); call it before rendering a scrape to export fresh
    /// values. The pool also records every `metrics_interval`.
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        crate::metrics::record(self);
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> Config {
        self.shared.config()
    }

    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// Check the core's and the shell's invariants (tests, debugging).
    pub fn check_invariants(&self) -> Result<(), pool_core::InvariantViolation> {
        self.shared.check_invariants()
    }
}

/// A borrowed connection. Derefs to it; goes back to the pool when dropped, judged by
/// [`Manager::is_broken`] and the `after_release` hook unless a verdict was set (and as
/// broken if dropped during a panic).
pub struct PooledConnection<M: Manager>(Lease<Conn<M::Connection>>);

impl<M: Manager> PooledConnection<M> {
    fn new(lease: Lease<Conn<M::Connection>>) -> Self {
        PooledConnection(lease)
    }

    /// Take the connection out of the pool for good; its slot is freed at once. Its
    /// [`Extensions`] are dropped.
    pub fn detach(self) -> M::Connection {
        self.0.detach().conn
    }

    /// This connection's user state: created empty with the connection, dropped with it.
    pub fn extensions(&self) -> &Extensions {
        &self.0.extensions
    }

    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.0.extensions
    }

    /// Close this connection when it is returned instead of lending it again.
    pub fn mark_broken(&mut self) {
        self.set_verdict(Verdict::Broken);
    }

    /// Override the verdict it is returned with (otherwise `Manager::is_broken` decides).
    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.0.set_verdict(verdict);
    }

    /// How long `get()` waited for it.
    pub fn waited(&self) -> Duration {
        self.0.waited()
    }
}

impl<M: Manager> Deref for PooledConnection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.0.conn
    }
}

impl<M: Manager> DerefMut for PooledConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.0.conn
    }
}

impl<M: Manager> fmt::Debug for PooledConnection<M> {
    /// Omits the connection: its `Debug` may show credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PooledConnection").field(&self.0).finish()
    }
}
