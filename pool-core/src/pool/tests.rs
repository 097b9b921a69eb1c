//! Unit tests: one per policy, driven by a manual clock, each asserting the exact actions.
//!
//! The pool runs over `C = ConnId` (each connection is its own id, so an assertion sees
//! which connection an action moves) and `W = WaiterId` (each waiter's token is the id the
//! token closure was given, so an assertion sees that the token comes back to its waiter).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::action::Action::{Check, Close, Drained, LeakSuspected, Open, Reject, Reset};
use crate::config::IdleOrder;

/// The pool under test: connections are their ids, tokens are the waiters' ids.
type P = Pool<ConnId, WaiterId>;
type A = Action<ConnId, WaiterId>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Instant {
    Instant::ZERO + ms(n)
}

/// A bare config: no checks, lifetimes, idle timeout or leak detection unless a test asks.
fn bare(max_size: usize) -> Config {
    Config {
        max_size,
        max_connecting: max_size,
        check_after_idle: None,
        idle_timeout: None,
        max_lifetime: None,
        leak_threshold: None,
        ..Config::default()
    }
}

struct T {
    pool: P,
    now: Instant,
    /// Answer every `Close` with `close_finished` at once, as an embedder whose closes
    /// take no time (most tests); off for the tests of the closing state itself.
    instant_close: bool,
}

impl T {
    fn new(config: Config) -> T {
        T {
            pool: Pool::new(config, Instant::ZERO, 42).unwrap(),
            now: Instant::ZERO,
            instant_close: true,
        }
    }

    fn to(&mut self, ms_: u64) {
        self.now = at(ms_);
    }

    fn actions(&mut self) -> Vec<A> {
        self.pool.check_invariants().unwrap();
        let mut out = Vec::new();
        while let Some(a) = self.pool.poll_action() {
            if let (Close { conn, .. }, true) = (&a, self.instant_close) {
                // Refused for a revoked lease, which the pool already forgot.
                let _ = self.pool.close_finished(self.now, *conn);
                self.pool.check_invariants().unwrap();
            }
            out.push(a);
        }
        out
    }

    fn acquire(&mut self, timeout_ms: u64) -> Acquired<ConnId> {
        self.pool
            .acquire(self.now, self.now + ms(timeout_ms), |w| w)
            .unwrap()
    }

    fn queued(&mut self, timeout_ms: u64) -> WaiterId {
        match self.acquire(timeout_ms) {
            Acquired::Queued(w) => w,
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    fn ready(&mut self) -> Grant {
        match self.acquire(1000) {
            Acquired::Ready(g, conn) => {
                assert_eq!(conn, g.conn(), "the connection is the one leased");
                g
            }
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    /// `try_acquire`, checking the connection handed out is the one leased.
    fn try_ready(&mut self) -> Option<Grant> {
        let (g, conn) = self.pool.try_acquire(self.now)?;
        assert_eq!(conn, g.conn(), "the connection is the one leased");
        Some(g)
    }

    fn connect_ok(&mut self, conn: ConnId) {
        self.pool
            .connect_finished(self.now, conn, Ok(conn))
            .unwrap();
    }

    /// Return the lease's own connection.
    fn release(&mut self, lease: LeaseId, verdict: Verdict) {
        self.pool
            .release(self.now, lease, lease.conn(), verdict)
            .unwrap();
    }

    fn timeout(&mut self) {
        self.pool.handle_timeout(self.now);
    }

    /// Open `n` connections through waiters and return them to idle.
    fn warm(&mut self, n: usize) -> Vec<ConnId> {
        let waiters: Vec<_> = (0..n).map(|_| self.queued(1000)).collect();
        let opens = self.actions();
        assert_eq!(opens.len(), n, "{opens:?}");
        let mut leases = vec![];
        for a in opens {
            let Open { conn } = a else { panic!("{a:?}") };
            self.connect_ok(conn);
            for a in self.actions() {
                if let Action::Grant {
                    waiter,
                    token,
                    grant,
                    connection,
                } = a
                {
                    assert_eq!((token, connection), (waiter, grant.conn()));
                    leases.push(grant.lease);
                }
            }
        }
        assert_eq!(leases.len(), waiters.len());
        for l in &leases {
            self.release(*l, Verdict::Reusable);
        }
        assert_eq!(self.actions(), vec![]);
        leases.iter().map(|l| l.conn()).collect()
    }

    /// Let the judge call the connections in `dead` dead; returns the ids it was asked
    /// about, in order.
    fn judge(&mut self, dead: &[ConnId]) -> Arc<Mutex<Vec<ConnId>>> {
        let dead: Vec<ConnId> = dead.to_vec();
        let asked = Arc::new(Mutex::new(vec![]));
        let log = Arc::clone(&asked);
        self.pool.set_judge(move |conn: &mut ConnId| {
            log.lock().unwrap().push(*conn);
            !dead.contains(conn)
        });
        asked
    }
}

fn c(n: u64) -> ConnId {
    ConnId(n)
}

fn w(n: u64) -> WaiterId {
    WaiterId(n)
}

/// A close of `conn` that hands its connection back (the pool held it, or it came with
/// the input).
fn close(conn: ConnId, reason: CloseReason) -> A {
    Close {
        conn,
        reason,
        connection: Some(conn),
    }
}

/// A close of `conn` the pool does not hold (an open abandoned, a check or reset given up
/// on, a lease revoked).
fn close_absent(conn: ConnId, reason: CloseReason) -> A {
    Close {
        conn,
        reason,
        connection: None,
    }
}

fn check(conn: ConnId) -> A {
    Check {
        conn,
        connection: conn,
    }
}

fn reset(conn: ConnId) -> A {
    Reset {
        conn,
        connection: conn,
    }
}

fn reject(waiter: WaiterId, rejection: Rejection) -> A {
    Reject {
        waiter,
        token: waiter,
        rejection,
    }
}

fn grant(waiter: WaiterId, lease: LeaseId, waited: Duration) -> A {
    Action::Grant {
        waiter,
        token: waiter,
        grant: Grant { lease, waited },
        connection: lease.conn(),
    }
}

/// The grant to `waiter`, checking it carries the waiter's token and the leased
/// connection.
fn grant_of(actions: &[A], waiter: WaiterId) -> Grant {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Grant {
                waiter: x,
                token,
                grant,
                connection,
            } if *x == waiter => {
                assert_eq!(*token, waiter, "the token of another waiter");
                assert_eq!(*connection, grant.conn(), "a connection not leased");
                Some(*grant)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no grant for {waiter:?} in {actions:?}"))
}

/// The error and the connection a refused input handed back.
fn refused<C>(r: Result<(), Refused<C>>) -> (InputError, C) {
    match r {
        Ok(()) => panic!("accepted"),
        Err(Refused { error, connection }) => (error, connection),
    }
}

#[test]
fn first_acquire_opens_and_the_connect_is_granted_to_the_waiter() {
    let mut t = T::new(bare(2));
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.queued(1000), w(0));
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.to(5);
    t.connect_ok(c(0));
    let lease = LeaseId { conn: c(0), seq: 0 };
    assert_eq!(t.actions(), vec![grant(w(0), lease, ms(5))]);
    assert_eq!(t.pool.status().leased, 1);
    t.release(lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.status().idle, 1);
    // The next acquire is served at once from idle.
    assert_eq!(t.ready().lease, LeaseId { conn: c(0), seq: 1 });
}

#[test]
fn min_idle_is_opened_in_the_background_within_max_connecting() {
    let mut t = T::new(Config {
        min_idle: 3,
        max_connecting: 2,
        ..bare(10)
    });
    assert_eq!(t.actions(), vec![Open { conn: c(0) }, Open { conn: c(1) }]);
    t.connect_ok(c(0));
    assert_eq!(t.actions(), vec![Open { conn: c(2) }]);
    t.connect_ok(c(1));
    t.connect_ok(c(2));
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.status().idle, 3);
    // Taking one idle connection opens a replacement to keep three idle.
    t.ready();
    assert_eq!(t.actions(), vec![Open { conn: c(3) }]);
}

#[test]
fn waiters_are_served_in_arrival_order_without_barging() {
    let mut t = T::new(Config {
        max_connecting: 1,
        ..bare(1)
    });
    let first = t.queued(1000);
    let second = t.queued(1000);
    let third = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.connect_ok(c(0));
    let g = grant_of(&t.actions(), first);
    t.release(g.lease, Verdict::Reusable);
    let g = grant_of(&t.actions(), second);
    // A newcomer while the third still waits must queue behind it, not take the
    // connection when it comes back.
    let late = t.queued(1000);
    t.release(g.lease, Verdict::Reusable);
    let acts = t.actions();
    assert_eq!(acts.len(), 1, "{acts:?}");
    let g = grant_of(&acts, third);
    t.release(g.lease, Verdict::Reusable);
    grant_of(&t.actions(), late);
    assert_eq!(t.pool.status().idle, 0);
}

#[test]
fn idle_connections_are_lent_lifo_by_default_and_fifo_on_request() {
    for (order, expected) in [(IdleOrder::Lifo, c(2)), (IdleOrder::Fifo, c(0))] {
        let mut t = T::new(Config {
            idle_order: order,
            ..bare(3)
        });
        let conns = t.warm(3);
        assert_eq!(conns, vec![c(0), c(1), c(2)]);
        assert_eq!(t.ready().conn(), expected, "{order:?}");
    }
}

#[test]
fn queue_beyond_max_waiters_is_shed_at_once() {
    let mut t = T::new(Config {
        max_waiters: 2,
        ..bare(1)
    });
    t.queued(1000);
    t.queued(1000);
    assert_eq!(
        t.pool.acquire(t.now, at(1000), |_| panic!(
            "a rejected acquire makes no token"
        )),
        Err(Rejection::QueueFull { max_waiters: 2 })
    );
    assert_eq!(t.pool.stats().rejected_queue_full, 1);
    t.pool.check_invariants().unwrap();
}

#[test]
fn a_waiter_past_its_deadline_is_rejected_with_the_last_connect_error_and_counts() {
    let mut t = T::new(bare(1));
    let waiter = t.queued(100);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.to(10);
    t.pool
        .connect_finished(
            t.now,
            c(0),
            Err(ConnectError::transient("connection refused")),
        )
        .unwrap();
    // The retry is scheduled before the waiter's deadline.
    let retry = t.pool.poll_timeout().unwrap();
    assert!(retry > at(10) && retry <= at(20), "{retry:?}");
    t.to(99);
    t.timeout();
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    assert_eq!(t.pool.poll_timeout(), Some(at(100)));
    t.to(100);
    t.timeout();
    let acts = t.actions();
    let [Reject {
        waiter: rejected,
        token,
        rejection: Rejection::Timeout(report),
    }] = &acts[..]
    else {
        panic!("{acts:?}")
    };
    assert_eq!((*rejected, *token), (waiter, waiter));
    assert_eq!(report.waited, ms(100));
    assert_eq!(
        report.last_connect_error,
        Some(ConnectError::transient("connection refused"))
    );
    assert_eq!(report.status.opening, 1);
    assert_eq!(report.status.waiters, 0);
    let text = Rejection::Timeout(report.clone()).to_string();
    assert!(
        text.contains("connection refused") && text.contains("1 opening"),
        "{text}"
    );
}

#[test]
fn spike_opens_at_most_max_connecting_and_returns_serve_the_rest() {
    // HikariCP's spike test: min idle 5, max 50, 50 requests at once, 150 ms connects.
    let mut t = T::new(Config {
        min_idle: 5,
        max_connecting: 2,
        ..bare(50)
    });
    // Warm up the five.
    let mut opened = 0;
    while t.pool.status().idle < 5 {
        for a in t.actions() {
            if let Open { conn } = a {
                opened += 1;
                t.connect_ok(conn);
            }
        }
    }
    assert_eq!(opened, 5);
    t.actions();
    let mut leases = vec![];
    let mut opens = vec![];
    for _ in 0..50 {
        match t.acquire(30_000) {
            Acquired::Ready(g, conn) => {
                assert_eq!(conn, g.conn());
                leases.push(g.lease)
            }
            Acquired::Queued(_) => {}
        }
    }
    for a in t.actions() {
        if let Open { conn } = a {
            opens.push(conn)
        }
    }
    assert_eq!(leases.len(), 5);
    assert_eq!(opens.len(), 2, "only max_connecting opens under a spike");
    // 2 ms queries: returns serve every waiter long before the 150 ms connects finish.
    let mut served = 5;
    let mut now = 0;
    while let Some(lease) = leases.pop() {
        now += 1;
        t.to(now);
        t.release(lease, Verdict::Reusable);
        for a in t.actions() {
            match a {
                Action::Grant {
                    grant, connection, ..
                } => {
                    assert_eq!(connection, grant.conn());
                    served += 1;
                    leases.insert(0, grant.lease);
                }
                Open { .. } => panic!("no further opens while returns serve the queue"),
                _ => {}
            }
        }
    }
    assert_eq!(served, 50);
    t.to(150);
    for conn in opens {
        t.connect_ok(conn);
    }
    assert_eq!(t.actions(), vec![]);
    assert_eq!(
        t.pool.status().total,
        7,
        "five warm plus two that were under way"
    );
}

#[test]
fn opens_are_capped_by_max_size_and_unserved_demand() {
    let mut t = T::new(Config {
        max_connecting: 10,
        ..bare(3)
    });
    for _ in 0..5 {
        t.queued(1000);
    }
    assert_eq!(t.actions().len(), 3, "max_size caps opens");
    let mut t = T::new(Config {
        max_connecting: 10,
        ..bare(10)
    });
    t.queued(1000);
    t.queued(1000);
    assert_eq!(t.actions().len(), 2, "one open per unserved waiter");
    let w = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(2) }]);
    assert_eq!(
        t.pool.cancel(t.now, w),
        Ok(w),
        "cancel hands the token back"
    );
    t.queued(1000);
    assert_eq!(
        t.actions(),
        vec![],
        "the open under way serves the newcomer"
    );
}

#[test]
fn transient_failures_back_off_exponentially_with_seeded_jitter() {
    let run = |seed| {
        let mut pool: Pool<()> = Pool::new(bare(1), Instant::ZERO, seed).unwrap();
        pool.acquire(Instant::ZERO, at(100_000), |_| ()).unwrap();
        let mut now = Instant::ZERO;
        let mut delays = vec![];
        for attempt in 0..6u32 {
            let Some(Open { conn }) = pool.poll_action() else {
                panic!("attempt {attempt} did not open")
            };
            pool.connect_finished(now, conn, Err(ConnectError::transient("refused")))
                .unwrap();
            let retry = pool.poll_timeout().unwrap();
            let delay = retry.saturating_since(now);
            let full = ms(10) * 2u32.pow(attempt);
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempt}: {delay:?} vs {full:?}"
            );
            // Nothing opens before the retry time.
            pool.handle_timeout(retry - Duration::from_nanos(1));
            assert_eq!(pool.poll_action(), None);
            now = retry;
            pool.handle_timeout(now);
            pool.check_invariants().unwrap();
            delays.push(delay);
        }
        delays
    };
    assert_eq!(run(7), run(7), "same seed, same jitter");
    assert_ne!(run(7), run(8), "different seed, different jitter");
}

#[test]
fn backoff_is_capped_and_reset_by_a_success() {
    let mut t = T::new(Config {
        backoff_max: ms(40),
        ..bare(1)
    });
    t.queued(100_000);
    for _ in 0..8 {
        let acts = t.actions();
        let [Open { conn }] = acts[..] else {
            panic!("{acts:?}")
        };
        t.pool
            .connect_finished(t.now, conn, Err(ConnectError::transient("refused")))
            .unwrap();
        let retry = t.pool.poll_timeout().unwrap();
        assert!(retry.saturating_since(t.now) <= ms(40));
        t.now = retry;
        t.timeout();
    }
    let acts = t.actions();
    let [Open { conn }] = acts[..] else {
        panic!("{acts:?}")
    };
    t.connect_ok(conn);
    assert_eq!(t.actions().len(), 1, "the waiter gets the connection");
    assert!(t.pool.stats().connects_failed == 8 && t.pool.stats().connects_ok == 1);
    // A success clears the error: a later timeout does not blame it.
    t.queued(10);
    t.now = t.now + ms(10);
    t.timeout();
    let acts = t.actions();
    let [Reject {
        rejection: Rejection::Timeout(r),
        ..
    }] = &acts[..]
    else {
        panic!("{acts:?}")
    };
    assert_eq!(r.last_connect_error, None);
}

/// The retry delay follows the curve (`base * 2^(n-1)` capped at `max`, then equal
/// jitter: half fixed, half random) through an outage, and a success starts it over: after
/// a recovery the first failure waits about `backoff_base`, not the outage's `backoff_max`.
#[test]
fn the_first_failure_after_a_recovery_backs_off_from_backoff_base() {
    let (base, max) = (ms(10), ms(80));
    let mut t = T::new(Config {
        backoff_base: base,
        backoff_max: max,
        ..bare(1)
    });
    // Fail the open the waiter asked for; return the retry delay the pool chose.
    let fail = |t: &mut T| -> Duration {
        let acts = t.actions();
        let [Open { conn }] = acts[..] else {
            panic!("{acts:?}")
        };
        t.pool
            .connect_finished(t.now, conn, Err(ConnectError::transient("refused")))
            .unwrap();
        assert_eq!(t.actions(), vec![], "no open before the retry time");
        let retry = t.pool.next_timeout().unwrap();
        assert_eq!(retry.1, Timer::Backoff, "the retry is the next deadline");
        let delay = retry.0.saturating_since(t.now);
        t.now = retry.0;
        t.timeout();
        delay
    };
    let within = |delay: Duration, full: Duration| {
        assert!(
            delay >= full / 2 && delay <= full,
            "delay {delay:?} outside {:?}..={full:?}",
            full / 2
        )
    };
    t.queued(1_000_000);
    for n in 0..6 {
        within(fail(&mut t), (base * (1 << n)).min(max));
    }
    // Recovery: the connect succeeds and the waiter is served.
    let acts = t.actions();
    let [Open { conn }] = acts[..] else {
        panic!("{acts:?}")
    };
    t.connect_ok(conn);
    let acts = t.actions();
    let [Action::Grant { grant, .. }] = acts[..] else {
        panic!("{acts:?}")
    };
    t.pool
        .release(t.now, grant.lease, conn, Verdict::Broken)
        .unwrap();
    t.actions();
    // The next outage starts the curve over.
    t.queued(1_000_000);
    within(fail(&mut t), base);
    within(fail(&mut t), base * 2);
}

#[test]
fn a_fatal_connect_error_rejects_waiters_at_once_and_fails_fast_until_retry() {
    let mut t = T::new(bare(2));
    let a = t.queued(30_000);
    let b = t.queued(30_000);
    assert_eq!(t.actions().len(), 2);
    let auth = ConnectError::fatal("password authentication failed for user \"app\"");
    t.to(3);
    t.pool
        .connect_finished(t.now, c(0), Err(auth.clone()))
        .unwrap();
    assert_eq!(
        t.actions(),
        vec![
            reject(a, Rejection::ConnectFailed(auth.clone())),
            reject(b, Rejection::ConnectFailed(auth.clone())),
        ]
    );
    // While the retry time has not come, an acquire fails at once with the same error.
    assert_eq!(
        t.pool
            .acquire(t.now, at(30_000), |_| panic!("rejected: no token")),
        Err(Rejection::ConnectFailed(auth.clone()))
    );
    assert_eq!(
        t.pool.stats().rejected_connect_failed,
        3,
        "two waiters rejected, then one acquire at once"
    );
    // The other connect still under way succeeds: the pool works again.
    t.connect_ok(c(1));
    assert_eq!(t.pool.status().idle, 1);
    assert_eq!(t.ready().conn(), c(1));
}

#[test]
fn idle_timeout_shrinks_the_pool_to_min_idle_and_no_further() {
    let mut t = T::new(Config {
        min_idle: 1,
        idle_timeout: Some(ms(1000)),
        ..bare(4)
    });
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.connect_ok(c(0));
    // Grow to four under load.
    let mut leases = vec![t.ready().lease];
    for _ in 0..3 {
        t.queued(5000);
    }
    let acts = t.actions();
    assert_eq!(acts.len(), 3, "{acts:?}");
    for a in acts {
        if let Open { conn } = a {
            t.connect_ok(conn);
        }
    }
    for a in t.actions() {
        if let Action::Grant { grant, .. } = a {
            leases.push(grant.lease)
        }
    }
    assert_eq!(leases.len(), 4);
    for (i, l) in leases.iter().enumerate() {
        t.to(10 + i as u64);
        t.release(*l, Verdict::Reusable);
    }
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.status().idle, 4);
    // The connection idle longest goes first, exactly at its idle timeout.
    assert_eq!(t.pool.poll_timeout(), Some(at(1010)));
    t.to(1010);
    t.timeout();
    assert_eq!(
        t.actions(),
        vec![close(leases[0].conn(), CloseReason::IdleTimeout)]
    );
    t.to(5000);
    t.timeout();
    let acts = t.actions();
    assert_eq!(acts.len(), 2, "{acts:?}");
    // min_idle is a floor the reaper respects, and nothing reopens (no reaper churn).
    assert_eq!(t.pool.status().idle, 1);
    assert_eq!(t.pool.poll_timeout(), None);
}

/// `min_idle` counts idle connections, not every connection: with connections in use
/// and no more than `min_idle` idle, none of the idle ones times out.
#[test]
fn idle_timeout_spares_min_idle_idle_connections_while_others_are_in_use() {
    let mut t = T::new(Config {
        min_idle: 2,
        idle_timeout: Some(ms(1000)),
        ..bare(3)
    });
    let conns = t.warm(3);
    let in_use = [t.ready(), t.ready()];
    assert_eq!(t.pool.status().idle, 1);
    assert_eq!(t.actions(), vec![], "no room to restore min_idle");
    assert_eq!(t.pool.next_timeout(), None, "no idle timeout is pending");
    t.to(5000);
    t.timeout();
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.status().idle, 1);
    for g in in_use {
        t.release(g.lease, Verdict::Reusable);
    }
    // Now three are idle: the one idle longest (since the warm-up) times out, down to
    // min_idle.
    assert_eq!(t.actions(), vec![]);
    t.to(6000);
    t.timeout();
    assert_eq!(t.actions(), vec![close(conns[0], CloseReason::IdleTimeout)]);
    assert_eq!(t.pool.status().idle, 2);
}

#[test]
fn max_lifetime_is_jittered_and_enforced_when_idle_and_on_return() {
    let lifetime = ms(100_000);
    let mut t = T::new(Config {
        max_lifetime: Some(lifetime),
        ..bare(20)
    });
    let conns = t.warm(20);
    let expiries: Vec<Instant> = conns
        .iter()
        .map(|id| t.pool.conns.get(*id).unwrap().expires_at)
        .collect();
    for e in &expiries {
        assert!(*e <= at(100_000) && *e >= at(97_500), "{e:?}");
    }
    let distinct: std::collections::BTreeSet<_> = expiries.iter().collect();
    assert!(distinct.len() > 15, "connections must not expire together");
    // Lease one, then let every lifetime pass: idle ones close at their deadlines.
    let g = t.ready();
    t.to(100_000);
    t.timeout();
    let closes = t.actions();
    assert_eq!(closes.len(), 19);
    // Each idle connection, handed back with its close.
    assert_eq!(
        closes,
        conns
            .iter()
            .filter(|id| **id != g.conn())
            .map(|id| close(*id, CloseReason::MaxLifetime))
            .collect::<Vec<_>>()
    );
    // The leased one closes when it comes back.
    t.release(g.lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![close(g.conn(), CloseReason::MaxLifetime)]);
    assert_eq!(t.pool.stats().closes(CloseReason::MaxLifetime), 20);
}

#[test]
fn checkout_checks_only_connections_idle_past_the_bypass_window() {
    let mut t = T::new(Config {
        check_after_idle: Some(ms(500)),
        ..bare(2)
    });
    t.warm(1);
    t.to(400);
    let g = t.ready();
    assert_eq!(t.actions(), vec![]);
    t.release(g.lease, Verdict::Reusable);
    t.to(901);
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![check(c(0))]);
    assert_eq!(t.pool.status().checking, 1);
    t.to(903);
    t.pool.check_finished(t.now, c(0), c(0), true).unwrap();
    let g = grant_of(&t.actions(), waiter);
    assert_eq!(g.waited, ms(2));
    t.release(g.lease, Verdict::Reusable);
    // A failed check closes the connection and opens a replacement for the waiter.
    t.to(2000);
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![check(c(0))]);
    t.pool.check_finished(t.now, c(0), c(0), false).unwrap();
    assert_eq!(
        t.actions(),
        vec![close(c(0), CloseReason::CheckFailed), Open { conn: c(1) }]
    );
    t.connect_ok(c(1));
    grant_of(&t.actions(), waiter);
    assert_eq!(t.pool.stats().checks_started, 2, "each check is counted");
}

#[test]
fn a_check_that_does_not_answer_is_evicted_at_check_timeout() {
    let mut t = T::new(Config {
        check_after_idle: Some(ms(500)),
        check_timeout: ms(50),
        ..bare(1)
    });
    t.warm(1);
    t.to(1000);
    let waiter = t.queued(5000);
    assert_eq!(t.actions(), vec![check(c(0))]);
    assert_eq!(t.pool.poll_timeout(), Some(at(1050)));
    assert_eq!(
        t.pool.next_timeout(),
        Some((at(1050), Timer::Check(c(0)))),
        "the check's deadline is before the waiter's"
    );
    t.to(1050);
    t.timeout();
    // The connection is still with the embedder, checking: the close cannot carry it.
    assert_eq!(
        t.actions(),
        vec![
            close_absent(c(0), CloseReason::CheckTimeout),
            Open { conn: c(1) }
        ]
    );
    // The late answer is refused, hands the connection back, and changes nothing.
    let before = (t.pool.status(), t.pool.stats().clone());
    assert_eq!(
        refused(t.pool.check_finished(t.now, c(0), c(0), true)),
        (InputError::UnexpectedConnection(c(0)), c(0))
    );
    assert_eq!((t.pool.status(), t.pool.stats().clone()), before);
    assert_eq!(t.actions(), vec![]);
    t.connect_ok(c(1));
    grant_of(&t.actions(), waiter);
}

#[test]
fn verdicts_broken_and_needs_reset() {
    let mut t = T::new(bare(1));
    t.warm(1);
    let g = t.ready();
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::Broken);
    assert_eq!(
        t.actions(),
        vec![close(c(0), CloseReason::Broken), Open { conn: c(1) }],
        "broken frees capacity at once and a replacement is opened for the waiter"
    );
    t.connect_ok(c(1));
    let g = grant_of(&t.actions(), waiter);
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(1))]);
    t.pool.reset_finished(t.now, c(1), c(1), true).unwrap();
    let g = grant_of(&t.actions(), waiter);
    t.release(g.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(1))]);
    t.pool.reset_finished(t.now, c(1), c(1), false).unwrap();
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::ResetFailed)]);
    assert_eq!(t.pool.status().total, 0);
}

#[test]
fn a_lease_held_past_the_leak_threshold_is_reported_once() {
    let mut t = T::new(Config {
        leak_threshold: Some(ms(1000)),
        ..bare(1)
    });
    t.warm(1);
    t.to(100);
    let g = t.ready();
    assert_eq!(t.pool.poll_timeout(), Some(at(1100)));
    t.to(1100);
    t.timeout();
    assert_eq!(
        t.actions(),
        vec![LeakSuspected {
            lease: g.lease,
            held: ms(1000)
        }]
    );
    t.to(5000);
    t.timeout();
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.poll_timeout(), None);
    assert_eq!(t.pool.stats().leaks_suspected, 1);
}

#[test]
fn close_rejects_waiters_closes_idle_and_waits_for_leases_until_the_drain_deadline() {
    let mut t = T::new(bare(3));
    t.warm(3);
    let a = t.ready();
    let b = t.ready();
    let _ = t.ready();
    let waiter = t.queued(1000);
    let opening = {
        t.pool
            .release(t.now, a.lease, a.conn(), Verdict::Reusable)
            .unwrap();
        grant_of(&t.actions(), waiter)
    };
    let waiter = t.queued(1000);
    t.release(opening.lease, Verdict::Reusable);
    let held = grant_of(&t.actions(), waiter);
    let waiter = t.queued(1000);
    t.actions();
    t.to(10);
    t.pool.close(t.now, at(1010)).unwrap();
    assert_eq!(t.actions(), vec![reject(waiter, Rejection::Closed)]);
    assert_eq!(
        t.pool
            .acquire(t.now, at(100), |_| panic!("rejected: no token")),
        Err(Rejection::Closed)
    );
    assert_eq!(
        t.pool.stats().rejected_closed,
        2,
        "the waiter and the late acquire"
    );
    assert_eq!(
        t.pool.close(t.now, at(2000)),
        Err(InputError::AlreadyClosed)
    );
    // A lease returned while draining is closed.
    t.release(b.lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![close(b.conn(), CloseReason::PoolClosed)]);
    assert_eq!(t.pool.poll_timeout(), Some(at(1010)));
    assert_eq!(t.pool.next_timeout(), Some((at(1010), Timer::Drain)));
    t.to(1010);
    t.timeout();
    let acts = t.actions();
    assert_eq!(acts.len(), 3, "{acts:?}");
    assert!(matches!(
        acts[0],
        Close {
            reason: CloseReason::DrainTimeout,
            connection: None,
            ..
        }
    ));
    assert!(matches!(
        acts[1],
        Close {
            reason: CloseReason::DrainTimeout,
            connection: None,
            ..
        }
    ));
    assert_eq!(acts[2], Drained { forced: 2 });
    // The borrower of a revoked lease still has its connection: returning it is refused
    // and hands it back, to be closed by the embedder.
    assert_eq!(
        refused(
            t.pool
                .release(t.now, held.lease, held.conn(), Verdict::Reusable)
        ),
        (InputError::UnknownLease(held.lease), held.conn())
    );
    assert!(t.pool.is_closed());
    assert_eq!(t.pool.poll_timeout(), None);
}

#[test]
fn close_of_an_idle_pool_drains_at_once() {
    let mut t = T::new(bare(2));
    t.warm(2);
    t.pool.close(t.now, at(100)).unwrap();
    assert_eq!(
        t.actions(),
        vec![
            close(c(0), CloseReason::PoolClosed),
            close(c(1), CloseReason::PoolClosed),
            Drained { forced: 0 }
        ]
    );
}

#[test]
fn misuse_is_refused_and_leaves_state_unchanged() {
    let mut t = T::new(bare(2));
    t.warm(1);
    let g = t.ready();
    t.release(g.lease, Verdict::Reusable);
    let before = (t.pool.status(), t.pool.stats().clone());
    // Each refusal hands back the connection that came with the input (here c(5), a
    // stand-in the pool never saw, so a swap with the pool's own would show).
    assert_eq!(
        refused(t.pool.release(t.now, g.lease, c(5), Verdict::Reusable)),
        (InputError::UnknownLease(g.lease), c(5))
    );
    assert_eq!(
        t.pool.detach(t.now, g.lease),
        Err(InputError::UnknownLease(g.lease))
    );
    assert_eq!(
        t.pool.cancel(t.now, w(99)),
        Err(InputError::UnknownWaiter(w(99)))
    );
    assert_eq!(
        refused(t.pool.connect_finished(t.now, c(0), Ok(c(5)))),
        (InputError::UnexpectedConnection(c(0)), Some(c(5)))
    );
    assert_eq!(
        refused(t.pool.connect_finished(t.now, c(77), Ok(c(5)))),
        (InputError::UnexpectedConnection(c(77)), Some(c(5)))
    );
    assert_eq!(
        refused(
            t.pool
                .connect_finished(t.now, c(77), Err(ConnectError::transient("refused")))
        ),
        (InputError::UnexpectedConnection(c(77)), None)
    );
    assert_eq!(
        refused(t.pool.check_finished(t.now, c(0), c(5), true)),
        (InputError::UnexpectedConnection(c(0)), c(5))
    );
    assert_eq!(
        refused(t.pool.reset_finished(t.now, c(0), c(5), true)),
        (InputError::UnexpectedConnection(c(0)), c(5))
    );
    assert_eq!((t.pool.status(), t.pool.stats().clone()), before);
    assert_eq!(t.actions(), vec![]);
    // A stale lease on a connection lent again is refused too.
    let again = t.ready();
    assert_eq!(again.conn(), g.conn());
    assert_eq!(
        refused(t.pool.release(t.now, g.lease, c(5), Verdict::Broken)),
        (InputError::UnknownLease(g.lease), c(5))
    );
    assert_eq!(t.pool.status().leased, 1);
    // The idle connection stayed where it was: the next lend hands out c(0), not c(5).
    t.release(again.lease, Verdict::Reusable);
    assert_eq!(t.ready().conn(), c(0));
}

#[test]
fn a_connect_past_connect_timeout_is_abandoned_and_counts_as_a_failure() {
    let mut t = T::new(Config {
        connect_timeout: ms(100),
        ..bare(1)
    });
    let waiter = t.queued(10_000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.to(100);
    t.timeout();
    assert_eq!(
        t.actions(),
        vec![close_absent(c(0), CloseReason::ConnectTimeout)]
    );
    assert_eq!(t.pool.stats().connects_failed, 1);
    // The connection that arrives late comes back, for the embedder to close.
    assert_eq!(
        refused(t.pool.connect_finished(t.now, c(0), Ok(c(0)))),
        (InputError::UnexpectedConnection(c(0)), Some(c(0)))
    );
    let retry = t.pool.poll_timeout().unwrap();
    t.now = retry;
    t.timeout();
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    t.connect_ok(c(1));
    grant_of(&t.actions(), waiter);
}

#[test]
fn spurious_timeouts_do_nothing() {
    let mut t = T::new(Config {
        leak_threshold: Some(ms(1000)),
        idle_timeout: Some(ms(1000)),
        ..bare(2)
    });
    t.warm(2);
    t.ready();
    t.actions();
    let before = (t.pool.status(), t.pool.poll_timeout());
    for n in [1, 1, 500, 999] {
        t.to(n);
        t.timeout();
        assert_eq!(t.actions(), vec![]);
    }
    assert_eq!((t.pool.status(), t.pool.poll_timeout()), before);
}

#[test]
fn detach_frees_capacity_and_cancel_leaves_the_queue() {
    let mut t = T::new(bare(1));
    t.warm(1);
    let g = t.ready();
    let waiter = t.queued(1000);
    let other = t.queued(1000);
    assert_eq!(t.pool.cancel(t.now, waiter), Ok(waiter));
    t.pool.detach(t.now, g.lease).unwrap();
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    assert_eq!(t.pool.stats().detached, 1);
    t.connect_ok(c(1));
    grant_of(&t.actions(), other);
}

#[test]
fn try_acquire_never_queues_or_opens_and_respects_waiters() {
    let mut t = T::new(bare(1));
    assert_eq!(t.pool.try_acquire(t.now), None);
    assert_eq!(t.actions(), vec![]);
    t.warm(1);
    let g = t.try_ready().unwrap();
    assert_eq!(t.pool.try_acquire(t.now), None);
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::Reusable);
    grant_of(&t.actions(), waiter);
}

#[test]
fn time_never_goes_backwards() {
    let mut t = T::new(bare(1));
    t.to(100);
    t.queued(50);
    t.actions();
    // An input stamped earlier is treated as happening now.
    t.pool.handle_timeout(at(10));
    assert_eq!(t.pool.now(), at(100));
    t.pool.handle_timeout(at(150));
    let acts = t.actions();
    assert!(matches!(acts[..], [Reject { .. }]), "{acts:?}");
}

#[test]
fn an_acquire_with_a_past_deadline_is_rejected_not_queued() {
    let mut t = T::new(bare(1));
    t.to(10);
    let r = t
        .pool
        .acquire(t.now, at(10), |_| panic!("rejected: no token"));
    assert!(matches!(r, Err(Rejection::Timeout(_))), "{r:?}");
    assert_eq!(t.pool.status().waiters, 0);
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.stats().rejected_timeout, 1, "counted as a timeout");
}

#[test]
fn new_rejects_invalid_config_with_the_field_name() {
    let err = P::new(
        Config {
            max_size: 0,
            ..Config::default()
        },
        Instant::ZERO,
        0,
    )
    .unwrap_err();
    assert_eq!(err.field, "max_size");
    let config = Config {
        max_size: 3,
        ..Config::default()
    };
    let pool = P::new(config.clone(), Instant::ZERO, 0).unwrap();
    assert_eq!(pool.config(), &config);
}

/// `check_invariants` is only useful if it fails on a broken state: corrupt a healthy
/// pool one rule at a time and expect each to be reported.
#[test]
fn check_invariants_reports_each_kind_of_corruption() {
    fn healthy() -> (P, LeaseId) {
        let mut t = T::new(bare(4));
        t.warm(2);
        let a = t.ready();
        t.ready();
        t.queued(1000);
        assert_eq!(t.actions(), vec![Open { conn: c(2) }]);
        let s = t.pool.status();
        assert_eq!((s.leased, s.opening, s.waiters, s.idle), (2, 1, 1, 0));
        (t.pool, a.lease)
    }
    type Corruption = (&'static str, fn(&mut P, LeaseId));
    let corruptions: Vec<Corruption> = vec![
        ("leased counter", |p, _| p.conns.leased += 1),
        ("opening counter", |p, _| p.conns.opening -= 1),
        ("checking counter", |p, _| p.conns.checking += 1),
        ("resetting counter", |p, _| p.conns.resetting += 1),
        ("retired", |p, _| p.conns.retired += 1),
        ("created", |p, _| p.conns.created += 1),
        ("detached", |p, _| p.stats.detached += 1),
        ("connects started", |p, _| p.stats.connects_started += 1),
        ("lease never issued", |p, _| p.next_lease = 0),
        ("max_size", |p, _| p.config.max_size = 2),
        ("over shrunk", |p, _| {
            p.config.max_size = 2;
            p.over.size = 0;
        }),
        ("doomed count", |p, _| p.conns.doomed += 1),
        ("generation from the future", |p, lease| {
            p.conns.get_mut(lease.conn()).unwrap().generation = 1
        }),
        ("evicted but in flight, uncounted", |p, _| {
            p.conns.generation = 1
        }),
        ("max_connecting", |p, _| p.config.max_connecting = 0),
        ("max_waiters", |p, _| p.config.max_waiters = 0),
        ("barging", |p, lease| {
            p.conns.set_idle(lease.conn(), Instant::ZERO, lease.conn())
        }),
        ("draining with waiters", |p, _| {
            p.phase = Phase::Draining {
                deadline: Instant::NEVER,
                forced: 0,
            }
        }),
        ("closed with connections", |p, _| p.phase = Phase::Closed),
    ];
    for (name, corrupt) in corruptions {
        let (mut pool, lease) = healthy();
        pool.check_invariants().unwrap();
        corrupt(&mut pool, lease);
        assert!(pool.check_invariants().is_err(), "{name} went unnoticed");
    }
}

/// Every outcome is counted once, in the counter that names it.
#[test]
fn stats_count_every_outcome() {
    let mut t = T::new(Config {
        max_waiters: 1,
        leak_threshold: Some(ms(100)),
        ..bare(1)
    });
    t.warm(1); // 1 acquire queued, 1 connect, 1 grant
    let g = t.try_ready().unwrap(); // try: 1 acquire, 1 grant
    let w = t.queued(50);
    assert!(matches!(
        t.pool.acquire(t.now, at(50), |w| w),
        Err(Rejection::QueueFull { .. })
    ));
    t.pool.cancel(t.now, w).unwrap();
    t.queued(50);
    t.to(50);
    t.timeout(); // the waiter times out
    t.to(100);
    t.timeout(); // the lease is suspected of leaking
    t.release(g.lease, Verdict::NeedsReset);
    t.pool.reset_finished(t.now, c(0), c(0), true).unwrap();
    let g = t.ready();
    t.pool.detach(t.now, g.lease).unwrap();
    t.queued(1000);
    let acts = t.actions();
    let Some(Open { conn }) = acts.iter().find(|a| matches!(a, Open { .. })) else {
        panic!("{acts:?}")
    };
    t.pool
        .connect_finished(t.now, *conn, Err(ConnectError::fatal("bad password")))
        .unwrap();
    t.pool.close(t.now, t.now).unwrap();
    assert!(t.pool.acquire(t.now, at(5000), |w| w).is_err());
    let s = t.pool.stats();
    let counted = (
        s.acquires,
        s.grants,
        s.rejected_queue_full,
        s.cancelled,
        s.rejected_timeout,
        s.rejected_connect_failed,
        s.rejected_closed,
    );
    assert_eq!(counted, (8, 3, 1, 1, 1, 1, 1));
    let connects = (s.connects_started, s.connects_ok, s.connects_failed);
    assert_eq!(connects, (2, 1, 1));
    assert_eq!((s.resets_started, s.detached, s.leaks_suspected), (1, 1, 1));
    assert_eq!(
        (s.wait.count(), s.hold.count(), s.connect.count()),
        (3, 3, 1)
    );
    t.pool.check_invariants().unwrap();
}

// ---- the judge: an idle connection known dead is never lent ----------------------------

/// The acquire fast path asks the judge about the connection next in line; a dead one
/// sends the caller to the queue, where dispatch closes it (`CheckFailed`) and hands the
/// next idle connection to the waiter, in the same input.
#[test]
fn a_dead_idle_connection_is_closed_and_the_waiter_gets_the_next_idle_one() {
    let mut t = T::new(bare(2));
    assert_eq!(t.warm(2), vec![c(0), c(1)]);
    let asked = t.judge(&[c(1)]);
    t.to(7);
    // LIFO: c(1) is next in line, and dead: the fast path closes it (no I/O needed) and
    // lends the next one at once.
    assert_eq!(t.ready().lease, LeaseId { conn: c(0), seq: 2 });
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::CheckFailed)]);
    // Each connection judged once, in line order.
    assert_eq!(*asked.lock().unwrap(), vec![c(1), c(0)]);
    let s = t.pool.stats();
    assert_eq!(s.closes(CloseReason::CheckFailed), 1, "counted once");
    assert_eq!((s.checks_started, s.acquires, s.grants), (0, 3, 3));
    let st = t.pool.status();
    assert_eq!((st.total, st.idle, st.leased, st.waiters), (1, 0, 1, 0));
}

/// Dispatch judges a fresh idle connection it reaches behind a stale one (which the fast
/// path stops at): a live one goes to the waiter, a dead one is closed.
#[test]
fn dispatch_judges_a_fresh_idle_connection_behind_a_stale_one() {
    for dead in [false, true] {
        let mut t = T::new(Config {
            idle_order: IdleOrder::Fifo,
            check_after_idle: Some(ms(500)),
            ..bare(3)
        });
        t.warm(2);
        t.to(400);
        let g = t.ready();
        assert_eq!(g.conn(), c(0));
        t.release(g.lease, Verdict::Reusable);
        // FIFO: c(1) (idle since 0, stale at 700) is next in line, then c(0) (used at 400).
        let dead_ones = if dead { vec![c(0)] } else { vec![] };
        let asked = t.judge(&dead_ones);
        t.to(700);
        let waiter = t.queued(1000);
        let actions = t.actions();
        assert_eq!(actions[0], check(c(1)), "{actions:?}");
        if dead {
            assert_eq!(
                actions[1..],
                [close(c(0), CloseReason::CheckFailed)],
                "{actions:?}"
            );
        } else {
            assert_eq!(actions.len(), 2, "{actions:?}");
            assert_eq!(grant_of(&actions, waiter).conn(), c(0));
        }
        assert_eq!(
            *asked.lock().unwrap(),
            vec![c(0)],
            "only the fresh one is judged"
        );
    }
}

/// When every idle connection is dead, each is closed and opens replace them; the
/// waiter at the front keeps its place: the first connection to arrive is its, even if
/// it was opened for a later waiter.
#[test]
fn dead_idle_connections_are_closed_and_the_front_waiter_keeps_its_place_for_new_opens() {
    let mut t = T::new(bare(2));
    t.warm(2);
    t.judge(&[c(0), c(1)]);
    t.to(5);
    let first = t.queued(1000);
    assert_eq!(
        t.actions(),
        vec![
            close(c(1), CloseReason::CheckFailed),
            close(c(0), CloseReason::CheckFailed),
            Open { conn: c(2) },
        ]
    );
    let second = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(3) }]);
    t.to(8);
    t.connect_ok(c(3));
    assert_eq!(
        t.actions(),
        vec![grant(first, LeaseId { conn: c(3), seq: 2 }, ms(3))]
    );
    t.connect_ok(c(2));
    assert_eq!(
        t.actions(),
        vec![grant(second, LeaseId { conn: c(2), seq: 3 }, ms(3))]
    );
    let s = t.pool.stats();
    assert_eq!(s.closes(CloseReason::CheckFailed), 2);
    assert_eq!((s.checks_started, s.acquires, s.grants), (0, 4, 4));
}

/// `try_acquire` closes a dead idle connection (no I/O needed) and lends the live one
/// behind it; with only dead ones idle it closes them and answers "would wait".
#[test]
fn try_acquire_closes_dead_idle_connections_and_lends_a_live_one() {
    let mut t = T::new(bare(2));
    t.warm(2);
    let asked = t.judge(&[c(1)]);
    let g = t.try_ready().expect("c(0) is alive");
    assert_eq!(g.lease, LeaseId { conn: c(0), seq: 2 });
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::CheckFailed)]);
    assert_eq!(*asked.lock().unwrap(), vec![c(1), c(0)]);
    t.release(g.lease, Verdict::Reusable);
    t.judge(&[c(0)]);
    assert_eq!(t.pool.try_acquire(t.now), None);
    assert_eq!(t.actions(), vec![close(c(0), CloseReason::CheckFailed)]);
    let st = t.pool.status();
    assert_eq!((st.total, st.idle, st.leased), (0, 0, 0));
}

/// The judge speaks for idle connections that are about to be lent as they are, and for
/// nothing else: a stale one is health-checked instead, an expired one closed for its
/// lifetime, and a connection that reaches a waiter straight from a release, a check or
/// a connect is lent on its own evidence.
#[test]
fn the_judge_is_asked_only_about_fresh_idle_connections() {
    // Stale: checked, not judged; the check's answer stands.
    let mut t = T::new(Config {
        check_after_idle: Some(ms(500)),
        ..bare(1)
    });
    t.warm(1);
    let asked = t.judge(&[c(0)]);
    t.to(1000);
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![check(c(0))]);
    t.pool.check_finished(t.now, c(0), c(0), true).unwrap();
    assert_eq!(
        t.actions(),
        vec![grant(waiter, LeaseId { conn: c(0), seq: 1 }, ms(0))]
    );
    assert_eq!(*asked.lock().unwrap(), vec![]);

    // Returned straight to a waiter: the borrower's verdict stands.
    let mut t = T::new(bare(1));
    t.warm(1);
    let g = t.ready();
    let asked = t.judge(&[c(0)]);
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::Reusable);
    assert_eq!(
        t.actions(),
        vec![grant(waiter, LeaseId { conn: c(0), seq: 2 }, ms(0))]
    );
    assert_eq!(*asked.lock().unwrap(), vec![]);

    // Expired: closed for its lifetime, not as dead.
    let mut t = T::new(Config {
        max_lifetime: Some(ms(100)),
        lifetime_jitter_permille: 0,
        ..bare(1)
    });
    t.warm(1);
    let asked = t.judge(&[c(0)]);
    t.to(100);
    t.queued(1000);
    assert_eq!(
        t.actions(),
        vec![close(c(0), CloseReason::MaxLifetime), Open { conn: c(1) }]
    );
    assert_eq!(*asked.lock().unwrap(), vec![]);
    assert_eq!(t.pool.stats().closes(CloseReason::CheckFailed), 0);
}

// ---- tokens, timers ----------------------------------------------------------------------

/// The token closure runs only for a caller that queues, with the waiter's id; the token
/// comes back exactly once, with the answer or the cancel; `waiter_tokens` lists the
/// queue in arrival order.
#[test]
fn tokens_are_made_only_for_waiters_and_come_back_with_their_answer() {
    let mut pool: Pool<ConnId, String> = Pool::new(bare(1), at(0), 1).unwrap();
    let queue = |pool: &mut Pool<ConnId, String>, name: &str, expect: WaiterId| {
        let r = pool.acquire(at(0), at(1000), |id| {
            assert_eq!(id, expect, "the token is made with the waiter's id");
            name.to_string()
        });
        assert_eq!(r, Ok(Acquired::Queued(expect)));
    };
    let tokens = |pool: &Pool<ConnId, String>| pool.waiter_tokens().cloned().collect::<Vec<_>>();
    queue(&mut pool, "a", w(0));
    assert_eq!(pool.poll_action(), Some(Open { conn: c(0) }));
    queue(&mut pool, "b", w(1));
    queue(&mut pool, "c", w(2));
    assert_eq!(pool.poll_action(), None);
    assert_eq!(tokens(&pool), ["a", "b", "c"]);
    assert_eq!(pool.cancel(at(0), w(1)), Ok("b".to_string()));
    assert_eq!(
        pool.cancel(at(0), w(1)),
        Err(InputError::UnknownWaiter(w(1)))
    );
    assert_eq!(tokens(&pool), ["a", "c"]);
    pool.connect_finished(at(2), c(0), Ok(c(0))).unwrap();
    let lease = LeaseId { conn: c(0), seq: 0 };
    assert_eq!(
        pool.poll_action(),
        Some(Action::Grant {
            waiter: w(0),
            token: "a".to_string(),
            grant: Grant {
                lease,
                waited: ms(2)
            },
            connection: c(0),
        })
    );
    assert_eq!(tokens(&pool), ["c"]);
    pool.release(at(3), lease, c(0), Verdict::Reusable).unwrap();
    let lease = LeaseId { conn: c(0), seq: 1 };
    assert_eq!(
        pool.poll_action(),
        Some(Action::Grant {
            waiter: w(2),
            token: "c".to_string(),
            grant: Grant {
                lease,
                waited: ms(3)
            },
            connection: c(0),
        })
    );
    assert_eq!(pool.poll_action(), None);
    assert_eq!(tokens(&pool), Vec::<String>::new());
    // Served at once: no token is made.
    pool.release(at(4), lease, c(0), Verdict::Reusable).unwrap();
    let r = pool.acquire(at(4), at(1000), |_| {
        panic!("made a token for a ready acquire")
    });
    let Ok(Acquired::Ready(g, conn)) = r else {
        panic!("{r:?}")
    };
    assert_eq!((g.lease, conn), (LeaseId { conn: c(0), seq: 2 }, c(0)));
    // A close rejects the queue, each waiter with its token.
    queue(&mut pool, "d", w(3));
    pool.close(at(5), at(100)).unwrap();
    assert_eq!(
        pool.poll_action(),
        Some(Reject {
            waiter: w(3),
            token: "d".to_string(),
            rejection: Rejection::Closed
        })
    );
    assert_eq!(pool.poll_action(), None);
}

/// `poll_timer` moves the embedder's timer only when a deadline is earlier than the one
/// it was last given, and after `handle_timeout` (the timer fired) names the next one.
#[test]
fn poll_timer_moves_the_timer_only_earlier_and_after_it_fired() {
    let mut t = T::new(Config {
        connect_timeout: ms(10_000),
        ..bare(2)
    });
    assert_eq!(t.pool.poll_timer(), None, "nothing to time");
    let first = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    assert_eq!(t.pool.poll_timer(), Some(at(1000)), "the first deadline");
    assert_eq!(t.pool.poll_timer(), None, "nothing changed");
    t.to(100);
    let early = t.queued(500);
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    assert_eq!(t.pool.poll_timer(), Some(at(600)), "an earlier deadline");
    t.queued(2000);
    t.actions();
    assert_eq!(
        t.pool.poll_timer(),
        None,
        "a later deadline: the timer stays"
    );
    // A deadline that goes away leaves the timer early, which is harmless.
    assert_eq!(t.pool.cancel(t.now, early), Ok(early));
    assert_eq!(t.pool.poll_timer(), None);
    assert_eq!(t.pool.poll_timeout(), Some(at(1000)));
    t.to(600);
    t.timeout();
    assert_eq!(t.actions(), vec![]);
    assert_eq!(
        t.pool.poll_timer(),
        Some(at(1000)),
        "fired: the next deadline"
    );
    t.to(700);
    t.connect_ok(c(0));
    grant_of(&t.actions(), first);
    // The earliest deadline now is the third waiter's (2100), later than the timer.
    assert_eq!(t.pool.poll_timeout(), Some(at(2100)));
    assert_eq!(t.pool.poll_timer(), None);
}

/// `next_timeout` names what the earliest deadline is for, and agrees with
/// `poll_timeout`.
#[test]
fn next_timeout_names_what_the_deadline_is_for() {
    let mut t = T::new(Config {
        min_idle: 1,
        connect_timeout: ms(300),
        check_timeout: ms(50),
        idle_timeout: Some(ms(5_000)),
        max_lifetime: Some(ms(10_000)),
        lifetime_jitter_permille: 0,
        leak_threshold: Some(ms(2_000)),
        ..bare(3)
    });
    let next = |t: &mut T| {
        let next = t.pool.next_timeout();
        assert_eq!(next.map(|(at, _)| at), t.pool.poll_timeout());
        next
    };
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    assert_eq!(next(&mut t), Some((at(300), Timer::Connect(c(0)))));
    let a = t.queued(100);
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    assert_eq!(next(&mut t), Some((at(100), Timer::Waiter(a))));
    t.pool.cancel(t.now, a).unwrap();
    assert_eq!(next(&mut t), Some((at(300), Timer::Connect(c(0)))));
    t.to(10);
    t.connect_ok(c(0));
    assert_eq!(next(&mut t), Some((at(300), Timer::Connect(c(1)))));
    t.pool
        .connect_finished(t.now, c(1), Err(ConnectError::transient("refused")))
        .unwrap();
    // No open is wanted (min_idle is met): the retry needs no timer.
    assert_eq!(next(&mut t), Some((at(10_010), Timer::Lifetime(c(0)))));
    assert_eq!(t.actions(), vec![]);
    // Leasing it leaves min_idle unmet: an open is wanted, after the backoff.
    let g = t.ready();
    let Some((retry, Timer::Backoff)) = next(&mut t) else {
        panic!("{:?}", t.pool.next_timeout())
    };
    assert!(retry > at(10) && retry <= at(20), "{retry:?}");
    t.now = retry;
    t.timeout();
    assert_eq!(t.actions(), vec![Open { conn: c(2) }]);
    assert_eq!(next(&mut t), Some((retry + ms(300), Timer::Connect(c(2)))));
    t.connect_ok(c(2));
    assert_eq!(next(&mut t), Some((at(2_010), Timer::Leak(g.lease))));
    t.to(30);
    t.release(g.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(0))]);
    assert_eq!(next(&mut t), Some((at(80), Timer::Reset(c(0)))));
    t.pool.reset_finished(t.now, c(0), c(0), true).unwrap();
    // Two idle, min_idle one: the one idle longest (c(2), since the retry) times out.
    assert_eq!(
        next(&mut t),
        Some((retry + ms(5_000), Timer::IdleTimeout(c(2))))
    );
    t.pool.close(t.now, at(40)).unwrap();
    t.actions();
    assert_eq!(next(&mut t), None, "nothing left to drain");
}

// ---- resize and evict_all ------------------------------------------------------------------

#[test]
fn resize_up_opens_for_waiters_at_once() {
    let mut t = T::new(Config {
        max_connecting: 4,
        ..bare(1)
    });
    let first = t.queued(1000);
    let second = t.queued(1000);
    let third = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.pool.resize(t.now, 3).unwrap();
    assert_eq!(t.pool.status().max_size, 3);
    assert_eq!(t.actions(), vec![Open { conn: c(1) }, Open { conn: c(2) }]);
    t.to(5);
    t.connect_ok(c(2));
    t.connect_ok(c(0));
    t.connect_ok(c(1));
    let acts = t.actions();
    assert_eq!(grant_of(&acts, first).conn(), c(2));
    assert_eq!(grant_of(&acts, second).conn(), c(0));
    assert_eq!(grant_of(&acts, third).conn(), c(1));
}

#[test]
fn resize_down_sheds_idle_at_once_and_closes_the_rest_as_they_come_back() {
    let mut t = T::new(bare(4));
    t.warm(4);
    // LIFO: the last two to go idle are lent; c0 and c1 stay idle, c0 idle longest.
    let a = t.ready();
    let b = t.ready();
    assert_eq!((a.conn(), b.conn()), (c(3), c(2)));
    t.to(1);
    t.pool.resize(t.now, 1).unwrap();
    assert_eq!(
        t.actions(),
        vec![
            close(c(0), CloseReason::Resized),
            close(c(1), CloseReason::Resized)
        ]
    );
    let s = t.pool.status();
    assert_eq!((s.total, s.max_size, s.idle, s.leased), (2, 1, 0, 2));
    // The allowance over max_size falls with each close, so the invariants stay tight.
    assert_eq!(
        t.pool.over.size, 1,
        "4 live minus 2 shed, over a max_size of 1"
    );
    // Over the new size: a waiter gets no open, and a return is closed, not lent.
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![]);
    t.release(a.lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![close(c(3), CloseReason::Resized)]);
    assert_eq!(t.pool.over.size, 0, "the pool fits again");
    // Now it fits: the next return goes to the waiter.
    t.release(b.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(2))]);
    t.pool.reset_finished(t.now, c(2), c(2), true).unwrap();
    assert_eq!(grant_of(&t.actions(), waiter).conn(), c(2));
    assert_eq!(t.pool.stats().closes(CloseReason::Resized), 3);
}

#[test]
fn resize_down_closes_opens_that_finish_while_over() {
    let mut t = T::new(bare(2));
    let first = t.queued(1000);
    let second = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }, Open { conn: c(1) }]);
    t.pool.resize(t.now, 1).unwrap();
    assert_eq!(t.actions(), vec![]);
    t.connect_ok(c(0));
    assert_eq!(t.actions(), vec![close(c(0), CloseReason::Resized)]);
    t.connect_ok(c(1));
    let g = grant_of(&t.actions(), first);
    assert_eq!(g.conn(), c(1));
    // The second waiter waits for the one connection the pool may now hold.
    t.release(g.lease, Verdict::Broken);
    assert_eq!(
        t.actions(),
        vec![close(c(1), CloseReason::Broken), Open { conn: c(2) }]
    );
    t.connect_ok(c(2));
    assert_eq!(grant_of(&t.actions(), second).conn(), c(2));
}

#[test]
fn resize_refuses_invalid_sizes_and_changes_nothing() {
    let mut t = T::new(Config {
        min_idle: 2,
        max_connecting: 2,
        ..bare(3)
    });
    assert_eq!(t.actions(), vec![Open { conn: c(0) }, Open { conn: c(1) }]);
    let before = t.pool.status();
    let limit = crate::config::MAX_SIZE_LIMIT;
    for (size, field) in [(0, "max_size"), (limit + 1, "max_size"), (1, "min_idle")] {
        let err = t.pool.resize(t.now, size).unwrap_err();
        assert_eq!(err.field, field, "{size}");
        assert_eq!(t.pool.status(), before);
        assert_eq!(t.pool.config().max_size, 3);
        assert_eq!(t.actions(), vec![]);
    }
    t.pool.resize(t.now, 2).unwrap();
    assert_eq!(t.pool.config().max_size, 2);
}

#[test]
fn evict_all_closes_idle_now_and_a_lease_when_it_comes_back() {
    let mut t = T::new(bare(4));
    t.warm(3);
    let held = t.ready();
    let reset_later = t.ready();
    assert_eq!((held.conn(), reset_later.conn()), (c(2), c(1)));
    t.to(1);
    t.pool.evict_all(t.now).unwrap();
    assert_eq!(t.actions(), vec![close(c(0), CloseReason::Evicted)]);
    // A new borrower gets a new connection.
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![Open { conn: c(3) }]);
    // Evicted leases are closed when returned, whatever the verdict; not lent, not reset.
    t.release(held.lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![close(c(2), CloseReason::Evicted)]);
    t.release(reset_later.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::Evicted)]);
    t.connect_ok(c(3));
    let g = grant_of(&t.actions(), waiter);
    assert_eq!(g.conn(), c(3));
    // Connections opened after the eviction are lent and kept as usual.
    t.release(g.lease, Verdict::Reusable);
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.ready().conn(), c(3));
    assert_eq!(t.pool.stats().closes(CloseReason::Evicted), 3);
}

#[test]
fn evict_all_closes_opens_checks_and_resets_when_they_finish_and_opens_for_waiters() {
    let mut t = T::new(Config {
        check_after_idle: Some(ms(10)),
        ..bare(6)
    });
    t.warm(2);
    let b = t.ready();
    assert_eq!(b.conn(), c(1));
    t.to(20);
    // c0 sat idle past the window: the waiter's checkout check starts.
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![check(c(0))]);
    t.release(b.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(1))]);
    // One more waiter: no open, the check and the reset count as on their way.
    let second = t.queued(1000);
    assert_eq!(t.actions(), vec![]);
    t.pool.evict_all(t.now).unwrap();
    // Nothing evicted in flight is supply: two new opens for the two waiters.
    assert_eq!(t.actions(), vec![Open { conn: c(2) }, Open { conn: c(3) }]);
    // Evicted again while those open: two more (evicted connections still count against
    // max_size until they are closed).
    t.pool.evict_all(t.now).unwrap();
    assert_eq!(t.actions(), vec![Open { conn: c(4) }, Open { conn: c(5) }]);
    t.pool.check_finished(t.now, c(0), c(0), true).unwrap();
    assert_eq!(t.actions(), vec![close(c(0), CloseReason::Evicted)]);
    t.pool.reset_finished(t.now, c(1), c(1), true).unwrap();
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::Evicted)]);
    t.connect_ok(c(2));
    assert_eq!(t.actions(), vec![close(c(2), CloseReason::Evicted)]);
    t.connect_ok(c(5));
    assert_eq!(grant_of(&t.actions(), waiter).conn(), c(5));
    t.connect_ok(c(3));
    assert_eq!(t.actions(), vec![close(c(3), CloseReason::Evicted)]);
    t.connect_ok(c(4));
    assert_eq!(grant_of(&t.actions(), second).conn(), c(4));
    assert_eq!(t.pool.stats().closes(CloseReason::Evicted), 4);
}

#[test]
fn evict_all_after_close_is_refused() {
    let mut t = T::new(bare(2));
    t.warm(1);
    t.pool.close(t.now, at(100)).unwrap();
    t.actions();
    assert_eq!(t.pool.evict_all(t.now), Err(InputError::AlreadyClosed));
    assert_eq!(t.actions(), vec![]);
}

/// A readiness probe reads the last connect error and when it happened, until a connect
/// succeeds.
#[test]
fn the_last_connect_error_is_kept_with_its_time_until_a_connect_succeeds() {
    let mut t = T::new(bare(2));
    assert_eq!(t.pool.last_connect_error(), None);
    let _waiter = t.queued(1_000);
    assert_eq!(t.actions(), vec![Open { conn: c(0) }]);
    t.to(10);
    let refused = ConnectError::transient("connection refused");
    t.pool
        .connect_finished(t.now, c(0), Err(refused.clone()))
        .unwrap();
    assert_eq!(t.pool.last_connect_error(), Some((&refused, at(10))));
    t.to(500);
    t.timeout();
    let _ = t.actions();
    t.pool.connect_finished(t.now, c(1), Ok(c(1))).unwrap();
    assert_eq!(t.pool.last_connect_error(), None);
}

// ---- the closing state ---------------------------------------------------------------------

/// A closed connection stays counted against `max_size` until the embedder says it is
/// gone: with a slow close, the replacement waits for it (the database never sees more
/// than `max_size` connections from the pool), and `status()` shows it closing.
#[test]
fn a_closing_connection_counts_against_max_size_until_its_close_is_done() {
    let mut t = T::new(bare(1));
    t.instant_close = false;
    t.warm(1);
    let g = t.ready();
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::Broken);
    assert_eq!(
        t.actions(),
        vec![close(c(0), CloseReason::Broken)],
        "no replacement while the closing one holds the only slot"
    );
    let s = t.pool.status();
    assert_eq!((s.total, s.closing, s.waiters), (1, 1, 1), "{s}");
    assert!(s.to_string().contains("1 closing"), "{s}");
    t.to(3);
    t.pool.close_finished(t.now, c(0)).unwrap();
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    t.connect_ok(c(1));
    grant_of(&t.actions(), waiter);
    assert_eq!(
        t.pool.close_finished(t.now, c(0)),
        Err(InputError::UnexpectedConnection(c(0))),
        "a close is finished once"
    );
    assert_eq!(
        t.pool.close_finished(t.now, c(1)),
        Err(InputError::UnexpectedConnection(c(1))),
        "a leased connection is not closing"
    );
    t.pool.check_invariants().unwrap();
}

/// A close that never finishes is abandoned at `close_timeout` and counted as gone: the
/// slot comes back, the abandonment is counted, and a late answer is refused.
#[test]
fn a_close_that_does_not_finish_is_abandoned_at_its_close_timeout() {
    let mut t = T::new(Config {
        close_timeout: ms(50),
        ..bare(1)
    });
    t.instant_close = false;
    t.warm(1);
    let g = t.ready();
    let waiter = t.queued(1000);
    t.release(g.lease, Verdict::Broken);
    assert_eq!(t.actions(), vec![close(c(0), CloseReason::Broken)]);
    assert_eq!(
        t.pool.next_timeout(),
        Some((at(50), Timer::Close(c(0)))),
        "the close deadline comes before the waiter's"
    );
    t.to(49);
    t.timeout();
    assert_eq!(t.actions(), vec![], "not yet");
    t.to(50);
    t.timeout();
    assert_eq!(t.actions(), vec![Open { conn: c(1) }]);
    assert_eq!(t.pool.stats().closes_abandoned, 1);
    assert_eq!(t.pool.status().closing, 0);
    assert_eq!(
        t.pool.close_finished(t.now, c(0)),
        Err(InputError::UnexpectedConnection(c(0)))
    );
    t.connect_ok(c(1));
    grant_of(&t.actions(), waiter);
    t.pool.check_invariants().unwrap();
}

/// A connection closed while the embedder holds it (its reset or open ran past its
/// timeout) stays counted; the late answer hands it back and a second `Close` carries it;
/// a failed open leaves nothing to close.
#[test]
fn a_connection_closed_while_its_work_runs_comes_back_with_the_answer_and_is_closed() {
    let mut t = T::new(Config {
        check_timeout: ms(10),
        connect_timeout: ms(10),
        ..bare(2)
    });
    t.instant_close = false;
    t.warm(1);
    let g = t.ready();
    t.release(g.lease, Verdict::NeedsReset);
    assert_eq!(t.actions(), vec![reset(c(0))]);
    let waiter = t.queued(1000);
    assert_eq!(t.actions(), vec![], "the reset is on its way to the waiter");
    t.to(10);
    t.timeout();
    assert_eq!(
        t.actions(),
        vec![
            close_absent(c(0), CloseReason::ResetFailed),
            Open { conn: c(1) }
        ]
    );
    assert_eq!(t.pool.status().closing, 1);
    t.to(11);
    t.pool.reset_finished(t.now, c(0), c(0), true).unwrap();
    assert_eq!(
        t.actions(),
        vec![close(c(0), CloseReason::ResetFailed)],
        "the late answer is closed, not lent"
    );
    assert_eq!(
        refused(t.pool.reset_finished(t.now, c(0), c(0), true)),
        (InputError::UnexpectedConnection(c(0)), c(0)),
        "answered once"
    );
    t.pool.close_finished(t.now, c(0)).unwrap();
    assert_eq!(t.pool.status().closing, 0);
    // The open for the waiter times out too: its late success is closed, and a late
    // failure of the next one simply retires it.
    t.to(20);
    t.timeout();
    let actions = t.actions();
    assert!(
        actions.contains(&close_absent(c(1), CloseReason::ConnectTimeout)),
        "{actions:?}"
    );
    t.to(21);
    t.connect_ok(c(1));
    assert_eq!(t.actions(), vec![close(c(1), CloseReason::ConnectTimeout)]);
    t.pool.close_finished(t.now, c(1)).unwrap();
    // After the connect failure's backoff, a new open for the waiter; it times out too,
    // and its late failure leaves nothing to close.
    t.to(40);
    t.timeout();
    assert!(t.actions().contains(&Open { conn: c(2) }));
    t.to(50);
    t.timeout();
    assert!(t
        .actions()
        .contains(&close_absent(c(2), CloseReason::ConnectTimeout)));
    assert_eq!(t.pool.status().closing, 1);
    t.to(51);
    t.pool
        .connect_finished(t.now, c(2), Err(ConnectError::transient("late")))
        .unwrap();
    assert_eq!(t.pool.status().closing, 0);
    assert_eq!(
        t.pool.stats().connects_failed,
        2,
        "each timeout once, no more"
    );
    t.pool.check_invariants().unwrap();
    let _ = waiter;
}

/// `Drained` means every connection is gone: it waits for the closes `close` started.
#[test]
fn drained_waits_for_the_closes_it_started() {
    let mut t = T::new(bare(2));
    t.instant_close = false;
    t.warm(2);
    t.pool.close(t.now, t.now + ms(100)).unwrap();
    let actions = t.actions();
    assert_eq!(actions.len(), 2, "two closes, no Drained yet: {actions:?}");
    assert!(!t.pool.is_closed());
    t.pool.close_finished(t.now, c(0)).unwrap();
    assert_eq!(t.actions(), vec![]);
    t.pool.close_finished(t.now, c(1)).unwrap();
    assert_eq!(t.actions(), vec![Drained { forced: 0 }]);
    assert!(t.pool.is_closed());
}

// ---- reconfigure ---------------------------------------------------------------------------

#[test]
fn reconfigure_applies_idle_limits_at_once_and_keeps_deadlines_under_way() {
    let mut t = T::new(Config {
        max_connecting: 3,
        ..bare(3)
    });
    t.warm(2);
    // An open under way keeps the connect deadline it was given.
    let waiter_a = t.ready();
    let waiter_b = t.ready();
    let waiter = t.queued(10_000);
    assert_eq!(t.actions(), vec![Open { conn: c(2) }]);
    let connect_deadline = t.pool.poll_timeout().unwrap();
    t.to(100);
    t.pool
        .reconfigure(
            t.now,
            Config {
                max_connecting: 1,
                idle_timeout: Some(ms(50)),
                min_idle: 1,
                connect_timeout: ms(1),
                ..t.pool.config().clone()
            },
        )
        .unwrap();
    assert_eq!(t.actions(), vec![]);
    assert_eq!(t.pool.poll_timeout(), Some(connect_deadline));
    t.connect_ok(c(2));
    assert_eq!(grant_of(&t.actions(), waiter).conn(), c(2));
    // Returned at 100 ms: idle since then, and judged by the new 50 ms idle timeout, down
    // to the new min_idle of 1.
    t.release(waiter_a.lease, Verdict::Reusable);
    t.release(waiter_b.lease, Verdict::Reusable);
    assert_eq!(t.pool.poll_timeout(), Some(at(150)));
    t.to(150);
    t.timeout();
    assert_eq!(
        t.actions(),
        vec![close(waiter_a.conn(), CloseReason::IdleTimeout)]
    );
    assert_eq!(t.pool.status().idle, 1, "min_idle is a floor");
}

#[test]
fn reconfigure_below_the_opens_under_way_starts_none_until_under() {
    let mut t = T::new(Config {
        max_connecting: 3,
        ..bare(5)
    });
    for _ in 0..5 {
        t.queued(10_000);
    }
    assert_eq!(t.actions().len(), 3);
    t.pool
        .reconfigure(
            t.now,
            Config {
                max_connecting: 1,
                ..t.pool.config().clone()
            },
        )
        .unwrap();
    t.connect_ok(c(0));
    t.connect_ok(c(1));
    let opens = |acts: Vec<A>| acts.iter().filter(|a| matches!(a, Open { .. })).count();
    assert_eq!(
        opens(t.actions()),
        0,
        "two still opening, over the new limit of 1"
    );
    t.connect_ok(c(2));
    assert_eq!(opens(t.actions()), 1, "none opening: one more may start");
}

#[test]
fn reconfigure_refuses_invalid_options_and_changes_nothing() {
    let mut t = T::new(bare(3));
    let before = t.pool.config().clone();
    let err = t
        .pool
        .reconfigure(
            t.now,
            Config {
                min_idle: 4,
                ..before.clone()
            },
        )
        .unwrap_err();
    assert_eq!(err.field, "min_idle");
    assert_eq!(t.pool.config(), &before);
}

/// A lease id from an earlier lease of the same connection, now lent again, is stale:
/// detaching with it is refused and the current borrower keeps the connection.
#[test]
fn a_stale_lease_of_a_connection_lent_again_cannot_detach_it() {
    let mut t = T::new(bare(1));
    t.warm(1);
    let first = t.ready();
    t.release(first.lease, Verdict::Reusable);
    let second = t.ready();
    assert_eq!(
        second.conn(),
        first.conn(),
        "the same connection, lent again"
    );
    assert_eq!(
        t.pool.detach(t.now, first.lease),
        Err(InputError::UnknownLease(first.lease))
    );
    assert_eq!(t.pool.status().leased, 1);
    t.pool.detach(t.now, second.lease).unwrap();
    assert_eq!(t.pool.status().total, 0);
}
