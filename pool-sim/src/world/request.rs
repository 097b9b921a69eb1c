//! A client request's lifecycle: it arrives, hops to its pool, acquires (granted at once,
//! queued as a waiter, or rejected), holds a lease (see `lease`), and finishes; a
//! closed-loop task then thinks and goes again. A cancellation can strike at any stage.

use std::time::Duration;

use pool_core::{Acquired, Grant, Instant, LeaseId, Rejection, Verdict, WaiterId};

use crate::client::Workload;
use crate::vtime::ns;

use super::event::Ev;
use super::{Sim, PROBE_TIMEOUT};

/// A closed-loop task whose acquire was rejected waits at least this long before trying
/// again (a client that retried at once would spin at one instant of virtual time).
pub(super) const RETRY_AFTER_REJECTION: Duration = Duration::from_millis(10);

/// The host of a request when the topology has no pool (connection per request).
const NO_POOL: usize = usize::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// On its way to the pool (client-to-pooler hop).
    Hop,
    Waiting(WaiterId),
    Holding(LeaseId),
    /// Query over, the release is on its (slow) way.
    Releasing,
    /// No pool: connecting on its own.
    Direct,
    Done,
}

#[derive(Clone, Debug)]
pub(super) struct Request {
    pub(super) host: usize,
    pub(super) arrived: u64,
    pub(super) deadline: u64,
    pub(super) stage: Stage,
    pub(super) task: Option<u32>,
    pub(super) leak: bool,
    /// Its lease was revoked by a forced close: the release is expected to be refused.
    pub(super) revoked: bool,
    pub(super) probe: bool,
    /// In a replica set: a write (to the primary), else a read routed by the router.
    pub(super) write: bool,
    /// A read's way through the set (its hops), from its first routing on.
    pub(super) read: Option<pool_router::Read>,
    /// The monitor's probe of this member (not a client request).
    pub(super) probe_of: Option<pool_router::MemberId>,
}

impl Sim {
    fn acquire_timeout(&self, probe: bool) -> Duration {
        if probe {
            PROBE_TIMEOUT
        } else {
            self.client.acquire_timeout
        }
    }

    fn client_faults_on(&self) -> bool {
        self.setup
            .well_behaved_after
            .is_none_or(|t| self.now < ns(t))
    }

    /// A request arrives: it picks a pool, draws its misbehaviour (leak, cancel) and
    /// starts its hop to the pool.
    pub(super) fn new_request(&mut self, task: Option<u32>, probe: bool) {
        if !probe && !self.client_faults_on() && self.client != self.setup.client.well_behaved() {
            self.client = self.setup.client.well_behaved();
        }
        let host = if self.slots.is_empty() {
            NO_POOL
        } else {
            self.slots[self.rng.below(self.slots.len() as u64) as usize]
        };
        let leak = !probe && self.rng.chance(self.client.leak_prob);
        let write = match &self.setup.replicas {
            Some(r) if !probe => self.rng.chance(r.write_ratio),
            _ => false,
        };
        let req = self.reqs.len();
        self.reqs.push(Request {
            host,
            arrived: self.now,
            deadline: self.now + ns(self.acquire_timeout(probe)),
            stage: Stage::Hop,
            task,
            leak,
            revoked: false,
            probe,
            write,
            read: None,
            probe_of: None,
        });
        self.m.requests += 1;
        if leak {
            self.m.leaked += 1;
        }
        if !probe && self.rng.chance(self.client.cancel_prob) {
            let at = self.now + self.rng.below(self.cancel_window);
            self.queue.push(at, Ev::Cancel(req));
        }
        let hop = ns(self.client.hop);
        if hop > 0 {
            self.queue.push(self.now + hop, Ev::Start(req));
        } else {
            self.acquire(req);
        }
    }

    /// `Ev::Start`: the request reaches its pool and asks for a connection.
    pub(super) fn acquire(&mut self, req: usize) {
        if self.reqs[req].stage != Stage::Hop {
            return; // cancelled on the way
        }
        // In a replica set the router picks the member (and bounds the wait there).
        let mut until = None;
        if self.replicas.is_some() && !self.reqs[req].probe {
            match self.route(req) {
                Some(u) => until = Some(u),
                None => return,
            }
        }
        let h = self.reqs[req].host;
        if h == NO_POOL {
            self.connect_direct(req);
            return;
        }
        if !self.reqs[req].probe && self.rng.chance(self.client.try_first_prob) {
            let g = self.hosts[h]
                .pool
                .try_acquire(Instant::from_nanos(self.now));
            if let Some((g, ())) = &g {
                self.conn_lent(h, g.conn());
            }
            self.input_done(
                h,
                if g.is_some() {
                    "try_acquire"
                } else {
                    "empty try_acquire"
                },
            );
            if let Some((g, ())) = g {
                self.m.try_acquired += 1;
                self.lease_granted(req, g);
                return;
            }
        }
        // The deadline counts from the request's start at the pool.
        let deadline =
            until.unwrap_or_else(|| self.now + ns(self.acquire_timeout(self.reqs[req].probe)));
        self.reqs[req].deadline = deadline;
        let r = self.hosts[h].pool.acquire(
            Instant::from_nanos(self.now),
            Instant::from_nanos(deadline),
            |_| req,
        );
        let mut ready = None;
        let mut rejected = None;
        match r {
            Ok(Acquired::Ready(g, ())) => {
                self.conn_lent(h, g.conn());
                ready = Some(g)
            }
            Ok(Acquired::Queued(w)) => self.reqs[req].stage = Stage::Waiting(w),
            Err(e) => rejected = Some(e),
        }
        self.input_done(
            h,
            if rejected.is_some() {
                "rejected acquire"
            } else {
                "acquire"
            },
        );
        if let Some(g) = ready {
            self.lease_granted(req, g);
        } else if let Some(e) = rejected {
            self.acquire_rejected(req, &e);
        }
    }

    /// The request behind a waiter the pool answered (its token), if it is still waiting
    /// as that waiter; `None` (a failure) if not: each waiter is answered once.
    fn answered(&mut self, waiter: WaiterId, req: usize, what: &str) -> Option<usize> {
        if self.reqs[req].stage != Stage::Waiting(waiter) {
            self.fail(format!("{what} for {waiter:?}, which is not waiting"));
            return None;
        }
        Some(req)
    }

    /// `Action::Grant`: a waiter gets its lease.
    pub(super) fn waiter_granted(&mut self, waiter: WaiterId, req: usize, grant: Grant) {
        if let Some(req) = self.answered(waiter, req, "Grant") {
            self.lease_granted(req, grant);
        }
    }

    /// `Action::Reject`: a waiter's acquire fails; never after its deadline.
    pub(super) fn waiter_rejected(&mut self, waiter: WaiterId, req: usize, rejection: &Rejection) {
        let Some(req) = self.answered(waiter, req, "Reject") else {
            return;
        };
        if let Some(late) = self.overdue(req) {
            self.fail(format!(
                "lost wake-up: {waiter:?} rejected {late:?} after its deadline"
            ));
        }
        self.acquire_rejected(req, rejection);
    }

    fn acquire_rejected(&mut self, req: usize, rejection: &Rejection) {
        self.rejection_policies(req, rejection);
        if self.replicas.is_some() && self.hop_rejected(req, rejection) {
            return;
        }
        let reason = match rejection {
            Rejection::Timeout(r) => {
                if r.last_connect_error.is_some() {
                    self.m.timeouts_with_cause += 1;
                }
                "timeout"
            }
            Rejection::QueueFull { .. } => "queue_full",
            Rejection::Closed => "closed",
            Rejection::ConnectFailed(_) => "connect_failed",
        };
        if self.reqs[req].probe {
            self.m.probe = Some(Err(rejection.to_string()));
        }
        self.m.rejected(reason, || rejection.to_string());
        self.finish_request_after(req, RETRY_AFTER_REJECTION);
    }

    /// `Ev::Cancel`: the client gives up, wherever the request is.
    pub(super) fn cancel(&mut self, req: usize) {
        match self.reqs[req].stage {
            Stage::Hop => {
                self.m.cancelled += 1;
                self.finish_request(req);
            }
            Stage::Waiting(w) => {
                let h = self.reqs[req].host;
                let r = self.hosts[h].pool.cancel(Instant::from_nanos(self.now), w);
                self.input_done(h, "cancel");
                match r {
                    Ok(token) if token == req => {}
                    Ok(token) => self.fail(format!("cancel of {w:?} returned request {token}")),
                    Err(e) => self.fail(format!("cancel of a waiting waiter refused: {e}")),
                }
                self.m.cancelled += 1;
                self.finish_request(req);
            }
            Stage::Holding(lease) => {
                // The task was dropped mid-query: the guard returns the connection,
                // which may hold a half-finished transaction.
                self.m.cancelled_mid_query += 1;
                self.release(req, lease, Verdict::NeedsReset);
            }
            _ => {}
        }
    }

    pub(super) fn finish_request(&mut self, req: usize) {
        self.finish_request_after(req, Duration::ZERO);
    }

    /// The request is over; a closed-loop task thinks (at least `pause`) and goes again.
    pub(super) fn finish_request_after(&mut self, req: usize, pause: Duration) {
        self.reqs[req].stage = Stage::Done;
        if let Some(task) = self.reqs[req].task {
            if let Workload::Closed { think, .. } = self.setup.workload {
                let next = self.now + ns(think.max(pause));
                if next < ns(self.setup.workload_end) {
                    self.queue.push(next, Ev::TaskNext(task));
                }
            }
        }
    }
}
