//! A snapshot of the pool's counts, counters and histograms, for exporters.

use pool_core::{Stats, Status};

/// Everything the pool counts, at one instant: the core's [`Status`] and [`Stats`]. With
/// the `serde` feature it serializes as one flat object: `Status`'s fields, then `Stats`'s
/// (closes per reason name, histograms as summaries with durations in nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Metrics {
    /// The pool's counts now.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub status: Status,
    /// Counters and histograms since the pool was built.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub stats: Stats,
}

impl Metrics {
    pub(crate) fn new(status: Status, stats: &Stats) -> Self {
        Metrics {
            status,
            stats: stats.clone(),
        }
    }
}

/// Recording through the `metrics` crate facade (feature `metrics`), named after
/// OpenTelemetry's database connection-pool semantic conventions, every series labelled
/// `db.client.connection.pool.name`.
///
/// Nothing is recorded on the acquire/release path: the core already counts and
/// histograms everything there under its lock. The gauges are set, the timeout counter
/// moved to the core's total, and the histograms fed with what the core's histograms
/// gained since the last recording, every `metrics_interval` (one lock per interval) and
/// on each [`crate::Pool::record_metrics`] (e.g. just before a scrape renders). The
/// histogram values are the core's power-of-two buckets' midpoints, so each is within a
/// factor of 1.5 of the duration it stands for; counts are exact.
#[cfg(feature = "metrics")]
mod otel {
    use std::sync::Mutex;
    use std::time::Duration;

    use ::metrics::{counter, gauge, histogram, Unit};
    use pool_core::Histogram;

    use crate::manager::Manager;
    use crate::pool::Pool;
    use crate::runtime::lock;

    pub const COUNT: &str = "db.client.connection.count";
    pub const MAX: &str = "db.client.connection.max";
    pub const IDLE_MIN: &str = "db.client.connection.idle.min";
    pub const PENDING: &str = "db.client.connection.pending_requests";
    pub const TIMEOUTS: &str = "db.client.connection.timeouts";
    pub const CREATE_TIME: &str = "db.client.connection.create_time";
    pub const WAIT_TIME: &str = "db.client.connection.wait_time";
    pub const USE_TIME: &str = "db.client.connection.use_time";
    pub const POOL_NAME: &str = "db.client.connection.pool.name";
    pub const STATE: &str = "db.client.connection.state";

    /// What the last recording saw of the core's histograms (connect, wait, hold).
    #[derive(Default)]
    pub(crate) struct Exporter {
        seen: Mutex<[Histogram; 3]>,
    }

    /// Record the pool's state now.
    pub(crate) fn record<M: Manager>(pool: &Pool<M>) {
        describe();
        let status = pool.shared.status();
        let stats = pool.shared.stats();
        let min_idle = pool.shared.config().min_idle;
        let name = pool.name().to_owned();
        gauge!(COUNT, POOL_NAME => name.clone(), STATE => "idle").set(status.idle as f64);
        // Lent, being checked or reset, or closing (the server still has it): not
        // available.
        gauge!(COUNT, POOL_NAME => name.clone(), STATE => "used")
            .set((status.leased + status.checking + status.closing) as f64);
        gauge!(MAX, POOL_NAME => name.clone()).set(status.max_size as f64);
        gauge!(IDLE_MIN, POOL_NAME => name.clone()).set(min_idle as f64);
        gauge!(PENDING, POOL_NAME => name.clone()).set(status.waiters as f64);
        counter!(TIMEOUTS, POOL_NAME => name.clone()).absolute(stats.rejected_timeout);
        let mut seen = lock(&pool.inner.exporter.seen);
        for (i, (metric, now)) in [
            (CREATE_TIME, &stats.connect),
            (WAIT_TIME, &stats.wait),
            (USE_TIME, &stats.hold),
        ]
        .into_iter()
        .enumerate()
        {
            let h = histogram!(metric, POOL_NAME => name.clone());
            for (value, n) in gained(&seen[i], now) {
                h.record_many(
                    value.as_secs_f64(),
                    usize::try_from(n).unwrap_or(usize::MAX),
                );
            }
            seen[i] = now.clone();
        }
    }

    /// What `now` counted beyond `before`, per bucket, as (the bucket's midpoint, count).
    pub(crate) fn gained(before: &Histogram, now: &Histogram) -> Vec<(Duration, u64)> {
        let old: Vec<(Duration, u64)> = before.buckets().collect();
        now.buckets()
            .filter_map(|(upper, n)| {
                let had = old.iter().find(|(u, _)| *u == upper).map_or(0, |(_, c)| *c);
                let lower = (upper + Duration::from_nanos(1)) / 2;
                (n > had).then(|| ((lower + upper) / 2, n - had))
            })
            .collect()
    }

    fn describe() {
        use ::metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            COUNT,
            Unit::Count,
            "Connections in the pool, by state (idle, used)"
        );
        describe_gauge!(MAX, Unit::Count, "The pool's maximum number of connections");
        describe_gauge!(IDLE_MIN, Unit::Count, "The pool's minimum idle connections");
        describe_gauge!(PENDING, Unit::Count, "Callers waiting for a connection");
        describe_counter!(
            TIMEOUTS,
            Unit::Count,
            "Acquires that timed out waiting for a connection"
        );
        describe_histogram!(CREATE_TIME, Unit::Seconds, "Time to open a connection");
        describe_histogram!(WAIT_TIME, Unit::Seconds, "Time waited for a connection");
        describe_histogram!(USE_TIME, Unit::Seconds, "Time a connection was borrowed");
    }

    /// Record every `interval` until the pool is gone.
    pub(crate) fn start<M: Manager>(pool: &Pool<M>, interval: Duration) {
        let shared = pool.shared.downgrade();
        let inner = std::sync::Arc::downgrade(&pool.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(shared), Some(inner)) = (shared.upgrade(), inner.upgrade()) else {
                    return;
                };
                record(&Pool { shared, inner });
            }
        });
    }
}

#[cfg(feature = "metrics")]
pub(crate) use otel::{start, Exporter};

#[cfg(feature = "metrics")]
pub(crate) fn record<M: crate::Manager>(pool: &crate::Pool<M>) {
    otel::record(pool)
}

#[cfg(all(test, feature = "metrics"))]
mod otel_tests {
    use std::time::Duration;

    use pool_core::Histogram;

    /// The histograms are fed what the core's gained since the last recording.
    #[test]
    fn histogram_deltas_per_bucket() {
        let mut before = Histogram::default();
        before.record(Duration::from_millis(3));
        let mut now = before.clone();
        now.record(Duration::from_millis(3));
        now.record(Duration::from_millis(3));
        now.record(Duration::from_secs(2));
        let gained = super::otel::gained(&before, &now);
        assert_eq!(gained.len(), 2, "{gained:?}");
        let (ms, n) = gained[0];
        assert_eq!(n, 2);
        assert!(
            ms > Duration::from_millis(2) && ms < Duration::from_millis(4),
            "{ms:?}"
        );
        let (s, n) = gained[1];
        assert_eq!(n, 1);
        assert!(
            s > Duration::from_millis(1_300) && s < Duration::from_millis(2_700),
            "{s:?}"
        );
        assert!(super::otel::gained(&now, &now).is_empty());
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One flat object, as exporters read it: the status's counts and the stats'
    /// counters side by side, closes by reason name, histograms as summaries.
    #[test]
    fn serializes_flat() {
        let mut stats = Stats::default();
        stats.grants = 3;
        stats.wait.record(Duration::from_nanos(100));
        let status = Status {
            max_size: 10,
            idle: 2,
            ..Status::default()
        };
        let json = serde_json::to_value(Metrics::new(status, &stats)).unwrap();
        assert_eq!(json["max_size"], 10);
        assert_eq!(json["idle"], 2);
        assert_eq!(json["grants"], 3);
        assert_eq!(json["closes"]["broken"], 0);
        assert_eq!(
            json["closes"].as_object().unwrap().len(),
            pool_core::CloseReason::ALL.len()
        );
        assert_eq!(json["wait"]["count"], 1);
        assert_eq!(json["wait"]["p99_ns"], 100);
        assert_eq!(json["wait"]["buckets"][0], serde_json::json!([127, 1]));
        assert_eq!(json["hold"]["count"], 0);
    }
}
