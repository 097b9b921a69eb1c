//! A primary and its read replicas behind one handle: [`ReplicaSet`].
//!
//! Each member is a full [`Pool`] (its own limits, hooks, metrics and name); the routing
//! policy is `pool_router::Router`, sans-IO, behind one small lock. This module only
//! carries it out: it reads each replica pool's counts for a decision
//! ([`Pool::health`], one lock each), waits on the chosen pool, reports how the wait
//! ended, and runs the background monitor that probes every member
//! ([`ReplicaProbe`]). See `docs/guides/read-replicas.md`.

mod builder;
mod error;
mod monitor;
#[cfg(feature = "postgres")]
mod urls;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::{ConnectError, Instant};
use pool_router::{HopEnd, Load, Member, MemberId, Probe, Read, Route, Router};

pub use builder::ReplicaSetBuilder;
pub use error::{ReplicaError, SetBuildError};
#[cfg(feature = "postgres")]
pub use urls::ReplicaUrlError;

use crate::error::PoolError;
use crate::manager::Manager;
use crate::pool::{Health, Pool, PooledConnection};
use crate::runtime::lock;

/// What a replica set needs from a manager besides opening connections: how to ask a
/// member where it stands. `PgManager` implements it with one simple query.
pub trait ReplicaProbe: Manager {
    /// Is the server in recovery, and how far behind is its replay? Runs on a connection
    /// borrowed from the member's pool, in the background (never on a caller's path),
    /// bounded by `probe_interval`.
    fn probe(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<Probe, Self::Error>> + Send;

    /// Whether a connect error says the server does not take writes (then a write is
    /// reported as [`ReplicaError::NotPrimary`]). Default: never.
    fn refuses_writes(&self, error: &ConnectError) -> bool {
        let _ = error;
        false
    }
}

/// A primary and its replicas, each a [`Pool`]. Cheap to clone; every clone is the same
/// set. [`ReplicaSet::write`] borrows from the primary, [`ReplicaSet::read`] from the
/// replica that can serve soonest (or the primary, as the routing says); both return the
/// pools' own [`PooledConnection`].
pub struct ReplicaSet<M: Manager> {
    inner: Arc<SetInner<M>>,
}

impl<M: Manager> Clone for ReplicaSet<M> {
    fn clone(&self) -> Self {
        ReplicaSet {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct SetInner<M: Manager> {
    name: String,
    /// `pools[0]` is the primary's; the replicas' follow, in the router's order.
    pools: Vec<Pool<M>>,
    router: Mutex<Router>,
    /// The set's clock: router time is nanoseconds since this (tokio's clock, so
    /// `tokio::time::pause()` drives it in tests).
    origin: tokio::time::Instant,
    read_timeout: Duration,
    closed: AtomicBool,
    /// Wakes the monitor: a probe finished, or the set closed.
    wake: Arc<tokio::sync::Notify>,
}

/// A member now: the router's view (name, role, state, lag, counters) and its pool's.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member: Member,
    /// The member pool's name (its metrics label).
    pub pool: String,
    pub health: Health,
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.member;
        write!(f, "{m}: ")?;
        match &m.state {
            pool_router::State::InService => f.write_str("in service")?,
            pool_router::State::Benched { reason, .. } => write!(f, "benched: {reason}")?,
        }
        if let Some(lag) = m.lag {
            write!(f, ", lag {}", pool_core::HumanDuration(lag))?;
        }
        write!(f, "; pool {}", self.health)
    }
}

impl<M: Manager> fmt::Debug for ReplicaSet<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaSet")
            .field("name", &self.inner.name)
            .field("members", &self.inner.pools.len())
            .finish_non_exhaustive()
    }
}

impl<M: ReplicaProbe> ReplicaSet<M> {
    /// Start a set over `primary`'s pool; add replicas' pools with
    /// [`ReplicaSetBuilder::replica`].
    pub fn builder(primary: Pool<M>) -> ReplicaSetBuilder<M> {
        ReplicaSetBuilder::new(primary)
    }

    /// A connection from the primary, for writes (waiting up to the primary pool's
    /// `acquire_timeout`). Refused at once with [`ReplicaError::NotPrimary`] when the
    /// background probe found the primary in recovery, or when its connects say it does
    /// not take writes.
    pub fn write(
        &self,
    ) -> impl Future<Output = Result<PooledConnection<M>, ReplicaError<M::Error>>> + Send + 'static
    {
        let inner = self.inner.clone();
        async move { inner.write(None).await }
    }

    /// A connection for reads, from the replica that can serve soonest; routed again
    /// after `replica_wait` on one replica, falling back to the primary as the routing
    /// says; within the set's read timeout. The error names each replica and why.
    pub fn read(
        &self,
    ) -> impl Future<Output = Result<PooledConnection<M>, ReplicaError<M::Error>>> + Send + 'static
    {
        let inner = self.inner.clone();
        async move { inner.read(None).await }
    }

    /// A session: its reads go to the primary for `read_your_writes` after each of its
    /// writes. Cheap; make one per logical caller (a request, a user, a job).
    pub fn session(&self) -> Session<M> {
        Session {
            set: self.clone(),
            last_write: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<M: Manager> ReplicaSet<M> {
    /// The set's name: member pools built from URLs are named `<name>.primary`,
    /// `<name>.replica-1`, ...
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The primary's pool.
    pub fn primary(&self) -> &Pool<M> {
        &self.inner.pools[0]
    }

    /// The replicas' pools, in order (`replica-1` first).
    pub fn replicas(&self) -> &[Pool<M>] {
        &self.inner.pools[1..]
    }

    /// Every member now, the primary first.
    pub fn members(&self) -> Vec<MemberStatus> {
        let members: Vec<Member> = lock(&self.inner.router).members().to_vec();
        members
            .into_iter()
            .zip(&self.inner.pools)
            .map(|(member, pool)| MemberStatus {
                member,
                pool: pool.name().to_owned(),
                health: pool.health(),
            })
            .collect()
    }

    /// Whether writes can be served: the primary's pool can serve and no probe found it
    /// in recovery.
    pub fn can_write(&self) -> bool {
        let in_service = lock(&self.inner.router).members()[0].state.in_service();
        in_service && self.inner.pools[0].health().can_serve()
    }

    /// Whether reads can be served: a replica in service whose pool can serve, or a
    /// primary that can when reads may fall back to it (or the set has no replicas).
    pub fn can_read(&self) -> bool {
        let (states, may_fall_back) = {
            let r = lock(&self.inner.router);
            let states: Vec<bool> = r.members().iter().map(|m| m.state.in_service()).collect();
            (states, r.config().fallback != pool_router::Fallback::Never)
        };
        let replica = states
            .iter()
            .zip(&self.inner.pools)
            .skip(1)
            .any(|(s, p)| *s && p.health().can_serve());
        replica
            || ((may_fall_back || states.len() == 1) && self.inner.pools[0].health().can_serve())
    }

    /// Record every member pool's series, and the set's own per member (lag, in service,
    /// reads, fallbacks, writes, benches), through the `metrics` facade (feature
    /// `metrics`). The monitor also records the set's series after each probe.
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        for pool in &self.inner.pools {
            pool.record_metrics();
        }
        monitor::record(&self.inner);
    }

    /// Close every member pool (see [`Pool::close`]) and stop the monitor; resolves to
    /// the number of connections revoked in all.
    pub fn close(&self, drain: Duration) -> impl Future<Output = usize> + Send + 'static {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        let closing: Vec<_> = self.inner.pools.iter().map(|p| p.close(drain)).collect();
        async move {
            let mut forced = 0;
            for c in closing {
                forced += c.await;
            }
            forced
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

/// A caller's reads and writes, with read-your-writes: after a write through this
/// session, its reads go to the primary for the set's `read_your_writes` window (counted
/// from when the write's connection was lent: make the window longer than a write
/// transaction plus the replicas' usual lag). Cheap to clone; clones share the window.
pub struct Session<M: Manager> {
    set: ReplicaSet<M>,
    /// Router time of the last write plus one; 0 before any.
    last_write: Arc<AtomicU64>,
}

impl<M: Manager> Clone for Session<M> {
    fn clone(&self) -> Self {
        Session {
            set: self.set.clone(),
            last_write: self.last_write.clone(),
        }
    }
}

impl<M: ReplicaProbe> Session<M> {
    /// [`ReplicaSet::write`], opening this session's read-your-writes window.
    pub fn write(
        &self,
    ) -> impl Future<Output = Result<PooledConnection<M>, ReplicaError<M::Error>>> + Send + 'static
    {
        let inner = self.set.inner.clone();
        let stamp = self.last_write.clone();
        async move { inner.write(Some(&stamp)).await }
    }

    /// [`ReplicaSet::read`], from the primary within the read-your-writes window.
    pub fn read(
        &self,
    ) -> impl Future<Output = Result<PooledConnection<M>, ReplicaError<M::Error>>> + Send + 'static
    {
        let inner = self.set.inner.clone();
        let last = match self.last_write.load(Ordering::SeqCst) {
            0 => None,
            t => Some(Instant::from_nanos(t - 1)),
        };
        async move { inner.read(last).await }
    }

    /// The set this session belongs to.
    pub fn set(&self) -> &ReplicaSet<M> {
        &self.set
    }
}

impl<M: Manager> SetInner<M> {
    pub(crate) fn now(&self) -> Instant {
        let nanos = self.origin.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Run `f` on the router, logging members that left or returned to service.
    pub(crate) fn with_router<T>(&self, f: impl FnOnce(&mut Router) -> T) -> T {
        let mut r = lock(&self.router);
        let before: Vec<bool> = r.members().iter().map(|m| m.state.in_service()).collect();
        let out = f(&mut r);
        for (m, was) in r.members().iter().zip(before) {
            match (&m.state, was) {
                (pool_router::State::Benched { reason, .. }, true) => {
                    tracing::warn!(set = %self.name, member = %m, "benched: {reason}")
                }
                (pool_router::State::InService, false) => {
                    tracing::info!(set = %self.name, member = %m, "back in service")
                }
                _ => {}
            }
        }
        out
    }

    fn load(pool: &Pool<M>) -> Load {
        let health = pool.health();
        Load {
            status: health.status,
            connect_error: health.last_connect_error.map(|(e, _)| e.message),
        }
    }
}

impl<M: ReplicaProbe> SetInner<M> {
    async fn write(
        self: Arc<Self>,
        stamp: Option<&AtomicU64>,
    ) -> Result<PooledConnection<M>, ReplicaError<M::Error>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ReplicaError::Closed);
        }
        let now = self.now();
        let routed = self.with_router(|r| r.route_write(now));
        let primary = self.with_router(|r| r.members()[0].to_string());
        if let Err(refused) = routed {
            return Err(ReplicaError::NotPrimary {
                primary,
                reason: refused.to_string(),
                error: None,
            });
        }
        if let Some(stamp) = stamp {
            stamp.store(now.as_nanos().saturating_add(1), Ordering::SeqCst);
        }
        let pool = &self.pools[0];
        match pool.get().await {
            Ok(c) => Ok(c),
            Err(error) => {
                let refused = match &error {
                    PoolError::Connect { error: e, .. } => pool.manager().refuses_writes(e),
                    PoolError::Timeout {
                        last_connect_error: Some(e),
                        ..
                    } => pool.manager().refuses_writes(e),
                    _ => false,
                };
                if refused {
                    Err(ReplicaError::NotPrimary {
                        reason: format!(
                            "its server does not take writes (in recovery, or read-only): {error}"
                        ),
                        primary,
                        error: Some(error),
                    })
                } else {
                    Err(ReplicaError::Write { primary, error })
                }
            }
        }
    }

    async fn read(
        self: Arc<Self>,
        last_write: Option<Instant>,
    ) -> Result<PooledConnection<M>, ReplicaError<M::Error>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ReplicaError::Closed);
        }
        let started = self.now();
        let mut read = Read::new(started, started + self.read_timeout, last_write);
        loop {
            let now = self.now();
            let route = self
                .with_router(|r| r.route_read(now, &mut read, |m| Self::load(&self.pools[m.0])));
            let (member, until) = match route {
                Route::Replica { member, until } => (member, until),
                Route::Primary { why, until } => {
                    tracing::debug!(set = %self.name, why = why.as_str(), "read from the primary");
                    (MemberId::PRIMARY, until)
                }
                Route::Refused => {
                    let report = self.with_router(|r| r.explain(now, &read));
                    return Err(ReplicaError::Read {
                        report,
                        primary: None,
                    });
                }
            };
            let wait = until.saturating_since(now);
            let got = self.pools[member.0].get_timeout(wait).await;
            let end = match &got {
                Ok(_) => HopEnd::Served,
                Err(PoolError::Timeout {
                    status,
                    last_connect_error,
                    ..
                }) => HopEnd::TimedOut {
                    status: *status,
                    error: last_connect_error.as_ref().map(|e| e.message.clone()),
                },
                Err(PoolError::Connect { error, .. }) => HopEnd::Failed {
                    error: error.message.clone(),
                    unreachable: true,
                },
                Err(e @ (PoolError::QueueFull { .. } | PoolError::Closed)) => HopEnd::Failed {
                    error: e.to_string().into(),
                    unreachable: false,
                },
            };
            let now = self.now();
            self.with_router(|r| r.hop_ended(now, &mut read, end));
            match got {
                Ok(c) => return Ok(c),
                // The primary was the last resort: its own error, with the replicas'.
                Err(error) if member.is_primary() => {
                    let report = self.with_router(|r| r.explain(now, &read));
                    return Err(ReplicaError::Read {
                        report,
                        primary: Some(error),
                    });
                }
                Err(_) if self.closed.load(Ordering::SeqCst) => return Err(ReplicaError::Closed),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
