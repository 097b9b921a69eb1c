//! The event loop: a virtual clock, a discrete-event queue ordered by (time, sequence),
//! the simulated database and clients, and one or more REAL `pool_core::Pool`s driven
//! through their public API. After every input the pool's invariants are checked and its
//! actions drained; its `poll_timeout` becomes a timer event.
//!
//! Each event is handled by the concern that owns it (see `event.rs`): the pool driver
//! (`host`), the pool's connections at the database (`conns`), requests and their leases
//! (`request`, `lease`), the workload (`arrivals`), serverless instances (`instances`),
//! connection per request (`direct`), fault windows (`faults`), and the checks: the
//! invariants and the simulator's rules (`checks`), and the policy oracles (`oracles`),
//! judged against the simulator's own books of each pool (`books`).

mod abandoned;
mod arrivals;
mod books;
mod checks;
mod conns;
mod direct;
mod event;
mod faults;
mod host;
mod instances;
mod lease;
mod metrics;
mod oracles;
mod queue;
mod replicas;
mod request;
mod result;
mod setup;
mod timeline;

use std::time::Duration;

use crate::client::ClientSpec;
use crate::db::Db;
use crate::rng::Rng;
use crate::vtime::ns;

use event::Ev;
use host::Host;
use metrics::Metrics;
use queue::EventQueue;
use request::Request;

pub use abandoned::{AbandonedQueries, AbandonedReset, AbandonedStats};
pub use replicas::ReplicaResult;
pub use result::{Drain, RunResult};
pub use setup::{ReplicaSetup, Setup, PROBE_TIMEOUT};
pub use timeline::{Timeline, TIMELINE_BUCKETS};

/// One simulated run. Build with [`Sim::new`], then [`Sim::run`].
pub struct Sim {
    setup: Setup,
    /// The virtual clock in nanoseconds: the time of the event being handled.
    now: u64,
    queue: EventQueue,
    rng: Rng,
    /// The databases: the primary first, then each replica's.
    dbs: Vec<Db>,
    /// The replica set's routing and its figures, when the setup has replicas.
    replicas: Option<replicas::ReplicaState>,
    hosts: Vec<Host>,
    /// Serverless instance slot -> its current host.
    slots: Vec<usize>,
    reqs: Vec<Request>,
    m: Metrics,
    /// How clients behave now: `setup.client` until the swarm's liveness phase.
    client: ClientSpec,
    pool_seed: u64,
    error: Option<String>,
    timeline: Option<Timeline>,
    /// The end of the last fault window: the first query ok after it is the recovery.
    recovery_mark: u64,
    /// Cancellations strike within this long of a request's arrival.
    cancel_window: u64,
    /// Per database (as `dbs`): a `SlowClose` fault is on, closes take this many
    /// milliseconds.
    slow_close: Vec<Option<u64>>,
    /// Queries abandoned mid-flight, as the server sees them (`Setup::abandoned`).
    abandoned: abandoned::Abandoned,
    /// While a fatal connect result is fed to a pool: the requests it rejected.
    fatal_answers: Option<Vec<usize>>,
}

impl Sim {
    pub fn new(setup: Setup, seed: u64) -> Result<Sim, String> {
        setup
            .config
            .validate()
            .map_err(|e| format!("{}: {e}", setup.label))?;
        let mut rng = Rng::new(seed);
        let pool_seed = rng.next_u64();
        let mut dbs = vec![Db::new(setup.db.clone())];
        let replica_set = match &setup.replicas {
            Some(r) => {
                dbs.extend((0..r.replicas).map(|_| Db::new(setup.db.clone())));
                Some(replicas::ReplicaState::new(r).map_err(|e| format!("{}: {e}", setup.label))?)
            }
            None => None,
        };
        let timeline = setup.timeline.then(|| Timeline::new(ns(setup.end)));
        let cancel_window = ns(setup.client.acquire_timeout)
            .min(4 * setup.db.query.mean_nanos() as u64 + setup.db.connect.mean_nanos() as u64)
            .max(1);
        let recovery_mark = setup.faults.iter().map(|f| ns(f.end)).max().unwrap_or(0);
        let slow_close = vec![None; dbs.len()];
        let mut sim = Sim {
            client: setup.client.clone(),
            setup,
            now: 0,
            queue: EventQueue::default(),
            rng,
            dbs,
            replicas: replica_set,
            hosts: Vec::new(),
            slots: Vec::new(),
            reqs: Vec::new(),
            m: Metrics::default(),
            pool_seed,
            error: None,
            timeline,
            recovery_mark,
            cancel_window,
            slow_close,
            abandoned: abandoned::Abandoned::default(),
            fatal_answers: None,
        };
        sim.init();
        Ok(sim)
    }

    /// Schedule what the setup fixes in advance. The order matters: events at one instant
    /// run in the order they were scheduled.
    fn init(&mut self) {
        self.open_hosts();
        self.schedule_workload();
        self.schedule_faults();
        if let Some((at, _)) = self.setup.close_at {
            self.queue.push(ns(at), Ev::Close);
        }
        if let Some(at) = self.setup.probe_at {
            self.queue.push(ns(at), Ev::Probe);
        }
    }

    /// Run to the end and report.
    pub fn run(mut self) -> RunResult {
        let end = ns(self.setup.end);
        while let Some((t, ev)) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.m.events += 1;
            if self.runaway(ev) {
                break;
            }
            self.handle(ev);
            if self.error.is_some() {
                break;
            }
            if self.timeline.is_some() {
                self.sample();
            }
        }
        if self.error.is_none() {
            self.now = self.now.max(end);
        }
        self.finish()
    }

    /// Record the run's first failure (later ones are consequences) and stop it.
    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(format!(
                "t={:?} [{}]: {msg}",
                Duration::from_nanos(self.now),
                self.setup.label
            ));
        }
    }
}
