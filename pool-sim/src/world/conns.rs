//! The pool's connections at the simulated database: opens (and opens the pool abandons),
//! checks and resets, closes.

use pool_core::{CloseReason, ConnId, Instant};

use crate::db::{ConnectStart, Health};
use crate::vtime::ns;

use super::event::Ev;
use super::Sim;

impl Sim {
    /// `Action::Open`: the server decides the handshake's fate now; it lands at `ConnectDone`.
    pub(super) fn open(&mut self, h: usize, conn: ConnId) {
        let d = self.hosts[h].db;
        let (lat, start) = self.dbs[d].start_connect(&mut self.rng);
        self.hosts[h].opening.insert(conn, start);
        self.queue.push(
            self.now + lat,
            Ev::ConnectDone {
                host: h,
                conn,
                start,
            },
        );
    }

    /// `Ev::ConnectDone`: hand the handshake's result to the pool, unless the pool gave
    /// up on it (then the core must refuse it) or the host is gone.
    pub(super) fn connect_done(&mut self, h: usize, conn: ConnId, start: ConnectStart) {
        if self.hosts[h].aborted.remove(&conn) {
            let r =
                self.hosts[h]
                    .pool
                    .connect_finished(Instant::from_nanos(self.now), conn, Ok(()));
            self.input_done(h, "late connect_finished");
            if r.is_ok() {
                self.fail(format!(
                    "the core accepted a connect result for abandoned {conn}"
                ));
            }
            return;
        }
        let d = self.hosts[h].db;
        let result = self.dbs[d].finish_connect(start);
        if self.hosts[h].dead {
            if let Ok(b) = result {
                self.dbs[d].disconnect(b);
            }
            return;
        }
        if self.hosts[h].opening.remove(&conn).is_none() {
            self.fail(format!("connect result for {conn}, which is not opening"));
            return;
        }
        let outcome = match result {
            Ok(b) => {
                self.hosts[h].conns.insert(conn, b);
                Ok(())
            }
            Err(e) => Err(e),
        };
        let r = self.hosts[h]
            .pool
            .connect_finished(Instant::from_nanos(self.now), conn, outcome);
        self.input_done(h, "connect_finished");
        if let Err(refused) = r {
            self.fail(format!("connect_finished refused: {}", refused.error));
        }
    }

    /// `Action::Check` or `Action::Reset`: one round trip, except that a half-open backend
    /// never answers (the pool's check timeout must catch it).
    pub(super) fn check_or_reset(&mut self, h: usize, conn: ConnId, reset: bool) {
        let Some(&b) = self.hosts[h].conns.get(&conn) else {
            self.fail(format!(
                "{} for {conn}, which is not open",
                if reset { "Reset" } else { "Check" }
            ));
            return;
        };
        let db = &self.dbs[self.hosts[h].db];
        let rtt = ns(db.spec.rtt);
        let answer = match db.health(b) {
            Health::Alive => Some(true),
            Health::Dead => Some(false),
            Health::HalfOpen => None,
        };
        match (answer, reset) {
            (None, _) => self.m.unanswered += 1,
            (Some(ok), false) => self.queue.push(
                self.now + rtt,
                Ev::CheckDone {
                    host: h,
                    conn,
                    healthy: ok,
                },
            ),
            (Some(ok), true) => self
                .queue
                .push(self.now + rtt, Ev::ResetDone { host: h, conn, ok }),
        }
    }

    /// `Ev::CheckDone` / `Ev::ResetDone`: the backend's answer reaches the pool.
    pub(super) fn check_answered(&mut self, h: usize, conn: ConnId, ok: bool, reset: bool) {
        if self.hosts[h].dead {
            return;
        }
        let now = Instant::from_nanos(self.now);
        let pool = &mut self.hosts[h].pool;
        // Refused (harmlessly) if the check already timed out.
        if reset {
            let _ = pool.reset_finished(now, conn, (), ok);
            self.input_done(h, "reset_finished");
        } else {
            let _ = pool.check_finished(now, conn, (), ok);
            self.input_done(h, "check_finished");
        }
    }

    /// `Action::Close`: a leased connection may only be closed by a drain that ran out of
    /// time (its borrower's release is then refused); an abandoned open frees its slot.
    pub(super) fn conn_closed(&mut self, h: usize, conn: ConnId, reason: CloseReason) {
        *self.m.closes.entry(reason.as_str()).or_default() += 1;
        let host = &mut self.hosts[h];
        if let Some(req) = host.leased.remove(&conn) {
            if reason != CloseReason::DrainTimeout {
                self.fail(format!(
                    "the core closed leased {conn} ({})",
                    reason.as_str()
                ));
                return;
            }
            self.reqs[req].revoked = true;
        }
        let host = &mut self.hosts[h];
        let db = &mut self.dbs[host.db];
        if let Some(start) = host.opening.remove(&conn) {
            // Abandoned open: the client closes its socket, the server frees the
            // handshake's slot, and the core must refuse the late result.
            host.aborted.insert(conn);
            if start == ConnectStart::Pending {
                db.abort_connect();
            }
        } else if let Some(b) = host.conns.remove(&conn) {
            db.disconnect(b);
        } else {
            self.fail(format!("Close for unknown {conn}"));
        }
    }
}
