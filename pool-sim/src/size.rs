//! `pool-sim size`: find the smallest pool that meets a p99 acquire-wait target for a
//! given arrival rate, query time and connect time, by simulating increasing sizes.

use std::time::Duration;

use pool_core::Config;

use crate::client::Workload;
use crate::db::{DbSpec, Latency};
use crate::report::table;
use crate::world::{Setup, Sim};

#[derive(Clone, Debug, PartialEq)]
pub struct SizeQuery {
    /// Requests per second (Poisson arrivals).
    pub rate: f64,
    /// Mean query (hold) time, ms.
    pub query_ms: f64,
    /// Mean connect time, ms.
    pub connect_ms: f64,
    /// Target p99 acquire wait, ms.
    pub p99_wait_ms: f64,
    pub seed: u64,
    /// Largest size to try.
    pub max_size: usize,
}

/// One row of the search.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeRow {
    pub size: usize,
    pub utilization: f64,
    /// `None`: not simulated, the pool cannot keep up (utilization >= 100 %).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub rejected: u64,
    pub peak_db: usize,
    pub meets: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SizeResult {
    pub query: SizeQuery,
    pub rows: Vec<SizeRow>,
    pub recommended: Option<usize>,
}

fn dur_ms(x: f64) -> Duration {
    Duration::from_nanos((x * 1e6).round().max(1.0) as u64)
}

/// Simulate one pool size.
pub fn simulate(q: &SizeQuery, size: usize) -> SizeRow {
    let load = q.rate * q.query_ms / 1000.0;
    let utilization = load / size as f64;
    let mut row = SizeRow {
        size,
        utilization,
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
        rejected: 0,
        peak_db: 0,
        meets: false,
        error: None,
    };
    if utilization >= 1.0 {
        return row;
    }
    let config = Config {
        max_size: size,
        min_idle: size,
        ..Config::default()
    };
    // Query and connect times: uniform on [mean/2, 3*mean/2].
    let db = DbSpec {
        max_connections: size + 10,
        connect: Latency {
            base: dur_ms(q.connect_ms / 2.0),
            jitter: dur_ms(q.connect_ms),
            tail_permille: 0,
            tail_factor: 1,
        },
        query: Latency {
            base: dur_ms(q.query_ms / 2.0),
            jitter: dur_ms(q.query_ms),
            tail_permille: 0,
            tail_factor: 1,
        },
        ..DbSpec::default()
    };
    let mut st = Setup::new(
        format!("size {size}"),
        config,
        db,
        Workload::Open {
            rate: q.rate,
            spikes: vec![],
        },
    );
    // Warm up to min_idle first (max_connecting connects at a time), then measure about
    // 20,000 requests, between 5 s and 60 s of virtual time.
    let warm = (size as f64 / 2.0).ceil() * q.connect_ms * 2.0 + 500.0;
    let span = (20_000.0 / q.rate).clamp(5.0, 60.0) * 1000.0;
    st.warmup = dur_ms(warm);
    st.workload_end = dur_ms(warm + span);
    st.end = dur_ms(warm + span + 30_000.0);
    match Sim::new(st, q.seed) {
        Err(e) => row.error = Some(e),
        Ok(sim) => {
            let r = sim.run();
            row.p50_ms = Some(r.wait_p50_ms);
            row.p99_ms = Some(r.wait_p99_ms);
            row.max_ms = Some(r.wait_max_ms);
            row.rejected = r.rejected_total();
            row.peak_db = r.peak_db_connections;
            row.meets =
                r.error.is_none() && r.rejected_total() == 0 && r.wait_p99_ms <= q.p99_wait_ms;
            row.error = r.error;
        }
    }
    row
}

/// Try sizes from just below the offered load upwards; stop at the first that meets the
/// target.
pub fn search(q: &SizeQuery) -> SizeResult {
    let load = q.rate * q.query_ms / 1000.0;
    let first = (load.ceil() as usize)
        .saturating_sub(1)
        .max(1)
        .min(q.max_size);
    let mut rows = Vec::new();
    let mut recommended = None;
    for size in first..=q.max_size {
        let row = simulate(q, size);
        let meets = row.meets;
        rows.push(row);
        if meets {
            recommended = Some(size);
            break;
        }
    }
    SizeResult {
        query: q.clone(),
        rows,
        recommended,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

impl SizeResult {
    pub fn text(&self) -> String {
        let q = &self.query;
        let load = q.rate * q.query_ms / 1000.0;
        let mut s = format!(
            "pool size search: {} req/s, queries {} ms, connects {} ms, target p99 acquire wait <= {} ms (seed {})\n\
             offered load (Little's law): {} req/s x {} ms = {:.2} connections busy on average\n\n",
            q.rate, q.query_ms, q.connect_ms, q.p99_wait_ms, q.seed, q.rate, q.query_ms, load
        );
        let header = [
            "size",
            "utilization",
            "wait p50 ms",
            "wait p99 ms",
            "wait max ms",
            "rejected",
            "peak db",
            "meets target",
        ];
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.size.to_string(),
                    format!("{:.0}%", r.utilization * 100.0),
                    opt(r.p50_ms),
                    opt(r.p99_ms),
                    opt(r.max_ms),
                    if r.p99_ms.is_some() {
                        r.rejected.to_string()
                    } else {
                        "-".into()
                    },
                    if r.p99_ms.is_some() {
                        r.peak_db.to_string()
                    } else {
                        "-".into()
                    },
                    match (&r.error, r.p99_ms) {
                        (Some(e), _) => format!("error: {e}"),
                        (None, None) => "no: overloaded (not simulated)".into(),
                        (None, Some(_)) if r.meets => "yes".into(),
                        (None, Some(_)) => "no".into(),
                    },
                ]
            })
            .collect();
        s.push_str(&table(&header, &rows));
        s.push('\n');
        match self.recommended {
            Some(n) => s.push_str(&format!(
                "recommended: max_size = {n} (the smallest size searched that meets the target)\n"
            )),
            None => s.push_str(&format!(
                "no size up to {} meets the target; raise --max-size or relax --p99-wait-ms\n",
                q.max_size
            )),
        }
        s
    }
}
