//! Queries their borrowers abandoned mid-flight (issue 14, item 1): a request times out
//! while its query runs, the lease is dropped (`NeedsReset`), and the query runs on at the
//! server. What the pool's reset does about it decides how long that slot stays busy:
//! it cancels the query (pool-tokio since issue 14), or its `ROLLBACK` queues behind the
//! query until it ends (before). Off unless a setup asks for it (`Setup::abandoned`):
//! without it the server drops an abandoned query the moment its borrower lets go.

use std::collections::BTreeMap;
use std::time::Duration;

use pool_core::ConnId;
use serde::Serialize;

use crate::db::Latency;
use crate::vtime::{ms, ns};

use super::event::Ev;
use super::Sim;

/// Borrowers that give up on slow queries, and the reset that follows.
#[derive(Clone, Debug, PartialEq)]
pub struct AbandonedQueries {
    /// A borrower whose query is still running this long after it started gives up
    /// (its request timed out): the lease is dropped mid-query.
    pub give_up_after: Duration,
    pub reset: AbandonedReset,
}

/// What the reset of a connection returned mid-query does about the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AbandonedReset {
    /// A `CancelRequest` reaches the server after a round trip; the server stops the
    /// query within `stop`; the reset is answered a round trip later.
    Cancel { stop: Latency },
    /// The reset waits behind the query: answered a round trip after the query ends
    /// (or evicted at `check_timeout`).
    WaitForQuery,
}

/// What a run with abandoned queries measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AbandonedStats {
    /// Queries abandoned while still running at the server.
    pub abandoned: u64,
    /// From a lease dropped mid-query to its reset answered: how long the slot is busy.
    pub slot_busy_max_ms: f64,
    /// From an abandonment to the next grant on that pool (counted from the later of the
    /// abandonment and the borrower's arrival): what the next borrower waits.
    pub next_wait_p99_ms: f64,
    pub next_wait_max_ms: f64,
    /// Queries running at the server at once, at most.
    pub peak_running_queries: usize,
}

/// The server's view of queries on the pools' connections, kept while the model is on.
#[derive(Clone, Debug, Default)]
pub(super) struct Abandoned {
    /// (host, connection) -> when the server finishes the query it last started there.
    query_end: BTreeMap<(usize, ConnId), u64>,
    /// Abandonments not yet followed by a grant on their host: (host, time).
    awaiting_next: Vec<(usize, u64)>,
    next_waits: Vec<u64>,
    slot_busy_max: u64,
    abandoned: u64,
    peak_running: usize,
}

impl Sim {
    /// A query starts on a leased connection and would take `d`: record when the server
    /// is done with it, measure the next-borrower wait, and schedule the borrower's
    /// giving up if the query outlasts its patience. Fails the run if the pool lent a
    /// connection whose server is still running an abandoned query.
    pub(super) fn abandoned_query_starts(&mut self, h: usize, conn: ConnId, req: usize, d: u64) {
        let Some(give_up) = self.setup.abandoned.as_ref().map(|a| ns(a.give_up_after)) else {
            return;
        };
        let now = self.now;
        let arrived = self.reqs[req].arrived;
        let a = &mut self.abandoned;
        if a.query_end.get(&(h, conn)).is_some_and(|&end| end > now) {
            self.fail(format!(
                "{conn} lent while the server still runs its abandoned query"
            ));
            return;
        }
        let (mut mine, rest): (Vec<_>, Vec<_>) =
            a.awaiting_next.drain(..).partition(|&(host, _)| host == h);
        a.awaiting_next = rest;
        for (_, t) in mine.drain(..) {
            a.next_waits.push(now - t.max(arrived));
        }
        a.query_end.insert((h, conn), now + d);
        let running = a.query_end.values().filter(|&&end| end > now).count();
        a.peak_running = a.peak_running.max(running);
        if d > give_up {
            self.queue.push(now + give_up, Ev::Cancel(req));
        }
    }

    /// A reset is asked for `conn`: when the server is ready to answer it. Now, unless
    /// its last query is still running (abandoned): then after the cancel stops it, or
    /// when it ends.
    pub(super) fn reset_ready_at(&mut self, h: usize, conn: ConnId) -> u64 {
        let Some(mode) = self.setup.abandoned.as_ref().map(|a| a.reset) else {
            return self.now;
        };
        let now = self.now;
        let end = match self.abandoned.query_end.get(&(h, conn)) {
            Some(&end) if end > now => end,
            _ => return now,
        };
        let rtt = ns(self.dbs[self.hosts[h].db].spec.rtt);
        let ready = match mode {
            AbandonedReset::Cancel { stop } => {
                let stopped = (now + rtt + stop.sample(&mut self.rng)).min(end);
                self.abandoned.query_end.insert((h, conn), stopped);
                stopped
            }
            AbandonedReset::WaitForQuery => end,
        };
        let a = &mut self.abandoned;
        a.abandoned += 1;
        a.slot_busy_max = a.slot_busy_max.max(ready + rtt - now);
        a.awaiting_next.push((h, now));
        ready
    }

    /// The run's abandoned-query numbers, if the model was on.
    pub(super) fn abandoned_stats(&mut self) -> Option<AbandonedStats> {
        self.setup.abandoned.as_ref()?;
        let a = &mut self.abandoned;
        a.next_waits.sort_unstable();
        let p99 = a
            .next_waits
            .get((a.next_waits.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        Some(AbandonedStats {
            abandoned: a.abandoned,
            slot_busy_max_ms: ms(a.slot_busy_max),
            next_wait_p99_ms: ms(p99),
            next_wait_max_ms: ms(a.next_waits.last().copied().unwrap_or(0)),
            peak_running_queries: a.peak_running,
        })
    }
}
