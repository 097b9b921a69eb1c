//! What one run is made of: the pool's configuration, the database, the workload, the
//! topology, client behaviour, faults, and the run's milestones.

use std::time::Duration;

use pool_core::Config;

use crate::client::{ClientSpec, Topology, Workload};
use crate::db::DbSpec;
use crate::faults::Fault;

use super::AbandonedQueries;
/// A primary and read replicas instead of one database: each replica is a database like
/// the primary (`Setup::db`) with its own pool (`Setup::config`); the real pool-router
/// routes reads between them and probes each in the background.
#[derive(Clone, Debug)]
pub struct ReplicaSetup {
    pub replicas: usize,
    pub routing: pool_router::RouterConfig,
    /// The share of requests that are writes (the rest are reads).
    pub write_ratio: f64,
}

/// How long the health probe may wait: a connect plus a check, with room to spare.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything one simulated run needs.
#[derive(Clone, Debug)]
pub struct Setup {
    pub label: String,
    pub config: Config,
    pub db: DbSpec,
    pub workload: Workload,
    pub topology: Topology,
    pub client: ClientSpec,
    pub faults: Vec<Fault>,
    /// Requests start arriving at `warmup` (the pool may warm up to `min_idle` before).
    pub warmup: Duration,
    /// No new requests after this.
    pub workload_end: Duration,
    /// The run stops here.
    pub end: Duration,
    /// Close the pool(s) at this time with this drain window.
    pub close_at: Option<(Duration, Duration)>,
    /// From this time on the clients stop misbehaving (the swarm's liveness phase).
    pub well_behaved_after: Option<Duration>,
    /// Issue one extra acquire at this time and record its outcome (the swarm's health
    /// probe).
    pub probe_at: Option<Duration>,
    /// Record a timeline for the plot.
    pub timeline: bool,
    /// Stop with an error after this many events (a runaway: e.g. a timer that keeps
    /// firing at the same instant).
    pub max_events: u64,
    /// Sabotage, for tests that show the checks can fail: the embedder never calls
    /// `handle_timeout` (a lost timer).
    pub drop_timers: bool,
    /// Read replicas behind the primary (topology `Shared` only); `None`: one database.
    pub replicas: Option<ReplicaSetup>,
    /// The embedder reports a close finished when it starts it, not when the server has
    /// let go (what pool-tokio did before closes counted against `max_size`): the pool
    /// forgets a connection the server still holds.
    pub early_close_answer: bool,
    /// Borrowers give up on slow queries mid-flight and the server runs them on (see
    /// `abandoned.rs`); `None`: the server drops an abandoned query at once.
    pub abandoned: Option<AbandonedQueries>,
}

impl Setup {
    pub fn new(label: impl Into<String>, config: Config, db: DbSpec, workload: Workload) -> Self {
        Setup {
            label: label.into(),
            config,
            db,
            workload,
            topology: Topology::Shared,
            client: ClientSpec::default(),
            faults: Vec::new(),
            warmup: Duration::ZERO,
            workload_end: Duration::from_secs(10),
            end: Duration::from_secs(12),
            close_at: None,
            well_behaved_after: None,
            probe_at: None,
            timeline: false,
            max_events: 200_000_000,
            drop_timers: false,
            replicas: None,
            early_close_answer: false,
            abandoned: None,
        }
    }
}
