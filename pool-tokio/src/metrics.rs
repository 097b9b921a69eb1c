//! A plain-data snapshot of the pool's counters and histograms, for exporters.

use std::collections::BTreeMap;

use pool_core::{CloseReason, Histogram, Stats, Status};

/// Everything the pool counts, at one instant. With the `serde` feature it serializes
/// (durations in nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Metrics {
    pub max_size: usize,
    pub total: usize,
    pub idle: usize,
    pub leased: usize,
    pub opening: usize,
    pub checking: usize,
    pub waiters: usize,
    pub acquires: u64,
    pub grants: u64,
    pub rejected_timeout: u64,
    pub rejected_queue_full: u64,
    pub rejected_closed: u64,
    pub rejected_connect_failed: u64,
    pub cancelled: u64,
    pub connects_started: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub checks_started: u64,
    pub resets_started: u64,
    pub detached: u64,
    pub leaks_suspected: u64,
    /// Connections closed, per reason (`broken`, `idle_timeout`, ...).
    pub closes: BTreeMap<&'static str, u64>,
    /// Time from `get()` to a connection.
    pub wait: HistogramSnapshot,
    /// Time a borrower held a connection.
    pub hold: HistogramSnapshot,
    /// Time a successful connect took.
    pub connect: HistogramSnapshot,
}

/// A histogram's summary and its non-empty power-of-two buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HistogramSnapshot {
    pub count: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// `(upper bound in ns, count)` per non-empty bucket.
    pub buckets: Vec<(u64, u64)>,
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl From<&Histogram> for HistogramSnapshot {
    fn from(h: &Histogram) -> Self {
        HistogramSnapshot {
            count: h.count(),
            mean_ns: ns(h.mean()),
            p50_ns: ns(h.quantile(0.5)),
            p90_ns: ns(h.quantile(0.9)),
            p99_ns: ns(h.quantile(0.99)),
            max_ns: ns(h.max()),
            buckets: h.buckets().map(|(d, n)| (ns(d), n)).collect(),
        }
    }
}

impl Metrics {
    pub(crate) fn new(status: Status, stats: &Stats) -> Self {
        Metrics {
            max_size: status.max_size,
            total: status.total,
            idle: status.idle,
            leased: status.leased,
            opening: status.opening,
            checking: status.checking,
            waiters: status.waiters,
            acquires: stats.acquires,
            grants: stats.grants,
            rejected_timeout: stats.rejected_timeout,
            rejected_queue_full: stats.rejected_queue_full,
            rejected_closed: stats.rejected_closed,
            rejected_connect_failed: stats.rejected_connect_failed,
            cancelled: stats.cancelled,
            connects_started: stats.connects_started,
            connects_ok: stats.connects_ok,
            connects_failed: stats.connects_failed,
            checks_started: stats.checks_started,
            resets_started: stats.resets_started,
            detached: stats.detached,
            leaks_suspected: stats.leaks_suspected,
            closes: CloseReason::ALL
                .iter()
                .map(|r| (r.as_str(), stats.closes(*r)))
                .collect(),
            wait: (&stats.wait).into(),
            hold: (&stats.hold).into(),
            connect: (&stats.connect).into(),
        }
    }
}
