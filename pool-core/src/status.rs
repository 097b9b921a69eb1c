//! Observability: a snapshot of the pool's counts, cumulative counters, and histograms of
//! wait, hold and connect durations. Kept by the core so every embedder reports the same.

use std::fmt;
use std::time::Duration;

use crate::close_reason::CloseReason;

/// The pool's counts at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    pub max_size: usize,
    /// Connections counted against `max_size`: opening + idle + checking + leased +
    /// closing.
    pub total: usize,
    pub idle: usize,
    pub leased: usize,
    pub opening: usize,
    /// Being health-checked or reset.
    pub checking: usize,
    /// Closed by the pool, not yet gone from the server (until `close_timeout`).
    pub closing: usize,
    pub waiters: usize,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "size {}/{}: {} idle, {} leased, {} opening, {} checking, {} closing; {} waiting",
            self.total,
            self.max_size,
            self.idle,
            self.leased,
            self.opening,
            self.checking,
            self.closing,
            self.waiters
        )
    }
}

/// Durations in power-of-two nanosecond buckets: bucket `i` counts values in
/// `[2^(i-1), 2^i)` ns (bucket 0 counts zero). Fixed size, no allocation, mergeable;
/// percentiles are exact to within a factor of two, which is what a dashboard needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; 65],
    count: u64,
    sum_nanos: u128,
    max_nanos: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; 65],
            count: 0,
            sum_nanos: 0,
            max_nanos: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let nanos = nanos(d);
        let bucket = (u64::BITS - nanos.leading_zeros()) as usize;
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
        self.max_nanos = self.max_nanos.max(nanos);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos)
    }

    pub fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_nanos(
                u64::try_from(self.sum_nanos / u128::from(n)).unwrap_or(u64::MAX),
            ),
        }
    }

    /// Upper bound of the bucket holding the `q`-quantile (`q` in 0..=1), capped at the
    /// maximum seen.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bucket_upper(i).min(self.max_nanos));
            }
        }
        self.max()
    }

    /// Non-empty buckets as (upper bound, count), for exporters.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (Duration::from_nanos(bucket_upper(i)), *n))
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.max_nanos = self.max_nanos.max(other.max_nanos);
    }
}

/// The largest value (in nanoseconds) bucket `i` holds: bucket 0 holds 0, bucket `i`
/// holds values of `i` significant bits, up to 2^i - 1.
fn bucket_upper(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        1u64.checked_shl(i as u32).map_or(u64::MAX, |v| v - 1)
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={:?} p99={:?} max={:?}",
            self.count,
            self.quantile(0.5),
            self.quantile(0.99),
            self.max()
        )
    }
}

/// Cumulative counters since the pool was built. With the `serde` feature it serializes
/// with `closes` as a map from each [`CloseReason::as_str`] to its count, and each
/// histogram as its summary (see `Histogram`'s `Serialize`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
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
    /// Closes that did not finish within `close_timeout`: abandoned, counted as gone.
    pub closes_abandoned: u64,
    #[cfg_attr(feature = "serde", serde(serialize_with = "closes_by_name"))]
    closes: [u64; CloseReason::ALL.len()],
    /// Time from acquire to grant.
    pub wait: Histogram,
    /// Time from grant to release.
    pub hold: Histogram,
    /// Time from open to a successful connect.
    pub connect: Histogram,
}

impl Stats {
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason.index()]
    }

    pub fn closes_total(&self) -> u64 {
        self.closes.iter().sum()
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closes[reason.index()] += 1;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The closes per reason, by name, in name order.
#[cfg(feature = "serde")]
fn closes_by_name<S: serde::Serializer>(
    closes: &[u64; CloseReason::ALL.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    let by_name: std::collections::BTreeMap<&str, u64> = CloseReason::ALL
        .iter()
        .map(|r| (r.as_str(), closes[r.index()]))
        .collect();
    s.collect_map(by_name)
}

#[cfg(feature = "serde")]
impl serde::Serialize for Histogram {
    /// Its summary: `count`, `mean_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `max_ns`, and
    /// `buckets`, the non-empty buckets as `(upper bound in ns, count)`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut h = s.serialize_struct("Histogram", 7)?;
        h.serialize_field("count", &self.count)?;
        h.serialize_field("mean_ns", &nanos(self.mean()))?;
        h.serialize_field("p50_ns", &nanos(self.quantile(0.5)))?;
        h.serialize_field("p90_ns", &nanos(self.quantile(0.9)))?;
        h.serialize_field("p99_ns", &nanos(self.quantile(0.99)))?;
        h.serialize_field("max_ns", &self.max_nanos)?;
        let buckets: Vec<(u64, u64)> = self.buckets().map(|(d, n)| (nanos(d), n)).collect();
        h.serialize_field("buckets", &buckets)?;
        h.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact bucket bounds, the quantiles they give, and a merge that adds counts.
    #[test]
    fn buckets_quantiles_and_merge_are_exact() {
        let ns = Duration::from_nanos;
        let mut h = Histogram::default();
        for n in [0, 1, 5, 6, 7, 100, 1000] {
            h.record(ns(n));
        }
        let buckets: Vec<_> = h.buckets().collect();
        assert_eq!(
            buckets,
            vec![
                (ns(0), 1),
                (ns(1), 1),
                (ns(7), 3),
                (ns(127), 1),
                (ns(1023), 1)
            ]
        );
        assert_eq!(h.quantile(0.0), ns(0));
        assert_eq!(h.quantile(0.5), ns(7), "rank 4 of 7 is in the 4..=7 bucket");
        assert_eq!(h.quantile(1.0), ns(1000), "capped at the maximum seen");
        let mut both = h.clone();
        both.merge(&h);
        assert_eq!(both.count(), 14);
        assert_eq!(both.max(), ns(1000));
        assert_eq!(both.mean(), h.mean());
        let doubled: Vec<_> = both.buckets().collect();
        assert_eq!(
            doubled,
            buckets.iter().map(|(d, n)| (*d, n * 2)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.max(), Duration::from_millis(100));
        let p50 = h.quantile(0.5);
        assert!(
            p50 >= Duration::from_millis(50) && p50 < Duration::from_millis(100),
            "{p50:?}"
        );
        assert_eq!(h.quantile(1.0), Duration::from_millis(100));
        assert_eq!(h.mean(), Duration::from_micros(50_500));
        let mut g = Histogram::default();
        g.record(Duration::ZERO);
        g.merge(&h);
        assert_eq!(g.count(), 101);
        assert_eq!(g.quantile(0.0), Duration::ZERO);
    }
}
