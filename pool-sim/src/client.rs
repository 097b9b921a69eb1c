//! Simulated clients: what arrives (closed loop, open loop with spikes, serverless
//! instances) and how each request behaves once it has a connection.

use std::time::Duration;

/// How requests arrive.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// `tasks` tasks, each: acquire, query, release, think, repeat, until the workload ends.
    Closed { tasks: usize, think: Duration },
    /// Poisson arrivals at `rate` per second, plus bursts of `n` requests at once.
    Open { rate: f64, spikes: Vec<Spike> },
}

/// `n` requests arriving at the same instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    pub at: Duration,
    pub n: usize,
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq)]
pub enum Topology {
    /// One pool (an application server, or an external pooler) in front of the database.
    Shared,
    /// No pool: every request opens its own connection and closes it after its query.
    Direct,
    /// Serverless: `instances` short-lived instances, each with its own in-process pool.
    /// An instance is retired after `lifetime` (staggered) and replaced by a fresh one; a
    /// retired instance is frozen, not shut down, so its connections stay open on the
    /// server until the server's `zombie_ttl` kills them.
    PerInstance {
        instances: usize,
        lifetime: Duration,
        zombie_ttl: Duration,
    },
}

/// Per-request client behaviour, including the client-side faults.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSpec {
    /// How long an acquire may wait.
    pub acquire_timeout: Duration,
    /// The client's own query timeout: a query on a half-open connection hangs this long,
    /// then the connection is returned as broken.
    pub query_timeout: Duration,
    /// Extra latency per request before reaching the pool (e.g. a hop to an external pooler).
    pub hop: Duration,
    /// Probability that a request is cancelled at a random point (while waiting, or
    /// mid-query: then the connection is returned needing a reset).
    pub cancel_prob: f64,
    /// Probability that a request holds its connection for `leak_hold` (a leak).
    pub leak_prob: f64,
    pub leak_hold: Duration,
    /// Probability that a release takes `slow_release` to reach the pool.
    pub slow_release_prob: f64,
    pub slow_release: Duration,
    /// Probability that a finished query leaves session state behind (needs a reset).
    pub dirty_prob: f64,
    /// Probability that a request first tries `try_acquire` (never waits), falling back
    /// to `acquire` when nothing is idle.
    pub try_first_prob: f64,
    /// Probability that a borrower keeps its connection for good (`detach`) instead of
    /// releasing it; it then closes the connection itself.
    pub detach_prob: f64,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            acquire_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(5),
            hop: Duration::ZERO,
            cancel_prob: 0.0,
            leak_prob: 0.0,
            leak_hold: Duration::from_secs(60),
            slow_release_prob: 0.0,
            slow_release: Duration::from_millis(500),
            dirty_prob: 0.0,
            try_first_prob: 0.0,
            detach_prob: 0.0,
        }
    }
}

impl ClientSpec {
    /// The same clients, minus every misbehaviour (the swarm's liveness phase).
    pub fn well_behaved(&self) -> ClientSpec {
        ClientSpec {
            cancel_prob: 0.0,
            leak_prob: 0.0,
            slow_release_prob: 0.0,
            ..self.clone()
        }
    }
}
