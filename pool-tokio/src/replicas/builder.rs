//! Assembling a [`ReplicaSet`] from member pools and routing options.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_router::{Router, RouterConfig};

use super::{monitor, ReplicaProbe, ReplicaSet, SetBuildError, SetInner};
use crate::builder::DEFAULT_NAME;
use crate::manager::Manager;
use crate::pool::Pool;

/// Configures a [`ReplicaSet`]: the primary's pool, the replicas' pools, the routing.
pub struct ReplicaSetBuilder<M: Manager> {
    name: String,
    primary: Pool<M>,
    replicas: Vec<Pool<M>>,
    routing: RouterConfig,
    read_timeout: Option<Duration>,
}

impl<M: Manager> std::fmt::Debug for ReplicaSetBuilder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSetBuilder")
            .field("name", &self.name)
            .field("primary", &self.primary)
            .field("replicas", &self.replicas)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl<M: ReplicaProbe> ReplicaSetBuilder<M> {
    pub(crate) fn new(primary: Pool<M>) -> Self {
        ReplicaSetBuilder {
            name: DEFAULT_NAME.to_owned(),
            primary,
            replicas: Vec::new(),
            routing: RouterConfig::default(),
            read_timeout: None,
        }
    }

    /// Add a replica's pool (`replica-1` is the first added).
    pub fn replica(mut self, pool: Pool<M>) -> Self {
        self.replicas.push(pool);
        self
    }

    /// The set's name, in its logs and as the prefix of member pools built from URLs.
    /// Default: `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The routing options (fallback, `replica_wait`, `max_replica_lag`,
    /// read-your-writes, probes); see `pool_router::RouterConfig`.
    pub fn routing(mut self, routing: RouterConfig) -> Self {
        self.routing = routing;
        self
    }

    /// How long a read may take in all, across replicas and any fallback to the
    /// primary. Default: the primary pool's `acquire_timeout`.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Build the set and start its monitor (probing every member in the background).
    /// Must run inside a tokio runtime.
    pub fn build(self) -> Result<ReplicaSet<M>, SetBuildError> {
        let address = |p: &Pool<M>| {
            let t = p.manager().target();
            match (t.address, t.port) {
                (Some(a), Some(port)) => format!("{a}:{port}"),
                (Some(a), None) => a,
                (None, _) => String::new(),
            }
        };
        let replicas: Vec<String> = self.replicas.iter().map(address).collect();
        let router = Router::new(self.routing, &address(&self.primary), &replicas)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SetBuildError::Pool {
                member: "the set".into(),
                error: crate::BuildError::NoRuntime,
            });
        }
        let read_timeout = self
            .read_timeout
            .unwrap_or_else(|| self.primary.config().acquire_timeout);
        let mut pools = vec![self.primary];
        pools.extend(self.replicas);
        let inner = Arc::new(SetInner {
            name: self.name,
            pools,
            router: Mutex::new(router),
            origin: tokio::time::Instant::now(),
            read_timeout,
            closed: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        monitor::start(&inner);
        Ok(ReplicaSet { inner })
    }
}
