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
        self.hosts[h].books.opening(conn);
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
        let mut fatal = None;
        let outcome = match result {
            Ok(b) => {
                self.hosts[h].conns.insert(conn, b);
                self.hosts[h].books.connected(conn, self.now);
                Ok(())
            }
            Err(e) => {
                self.hosts[h]
                    .books
                    .failed(conn, self.now, Some(e.message.clone()));
                if e.is_fatal() {
                    fatal = Some(self.hosts[h].pool.waiter_tokens().copied().collect());
                    self.fatal_answers = Some(Vec::new());
                }
                Err(e)
            }
        };
        let r = self.hosts[h]
            .pool
            .connect_finished(Instant::from_nanos(self.now), conn, outcome);
        self.input_done(h, "connect_finished");
        if let Some(waiting) = fatal {
            self.fatal_reached_every_waiter(waiting);
        }
        if let Err(refused) = r {
            self.fail(format!("connect_finished refused: {}", refused.error));
        }
    }

    /// `Action::Check` or `Action::Reset`: one round trip, except that a half-open backend
    /// never answers (the pool's check timeout must catch it).
    pub(super) fn check_or_reset(&mut self, h: usize, conn: ConnId, reset: bool) {
        self.upkeep_started(h, conn, reset);
        let Some(&b) = self.hosts[h].conns.get(&conn) else {
            self.fail(format!(
                "{} for {conn}, which is not open",
                if reset { "Reset" } else { "Check" }
            ));
            return;
        };
        let at = if reset {
            self.reset_ready_at(h, conn)
        } else {
            self.now
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
                .push(at + rtt, Ev::ResetDone { host: h, conn, ok }),
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
        let taken = if reset {
            pool.reset_finished(now, conn, (), ok).is_ok()
        } else {
            pool.check_finished(now, conn, (), ok).is_ok()
        };
        if taken {
            self.upkeep_answered(h, conn, ok);
        }
        let what = match (reset, taken) {
            (true, true) => "reset_finished",
            (true, false) => "late reset_finished",
            (false, true) => "check_finished",
            (false, false) => "late check_finished",
        };
        self.input_done(h, what);
    }

    /// `Action::Close`: a leased connection may only be closed by a drain that ran out of
    /// time (its borrower's release is then refused); an abandoned open frees its slot.
    /// The close is answered (`close_finished`) once the server has let the backend go:
    /// at once, or after a `SlowClose` fault's delay (or at once regardless, with
    /// `early_close_answer`). Answered inside the input that closed it, when at once.
    pub(super) fn conn_closed(&mut self, h: usize, conn: ConnId, reason: CloseReason) {
        self.conn_gone(h, conn, reason);
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
        let slow = if let Some(start) = host.opening.remove(&conn) {
            // Abandoned open: the client closes its socket, the server frees the
            // handshake's slot, and the core must refuse the late result.
            host.aborted.insert(conn);
            if start == ConnectStart::Pending {
                db.abort_connect();
            }
            false
        } else if let Some(b) = host.conns.remove(&conn) {
            match self.slow_close[host.db] {
                Some(delay_ms) => {
                    host.closing.insert(conn);
                    let at = self.now + delay_ms * 1_000_000;
                    self.queue.push(
                        at,
                        Ev::CloseDone {
                            host: h,
                            conn,
                            backend: b,
                        },
                    );
                    true
                }
                None => {
                    db.disconnect(b);
                    false
                }
            }
        } else if host.closing.contains(&conn) {
            // Closed while its check or reset ran; the late answer handed it back: its
            // slow close is already under way.
            return;
        } else {
            self.fail(format!("Close for unknown {conn}"));
            return;
        };
        if reason == CloseReason::DrainTimeout || (slow && !self.setup.early_close_answer) {
            return;
        }
        let r = self.hosts[h]
            .pool
            .close_finished(Instant::from_nanos(self.now), conn);
        match r {
            Ok(()) => {
                self.hosts[h].books.remove(conn);
            }
            Err(e) => self.fail(format!("close_finished refused: {e}")),
        }
    }

    /// `Ev::CloseDone`: a slow close is over; the server lets the backend go, and the pool
    /// hears of it (refused if the close timeout abandoned it first, or it already heard).
    pub(super) fn close_done(&mut self, h: usize, conn: ConnId, backend: u64) {
        self.dbs[self.hosts[h].db].disconnect(backend);
        self.hosts[h].closing.remove(&conn);
        if self.hosts[h].dead || self.setup.early_close_answer {
            return;
        }
        let r = self.hosts[h]
            .pool
            .close_finished(Instant::from_nanos(self.now), conn);
        let what = match r {
            Ok(()) => {
                self.hosts[h].books.remove(conn);
                "close_finished"
            }
            // Abandoned at its close timeout, or already answered.
            Err(_) => "late close_finished",
        };
        self.input_done(h, what);
    }
}
