//! Each route's statistics, for the admin console (`SHOW POOLS`, `SHOW STATS`) and the
//! logs: sums of what its clients' sessions did ([`Counters`]), the time clients spent
//! waiting for a server, who is waiting now, pins, refusals and errors by SQLSTATE.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pool_core::Instant;

use crate::session::Counters;

/// One route's statistics. Counters only grow; gauges are current.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Clients logged in on this route now (gauge).
    pub clients: AtomicUsize,
    totals: Mutex<Totals>,
    /// Clients waiting for a server now: client id → since when.
    waiting: Mutex<HashMap<u64, Instant>>,
    pins: AtomicU64,
    refusals: AtomicU64,
    /// How long each grant waited (the metrics endpoint's histogram).
    pub wait_histogram: WaitHistogram,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// The cumulative part, read as one consistent snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sessions: Counters,
    /// Grants that had to wait for a server, and the time they waited.
    pub waits: u64,
    pub wait_time: Duration,
}

/// A logged-in client, counted in [`RouteStats::clients`] while it lives.
pub struct ClientCount<'a>(&'a RouteStats);

impl Drop for ClientCount<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Relaxed);
    }
}

impl RouteStats {
    /// Counts a client in until the returned guard is dropped.
    pub fn client(&self) -> ClientCount<'_> {
        self.clients.fetch_add(1, Relaxed);
        ClientCount(self)
    }

    /// Adds a session's progress since `before`.
    pub fn add(&self, now: &Counters, before: &Counters) {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        let sum = &mut totals.sessions;
        sum.queries += now.queries - before.queries;
        sum.transactions += now.transactions - before.transactions;
        sum.query_time += now.query_time.saturating_sub(before.query_time);
        sum.transaction_time += now.transaction_time.saturating_sub(before.transaction_time);
        sum.received += now.received - before.received;
        sum.sent += now.sent - before.sent;
        sum.prepares += now.prepares - before.prepares;
    }

    pub fn wait_started(&self, client: u64, now: Instant) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client, now);
    }

    /// The client's wait ended: granted after `waited`, or withdrawn (`None`).
    pub fn wait_ended(&self, client: u64, waited: Option<Duration>) {
        let was_waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client)
            .is_some();
        if let (true, Some(waited)) = (was_waiting, waited) {
            self.wait_histogram.observe(waited);
            let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
            totals.waits += 1;
            totals.wait_time += waited;
        }
    }

    /// A server was lent at once, without a wait.
    pub fn granted_at_once(&self) {
        self.wait_histogram.observe(Duration::ZERO);
    }

    /// Clients waiting now, and the longest wait so far.
    pub fn waiting(&self, now: Instant) -> (usize, Duration) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = waiting
            .values()
            .map(|since| now.saturating_since(*since))
            .max()
            .unwrap_or_default();
        (waiting.len(), longest)
    }

    pub fn totals(&self) -> Totals {
        *self.totals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn pinned(&self) {
        self.pins.fetch_add(1, Relaxed);
    }

    pub fn refused(&self) {
        self.refusals.fetch_add(1, Relaxed);
    }

    pub fn pins(&self) -> (u64, u64) {
        (self.pins.load(Relaxed), self.refusals.load(Relaxed))
    }

    /// A client was sent away with this SQLSTATE.
    pub fn error(&self, sqlstate: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        match errors.get_mut(sqlstate) {
            Some(count) => *count += 1,
            None => {
                errors.insert(sqlstate.to_owned(), 1);
            }
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The upper bounds (seconds) of the wait histogram's buckets: from an idle server at once
/// (well under a millisecond) to PgBouncer's default `query_wait_timeout` (120 s).
pub const WAIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0,
];

/// A histogram of waits for a server, in atomics (one increment per grant, no lock).
#[derive(Debug, Default)]
pub struct WaitHistogram {
    /// Grants that waited at most each bound (not cumulative; the last: above all).
    buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl WaitHistogram {
    pub fn observe(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(WAIT_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Cumulative counts per bound (Prometheus's `le` buckets, `+Inf` last), and the sum
    /// of the waits.
    pub fn snapshot(&self) -> (Vec<u64>, Duration) {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|count| {
                total += count.load(Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            Duration::from_nanos(self.sum_nanos.load(Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_histogram_is_cumulative_by_bound() {
        let histogram = WaitHistogram::default();
        histogram.observe(Duration::ZERO);
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(500));
        let (buckets, sum) = histogram.snapshot();
        assert_eq!(buckets.len(), WAIT_BUCKETS.len() + 1);
        assert_eq!(&buckets[..3], &[1, 1, 2]);
        assert_eq!(buckets[WAIT_BUCKETS.len() - 1], 2);
        assert_eq!(buckets[WAIT_BUCKETS.len()], 3);
        assert_eq!(sum, Duration::from_millis(500_003));
    }
}
