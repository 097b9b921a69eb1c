//! What a run measured, gathered at its end into a [`RunResult`] (which `report` prints
//! and `--json` serializes).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::faults::Fault;
use crate::vtime::ms;

use super::abandoned::AbandonedStats;
use super::timeline::Timeline;
use super::Sim;

#[derive(Clone, Debug, Serialize)]
pub struct Drain {
    pub at_ms: f64,
    pub forced: usize,
}

/// One run's report.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub label: String,
    pub virtual_secs: f64,
    pub max_connections: usize,
    pub peak_db_connections: usize,
    pub final_db_connections: usize,
    pub peak_server_mem_mb: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub connect_failures: BTreeMap<String, u64>,
    pub requests: u64,
    pub completed: u64,
    pub query_errors: u64,
    pub throughput_per_s: f64,
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub wait_max_ms: f64,
    pub hold_p99_ms_core: f64,
    pub connect_p99_ms_core: f64,
    pub rejections: BTreeMap<String, u64>,
    pub rejection_examples: BTreeMap<String, String>,
    pub timeouts_with_cause: u64,
    pub cancelled: u64,
    pub cancelled_mid_query: u64,
    pub leaked: u64,
    pub leaks_suspected: u64,
    pub half_opened: u64,
    pub half_open_left: usize,
    pub closes: BTreeMap<String, u64>,
    pub drained: Option<Drain>,
    pub final_pool_total: usize,
    pub final_pool_idle: usize,
    pub final_pool_leased: usize,
    pub final_pool_waiters: usize,
    pub first_ok_after_faults_ms: Option<f64>,
    pub probe_wait_ms: Option<f64>,
    pub probe_rejection: Option<String>,
    pub unresolved_waiting: u64,
    pub unresolved_holding: u64,
    pub faults: Vec<Fault>,
    pub events: u64,
    pub pool_inputs: u64,
    pub pool_actions: u64,
    pub invariant_checks: u64,
    pub error: Option<String>,
    pub liveness: Vec<String>,
    /// Only for runs whose borrowers abandon queries mid-flight (`Setup::abandoned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<AbandonedStats>,
    #[serde(skip)]
    pub timeline: Option<Timeline>,
    /// The replica set's figures, when the run has replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<super::ReplicaResult>,
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl RunResult {
    pub fn rejected_total(&self) -> u64 {
        self.rejections.values().sum()
    }
}

impl Sim {
    /// The run is over: settle the liveness verdicts and gather what it measured.
    pub(super) fn finish(mut self) -> RunResult {
        let liveness = self.unresolved_at_end();
        let abandoned = self.abandoned_stats();
        let status = self.live_status();
        let replicas = self.replicas.as_mut().map(|rs| {
            let mut waits = std::mem::take(rs.read_waits());
            rs.result(&mut waits)
        });
        let (setup, db, mut m, now) = (&self.setup, &self.dbs[0], self.m, self.now);
        let (error, timeline) = (self.error, self.timeline);
        m.waits.sort_unstable();
        let mut hold = pool_core::Histogram::default();
        let mut connect = pool_core::Histogram::default();
        for s in self.hosts.iter().map(|h| h.pool.stats()) {
            hold.merge(&s.hold);
            connect.merge(&s.connect);
        }
        let span = setup
            .workload_end
            .saturating_sub(setup.warmup)
            .as_secs_f64();
        let throughput = if span > 0.0 {
            (m.completed as f64 / span * 10.0).round() / 10.0
        } else {
            0.0
        };
        RunResult {
            label: setup.label.clone(),
            virtual_secs: ms(now) / 1000.0,
            max_connections: db.spec.max_connections,
            peak_db_connections: db.peak,
            final_db_connections: db.established(),
            peak_server_mem_mb: db.peak as u64 * u64::from(db.spec.mem_per_conn_mb),
            connects_ok: db.connects_ok,
            connects_failed: db.connects_failed_total(),
            connect_failures: db
                .connects_failed
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            requests: m.requests,
            completed: m.completed,
            query_errors: m.query_errors,
            throughput_per_s: throughput,
            wait_p50_ms: ms(quantile(&m.waits, 0.5)),
            wait_p99_ms: ms(quantile(&m.waits, 0.99)),
            wait_max_ms: ms(m.waits.last().copied().unwrap_or(0)),
            hold_p99_ms_core: ms(hold.quantile(0.99).as_nanos() as u64),
            connect_p99_ms_core: ms(connect.quantile(0.99).as_nanos() as u64),
            rejections: m
                .rejections
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            rejection_examples: m
                .rejection_examples
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            timeouts_with_cause: m.timeouts_with_cause,
            cancelled: m.cancelled + m.cancelled_mid_query,
            cancelled_mid_query: m.cancelled_mid_query,
            leaked: m.leaked,
            leaks_suspected: m.leaks_suspected,
            half_opened: m.half_opened,
            half_open_left: db.half_open_count(),
            closes: m.closes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            drained: m.drained.first().map(|&(t, forced)| Drain {
                at_ms: ms(t),
                forced,
            }),
            final_pool_total: status.total,
            final_pool_idle: status.idle,
            final_pool_leased: status.leased,
            final_pool_waiters: status.waiters,
            first_ok_after_faults_ms: if setup.faults.is_empty() {
                None
            } else {
                m.first_ok_after_faults.map(ms)
            },
            probe_wait_ms: match &m.probe {
                Some(Ok(w)) => Some(ms(*w)),
                _ => None,
            },
            probe_rejection: match &m.probe {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            unresolved_waiting: m.unresolved_waiting,
            unresolved_holding: m.unresolved_holding,
            faults: setup.faults.clone(),
            events: m.events,
            pool_inputs: m.pool_inputs,
            pool_actions: m.pool_actions,
            invariant_checks: m.invariant_checks,
            error,
            liveness,
            abandoned,
            timeline,
            replicas,
        }
    }
}
