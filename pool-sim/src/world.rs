//! The event loop: a virtual clock, a discrete-event queue ordered by (time, sequence),
//! the simulated database and clients, and one or more REAL `pool_core::Pool`s driven
//! through their public API. After every input the pool's invariants are checked and its
//! actions drained; its `poll_timeout` becomes a timer event.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use pool_core::{
    Acquired, Action, CloseReason, Config, ConnId, Grant, InputError, Instant, LeaseId, Pool,
    Rejection, Verdict, WaiterId,
};

use crate::client::{ClientSpec, Topology, Workload};
use crate::db::{ConnectStart, Db, DbSpec, Health};
use crate::faults::{Fault, FaultKind};
use crate::report::{Metrics, RunResult, Timeline};
use crate::rng::Rng;
use crate::vtime::ns;

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
        }
    }
}

/// How long the health probe may wait: a connect plus a check, with room to spare.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A closed-loop task whose acquire was rejected waits at least this long before trying
/// again (a client that retried at once would spin at one instant of virtual time).
const RETRY_AFTER_REJECTION: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RState {
    /// On its way to the pool (client-to-pooler hop).
    Hop,
    Waiting(WaiterId),
    Holding(LeaseId),
    /// Query over, the release is on its (slow) way.
    Releasing,
    /// No pool: connecting on its own.
    Direct,
    Done,
}

#[derive(Clone, Debug)]
struct Req {
    host: usize,
    arrived: u64,
    deadline: u64,
    state: RState,
    task: Option<u32>,
    leak: bool,
    /// Its lease was revoked by a forced close: the release is expected to be refused.
    revoked: bool,
    probe: bool,
}

struct Host {
    pool: Pool,
    /// Pool connection -> database backend, once connected.
    conns: BTreeMap<ConnId, u64>,
    /// Connections whose open is in flight, with what the server decided at the start.
    opening: BTreeMap<ConnId, ConnectStart>,
    /// Opens the pool abandoned while the handshake was in flight.
    aborted: BTreeSet<ConnId>,
    /// Leased connection -> request holding it.
    leased: BTreeMap<ConnId, usize>,
    waiters: BTreeMap<WaiterId, usize>,
    timer_at: Option<u64>,
    /// A retired serverless instance: no timers run, no new requests.
    frozen: bool,
    /// Its connections were killed by the server; it is gone.
    dead: bool,
    busy_timer_t: u64,
    busy_timer_n: u32,
}

impl Host {
    /// A retired serverless instance finishes its in-flight requests, then is frozen:
    /// no timers run (idle timeout, min idle, lifetime) and its connections stay open.
    fn runs_timers(&self) -> bool {
        !self.dead && (!self.frozen || !self.waiters.is_empty() || !self.leased.is_empty())
    }
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    TaskNext(u32),
    Arrival,
    Spike(u32),
    Start(usize),
    Timer(usize),
    ConnectDone {
        host: usize,
        conn: ConnId,
        start: ConnectStart,
    },
    CheckDone {
        host: usize,
        conn: ConnId,
        healthy: bool,
    },
    ResetDone {
        host: usize,
        conn: ConnId,
        ok: bool,
    },
    QueryDone {
        req: usize,
        lease: LeaseId,
    },
    Release {
        req: usize,
        lease: LeaseId,
        verdict: Verdict,
    },
    Cancel(usize),
    FaultStart(usize),
    FaultEnd(usize),
    Close,
    Retire(usize),
    Reap(usize),
    Probe,
    DirectConnected {
        req: usize,
        start: ConnectStart,
    },
    DirectDone {
        req: usize,
        backend: u64,
    },
}

struct Entry {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

/// One simulated run. Build with [`Sim::new`], then [`Sim::run`].
pub struct Sim {
    setup: Setup,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Entry>>,
    rng: Rng,
    db: Db,
    hosts: Vec<Host>,
    /// Serverless instance slot -> its current host.
    slots: Vec<usize>,
    reqs: Vec<Req>,
    m: Metrics,
    client: ClientSpec,
    pool_seed: u64,
    error: Option<String>,
    timeline: Option<Timeline>,
    recovery_mark: u64,
    cancel_window: u64,
}

impl Sim {
    pub fn new(setup: Setup, seed: u64) -> Result<Sim, String> {
        setup
            .config
            .validate()
            .map_err(|e| format!("{}: {e}", setup.label))?;
        let mut rng = Rng::new(seed);
        let pool_seed = rng.next_u64();
        let db = Db::new(setup.db.clone());
        let timeline = setup.timeline.then(|| Timeline::new(ns(setup.end)));
        let cancel_window = ns(setup.client.acquire_timeout)
            .min(4 * setup.db.query.mean_nanos() as u64 + setup.db.connect.mean_nanos() as u64)
            .max(1);
        let recovery_mark = setup.faults.iter().map(|f| ns(f.end)).max().unwrap_or(0);
        let mut sim = Sim {
            client: setup.client.clone(),
            setup,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            db,
            hosts: Vec::new(),
            slots: Vec::new(),
            reqs: Vec::new(),
            m: Metrics::default(),
            pool_seed,
            error: None,
            timeline,
            recovery_mark,
            cancel_window,
        };
        sim.init();
        Ok(sim)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Entry {
            t: at,
            seq: self.seq,
            ev,
        }));
    }

    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(format!(
                "t={:?} [{}]: {msg}",
                Duration::from_nanos(self.now),
                self.setup.label
            ));
        }
    }

    fn new_host(&mut self) -> usize {
        let seed = self.pool_seed.wrapping_add(self.hosts.len() as u64);
        let pool = Pool::new(
            self.setup.config.clone(),
            Instant::from_nanos(self.now),
            seed,
        )
        .expect("config validated in Sim::new");
        self.hosts.push(Host {
            pool,
            conns: BTreeMap::new(),
            opening: BTreeMap::new(),
            aborted: BTreeSet::new(),
            leased: BTreeMap::new(),
            waiters: BTreeMap::new(),
            timer_at: None,
            frozen: false,
            dead: false,
            busy_timer_t: u64::MAX,
            busy_timer_n: 0,
        });
        let h = self.hosts.len() - 1;
        self.input_done(h, "new");
        h
    }

    fn init(&mut self) {
        match self.setup.topology.clone() {
            Topology::Shared => {
                let h = self.new_host();
                self.slots.push(h);
            }
            Topology::Direct => {}
            Topology::PerInstance {
                instances,
                lifetime,
                ..
            } => {
                for i in 0..instances {
                    let h = self.new_host();
                    self.slots.push(h);
                    // Stagger retirements so instances do not all turn over at once.
                    let first = ns(lifetime) / instances.max(1) as u64 * (i as u64 + 1);
                    self.push(ns(self.setup.warmup) + first, Ev::Retire(i));
                }
            }
        }
        let start = ns(self.setup.warmup);
        match self.setup.workload.clone() {
            Workload::Closed { tasks, .. } => {
                for t in 0..tasks {
                    self.push(start, Ev::TaskNext(t as u32));
                }
            }
            Workload::Open { rate, spikes } => {
                if rate > 0.0 {
                    let gap = self.rng.exp(1e9 / rate) as u64;
                    self.push(start + gap, Ev::Arrival);
                }
                for s in spikes {
                    self.push(ns(s.at), Ev::Spike(s.n as u32));
                }
            }
        }
        for (i, f) in self.setup.faults.clone().iter().enumerate() {
            self.push(ns(f.start), Ev::FaultStart(i));
            self.push(ns(f.end), Ev::FaultEnd(i));
        }
        if let Some((at, _)) = self.setup.close_at {
            self.push(ns(at), Ev::Close);
        }
        if let Some(at) = self.setup.probe_at {
            self.push(ns(at), Ev::Probe);
        }
    }

    /// Run to the end and report.
    pub fn run(mut self) -> RunResult {
        let end = ns(self.setup.end);
        while let Some(Reverse(e)) = self.queue.pop() {
            if e.t > end {
                break;
            }
            self.now = e.t;
            self.m.events += 1;
            if self.m.events > self.setup.max_events {
                let s = self.hosts.first().map(|h| h.pool.status().to_string());
                self.fail(format!(
                    "runaway: more than {} events (last: {:?}; pool: {s:?})",
                    self.setup.max_events, e.ev
                ));
                break;
            }
            self.handle(e.ev);
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

    fn sample(&mut self) {
        let (mut leased, mut idle, mut waiters, mut opening) = (0, 0, 0, 0);
        for h in self.hosts.iter().filter(|h| !h.dead) {
            let s = h.pool.status();
            leased += s.leased;
            idle += s.idle;
            waiters += s.waiters;
            opening += s.opening;
        }
        let open = self.db.open_count();
        if let Some(tl) = &mut self.timeline {
            tl.record(self.now, open, leased, idle, waiters, opening);
        }
    }

    fn finish(mut self) -> RunResult {
        let mut liveness = Vec::new();
        let mut stuck_waiting = 0;
        let mut stuck_holding = 0;
        for r in &self.reqs {
            match r.state {
                RState::Done => {}
                RState::Waiting(_) => {
                    stuck_waiting += 1;
                    if r.deadline < self.now {
                        liveness.push(format!(
                            "a waiter that arrived at {:?} is still waiting after its deadline {:?}",
                            Duration::from_nanos(r.arrived),
                            Duration::from_nanos(r.deadline)
                        ));
                    }
                }
                _ => stuck_holding += 1,
            }
        }
        liveness.truncate(3);
        let mut status = pool_core::Status::default();
        let mut stats_acc = Vec::new();
        for h in self.hosts.iter().filter(|h| !h.dead) {
            let s = h.pool.status();
            status.max_size += s.max_size;
            status.total += s.total;
            status.idle += s.idle;
            status.leased += s.leased;
            status.opening += s.opening;
            status.checking += s.checking;
            status.waiters += s.waiters;
        }
        for h in &self.hosts {
            stats_acc.push(h.pool.stats().clone());
        }
        self.m.unresolved_waiting = stuck_waiting;
        self.m.unresolved_holding = stuck_holding;
        RunResult::build(
            &self.setup,
            self.m,
            &self.db,
            status,
            &stats_acc,
            self.error,
            liveness,
            self.timeline,
            self.now,
        )
    }

    // ---- pool plumbing -----------------------------------------------------------------

    /// After every input: check the invariants, drain the actions, re-arm the timer.
    fn input_done(&mut self, h: usize, what: &str) {
        self.m.pool_inputs += 1;
        self.m.invariant_checks += 1;
        if let Err(e) = self.hosts[h].pool.check_invariants() {
            self.fail(format!("{e} (after {what})"));
            return;
        }
        while let Some(a) = self.hosts[h].pool.poll_action() {
            self.m.pool_actions += 1;
            self.on_action(h, a);
        }
        let host = &self.hosts[h];
        if !host.runs_timers() {
            return;
        }
        // Liveness from outside: waiters, room to grow and nothing in flight that will
        // come back on its own means a connect retry must be due within `backoff_max`;
        // otherwise the waiters would sit until their deadlines with the database healthy.
        let s = host.pool.status();
        if s.waiters > 0
            && s.total < s.max_size
            && s.opening + s.checking + s.leased == 0
            && !host.pool.is_closing()
        {
            let bound = self.now + host.pool.config().backoff_max.as_nanos() as u64;
            let next = host.pool.poll_timeout();
            if next.is_none_or(|t| t.as_nanos() > bound) {
                self.fail(format!(
                    "stalled pool: {s} with nothing in flight and no retry due within backoff_max (next timer {next:?}, after {what})"
                ));
                return;
            }
        }
        if let Some(t) = host.pool.poll_timeout() {
            let t = t.as_nanos().max(self.now);
            if host.timer_at.is_none_or(|a| t < a) {
                self.hosts[h].timer_at = Some(t);
                self.push(t, Ev::Timer(h));
            }
        }
    }

    fn on_action(&mut self, h: usize, a: Action) {
        match a {
            Action::Open { conn } => {
                let (lat, start) = self.db.start_connect(&mut self.rng);
                self.hosts[h].opening.insert(conn, start);
                self.push(
                    self.now + lat,
                    Ev::ConnectDone {
                        host: h,
                        conn,
                        start,
                    },
                );
            }
            Action::Check { conn } | Action::Reset { conn } => {
                let reset = matches!(a, Action::Reset { .. });
                let Some(&b) = self.hosts[h].conns.get(&conn) else {
                    self.fail(format!("{a:?} for {conn}, which is not open"));
                    return;
                };
                let rtt = ns(self.db.spec.rtt);
                let answer = match self.db.health(b) {
                    Health::Alive => Some(true),
                    Health::Dead => Some(false),
                    Health::HalfOpen => None,
                };
                match (answer, reset) {
                    (None, _) => self.m.unanswered += 1,
                    (Some(ok), false) => self.push(
                        self.now + rtt,
                        Ev::CheckDone {
                            host: h,
                            conn,
                            healthy: ok,
                        },
                    ),
                    (Some(ok), true) => {
                        self.push(self.now + rtt, Ev::ResetDone { host: h, conn, ok })
                    }
                }
            }
            Action::Close { conn, reason } => {
                *self.m.closes.entry(reason.as_str()).or_default() += 1;
                let host = &mut self.hosts[h];
                if let Some(req) = host.leased.remove(&conn) {
                    if reason != CloseReason::DrainTimeout {
                        self.fail(format!(
                            "the core closed leased {conn} ({})",
                            reason.as_str()
                        ));
                        return;
                    }
                    self.reqs[req].revoked = true;
                }
                let host = &mut self.hosts[h];
                if let Some(start) = host.opening.remove(&conn) {
                    // Abandoned open: the client closes its socket, the server frees the
                    // handshake's slot, and the core must refuse the late result.
                    host.aborted.insert(conn);
                    if start == ConnectStart::Pending {
                        self.db.abort_connect();
                    }
                } else if let Some(b) = host.conns.remove(&conn) {
                    self.db.disconnect(b);
                } else {
                    self.fail(format!("Close for unknown {conn}"));
                }
            }
            Action::Grant { waiter, grant } => {
                let Some(req) = self.hosts[h].waiters.remove(&waiter) else {
                    self.fail(format!("Grant for {waiter:?}, which is not waiting"));
                    return;
                };
                self.granted(req, grant);
            }
            Action::Reject { waiter, rejection } => {
                let Some(req) = self.hosts[h].waiters.remove(&waiter) else {
                    self.fail(format!("Reject for {waiter:?}, which is not waiting"));
                    return;
                };
                if self.now > self.reqs[req].deadline {
                    self.fail(format!(
                        "lost wake-up: {waiter:?} rejected {:?} after its deadline",
                        Duration::from_nanos(self.now - self.reqs[req].deadline)
                    ));
                }
                self.rejected(req, &rejection);
            }
            Action::LeakSuspected { .. } => self.m.leaks_suspected += 1,
            Action::Drained { forced } => {
                self.m.drained.push((self.now, forced));
            }
        }
    }

    fn granted(&mut self, req: usize, grant: Grant) {
        let h = self.reqs[req].host;
        let conn = grant.conn();
        let Some(&b) = self.hosts[h].conns.get(&conn) else {
            self.fail(format!("granted {conn}, which is not open"));
            return;
        };
        let r = &self.reqs[req];
        if self.now > r.deadline {
            self.fail(format!(
                "lost wake-up: granted {:?} after the waiter's deadline",
                Duration::from_nanos(self.now - r.deadline)
            ));
            return;
        }
        let wait = self.now - r.arrived;
        let (leak, probe) = (r.leak, r.probe);
        if probe {
            self.m.probe = Some(Ok(wait));
        }
        self.m.waits.push(wait);
        self.m.grants += 1;
        self.hosts[h].leased.insert(conn, req);
        self.reqs[req].state = RState::Holding(grant.lease);
        let d = match self.db.health(b) {
            Health::Alive if leak => ns(self.client.leak_hold),
            Health::Alive => self.db.spec.query.sample(&mut self.rng),
            Health::Dead => ns(self.db.spec.rtt),
            Health::HalfOpen => ns(self.client.query_timeout),
        };
        self.push(
            self.now + d,
            Ev::QueryDone {
                req,
                lease: grant.lease,
            },
        );
    }

    fn rejected(&mut self, req: usize, rejection: &Rejection) {
        let reason = match rejection {
            Rejection::Timeout(r) => {
                if r.last_connect_error.is_some() {
                    self.m.timeouts_with_cause += 1;
                }
                "timeout"
            }
            Rejection::QueueFull { .. } => "queue_full",
            Rejection::Closed => "closed",
            Rejection::ConnectFailed(_) => "connect_failed",
        };
        if self.reqs[req].probe {
            self.m.probe = Some(Err(rejection.to_string()));
        }
        *self.m.rejections.entry(reason).or_default() += 1;
        self.m
            .rejection_examples
            .entry(reason)
            .or_insert_with(|| rejection.to_string());
        self.finish_req_after(req, RETRY_AFTER_REJECTION);
    }

    fn finish_req(&mut self, req: usize) {
        self.finish_req_after(req, Duration::ZERO);
    }

    /// The request is over; a closed-loop task thinks (at least `pause`) and goes again.
    fn finish_req_after(&mut self, req: usize, pause: Duration) {
        self.reqs[req].state = RState::Done;
        if let Some(task) = self.reqs[req].task {
            if let Workload::Closed { think, .. } = self.setup.workload {
                let next = self.now + ns(think.max(pause));
                if next < ns(self.setup.workload_end) {
                    self.push(next, Ev::TaskNext(task));
                }
            }
        }
    }

    fn acquire_timeout(&self, probe: bool) -> Duration {
        if probe {
            PROBE_TIMEOUT
        } else {
            self.client.acquire_timeout
        }
    }

    fn client_faults_on(&self) -> bool {
        self.setup
            .well_behaved_after
            .is_none_or(|t| self.now < ns(t))
    }

    fn new_request(&mut self, task: Option<u32>, probe: bool) {
        if !probe && !self.client_faults_on() && self.client != self.setup.client.well_behaved() {
            self.client = self.setup.client.well_behaved();
        }
        let host = if self.slots.is_empty() {
            usize::MAX
        } else {
            self.slots[self.rng.below(self.slots.len() as u64) as usize]
        };
        let leak = !probe && self.rng.chance(self.client.leak_prob);
        let req = self.reqs.len();
        self.reqs.push(Req {
            host,
            arrived: self.now,
            deadline: self.now + ns(self.acquire_timeout(probe)),
            state: RState::Hop,
            task,
            leak,
            revoked: false,
            probe,
        });
        self.m.requests += 1;
        if leak {
            self.m.leaked += 1;
        }
        if !probe && self.rng.chance(self.client.cancel_prob) {
            let at = self.now + self.rng.below(self.cancel_window);
            self.push(at, Ev::Cancel(req));
        }
        let hop = ns(self.client.hop);
        if hop > 0 {
            self.push(self.now + hop, Ev::Start(req));
        } else {
            self.start(req);
        }
    }

    fn start(&mut self, req: usize) {
        if self.reqs[req].state != RState::Hop {
            return; // cancelled on the way
        }
        let h = self.reqs[req].host;
        if h == usize::MAX {
            self.reqs[req].state = RState::Direct;
            let (lat, start) = self.db.start_connect(&mut self.rng);
            self.push(self.now + lat, Ev::DirectConnected { req, start });
            return;
        }
        if !self.reqs[req].probe && self.rng.chance(self.client.try_first_prob) {
            let g = self.hosts[h]
                .pool
                .try_acquire(Instant::from_nanos(self.now));
            self.input_done(h, "try_acquire");
            if let Some(g) = g {
                self.m.try_acquired += 1;
                self.granted(req, g);
                return;
            }
        }
        // The deadline counts from the request's start at the pool.
        let deadline = self.now + ns(self.acquire_timeout(self.reqs[req].probe));
        self.reqs[req].deadline = deadline;
        let r = self.hosts[h]
            .pool
            .acquire(Instant::from_nanos(self.now), Instant::from_nanos(deadline));
        let mut ready = None;
        let mut rejected = None;
        match r {
            Ok(Acquired::Ready(g)) => ready = Some(g),
            Ok(Acquired::Queued(w)) => {
                self.reqs[req].state = RState::Waiting(w);
                self.hosts[h].waiters.insert(w, req);
            }
            Err(e) => rejected = Some(e),
        }
        self.input_done(h, "acquire");
        if let Some(g) = ready {
            self.granted(req, g);
        } else if let Some(e) = rejected {
            self.rejected(req, &e);
        }
    }

    fn release(&mut self, req: usize, lease: LeaseId, verdict: Verdict) {
        let Some(h) = self.hand_back(req, lease) else {
            return;
        };
        let r = self.hosts[h]
            .pool
            .release(Instant::from_nanos(self.now), lease, verdict);
        self.input_done(h, "release");
        self.pool_took(req, r, "release");
        self.finish_req(req);
    }

    /// The borrower keeps the connection (and later closes it itself).
    fn detach(&mut self, req: usize, lease: LeaseId) {
        let Some(h) = self.hand_back(req, lease) else {
            return;
        };
        let r = self.hosts[h]
            .pool
            .detach(Instant::from_nanos(self.now), lease);
        self.input_done(h, "detach");
        if self.pool_took(req, r, "detach") {
            self.m.detached += 1;
            if let Some(b) = self.hosts[h].conns.remove(&lease.conn()) {
                self.db.disconnect(b);
            }
        }
        self.finish_req(req);
    }

    /// A request is done with its lease: forget the loan. `None` (and the request is
    /// finished) if its host is gone, so there is no pool to give it back to.
    fn hand_back(&mut self, req: usize, lease: LeaseId) -> Option<usize> {
        let h = self.reqs[req].host;
        let conn = lease.conn();
        if self.hosts[h].leased.get(&conn) == Some(&req) {
            self.hosts[h].leased.remove(&conn);
        }
        if self.hosts[h].dead {
            self.finish_req(req);
            return None;
        }
        Some(h)
    }

    /// The pool's answer to a release or detach: a lease revoked at the drain deadline
    /// may be refused, a live one never. True if the pool took it.
    fn pool_took(&mut self, req: usize, r: Result<(), InputError>, what: &str) -> bool {
        match r {
            Ok(()) => true,
            Err(InputError::UnknownLease(_)) if self.reqs[req].revoked => {
                self.m.revoked_releases += 1;
                false
            }
            Err(e) => {
                self.fail(format!("{what} of a live lease refused: {e}"));
                false
            }
        }
    }

    // ---- events ------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::TaskNext(t) => self.new_request(Some(t), false),
            Ev::Arrival => {
                if self.now < ns(self.setup.workload_end) {
                    self.new_request(None, false);
                    if let Workload::Open { rate, .. } = self.setup.workload {
                        let gap = (self.rng.exp(1e9 / rate) as u64).max(1);
                        self.push(self.now + gap, Ev::Arrival);
                    }
                }
            }
            Ev::Spike(n) => {
                for _ in 0..n {
                    self.new_request(None, false);
                }
            }
            Ev::Probe => self.new_request(None, true),
            Ev::Start(req) => self.start(req),
            Ev::Timer(h) => {
                let host = &mut self.hosts[h];
                if host.timer_at != Some(self.now) {
                    return; // superseded by an earlier timer
                }
                host.timer_at = None;
                if !host.runs_timers() || self.setup.drop_timers {
                    return;
                }
                if host.busy_timer_t == self.now {
                    host.busy_timer_n += 1;
                    if host.busy_timer_n > 10_000 {
                        let t = host.pool.poll_timeout();
                        self.fail(format!(
                            "busy loop: poll_timeout() keeps returning {t:?} at now and handle_timeout does not clear it"
                        ));
                        return;
                    }
                } else {
                    host.busy_timer_t = self.now;
                    host.busy_timer_n = 0;
                }
                let now = Instant::from_nanos(self.now);
                self.hosts[h].pool.handle_timeout(now);
                self.input_done(h, "handle_timeout");
            }
            Ev::ConnectDone {
                host: h,
                conn,
                start,
            } => {
                if self.hosts[h].aborted.remove(&conn) {
                    let r = self.hosts[h].pool.connect_finished(
                        Instant::from_nanos(self.now),
                        conn,
                        Ok(()),
                    );
                    self.input_done(h, "late connect_finished");
                    if r.is_ok() {
                        self.fail(format!(
                            "the core accepted a connect result for abandoned {conn}"
                        ));
                    }
                    return;
                }
                let result = self.db.finish_connect(start);
                if self.hosts[h].dead {
                    if let Ok(b) = result {
                        self.db.disconnect(b);
                    }
                    return;
                }
                if self.hosts[h].opening.remove(&conn).is_none() {
                    self.fail(format!("connect result for {conn}, which is not opening"));
                    return;
                }
                let r = match result {
                    Ok(b) => {
                        self.hosts[h].conns.insert(conn, b);
                        self.hosts[h].pool.connect_finished(
                            Instant::from_nanos(self.now),
                            conn,
                            Ok(()),
                        )
                    }
                    Err(e) => self.hosts[h].pool.connect_finished(
                        Instant::from_nanos(self.now),
                        conn,
                        Err(e),
                    ),
                };
                self.input_done(h, "connect_finished");
                if let Err(e) = r {
                    self.fail(format!("connect_finished refused: {e}"));
                }
            }
            Ev::CheckDone {
                host: h,
                conn,
                healthy,
            } => {
                if self.hosts[h].dead {
                    return;
                }
                // Refused (harmlessly) if the check already timed out.
                let _ =
                    self.hosts[h]
                        .pool
                        .check_finished(Instant::from_nanos(self.now), conn, healthy);
                self.input_done(h, "check_finished");
            }
            Ev::ResetDone { host: h, conn, ok } => {
                if self.hosts[h].dead {
                    return;
                }
                let _ = self.hosts[h]
                    .pool
                    .reset_finished(Instant::from_nanos(self.now), conn, ok);
                self.input_done(h, "reset_finished");
            }
            Ev::QueryDone { req, lease } => {
                if self.reqs[req].state != RState::Holding(lease) {
                    return; // cancelled mid-query
                }
                let h = self.reqs[req].host;
                let health = match self.hosts[h].conns.get(&lease.conn()) {
                    Some(&b) => self.db.health(b),
                    None => Health::Dead, // revoked by a forced close
                };
                let verdict = if health == Health::Alive {
                    self.m.completed += 1;
                    if self.now >= self.recovery_mark && self.m.first_ok_after_faults.is_none() {
                        self.m.first_ok_after_faults = Some(self.now);
                    }
                    if self.rng.chance(self.client.dirty_prob) {
                        Verdict::NeedsReset
                    } else {
                        Verdict::Reusable
                    }
                } else {
                    self.m.query_errors += 1;
                    Verdict::Broken
                };
                if verdict == Verdict::Reusable && self.rng.chance(self.client.detach_prob) {
                    self.detach(req, lease);
                    return;
                }
                if self.rng.chance(self.client.slow_release_prob) {
                    self.reqs[req].state = RState::Releasing;
                    let at = self.now + ns(self.client.slow_release);
                    self.push(
                        at,
                        Ev::Release {
                            req,
                            lease,
                            verdict,
                        },
                    );
                } else {
                    self.release(req, lease, verdict);
                }
            }
            Ev::Release {
                req,
                lease,
                verdict,
            } => self.release(req, lease, verdict),
            Ev::Cancel(req) => match self.reqs[req].state {
                RState::Hop => {
                    self.m.cancelled += 1;
                    self.finish_req(req);
                }
                RState::Waiting(w) => {
                    let h = self.reqs[req].host;
                    self.hosts[h].waiters.remove(&w);
                    let r = self.hosts[h].pool.cancel(Instant::from_nanos(self.now), w);
                    self.input_done(h, "cancel");
                    if let Err(e) = r {
                        self.fail(format!("cancel of a waiting waiter refused: {e}"));
                    }
                    self.m.cancelled += 1;
                    self.finish_req(req);
                }
                RState::Holding(lease) => {
                    // The task was dropped mid-query: the guard returns the connection,
                    // which may hold a half-finished transaction.
                    self.m.cancelled_mid_query += 1;
                    self.release(req, lease, Verdict::NeedsReset);
                }
                _ => {}
            },
            Ev::FaultStart(i) => {
                let f = self.setup.faults[i];
                match f.kind {
                    FaultKind::Down => self.db.set_down(true),
                    FaultKind::Restart => {
                        self.db.kill_all();
                        self.db.set_down(true);
                    }
                    FaultKind::HalfOpen { count } => {
                        let n = self.db.make_half_open(count, &mut self.rng);
                        self.m.half_opened += n as u64;
                    }
                    FaultKind::AuthFail => self.db.set_auth_broken(true),
                    FaultKind::SlowConnect { factor } => self.db.set_slow(factor, true),
                }
            }
            Ev::FaultEnd(i) => {
                let f = self.setup.faults[i];
                match f.kind {
                    FaultKind::Down | FaultKind::Restart => self.db.set_down(false),
                    FaultKind::HalfOpen { .. } => {}
                    FaultKind::AuthFail => self.db.set_auth_broken(false),
                    FaultKind::SlowConnect { factor } => self.db.set_slow(factor, false),
                }
            }
            Ev::Close => {
                let drain = self.setup.close_at.map_or(Duration::ZERO, |c| c.1);
                for h in 0..self.hosts.len() {
                    if self.hosts[h].dead {
                        continue;
                    }
                    let deadline = Instant::from_nanos(self.now + ns(drain));
                    let r = self.hosts[h]
                        .pool
                        .close(Instant::from_nanos(self.now), deadline);
                    self.input_done(h, "close");
                    if let Err(e) = r {
                        self.fail(format!("close refused: {e}"));
                    }
                }
            }
            Ev::Retire(slot) => {
                let Topology::PerInstance {
                    lifetime,
                    zombie_ttl,
                    ..
                } = self.setup.topology
                else {
                    return;
                };
                let old = self.slots[slot];
                self.hosts[old].frozen = true;
                self.m.instances_retired += 1;
                self.push(self.now + ns(zombie_ttl), Ev::Reap(old));
                let h = self.new_host();
                self.slots[slot] = h;
                self.push(self.now + ns(lifetime), Ev::Retire(slot));
            }
            Ev::Reap(h) => {
                let backends: Vec<u64> = self.hosts[h].conns.values().copied().collect();
                for b in backends {
                    self.db.kill(b);
                }
                self.hosts[h].dead = true;
                // Requests still on it end with their instance.
                let waiting: Vec<usize> = self.hosts[h].waiters.values().copied().collect();
                for req in waiting {
                    self.m.lost_with_instance += 1;
                    self.finish_req(req);
                }
            }
            Ev::DirectConnected { req, start } => match self.db.finish_connect(start) {
                Ok(backend) => {
                    let wait = self.now - self.reqs[req].arrived;
                    self.m.waits.push(wait);
                    self.m.grants += 1;
                    let d = self.db.spec.query.sample(&mut self.rng);
                    self.push(self.now + d, Ev::DirectDone { req, backend });
                }
                Err(e) => {
                    *self.m.rejections.entry("connect_failed").or_default() += 1;
                    self.m
                        .rejection_examples
                        .entry("connect_failed")
                        .or_insert_with(|| format!("cannot connect: {e}"));
                    self.finish_req_after(req, RETRY_AFTER_REJECTION);
                }
            },
            Ev::DirectDone { req, backend } => {
                if self.db.health(backend) == Health::Alive {
                    self.m.completed += 1;
                } else {
                    self.m.query_errors += 1;
                }
                self.db.disconnect(backend);
                self.finish_req(req);
            }
        }
    }
}
