//! The policy oracles: beside the invariants (which a pool can keep while breaking every
//! promise it makes), each states one of the pool's policies in the simulator's own terms
//! and is checked on every run, against the simulator's books (`books`):
//!
//! - **min_idle**: an idle timeout never takes the pool to `min_idle` idle connections or
//!   fewer; a deficit below `min_idle` is always being restored (see **opens**);
//! - **opens**: after every input that ends with the pool's dispatch, an open that is
//!   wanted (waiters plus the `min_idle` deficit, beyond what is opening or being checked,
//!   within `max_size` and `max_connecting`) is held back only by a failed connect's
//!   backoff, and its retry is due within the backoff curve's bound for the failures in a
//!   row: `min(backoff_base * 2^(n-1), backoff_max)` after the last one. So after a
//!   recovery the first retry comes within `backoff_base`, not `backoff_max`;
//! - **lifetime**: no connection is lent at an age of `max_lifetime` or more (its age when
//!   a checkout check or reset that made it ready began, for a connection lent straight
//!   out of one);
//! - **checkout check**: a connection idle longer than `check_after_idle` is checked
//!   before it is lent, and only such a connection is checked;
//! - **fatal**: a fatal connect error rejects every waiter queued at that moment, with
//!   that error, in the same step;
//! - **timeout cause**: every timeout names the last connect error since the last
//!   successful connect (so one that failed during its wait is never lost), and none if
//!   there was none;
//! - **leak**: every lease held past `leak_threshold` is reported by the first timer step
//!   at or after its threshold, and none earlier.

use pool_core::{CloseReason, ConnId, ConnectError, LeaseId, Rejection, TimeoutReport};

use crate::vtime::ns;

use super::books::Held;
use super::Sim;

/// Inputs after which the pool has run its dispatch (opens for unmet demand): the
/// `what` that `input_done` is given. A rejected acquire, an empty `try_acquire`, a
/// cancel and a refused late answer change no demand the pool must act on.
const DISPATCHED: [&str; 10] = [
    "new",
    "acquire",
    "try_acquire",
    "connect_finished",
    "check_finished",
    "reset_finished",
    "release",
    "detach",
    "handle_timeout",
    "close_finished",
];

fn d(nanos: u64) -> std::time::Duration {
    std::time::Duration::from_nanos(nanos)
}

impl Sim {
    /// After an input's actions are drained: the books agree with the pool, and every
    /// wanted open is held back only by a backoff within its bound.
    pub(super) fn policies_hold(&mut self, h: usize, what: &str) -> bool {
        let host = &self.hosts[h];
        let s = host.pool.status();
        if let Some(e) = host.books.out_of_step(&s) {
            self.fail(format!("{e} (after {what})"));
            return false;
        }
        if host.pool.is_closing() || !DISPATCHED.contains(&what) {
            return true;
        }
        let c = host.pool.config();
        let deficit = c.min_idle.saturating_sub(s.idle);
        let demand = s.waiters + deficit;
        let room = s.max_size.saturating_sub(s.total);
        let slots = c.max_connecting.saturating_sub(s.opening);
        let wanted = demand
            .saturating_sub(s.opening + s.checking)
            .min(room)
            .min(slots);
        if wanted == 0 {
            return true;
        }
        let why = format!(
            "{wanted} open(s) wanted ({} waiting, min_idle deficit {deficit}; {s}) after {what}",
            s.waiters
        );
        let Some(last) = &host.books.last_failure else {
            self.fail(format!(
                "policy (opens): {why}, and no connect failed since the last success: nothing holds them back"
            ));
            return false;
        };
        let n = host.books.failures.max(1);
        let exp = (n - 1).min(31);
        let full = ns(c.backoff_base)
            .saturating_mul(1 << exp)
            .min(ns(c.backoff_max));
        let due_by = last.at.saturating_add(full);
        let next = host.pool.poll_timeout();
        if self.now >= due_by || next.is_none_or(|t| t.as_nanos() > due_by) {
            self.fail(format!(
                "policy (backoff): {why}; after {n} failed connect(s) in a row, the last at {:?}, \
                 the retry is due within {:?} (by {:?}), but the pool's next timer is {next:?}",
                d(last.at),
                d(full),
                d(due_by),
            ));
            return false;
        }
        true
    }

    /// A connection is lent (granted to a waiter, or handed out at once): it is not past
    /// its lifetime, and not idle past `check_after_idle` unchecked.
    pub(super) fn conn_lent(&mut self, h: usize, conn: ConnId) {
        let now = self.now;
        let c = self.hosts[h].pool.config().clone();
        let Some(book) = self.hosts[h].books.get(conn) else {
            self.fail(format!("lent {conn}, which the simulator never saw open"));
            return;
        };
        let Held::Idle {
            ready_at,
            vetted_at,
        } = book.held
        else {
            self.fail(format!("lent {conn}, which is {:?}", book.held));
            return;
        };
        // Judged at the grant, or (lent straight out of a check or reset) when that began.
        let judged = if ready_at == now { vetted_at } else { now };
        if let (Some(lifetime), Some(connected)) = (c.max_lifetime, book.connected_at) {
            let age = judged.saturating_sub(connected);
            if age >= ns(lifetime) {
                self.fail(format!(
                    "policy (lifetime): lent {conn} at the age of {:?}, past its max_lifetime {lifetime:?}",
                    d(age)
                ));
            }
        }
        if let Some(window) = c.check_after_idle {
            let idle = now - ready_at;
            if idle > ns(window) {
                self.fail(format!(
                    "policy (checkout check): lent {conn} unchecked after {:?} idle, past check_after_idle {window:?}",
                    d(idle)
                ));
            }
        }
        self.hosts[h].books.set(
            conn,
            Held::Leased {
                since: now,
                reported: false,
            },
        );
    }

    /// `Action::Check` or `Action::Reset`: a check only for a connection idle past
    /// `check_after_idle`.
    pub(super) fn upkeep_started(&mut self, h: usize, conn: ConnId, reset: bool) {
        let now = self.now;
        let window = self.hosts[h].pool.config().check_after_idle;
        let held = self.hosts[h].books.get(conn).map(|c| c.held);
        match (held, reset, window) {
            (Some(Held::Idle { ready_at, .. }), false, Some(w)) if now - ready_at > ns(w) => {}
            (Some(Held::Idle { ready_at, .. }), false, _) => self.fail(format!(
                "policy (checkout check): checked {conn} after only {:?} idle (check_after_idle {window:?})",
                d(now - ready_at)
            )),
            (Some(Held::Idle { .. }), true, _) => {}
            (other, _, _) => self.fail(format!(
                "{} of {conn}, which is {other:?}",
                if reset { "Reset" } else { "Check" }
            )),
        }
        self.hosts[h]
            .books
            .set(conn, Held::Upkeep { since: now, reset });
    }

    /// A check or reset the pool took: a passed one makes the connection ready.
    pub(super) fn upkeep_answered(&mut self, h: usize, conn: ConnId, ok: bool) {
        let books = &mut self.hosts[h].books;
        if let Some(Held::Upkeep { since, .. }) = books.get(conn).map(|c| c.held) {
            if ok {
                books.ready(conn, self.now, Some(since));
            }
        }
    }

    /// `Action::Close`: an idle timeout keeps more than `min_idle` idle; a connect
    /// timeout is a failed connect. The connection is closing, still counted, until its
    /// close is answered or abandoned at `close_timeout`; a lease revoked at the drain
    /// deadline is gone at once; a second `Close` (the connection a late answer handed
    /// back) changes nothing.
    pub(super) fn conn_gone(&mut self, h: usize, conn: ConnId, reason: CloseReason) {
        let now = self.now;
        let c = self.hosts[h].pool.config();
        let (min_idle, deadline) = (c.min_idle, now.saturating_add(ns(c.close_timeout)));
        let books = &mut self.hosts[h].books;
        let held = books.get(conn).map(|c| c.held);
        match (held, reason) {
            (Some(Held::Closing { .. }), _) => return,
            (Some(Held::Leased { .. }), CloseReason::DrainTimeout) => {
                books.remove(conn);
                return;
            }
            (_, CloseReason::ConnectTimeout) => books.connect_failed(now, None),
            (_, CloseReason::IdleTimeout) => {
                let idle = books.idle();
                if !matches!(held, Some(Held::Idle { .. })) || idle <= min_idle {
                    self.fail(format!(
                        "policy (min_idle): an idle timeout closed {conn} ({held:?}) with {idle} idle, min_idle {min_idle}"
                    ));
                }
            }
            _ => {}
        }
        self.hosts[h].books.set(conn, Held::Closing { deadline });
    }

    /// `Action::LeakSuspected`: only for a lease held at least `leak_threshold`.
    pub(super) fn leak_reported(&mut self, h: usize, lease: LeaseId, held: std::time::Duration) {
        let now = self.now;
        let threshold = self.hosts[h].pool.config().leak_threshold;
        let book = self.hosts[h].books.get(lease.conn()).map(|c| c.held);
        match (book, threshold) {
            (Some(Held::Leased { since, .. }), Some(t)) if now - since >= ns(t) && ns(held) == now - since => {
                self.hosts[h].books.set(
                    lease.conn(),
                    Held::Leased {
                        since,
                        reported: true,
                    },
                );
            }
            (book, t) => self.fail(format!(
                "policy (leak): {lease} reported as held {held:?} (leak_threshold {t:?}); the simulator has it {book:?}"
            )),
        }
    }

    /// After a timer step: every lease held past `leak_threshold` has been reported.
    pub(super) fn leaks_reported(&mut self, h: usize) {
        let Some(t) = self.hosts[h].pool.config().leak_threshold else {
            return;
        };
        let now = self.now;
        let late = self.hosts[h]
            .books
            .conns
            .iter()
            .find_map(|(id, c)| match c.held {
                Held::Leased {
                    since,
                    reported: false,
                } if since.saturating_add(ns(t)) <= now => Some((*id, since)),
                _ => None,
            });
        if let Some((conn, since)) = late {
            self.fail(format!(
                "policy (leak): {conn}, lent at {:?}, is past leak_threshold {t:?} and the timer step did not report it",
                d(since)
            ));
        }
    }

    /// A timeout names the last connect error since the last successful connect.
    pub(super) fn timeout_names_its_cause(&mut self, h: usize, report: &TimeoutReport) {
        let last = self.hosts[h].books.last_failure.clone();
        let named: Option<&ConnectError> = report.last_connect_error.as_ref();
        let ok = match (&last, named) {
            (None, None) => true,
            (Some(f), Some(e)) => match &f.message {
                Some(m) => *m == e.message,
                None => !e.is_fatal() && e.message.contains("timed out"),
            },
            _ => false,
        };
        if !ok {
            let last = last.map(|f| {
                format!(
                    "{} at {:?}",
                    f.message.as_deref().unwrap_or("a connect timeout"),
                    d(f.at)
                )
            });
            self.fail(format!(
                "policy (timeout cause): a timeout after {:?} names {:?}; the last connect error since the last success: {last:?}",
                report.waited,
                named.map(|e| &e.message)
            ));
        }
    }

    /// A rejection reaches a request: timeouts name their cause, and a fatal connect
    /// error's rejections are collected for `fatal_reached_every_waiter`.
    pub(super) fn rejection_policies(&mut self, req: usize, rejection: &Rejection) {
        let h = self.reqs[req].host;
        match rejection {
            Rejection::Timeout(report) => self.timeout_names_its_cause(h, report),
            Rejection::ConnectFailed(_) => {
                if let Some(answered) = &mut self.fatal_answers {
                    answered.push(req);
                }
            }
            _ => {}
        }
    }

    /// After a fatal connect result: each request that was waiting when it came was
    /// rejected with `ConnectFailed` in that step.
    pub(super) fn fatal_reached_every_waiter(&mut self, waiting: Vec<usize>) {
        let answered = self.fatal_answers.take().unwrap_or_default();
        let missed: Vec<usize> = waiting
            .into_iter()
            .filter(|r| !answered.contains(r))
            .collect();
        if !missed.is_empty() {
            self.fail(format!(
                "policy (fatal): a fatal connect error left {} waiter(s) queued at that moment without its rejection (requests {missed:?})",
                missed.len()
            ));
        }
    }
}
