//! What a run measured, as a struct (serialized for `--json`) and as text tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::db::Db;
use crate::faults::Fault;
use crate::vtime::ms;
use crate::world::Setup;

/// Raw counters a run accumulates.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub events: u64,
    pub pool_inputs: u64,
    pub pool_actions: u64,
    pub invariant_checks: u64,
    pub requests: u64,
    pub completed: u64,
    pub query_errors: u64,
    pub grants: u64,
    pub waits: Vec<u64>,
    pub rejections: BTreeMap<&'static str, u64>,
    pub rejection_examples: BTreeMap<&'static str, String>,
    pub timeouts_with_cause: u64,
    pub cancelled: u64,
    pub cancelled_mid_query: u64,
    pub leaked: u64,
    pub leaks_suspected: u64,
    pub closes: BTreeMap<&'static str, u64>,
    pub drained: Vec<(u64, usize)>,
    pub unanswered: u64,
    pub half_opened: u64,
    pub revoked_releases: u64,
    pub first_ok_after_faults: Option<u64>,
    pub probe: Option<Result<u64, String>>,
    pub instances_retired: u64,
    pub try_acquired: u64,
    pub detached: u64,
    pub lost_with_instance: u64,
    pub unresolved_waiting: u64,
    pub unresolved_holding: u64,
}

/// The plotted series over virtual time, in fixed buckets: per bucket the maximum of each
/// series (so short spikes show) and its last value (carried through quiet buckets).
#[derive(Clone, Debug)]
pub struct Timeline {
    pub end: u64,
    /// (open at db, leased, idle, waiters, opening) maxima; `None` where nothing happened.
    pub buckets: Vec<Option<[usize; 5]>>,
    /// The last values recorded in each bucket.
    pub last: Vec<Option<[usize; 5]>>,
}

pub const TIMELINE_BUCKETS: usize = 800;

impl Timeline {
    pub fn new(end: u64) -> Self {
        Timeline {
            end: end.max(1),
            buckets: vec![None; TIMELINE_BUCKETS],
            last: vec![None; TIMELINE_BUCKETS],
        }
    }

    pub fn record(
        &mut self,
        t: u64,
        open: usize,
        leased: usize,
        idle: usize,
        waiters: usize,
        opening: usize,
    ) {
        let i = ((u128::from(t) * TIMELINE_BUCKETS as u128 / u128::from(self.end)) as usize)
            .min(TIMELINE_BUCKETS - 1);
        let v = [open, leased, idle, waiters, opening];
        let b = self.buckets[i].get_or_insert([0; 5]);
        for (a, x) in b.iter_mut().zip(v) {
            *a = (*a).max(x);
        }
        self.last[i] = Some(v);
    }

    /// Per bucket: the maxima where something happened, else the values carried forward.
    pub fn filled(&self) -> Vec<[usize; 5]> {
        let mut carry = [0; 5];
        self.buckets
            .iter()
            .zip(&self.last)
            .map(|(b, l)| match (b, l) {
                (Some(max), Some(last)) => {
                    carry = *last;
                    *max
                }
                _ => carry,
            })
            .collect()
    }
}

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
    #[serde(skip)]
    pub timeline: Option<Timeline>,
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl RunResult {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        setup: &Setup,
        mut m: Metrics,
        db: &Db,
        status: pool_core::Status,
        stats: &[pool_core::Stats],
        error: Option<String>,
        liveness: Vec<String>,
        timeline: Option<Timeline>,
        now: u64,
    ) -> RunResult {
        m.waits.sort_unstable();
        let mut hold = pool_core::Histogram::default();
        let mut connect = pool_core::Histogram::default();
        for s in stats {
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
            timeline,
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejections.values().sum()
    }

    pub fn rejections_text(&self) -> String {
        if self.rejections.is_empty() {
            return "none".into();
        }
        self.rejections
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The detailed text report of one run.
    pub fn detail(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "  [{}]", self.label);
        let _ = writeln!(
            w,
            "    database connections   peak {} / final {} (max_connections {}, peak server memory {} MB)",
            self.peak_db_connections,
            self.final_db_connections,
            self.max_connections,
            self.peak_server_mem_mb
        );
        let _ = writeln!(
            w,
            "    connects               {} made, {} failed",
            self.connects_ok, self.connects_failed
        );
        for (msg, n) in &self.connect_failures {
            let _ = writeln!(w, "      {n:>8} x {msg}");
        }
        let _ = writeln!(
            w,
            "    acquire wait           p50 {} ms, p99 {} ms, max {} ms ({} granted)",
            self.wait_p50_ms,
            self.wait_p99_ms,
            self.wait_max_ms,
            self.completed + self.query_errors
        );
        let _ = writeln!(
            w,
            "    requests               {} issued, {} queries ok, {} failed on a dead connection, {:.1}/s",
            self.requests, self.completed, self.query_errors, self.throughput_per_s
        );
        let _ = writeln!(w, "    rejections             {}", self.rejections_text());
        for (k, e) in &self.rejection_examples {
            let _ = writeln!(w, "      e.g. {k}: {e}");
        }
        if self.cancelled + self.leaked + self.leaks_suspected + self.half_opened > 0 {
            let _ = writeln!(
                w,
                "    client faults          {} cancelled ({} mid-query), {} leaked, {} leaks reported by the pool, {} backends went half-open ({} left)",
                self.cancelled,
                self.cancelled_mid_query,
                self.leaked,
                self.leaks_suspected,
                self.half_opened,
                self.half_open_left
            );
        }
        if !self.closes.is_empty() {
            let closes: Vec<String> = self
                .closes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(w, "    closes by reason       {}", closes.join(", "));
        }
        if let Some(d) = &self.drained {
            let _ = writeln!(
                w,
                "    drained                at {} ms, {} leases forced",
                d.at_ms, d.forced
            );
        }
        if let Some(t) = self.first_ok_after_faults_ms {
            let _ = writeln!(w, "    first query ok after the last fault window: {t} ms");
        }
        let _ = writeln!(
            w,
            "    pool at end            {} connections ({} idle, {} leased), {} waiting",
            self.final_pool_total,
            self.final_pool_idle,
            self.final_pool_leased,
            self.final_pool_waiters
        );
        let _ =
            writeln!(
            w,
            "    core                   {} inputs, {} actions, {} invariant checks, all passed{}",
            self.pool_inputs,
            self.pool_actions,
            self.invariant_checks,
            if self.error.is_some() { " until the failure" } else { "" }
        );
        if let Some(e) = &self.error {
            let _ = writeln!(w, "    FAILURE: {e}");
        }
        for l in &self.liveness {
            let _ = writeln!(w, "    LIVENESS: {l}");
        }
        s
    }
}

/// A scenario's report: its runs and its headline claim.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub summary: String,
    pub runs: Vec<RunResult>,
    pub claim: String,
    pub claim_holds: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.claim_holds && self.runs.iter().all(|r| r.error.is_none())
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario {} (seed {})", self.scenario, self.seed);
        let _ = writeln!(s, "  {}", self.summary);
        for r in &self.runs {
            s.push_str(&r.detail());
        }
        let _ = writeln!(
            s,
            "  claim: {} ... {}",
            self.claim,
            if self.claim_holds {
                "HOLDS"
            } else {
                "DOES NOT HOLD"
            }
        );
        s
    }
}

/// One summary table over several reports (the tour).
pub fn summary_table(reports: &[Report]) -> String {
    let header = [
        "scenario",
        "variant",
        "peak db",
        "final db",
        "connects ok/failed",
        "wait p99 ms",
        "rejected",
        "queries/s",
        "checks",
        "claim",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for rep in reports {
        for (i, r) in rep.runs.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    rep.scenario.clone()
                } else {
                    String::new()
                },
                r.label.clone(),
                r.peak_db_connections.to_string(),
                r.final_db_connections.to_string(),
                format!("{}/{}", r.connects_ok, r.connects_failed),
                format!("{}", r.wait_p99_ms),
                r.rejected_total().to_string(),
                format!("{:.0}", r.throughput_per_s),
                r.invariant_checks.to_string(),
                if i + 1 == rep.runs.len() {
                    if rep.ok() {
                        "holds".into()
                    } else {
                        "FAILS".into()
                    }
                } else {
                    String::new()
                },
            ]);
        }
    }
    table(&header, &rows)
}

/// A plain text table, columns padded to their widest cell; numbers right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let numeric = i > 0 && c.chars().next().is_some_and(|ch| ch.is_ascii_digit());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric {
                let _ = write!(out, "{c:>w$}");
            } else {
                let _ = write!(out, "{c:<w$}");
            }
        }
        s.push_str(out.trim_end());
        s.push('\n');
    };
    line(&mut s, header.to_vec());
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    s.push_str(&"-".repeat(total));
    s.push('\n');
    for r in rows {
        line(&mut s, r.iter().map(|c| c.as_str()).collect());
    }
    s
}
