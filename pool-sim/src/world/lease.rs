//! A lease from grant to hand-back: the query runs on the leased connection, then the
//! borrower releases it with a verdict (maybe slowly) or detaches it.

use pool_core::{Grant, InputError, Instant, LeaseId, Verdict};

use crate::db::Health;
use crate::vtime::ns;

use super::books::Held;
use super::event::Ev;
use super::request::Stage;
use super::Sim;

impl Sim {
    /// The request holds a lease (a waiter's grant, or a ready acquire): its query starts.
    pub(super) fn lease_granted(&mut self, req: usize, grant: Grant) {
        let h = self.reqs[req].host;
        let conn = grant.conn();
        let Some(&b) = self.hosts[h].conns.get(&conn) else {
            self.fail(format!("granted {conn}, which is not open"));
            return;
        };
        if let Some(late) = self.overdue(req) {
            self.fail(format!(
                "lost wake-up: granted {late:?} after the waiter's deadline"
            ));
            return;
        }
        let r = &self.reqs[req];
        let wait = self.now - r.arrived;
        let (leak, probe) = (r.leak, r.probe);
        if r.probe_of.is_some() {
            // The monitor's probe: one query's round trip, then what it found.
            self.hosts[h].leased.insert(conn, req);
            self.reqs[req].stage = Stage::Holding(grant.lease);
            let rtt = ns(self.dbs[self.hosts[h].db].spec.rtt);
            self.queue.push(
                self.now + rtt,
                Ev::ProbeDone {
                    req,
                    lease: grant.lease,
                },
            );
            return;
        }
        if self.replicas.is_some() {
            self.read_or_write_served(req, wait);
        }
        if probe {
            self.m.probe = Some(Ok(wait));
        }
        self.m.granted(wait);
        self.hosts[h].leased.insert(conn, req);
        self.reqs[req].stage = Stage::Holding(grant.lease);
        let db = &self.dbs[self.hosts[h].db];
        let d = match db.health(b) {
            Health::Alive if leak => ns(self.client.leak_hold),
            Health::Alive => db.spec.query.sample(&mut self.rng),
            Health::Dead => ns(db.spec.rtt),
            Health::HalfOpen => ns(self.client.query_timeout),
        };
        self.abandoned_query_starts(h, conn, req, d);
        self.queue.push(
            self.now + d,
            Ev::QueryDone {
                req,
                lease: grant.lease,
            },
        );
    }

    /// `Ev::QueryDone`: the query's outcome decides the verdict; then the borrower
    /// releases (maybe slowly) or detaches.
    pub(super) fn query_done(&mut self, req: usize, lease: LeaseId) {
        if self.reqs[req].stage != Stage::Holding(lease) {
            return; // cancelled mid-query
        }
        let h = self.reqs[req].host;
        let health = match self.hosts[h].conns.get(&lease.conn()) {
            Some(&b) => self.dbs[self.hosts[h].db].health(b),
            None => Health::Dead, // revoked by a forced close
        };
        let verdict = if health == Health::Alive {
            self.m.completed += 1;
            if self.now >= self.recovery_mark && self.m.first_ok_after_faults.is_none() {
                self.m.first_ok_after_faults = Some(self.now);
            }
            if self.rng.chance(self.client.dirty_prob) {
                Verdict::NeedsReset
            } else {
                Verdict::Reusable
            }
        } else {
            self.m.query_errors += 1;
            Verdict::Broken
        };
        if verdict == Verdict::Reusable && self.rng.chance(self.client.detach_prob) {
            self.detach(req, lease);
            return;
        }
        if self.rng.chance(self.client.slow_release_prob) {
            self.reqs[req].stage = Stage::Releasing;
            let at = self.now + ns(self.client.slow_release);
            self.queue.push(
                at,
                Ev::Release {
                    req,
                    lease,
                    verdict,
                },
            );
        } else {
            self.release(req, lease, verdict);
        }
    }

    /// `Ev::Release` (or at once): the lease goes back to the pool with its verdict.
    pub(super) fn release(&mut self, req: usize, lease: LeaseId, verdict: Verdict) {
        let Some(h) = self.hand_back(req, lease) else {
            return;
        };
        // Ready again, as far as the books know, until the actions say otherwise (lent,
        // reset or closed).
        let conn = lease.conn();
        if matches!(
            self.hosts[h].books.get(conn).map(|c| c.held),
            Some(Held::Leased { .. })
        ) {
            self.hosts[h].books.ready(conn, self.now, None);
        }
        let r = self.hosts[h]
            .pool
            .release(Instant::from_nanos(self.now), lease, (), verdict)
            .map_err(|refused| refused.error);
        self.input_done(h, "release");
        self.pool_took(req, r, "release");
        self.finish_request(req);
    }

    /// The borrower keeps the connection (and later closes it itself).
    fn detach(&mut self, req: usize, lease: LeaseId) {
        let Some(h) = self.hand_back(req, lease) else {
            return;
        };
        let r = self.hosts[h]
            .pool
            .detach(Instant::from_nanos(self.now), lease);
        if r.is_ok() {
            self.hosts[h].books.remove(lease.conn());
        }
        self.input_done(h, "detach");
        if self.pool_took(req, r, "detach") {
            self.m.detached += 1;
            if let Some(b) = self.hosts[h].conns.remove(&lease.conn()) {
                self.dbs[self.hosts[h].db].disconnect(b);
            }
        }
        self.finish_request(req);
    }

    /// A request is done with its lease: forget the loan. `None` (and the request is
    /// finished) if its host is gone, so there is no pool to give it back to.
    fn hand_back(&mut self, req: usize, lease: LeaseId) -> Option<usize> {
        let h = self.reqs[req].host;
        let conn = lease.conn();
        if self.hosts[h].leased.get(&conn) == Some(&req) {
            self.hosts[h].leased.remove(&conn);
        }
        if self.hosts[h].dead {
            self.finish_request(req);
            return None;
        }
        Some(h)
    }

    /// The pool's answer to a release or detach: a lease revoked at the drain deadline
    /// may be refused, a live one never. True if the pool took it.
    fn pool_took(&mut self, req: usize, r: Result<(), InputError>, what: &str) -> bool {
        match r {
            Ok(()) => true,
            Err(InputError::UnknownLease(_)) if self.reqs[req].revoked => {
                self.m.revoked_releases += 1;
                false
            }
            Err(e) => {
                self.fail(format!("{what} of a live lease refused: {e}"));
                false
            }
        }
    }
}
