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
            let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
            totals.waits += 1;
            totals.wait_time += waited;
        }
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
