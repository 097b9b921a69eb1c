//! A primary and its read replicas: one pool per member (each on its own simulated
//! database), the real `pool_router::Router` choosing where each read goes and bounding
//! its wait there, and the background monitor probing each member through its pool, as
//! pool-tokio's `ReplicaSet` does. Writes go to the primary.

use std::time::Duration;

use pool_core::{Instant, Rejection, Status};
use pool_router::{HopEnd, Load, MemberId, Probe, Read, Route, Router};
use serde::Serialize;

use crate::db::Health;
use crate::vtime::{ms, ns};

use super::event::Ev;
use super::request::{Request, Stage, RETRY_AFTER_REJECTION};
use super::setup::ReplicaSetup;
use super::Sim;

/// The routing state and what it measured.
pub(super) struct ReplicaState {
    router: Router,
    /// Member -> its host.
    hosts: Vec<usize>,
    /// Per database: since when its replay is paused (it is behind by the time since).
    paused_since: Vec<Option<u64>>,
    monitor_at: Option<u64>,
    m: ReplicaMetrics,
}

#[derive(Default)]
struct ReplicaMetrics {
    reads_by_member: Vec<u64>,
    reads_after_faults: Vec<u64>,
    writes: u64,
    reads_failed: u64,
    writes_failed: u64,
    read_waits: Vec<u64>,
    stale_reads: u64,
    last_stale_read: Option<u64>,
    benched_at: Vec<Vec<u64>>,
    restored_at: Vec<Vec<u64>>,
}

/// What a replica-set run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaResult {
    /// Reads served, per member: the primary (fallback) first, then each replica.
    pub reads_by_member: Vec<u64>,
    /// The same, counting only reads served after the last fault window ended.
    pub reads_after_faults: Vec<u64>,
    pub writes: u64,
    pub reads_failed: u64,
    pub writes_failed: u64,
    pub read_wait_p99_ms: f64,
    pub read_wait_max_ms: f64,
    /// Reads that waited out `replica_wait` on a replica and were routed again.
    pub hops_timed_out: u64,
    /// Reads served by a replica lagging past `max_replica_lag` at that moment.
    pub stale_reads: u64,
    pub last_stale_read_ms: Option<f64>,
    /// Per member, when it was benched and when it returned to service.
    pub benched_at_ms: Vec<Vec<f64>>,
    pub restored_at_ms: Vec<Vec<f64>>,
    /// Each member at the end, as the router describes it.
    pub members: Vec<String>,
}

impl ReplicaResult {
    pub fn reads(&self) -> u64 {
        self.reads_by_member.iter().sum()
    }
}

impl ReplicaState {
    pub(super) fn new(setup: &ReplicaSetup) -> Result<ReplicaState, String> {
        let addresses = vec![String::new(); setup.replicas];
        let router =
            Router::new(setup.routing.clone(), "", &addresses).map_err(|e| e.to_string())?;
        let n = setup.replicas + 1;
        Ok(ReplicaState {
            router,
            hosts: Vec::new(),
            paused_since: vec![None; n],
            monitor_at: None,
            m: ReplicaMetrics {
                reads_by_member: vec![0; n],
                reads_after_faults: vec![0; n],
                benched_at: vec![Vec::new(); n],
                restored_at: vec![Vec::new(); n],
                ..ReplicaMetrics::default()
            },
        })
    }

    /// Run `f` on the router, noting members that left or returned to service.
    fn with_router<T>(&mut self, now: u64, f: impl FnOnce(&mut Router) -> T) -> T {
        let before: Vec<bool> = self
            .router
            .members()
            .iter()
            .map(|m| m.state.in_service())
            .collect();
        let out = f(&mut self.router);
        for (i, (m, was)) in self.router.members().iter().zip(before).enumerate() {
            match (m.state.in_service(), was) {
                (false, true) => self.m.benched_at[i].push(now),
                (true, false) => self.m.restored_at[i].push(now),
                _ => {}
            }
        }
        out
    }

    pub(super) fn read_waits(&mut self) -> &mut Vec<u64> {
        &mut self.m.read_waits
    }

    pub(super) fn result(&self, read_waits: &mut [u64]) -> ReplicaResult {
        read_waits.sort_unstable();
        let p99 = read_waits
            .get(((read_waits.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let times = |v: &Vec<Vec<u64>>| -> Vec<Vec<f64>> {
            v.iter()
                .map(|t| t.iter().map(|x| ms(*x)).collect())
                .collect()
        };
        ReplicaResult {
            reads_by_member: self.m.reads_by_member.clone(),
            reads_after_faults: self.m.reads_after_faults.clone(),
            writes: self.m.writes,
            reads_failed: self.m.reads_failed,
            writes_failed: self.m.writes_failed,
            read_wait_p99_ms: ms(p99),
            read_wait_max_ms: ms(read_waits.last().copied().unwrap_or(0)),
            hops_timed_out: self
                .router
                .members()
                .iter()
                .map(|m| m.counters.hops_timed_out)
                .sum(),
            stale_reads: self.m.stale_reads,
            last_stale_read_ms: self.m.last_stale_read.map(ms),
            benched_at_ms: times(&self.m.benched_at),
            restored_at_ms: times(&self.m.restored_at),
            members: self
                .router
                .members()
                .iter()
                .map(|m| {
                    let state = match &m.state {
                        pool_router::State::InService => "in service".to_string(),
                        pool_router::State::Benched { reason, .. } => format!("benched: {reason}"),
                    };
                    let c = &m.counters;
                    format!(
                        "{m}: {state}; {} reads, {} hops timed out, benched {} times, {} probes ok, {} failed",
                        c.reads, c.hops_timed_out, c.benched, c.probes_ok, c.probes_failed
                    )
                })
                .collect(),
        }
    }
}

/// A member pool's counts and last connect error, as pool-tokio reads them per decision.
fn load(pool: &super::host::SimPool) -> Load {
    Load {
        status: pool.status(),
        connect_error: pool.last_connect_error().map(|(e, _)| e.message.clone()),
    }
}

fn nothing_open(s: &Status) -> bool {
    s.idle + s.leased + s.checking == 0
}

impl Sim {
    /// One host per replica, on its own database; the monitor starts at once.
    pub(super) fn open_replicas(&mut self) {
        let Some(n) = self.setup.replicas.as_ref().map(|r| r.replicas) else {
            return;
        };
        let primary = self.slots[0];
        let mut hosts = vec![primary];
        for db in 1..=n {
            hosts.push(self.new_host_on(db));
        }
        if let Some(rs) = &mut self.replicas {
            rs.hosts = hosts;
        }
        self.arm_monitor();
    }

    /// `FaultKind::ReplayPaused` on database `db` starts or ends.
    pub(super) fn replay_paused(&mut self, db: usize, on: bool) {
        let now = self.now;
        if let Some(rs) = &mut self.replicas {
            if let Some(p) = rs.paused_since.get_mut(db) {
                *p = on.then_some(now);
            }
        }
    }

    /// Where request `req` goes: sets its host; returns how long it may wait there, or
    /// `None` if it was refused (and is finished).
    pub(super) fn route(&mut self, req: usize) -> Option<u64> {
        let now = Instant::from_nanos(self.now);
        let timeout = ns(self.client.acquire_timeout);
        let rs = self.replicas.as_mut()?;
        if let Some(m) = self.reqs[req].probe_of {
            self.reqs[req].host = rs.hosts[m.0];
            return Some(self.reqs[req].deadline);
        }
        if self.reqs[req].write {
            return match rs.with_router(self.now, |r| r.route_write(now)) {
                Ok(m) => {
                    self.reqs[req].host = rs.hosts[m.0];
                    Some(self.now + timeout)
                }
                Err(refused) => {
                    rs.m.writes_failed += 1;
                    self.m.rejected("not_primary", || refused.to_string());
                    self.finish_request_after(req, RETRY_AFTER_REJECTION);
                    None
                }
            };
        }
        let mut read = self.reqs[req]
            .read
            .take()
            .unwrap_or_else(|| Read::new(now, Instant::from_nanos(self.now + timeout), None));
        let hosts = &self.hosts;
        let member_hosts = rs.hosts.clone();
        let route = rs.with_router(self.now, |r| {
            r.route_read(now, &mut read, |m| load(&hosts[member_hosts[m.0]].pool))
        });
        let out = match route {
            Route::Replica { member, until } => {
                self.reqs[req].host = rs.hosts[member.0];
                Some(until.as_nanos())
            }
            Route::Primary { until, .. } => {
                self.reqs[req].host = rs.hosts[0];
                Some(until.as_nanos())
            }
            Route::Refused => {
                rs.m.reads_failed += 1;
                let report = rs.router.explain(now, &read).to_string();
                self.m.rejected("no_replica", || report);
                self.finish_request_after(req, RETRY_AFTER_REJECTION);
                None
            }
        };
        self.reqs[req].read = Some(read);
        out
    }

    /// A waiter of the set was rejected: a probe reports what it found; a read whose hop
    /// on a replica ended without a connection is routed again. True if handled here;
    /// false for a final rejection (counted as failed), handled as any other.
    pub(super) fn hop_rejected(&mut self, req: usize, rejection: &Rejection) -> bool {
        let now = Instant::from_nanos(self.now);
        let Some(rs) = self.replicas.as_mut() else {
            return false;
        };
        if let Some(member) = self.reqs[req].probe_of {
            let finding = match rejection {
                Rejection::Timeout(r) => match &r.last_connect_error {
                    Some(e) if nothing_open(&r.status) => Probe::Unreachable {
                        error: e.message.clone(),
                    },
                    _ => Probe::Inconclusive,
                },
                Rejection::ConnectFailed(e) => Probe::Unreachable {
                    error: e.message.clone(),
                },
                _ => Probe::Inconclusive,
            };
            rs.with_router(self.now, |r| r.probe_finished(now, member, finding));
            self.reqs[req].stage = Stage::Done;
            self.arm_monitor();
            return true;
        }
        if self.reqs[req].write {
            rs.m.writes_failed += 1;
            return false;
        }
        let Some(mut read) = self.reqs[req].read.take() else {
            return false;
        };
        let end = match rejection {
            Rejection::Timeout(r) => HopEnd::TimedOut {
                status: r.status,
                error: r.last_connect_error.as_ref().map(|e| e.message.clone()),
            },
            Rejection::ConnectFailed(e) => HopEnd::Failed {
                error: e.message.clone(),
                unreachable: true,
            },
            Rejection::QueueFull { .. } => HopEnd::Failed {
                error: rejection.to_string().into(),
                unreachable: false,
            },
            Rejection::Closed => {
                rs.m.reads_failed += 1;
                self.reqs[req].read = Some(read);
                return false;
            }
        };
        let on_primary = read.hops().last().is_some_and(|h| h.member.is_primary());
        rs.with_router(self.now, |r| r.hop_ended(now, &mut read, end));
        self.reqs[req].read = Some(read);
        if on_primary {
            // The primary was the last resort: the read fails as any acquire does.
            rs.m.reads_failed += 1;
            return false;
        }
        self.reqs[req].stage = Stage::Hop;
        self.acquire(req);
        true
    }

    /// A read or write of the set got its connection after waiting `wait`.
    pub(super) fn read_or_write_served(&mut self, req: usize, wait: u64) {
        let (now, after_faults) = (self.now, self.now >= self.recovery_mark);
        let h = self.reqs[req].host;
        let Some(rs) = self.replicas.as_mut() else {
            return;
        };
        if self.reqs[req].write {
            rs.m.writes += 1;
            return;
        }
        let Some(mut read) = self.reqs[req].read.take() else {
            return;
        };
        let member = read.hops().last().map_or(MemberId::PRIMARY, |h| h.member);
        rs.with_router(now, |r| {
            r.hop_ended(Instant::from_nanos(now), &mut read, HopEnd::Served)
        });
        rs.m.reads_by_member[member.0] += 1;
        if after_faults {
            rs.m.reads_after_faults[member.0] += 1;
        }
        rs.m.read_waits.push(wait);
        let max_lag = rs.router.config().max_replica_lag;
        let db = self.hosts[h].db;
        if let (Some(max), Some(Some(since))) = (max_lag, rs.paused_since.get(db)) {
            if db != 0 && now - since > ns(max) {
                rs.m.stale_reads += 1;
                rs.m.last_stale_read = Some(now);
            }
        }
    }

    /// `Ev::Monitor`: start every probe that is due, then wait for the next.
    pub(super) fn monitor(&mut self) {
        let now = self.now;
        let Some(rs) = self.replicas.as_mut() else {
            return;
        };
        if rs.monitor_at != Some(now) {
            return; // superseded by an earlier one
        }
        rs.monitor_at = None;
        while let Some(member) = self
            .replicas
            .as_mut()
            .and_then(|rs| rs.router.poll_probe(Instant::from_nanos(now)))
        {
            self.start_probe(member);
        }
        self.arm_monitor();
    }

    fn arm_monitor(&mut self) {
        let now = self.now;
        let Some(rs) = self.replicas.as_mut() else {
            return;
        };
        let Some(next) = rs.router.next_probe_at() else {
            return;
        };
        let t = next.as_nanos().max(now);
        if rs.monitor_at.is_none_or(|a| t < a) {
            rs.monitor_at = Some(t);
            self.queue.push(t, Ev::Monitor);
        }
    }

    /// A probe of `member`: borrows a connection from its pool for at most
    /// `probe_interval`, like any caller (it is not counted as a request).
    fn start_probe(&mut self, member: MemberId) {
        let Some(rs) = self.replicas.as_ref() else {
            return;
        };
        let bound = ns(rs.router.config().probe_interval);
        let req = self.reqs.len();
        self.reqs.push(Request {
            host: rs.hosts[member.0],
            arrived: self.now,
            deadline: self.now + bound,
            stage: Stage::Hop,
            task: None,
            leak: false,
            revoked: false,
            probe: false,
            write: false,
            read: None,
            probe_of: Some(member),
        });
        self.acquire(req);
    }

    /// `Ev::ProbeDone`: the probe's query answered: in recovery or not, and how far behind.
    pub(super) fn probe_done(&mut self, req: usize, lease: pool_core::LeaseId) {
        if self.reqs[req].stage != Stage::Holding(lease) {
            return;
        }
        let Some(member) = self.reqs[req].probe_of else {
            return;
        };
        let h = self.reqs[req].host;
        let db = self.hosts[h].db;
        let alive = self.hosts[h]
            .conns
            .get(&lease.conn())
            .is_some_and(|b| self.dbs[db].health(*b) == Health::Alive);
        let now = self.now;
        let finding = match (alive, &self.replicas) {
            (true, _) if member.is_primary() => Probe::Primary,
            (true, Some(rs)) => Probe::Standby {
                behind: rs.paused_since[db].map(|t| Duration::from_nanos(now - t)),
            },
            _ => Probe::Inconclusive,
        };
        let verdict = if alive {
            pool_core::Verdict::Reusable
        } else {
            pool_core::Verdict::Broken
        };
        self.release(req, lease, verdict);
        if let Some(rs) = self.replicas.as_mut() {
            rs.with_router(now, |r| {
                r.probe_finished(Instant::from_nanos(now), member, finding)
            });
        }
        self.arm_monitor();
    }
}
