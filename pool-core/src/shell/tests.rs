//! Shell tests with a manual runtime: work queues up until the test runs it, time moves
//! only when the test says so.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::{waker, ArcWake};
use futures::FutureExt;

use super::*;
use crate::action::Rejection;
use crate::config::Config;

#[derive(Default)]
struct Manual {
    now: AtomicU64,
    work: Mutex<VecDeque<Work<u32>>>,
    armed: Mutex<Vec<Instant>>,
    /// The one timer, as pool-tokio keeps it: moved only earlier, cleared when it fires.
    timer: Mutex<Option<Instant>>,
    /// Connections the judge calls broken.
    dead: Mutex<HashSet<u32>>,
}

#[derive(Clone, Default)]
struct Rt(Arc<Manual>);

impl Runtime<u32> for Rt {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.now.load(Ordering::SeqCst))
    }
    fn execute(&self, work: Work<u32>) {
        self.0.work.lock().unwrap().push_back(work);
    }
    fn arm_timer(&self, at: Instant) {
        self.0.armed.lock().unwrap().push(at);
        let mut timer = self.0.timer.lock().unwrap();
        if timer.is_none_or(|t| at < t) {
            *timer = Some(at);
        }
    }
    fn judge(&self, connection: &mut u32, _: Moment) -> Verdict {
        if self.0.dead.lock().unwrap().contains(connection) {
            Verdict::Broken
        } else {
            Verdict::Reusable
        }
    }
}

impl Rt {
    fn advance(&self, d: Duration) {
        self.0.now.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
    fn take(&self) -> Vec<Work<u32>> {
        self.0.work.lock().unwrap().drain(..).collect()
    }
    /// The one piece of work queued.
    fn take_one(&self) -> Work<u32> {
        let mut work = self.take();
        assert_eq!(work.len(), 1, "{work:?}");
        work.remove(0)
    }
    /// Answer every queued open with a connection numbered like its id.
    fn open_all(&self) -> usize {
        let mut n = 0;
        for w in self.take() {
            match w {
                Work::Open(open) => {
                    n += 1;
                    let connection = open.conn().get() as u32;
                    open.finish(Ok(connection))
                }
                other => self.0.work.lock().unwrap().push_back(other),
            }
        }
        n
    }
    fn kill(&self, connection: u32) {
        self.0.dead.lock().unwrap().insert(connection);
    }

    /// Fire the timer the shell armed, as a runtime does: move the clock to it, clear it
    /// and call `handle_timeout`. Panics if nothing is armed while the core has a
    /// deadline, or if the timer is later than it. Returns what was due, if anything (a
    /// timer armed for a deadline that has since gone fires early, harmlessly). After the
    /// firing the timer must stand exactly at the core's next deadline.
    fn fire(&self, pool: &SharedPool<u32>) -> Option<crate::Timer> {
        let next = lock(&pool.shared.state).core.next_timeout();
        let at = self
            .0
            .timer
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| panic!("no timer armed; the core's next deadline: {next:?}"));
        assert!(
            next.is_none_or(|(t, _)| at <= t),
            "the timer ({at:?}) is later than the core's next deadline {next:?}"
        );
        let now = self.0.now.load(Ordering::SeqCst);
        self.0.now.store(now.max(at.as_nanos()), Ordering::SeqCst);
        let due = next.filter(|(t, _)| *t <= at).map(|(_, why)| why);
        pool.handle_timeout();
        let next = lock(&pool.shared.state).core.poll_timeout();
        assert_eq!(
            *self.0.timer.lock().unwrap(),
            next,
            "after {due:?} fired at {at:?}, the timer (left) is not armed for the next deadline"
        );
        pool.check_invariants().unwrap();
        due
    }
}

struct Flag(AtomicBool);
impl ArcWake for Flag {
    fn wake_by_ref(arc: &Arc<Self>) {
        arc.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> Arc<Flag> {
    Arc::new(Flag(AtomicBool::new(false)))
}

fn poll<F: std::future::Future + Unpin>(f: &mut F, flag: &Arc<Flag>) -> Poll<F::Output> {
    let w = waker(flag.clone());
    f.poll_unpin(&mut Context::from_waker(&w))
}

fn pool(max_size: usize) -> (SharedPool<u32>, Rt) {
    pool_with(Config {
        max_size,
        max_connecting: max_size,
        check_after_idle: None,
        ..Config::default()
    })
}

fn pool_with(config: Config) -> (SharedPool<u32>, Rt) {
    let rt = Rt::default();
    (SharedPool::new(config, 1, rt.clone()).unwrap(), rt)
}

/// Open one connection (an acquire asks for it, then gives up) and lend it out.
fn lend_one(pool: &SharedPool<u32>, rt: &Rt) -> Lease<u32> {
    let _ = pool.acquire().now_or_never();
    rt.open_all();
    pool.try_acquire().expect("the opened connection is idle")
}

#[test]
fn a_waiter_is_woken_when_its_connection_opens() {
    let (pool, rt) = pool(1);
    let f = flag();
    let mut acquire = pool.acquire();
    assert!(poll(&mut acquire, &f).is_pending());
    assert!(!f.0.load(Ordering::SeqCst));
    assert_eq!(rt.open_all(), 1);
    assert!(f.0.load(Ordering::SeqCst), "grant must wake the waiter");
    let Poll::Ready(Ok(lease)) = poll(&mut acquire, &f) else {
        panic!()
    };
    assert_eq!(*lease, 0);
    pool.check_invariants().unwrap();
    drop(lease);
    assert_eq!(pool.status().idle, 1);
    pool.check_invariants().unwrap();
}

#[test]
fn a_grant_that_races_a_dropped_acquire_goes_to_the_next_waiter() {
    let (pool, rt) = pool(1);
    let lease = pool.acquire().now_or_never();
    assert!(lease.is_none());
    rt.open_all();
    let held = pool.try_acquire().expect("idle connection");
    let (fa, fb) = (flag(), flag());
    let mut a = pool.acquire();
    let mut b = pool.acquire();
    assert!(poll(&mut a, &fa).is_pending());
    assert!(poll(&mut b, &fb).is_pending());
    drop(held); // granted to `a`, which is woken...
    assert!(fa.0.load(Ordering::SeqCst));
    drop(a); // ...but dropped before it looked.
    assert!(
        fb.0.load(Ordering::SeqCst),
        "the next waiter is woken with the grant"
    );
    let Poll::Ready(Ok(lease)) = poll(&mut b, &fb) else {
        panic!()
    };
    assert_eq!(pool.status().leased, 1);
    drop(lease);
    let s = pool.status();
    assert_eq!((s.idle, s.leased, s.waiters, s.total), (1, 0, 0, 1));
    pool.check_invariants().unwrap();
}

/// Answered cells are reused, but never one whose waiter has not taken its answer yet.
#[test]
fn a_cell_is_reused_only_after_its_waiter_let_go() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let (fa, fb, fc) = (flag(), flag(), flag());
    let mut a = pool.acquire();
    assert!(poll(&mut a, &fa).is_pending());
    drop(held); // granted to `a`, whose cell now waits to be looked at
    let mut b = pool.acquire();
    assert!(poll(&mut b, &fb).is_pending(), "b queues behind a's lease");
    let Poll::Ready(Ok(lease)) = poll(&mut a, &fa) else {
        panic!("a's grant was lost to b's cell")
    };
    drop(lease); // to `b`
    let Poll::Ready(Ok(lease)) = poll(&mut b, &fb) else {
        panic!("b was not granted")
    };
    drop(b);
    // `a` and `b` have let go of their cells: `c` queues in a reused one and is answered.
    let made = lock(&pool.shared.state).spares.made;
    assert_eq!(
        made, 2,
        "a reuses the cell of lend_one's cancelled acquire; b needs a new one: a's was still \
         held when b queued"
    );
    let mut c = pool.acquire();
    assert!(poll(&mut c, &fc).is_pending());
    assert_eq!(
        lock(&pool.shared.state).spares.made,
        made,
        "c reuses a cell"
    );
    drop(lease);
    assert!(fc.0.load(Ordering::SeqCst));
    assert!(matches!(poll(&mut c, &fc), Poll::Ready(Ok(_))));
    pool.check_invariants().unwrap();
}

#[test]
fn a_dropped_waiting_acquire_leaves_the_queue() {
    let (pool, _rt) = pool(1);
    let f = flag();
    let mut a = pool.acquire();
    assert!(poll(&mut a, &f).is_pending());
    assert_eq!(pool.status().waiters, 1);
    drop(a);
    assert_eq!(pool.status().waiters, 0);
    assert_eq!(pool.stats().cancelled, 1);
    pool.check_invariants().unwrap();
}

#[test]
fn a_lease_returns_from_another_thread() {
    let (pool, rt) = pool(1);
    let mut a = pool.acquire();
    let _ = poll(&mut a, &flag());
    rt.open_all();
    let Poll::Ready(Ok(lease)) = poll(&mut a, &flag()) else {
        panic!()
    };
    std::thread::spawn(move || drop(lease)).join().unwrap();
    assert_eq!(pool.status().idle, 1);
}

#[test]
fn a_lease_dropped_by_a_panicking_holder_is_closed_as_broken() {
    let (pool, rt) = pool(1);
    let lease = lend_one(&pool, &rt);
    let result = std::thread::spawn(move || {
        let _lease = lease;
        panic!("query handler bug");
    })
    .join();
    assert!(result.is_err());
    let work = rt.take();
    assert!(
        work.iter().any(|w| matches!(
            w,
            Work::Close {
                reason: CloseReason::Broken,
                connection: Some(0),
                ..
            }
        )),
        "{work:?}"
    );
    assert_eq!(pool.status().closing, 1, "counted until its close is done");
    drop(work);
    assert_eq!(pool.status().total, 0);
    pool.check_invariants().unwrap();
}

#[test]
fn the_timer_is_armed_for_the_earliest_deadline_and_rejects_the_waiter() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let f = flag();
    let mut a = pool.acquire_timeout(Duration::from_millis(100));
    assert!(poll(&mut a, &f).is_pending());
    let armed = rt.0.armed.lock().unwrap().clone();
    assert_eq!(
        armed.last(),
        Some(&(Instant::ZERO + Duration::from_millis(100)))
    );
    // A second waiter with the same deadline needs no new arming.
    let mut b = pool.acquire_timeout(Duration::from_millis(100));
    assert!(poll(&mut b, &flag()).is_pending());
    assert_eq!(rt.0.armed.lock().unwrap().len(), armed.len());
    drop(b);
    rt.advance(Duration::from_millis(100));
    pool.handle_timeout();
    assert!(f.0.load(Ordering::SeqCst));
    let Poll::Ready(Err(Rejection::Timeout(report))) = poll(&mut a, &f) else {
        panic!()
    };
    assert_eq!(report.status.leased, 1);
    drop(held);
    pool.check_invariants().unwrap();
}

#[test]
fn close_resolves_after_the_drain_and_a_revoked_lease_is_closed_when_it_returns() {
    let (pool, rt) = pool(2);
    let held = lend_one(&pool, &rt);
    let f = flag();
    let mut closing = pool.close(Duration::from_secs(1));
    assert!(poll(&mut closing, &f).is_pending());
    assert!(pool.acquire().now_or_never().unwrap().is_err());
    rt.advance(Duration::from_secs(1));
    pool.handle_timeout();
    assert!(f.0.load(Ordering::SeqCst));
    assert_eq!(poll(&mut closing, &f), Poll::Ready(1));
    rt.take();
    drop(held);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                reason: CloseReason::DrainTimeout,
                connection: Some(_),
                ..
            }]
        ),
        "{work:?}"
    );
}

#[test]
fn a_connection_that_arrives_after_its_connect_timeout_is_closed() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        connect_timeout: Duration::from_millis(50),
        ..Config::default()
    });
    let mut a = pool.acquire();
    assert!(poll(&mut a, &flag()).is_pending());
    let Work::Open(open) = rt.take_one() else {
        panic!()
    };
    rt.advance(Duration::from_millis(50));
    pool.handle_timeout();
    rt.take();
    open.finish(Ok(9));
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                connection: Some(9),
                reason: CloseReason::ConnectTimeout,
                ..
            }]
        ),
        "{work:?}"
    );
    pool.check_invariants().unwrap();
}

#[test]
fn a_leak_report_names_where_the_lease_was_acquired() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        leak_threshold: Some(Duration::from_secs(1)),
        ..Config::default()
    });
    let mut a = pool.acquire();
    let line = line!() - 1;
    let _ = poll(&mut a, &flag());
    rt.open_all();
    let Poll::Ready(Ok(_lease)) = poll(&mut a, &flag()) else {
        panic!()
    };
    rt.advance(Duration::from_secs(1));
    pool.handle_timeout();
    let work = rt.take();
    let [Work::LeakSuspected {
        origin: Some(origin),
        ..
    }] = work[..]
    else {
        panic!("{work:?}")
    };
    assert_eq!((origin.file(), origin.line()), (file!(), line));
}

#[test]
fn detach_hands_the_connection_over_and_frees_capacity() {
    let (pool, rt) = pool(1);
    let lease = lend_one(&pool, &rt);
    assert_eq!(lease.detach(), 0);
    let s = pool.status();
    assert_eq!((s.total, s.leased), (0, 0));
    assert!(
        rt.take().is_empty(),
        "a detached connection is not closed by the pool"
    );
    pool.check_invariants().unwrap();
}

/// Found by the shuttle suite: a grant delivered to a waiter, revoked by a drain deadline,
/// then abandoned by the waiter's dropped future, stayed in the shell forever.
#[test]
fn a_revoked_grant_abandoned_by_a_dropped_acquire_is_closed() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let mut a = pool.acquire();
    assert!(poll(&mut a, &flag()).is_pending());
    drop(held); // granted to `a`
    let _closing = pool.close(Duration::ZERO); // revokes `a`'s lease at once
    rt.take();
    drop(a);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                reason: CloseReason::DrainTimeout,
                connection: Some(_),
                ..
            }]
        ),
        "{work:?}"
    );
    pool.check_invariants().unwrap();
}

/// A connection idle past `check_after_idle` goes to the runtime for a check before it
/// is lent; a healthy one reaches the waiter, an unhealthy one is closed and replaced.
#[test]
fn a_stale_idle_connection_is_checked_then_lent_or_replaced() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        check_after_idle: Some(Duration::from_millis(100)),
        ..Config::default()
    });
    let mut a = pool.acquire();
    let _ = poll(&mut a, &flag());
    rt.open_all();
    let Poll::Ready(Ok(lease)) = poll(&mut a, &flag()) else {
        panic!()
    };
    drop(lease);
    rt.advance(Duration::from_millis(200));

    let f = flag();
    let mut b = pool.acquire();
    assert!(
        poll(&mut b, &f).is_pending(),
        "a stale connection is not lent unchecked"
    );
    let Work::Check(mut check) = rt.take_one() else {
        panic!("expected one check")
    };
    assert_eq!(*check.connection(), 0);
    check.finish(true);
    assert!(f.0.load(Ordering::SeqCst));
    let Poll::Ready(Ok(lease)) = poll(&mut b, &f) else {
        panic!("a healthy check lends the connection")
    };
    assert_eq!(*lease, 0);
    drop(lease);
    pool.check_invariants().unwrap();

    rt.advance(Duration::from_millis(200));
    let mut c = pool.acquire();
    assert!(poll(&mut c, &flag()).is_pending());
    let Work::Check(check) = rt.take_one() else {
        panic!("expected one check")
    };
    check.finish(false);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                connection: Some(0),
                reason: CloseReason::CheckFailed,
                ..
            }]
        ),
        "{work:?}"
    );
    // The closing connection still holds the only slot: the replacement opens once the
    // close is done.
    assert_eq!(pool.status().closing, 1);
    drop(work);
    assert!(matches!(rt.take()[..], [Work::Open(_)]));
    pool.check_invariants().unwrap();
}

/// A connection returned as `NeedsReset` goes to the runtime for a reset; a reset one is
/// lent again, one whose reset failed is closed.
#[test]
fn a_returned_connection_that_needs_a_reset_is_reset_then_lent_or_closed() {
    let (pool, rt) = pool(1);
    let mut a = pool.acquire();
    let _ = poll(&mut a, &flag());
    rt.open_all();
    let Poll::Ready(Ok(mut lease)) = poll(&mut a, &flag()) else {
        panic!()
    };
    lease.set_verdict(Verdict::NeedsReset);
    drop(lease);
    let Work::Reset(reset) = rt.take_one() else {
        panic!("expected one reset")
    };
    assert_eq!(pool.status().idle, 0, "not lendable while it is reset");
    reset.finish(true);
    let lease = pool
        .try_acquire()
        .expect("a reset connection is idle again");
    assert_eq!(*lease, 0);
    let mut lease = lease;
    lease.set_verdict(Verdict::NeedsReset);
    drop(lease);
    let Work::Reset(reset) = rt.take_one() else {
        panic!("expected one reset")
    };
    reset.finish(false);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                connection: Some(0),
                reason: CloseReason::ResetFailed,
                ..
            }]
        ),
        "{work:?}"
    );
    assert_eq!(pool.status().closing, 1, "counted until its close is done");
    drop(work);
    assert_eq!(pool.status().total, 0);
    pool.check_invariants().unwrap();
}

/// A task that moves re-polls with a new waker: the grant must wake the new one.
#[test]
fn a_waiter_re_polled_with_a_new_waker_is_woken_through_it() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let (old, new) = (flag(), flag());
    let mut a = pool.acquire();
    assert_eq!(a.waiter(), None, "not queued before its first poll");
    assert!(poll(&mut a, &old).is_pending());
    assert!(a.waiter().is_some(), "queued");
    assert!(poll(&mut a, &new).is_pending());
    drop(held);
    assert!(new.0.load(Ordering::SeqCst), "the current waker is woken");
    assert!(matches!(poll(&mut a, &new), Poll::Ready(Ok(_))));
}

/// The accessors report what the pool and the lease were given and what happened.
#[test]
fn config_closing_deadline_and_wait_are_reported() {
    let (pool, rt) = pool(1);
    assert_eq!(pool.config().max_size, 1);
    let held = lend_one(&pool, &rt);
    rt.advance(Duration::from_millis(5));
    let mut a = pool.acquire_timeout(Duration::from_secs(1));
    assert_eq!(
        a.deadline(),
        Instant::ZERO + Duration::from_millis(5) + Duration::from_secs(1)
    );
    assert!(poll(&mut a, &flag()).is_pending());
    rt.advance(Duration::from_millis(20));
    drop(held); // released 20 ms after `a` queued, and 25 ms after it was lent
    let Poll::Ready(Ok(lease)) = poll(&mut a, &flag()) else {
        panic!()
    };
    assert_eq!(lease.waited(), Duration::from_millis(20));
    assert_eq!(pool.stats().hold.max(), Duration::from_millis(25));
    assert!(!pool.is_closing());
    let _close = pool.close(Duration::from_secs(1));
    assert!(pool.is_closing());
}

/// `check_invariants` notices a queued waiter whose cell was answered behind the core's
/// back.
#[test]
fn check_invariants_notices_a_shell_out_of_step_with_the_core() {
    let (pool, rt) = pool(1);
    let _ = pool.acquire().now_or_never();
    rt.open_all();
    pool.check_invariants().unwrap();

    let held = pool.try_acquire().expect("idle connection");
    let mut a = pool.acquire();
    assert!(poll(&mut a, &flag()).is_pending());
    pool.check_invariants().unwrap();
    {
        let st = lock(&pool.shared.state);
        let queued = st.core.waiter_tokens().next().expect("a is queued");
        let _ = queued.cell.answer(Answer::Rejected(Rejection::Closed));
    }
    assert!(pool.check_invariants().is_err());
    // Returning the lease would now answer `a` a second time, which the shell refuses.
    std::mem::forget(held);
}

/// The runtime's judge at checkout: an idle connection it calls broken is closed before
/// the waiter is answered, and the waiter gets the next idle one in the same critical
/// section, keeping its place.
#[test]
fn a_connection_judged_dead_at_checkout_is_closed_and_the_waiter_gets_the_next() {
    let (pool, rt) = pool(2);
    let mut a = pool.acquire();
    let mut b = pool.acquire();
    let _ = (poll(&mut a, &flag()), poll(&mut b, &flag()));
    assert_eq!(rt.open_all(), 2);
    let (Poll::Ready(Ok(la)), Poll::Ready(Ok(lb))) = (poll(&mut a, &flag()), poll(&mut b, &flag()))
    else {
        panic!()
    };
    let (ca, cb) = (*la, *lb);
    drop(la);
    drop(lb); // LIFO: `cb` is lent next
    rt.kill(cb);
    let f = flag();
    let mut c = pool.acquire();
    let Poll::Ready(Ok(lease)) = poll(&mut c, &f) else {
        panic!("the live idle connection is lent at once")
    };
    assert_eq!(*lease, ca);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                reason: CloseReason::CheckFailed,
                connection: Some(x),
                ..
            }] if x == cb
        ),
        "{work:?}"
    );
    let stats = pool.stats();
    assert_eq!(
        stats.grants, 3,
        "the refused connection is not counted as a grant"
    );
    pool.check_invariants().unwrap();
}

/// Without a verdict from the borrower, the runtime judges a returned connection.
#[test]
fn a_returned_connection_is_judged_by_the_runtime_unless_the_borrower_said() {
    let (pool, rt) = pool(1);
    let lease = lend_one(&pool, &rt);
    rt.kill(*lease);
    drop(lease);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                reason: CloseReason::Broken,
                ..
            }]
        ),
        "{work:?}"
    );
    drop(work);
    rt.0.dead.lock().unwrap().clear();
    let mut lease = lend_one(&pool, &rt);
    rt.kill(*lease);
    lease.set_verdict(Verdict::Reusable);
    drop(lease);
    assert!(rt.take().is_empty(), "the borrower's verdict wins");
    assert_eq!(pool.status().idle, 1);
    pool.check_invariants().unwrap();
}

/// Work dropped unanswered (its task aborted or panicked) still answers: an open as a
/// failed connect, a check as failed, giving the connection back to be closed.
#[test]
fn work_dropped_unanswered_reports_a_failure_and_loses_nothing() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        check_after_idle: Some(Duration::from_millis(100)),
        ..Config::default()
    });
    let mut a = pool.acquire();
    assert!(poll(&mut a, &flag()).is_pending());
    drop(rt.take_one()); // the open's task died
    assert_eq!(pool.stats().connects_failed, 1);
    assert_eq!(pool.status().total, 0);
    assert_eq!(
        pool.status().waiters,
        1,
        "a transient failure keeps the waiter"
    );
    drop(a);
    rt.advance(Duration::from_secs(1)); // past the connect retry's backoff

    let lease = lend_one(&pool, &rt);
    drop(lease);
    rt.advance(Duration::from_millis(200));
    let mut b = pool.acquire();
    assert!(poll(&mut b, &flag()).is_pending());
    let Work::Check(check) = rt.take_one() else {
        panic!("expected a check")
    };
    drop(check);
    let work = rt.take();
    assert!(
        matches!(
            work[..],
            [Work::Close {
                reason: CloseReason::CheckFailed,
                connection: Some(_),
                ..
            }]
        ),
        "{work:?}"
    );
    drop(work);
    assert!(matches!(rt.take()[..], [Work::Open(_)]));
    pool.check_invariants().unwrap();
}

/// The closes queued, as (connection, reason); other work stays queued.
fn closes(rt: &Rt) -> Vec<(u32, CloseReason)> {
    let mut closes = vec![];
    for w in rt.take() {
        match w {
            Work::Close {
                connection: Some(c),
                reason,
                ..
            } => closes.push((c, reason)),
            other => rt.0.work.lock().unwrap().push_back(other),
        }
    }
    closes
}

#[test]
fn evict_all_closes_idle_now_and_a_held_lease_when_it_comes_back() {
    let (pool, rt) = pool(3);
    let held = lend_one(&pool, &rt);
    let idle = lend_one(&pool, &rt);
    drop(idle);
    assert_eq!((*held, pool.status().idle), (0, 1));
    pool.evict_all().unwrap();
    assert_eq!(closes(&rt), vec![(1, CloseReason::Evicted)]);
    assert_eq!(pool.status().idle, 0);
    // A new borrower gets a new connection.
    let mut acquire = pool.acquire();
    let f = flag();
    assert!(poll(&mut acquire, &f).is_pending());
    assert_eq!(rt.open_all(), 1);
    let Poll::Ready(Ok(fresh)) = poll(&mut acquire, &f) else {
        panic!()
    };
    assert_eq!(*fresh, 2);
    drop(held);
    assert_eq!(closes(&rt), vec![(0, CloseReason::Evicted)]);
    drop(fresh);
    assert_eq!(closes(&rt), vec![]);
    assert_eq!(pool.status().idle, 1);
    assert_eq!(pool.stats().closes(CloseReason::Evicted), 2);
    pool.check_invariants().unwrap();
    drop(pool.close(Duration::ZERO));
    assert_eq!(pool.evict_all(), Err(InputError::AlreadyClosed));
}

#[test]
fn resize_grows_for_a_waiter_at_once_and_shrinks_as_leases_return() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let f = flag();
    let mut acquire = pool.acquire();
    assert!(poll(&mut acquire, &f).is_pending());
    assert!(rt.take().is_empty(), "no room for an open");
    pool.resize(2).unwrap();
    assert_eq!(rt.open_all(), 1);
    let Poll::Ready(Ok(second)) = poll(&mut acquire, &f) else {
        panic!()
    };
    assert_eq!(pool.status().max_size, 2);
    assert_eq!(pool.resize(0).unwrap_err().field, "max_size");
    assert_eq!(pool.status().max_size, 2);
    pool.resize(1).unwrap();
    drop(held);
    assert_eq!(closes(&rt), vec![(0, CloseReason::Resized)]);
    drop(second);
    assert_eq!(closes(&rt), vec![]);
    let s = pool.status();
    assert_eq!((s.total, s.idle, s.max_size), (1, 1, 1));
    pool.check_invariants().unwrap();
}

/// `reconfigure` goes to the core (here: a larger size serves a waiter at once), but
/// refuses a change of `acquire_timeout`, which `acquire()` reads without locking.
#[test]
fn reconfigure_reaches_the_core_and_refuses_a_new_acquire_timeout() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let f = flag();
    let mut acquire = pool.acquire();
    assert!(poll(&mut acquire, &f).is_pending());
    let bigger = Config {
        max_size: 2,
        ..pool.config()
    };
    let err = pool
        .reconfigure(Config {
            acquire_timeout: Duration::from_secs(1),
            ..bigger.clone()
        })
        .unwrap_err();
    assert_eq!(err.field, "acquire_timeout");
    assert_eq!(pool.status().max_size, 1, "nothing changed");
    pool.reconfigure(bigger).unwrap();
    assert_eq!(rt.open_all(), 1);
    assert!(matches!(poll(&mut acquire, &f), Poll::Ready(Ok(_))));
    drop(held);
    pool.check_invariants().unwrap();
}

/// Leak origins are kept per connection: a second lease of the same connection is
/// reported with its own origin, not its predecessor's.
#[test]
fn a_leak_report_names_the_latest_lease_of_the_connection() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        check_after_idle: None,
        leak_threshold: Some(Duration::from_secs(1)),
        ..Config::default()
    });
    let first = lend_one(&pool, &rt);
    drop(first);
    let second = pool.try_acquire().expect("the connection is idle");
    let line = line!() - 1;
    rt.take();
    rt.advance(Duration::from_secs(1));
    pool.handle_timeout();
    let work = rt.take();
    let [Work::LeakSuspected {
        origin: Some(origin),
        lease,
        ..
    }] = work[..]
    else {
        panic!("{work:?}")
    };
    assert_eq!(lease, second.id());
    assert_eq!((origin.file(), origin.line()), (file!(), line));
}

/// A `WeakPool` (the runtime's timer holds one) reaches the pool while it lives, and
/// nothing once the last handle is gone.
#[test]
fn a_weak_pool_upgrades_only_while_the_pool_lives() {
    let (pool, _rt) = pool(1);
    let weak = pool.downgrade();
    let strong = weak.upgrade().expect("the pool is alive");
    assert_eq!(strong.config().max_size, 1);
    drop((pool, strong));
    assert!(
        weak.upgrade().is_none(),
        "a weak handle keeps nothing alive"
    );
}

/// `health` reads the counts and the last connect error, with how long ago it happened.
#[test]
fn health_reports_the_counts_and_the_last_connect_error_with_its_age() {
    let (pool, rt) = pool(1);
    let (status, failure) = pool.health();
    assert_eq!((status.max_size, status.total), (1, 0));
    assert!(failure.is_none());
    let mut a = pool.acquire();
    assert!(poll(&mut a, &flag()).is_pending());
    let Work::Open(open) = rt.take_one() else {
        panic!("expected an open")
    };
    open.finish(Err(ConnectError::transient("connection refused")));
    rt.advance(Duration::from_millis(30));
    let (status, failure) = pool.health();
    assert_eq!((status.max_size, status.waiters), (1, 1));
    let (error, ago) = failure.expect("the failed connect is reported");
    assert_eq!(&*error.message, "connection refused");
    assert_eq!(ago, Duration::from_millis(30));
}

/// The verdict a borrower states is the one the lease reports.
#[test]
fn a_lease_reports_the_verdict_its_borrower_stated() {
    let (pool, rt) = pool(1);
    let mut lease = lend_one(&pool, &rt);
    assert_eq!(
        lease.verdict(),
        None,
        "no verdict until the borrower states one"
    );
    lease.set_verdict(Verdict::NeedsReset);
    assert_eq!(lease.verdict(), Some(Verdict::NeedsReset));
    lease.set_verdict(Verdict::Reusable);
    assert_eq!(lease.verdict(), Some(Verdict::Reusable));
}

/// Answered cells are kept for reuse up to a bound (64): after a burst of 70 waiters is
/// answered and let go, the next 70 reuse 64 cells and need 6 new ones.
#[test]
fn at_most_64_answered_cells_are_kept_for_reuse() {
    let (pool, rt) = pool(1);
    let held = lend_one(&pool, &rt);
    let burst = |pool: &SharedPool<u32>| -> Vec<Acquire<u32>> {
        (0..70)
            .map(|_| {
                let mut a = pool.acquire_timeout(Duration::from_millis(100));
                assert!(poll(&mut a, &flag()).is_pending());
                a
            })
            .collect()
    };
    let first = burst(&pool);
    rt.advance(Duration::from_millis(100));
    pool.handle_timeout(); // all 70 rejected: their cells go to the spares
    drop(first);
    let made = lock(&pool.shared.state).spares.made;
    let second = burst(&pool);
    assert_eq!(lock(&pool.shared.state).spares.made - made, 70 - 64);
    drop((second, held));
    pool.check_invariants().unwrap();
}

/// A close runs until its `Closing` answers: the connection counts against `max_size`
/// meanwhile. One the runtime gives up on (`abandon`) counts until the close timeout.
#[test]
fn a_close_counts_until_its_handle_answers_or_the_close_timeout_passes() {
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        check_after_idle: None,
        close_timeout: Duration::from_millis(100),
        ..Config::default()
    });
    let mut lease = lend_one(&pool, &rt);
    lease.set_verdict(Verdict::Broken);
    drop(lease);
    let Work::Close {
        done,
        connection: Some(0),
        ..
    } = rt.take_one()
    else {
        panic!("expected the close of connection 0")
    };
    assert_eq!(pool.status().closing, 1);
    let _ = pool.acquire().now_or_never();
    assert!(
        rt.take().is_empty(),
        "no open while the close holds the slot"
    );
    done.finish();
    assert_eq!(pool.status().closing, 0);

    let mut lease = lend_one(&pool, &rt);
    lease.set_verdict(Verdict::Broken);
    drop(lease);
    let Work::Close { done, .. } = rt.take_one() else {
        panic!("expected a close")
    };
    done.abandon();
    assert_eq!(pool.status().closing, 1, "abandoned, still counted");
    rt.advance(Duration::from_millis(100));
    pool.handle_timeout();
    assert_eq!(pool.status().closing, 0);
    assert_eq!(pool.stats().closes_abandoned, 1);
    pool.check_invariants().unwrap();
}

/// The timer is re-armed after every kind of deadline fires: the runtime here calls
/// `handle_timeout` only when the timer the shell armed comes due, and after each firing
/// that timer must stand exactly at the core's next deadline. Each scenario leaves a later
/// deadline pending behind the one that fires, so a timer left unarmed, or armed for a
/// deadline that is gone, shows at once.
#[test]
fn the_timer_is_re_armed_after_every_kind_of_deadline_fires() {
    let ms = Duration::from_millis;
    let bare = Config {
        max_size: 2,
        max_connecting: 2,
        check_after_idle: None,
        idle_timeout: None,
        max_lifetime: None,
        leak_threshold: None,
        connect_timeout: ms(100),
        check_timeout: ms(50),
        backoff_base: ms(10),
        backoff_max: ms(40),
        // A timed-out connect is closing until this passes (nobody answers the close
        // here): short, so that the retries behind it come due.
        close_timeout: ms(20),
        ..Config::default()
    };
    // What a timer is for, without which one.
    let kind = |why: crate::Timer| format!("{why:?}").split('(').next().unwrap().to_string();
    let mut fired = Vec::new();
    // Fire until nothing is pending (or `n` firings), noting what fired.
    let mut run = |pool: &SharedPool<u32>, rt: &Rt, n: usize| {
        for _ in 0..n {
            if lock(&pool.shared.state).core.poll_timeout().is_none() {
                break;
            }
            if let Some(why) = rt.fire(pool) {
                fired.push(kind(why));
            }
        }
    };

    // A waiter's deadline, then a later waiter's; a lease's leak threshold before both.
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        leak_threshold: Some(ms(50)),
        ..bare.clone()
    });
    let held = lend_one(&pool, &rt);
    let mut a = pool.acquire_timeout(ms(100));
    let mut b = pool.acquire_timeout(ms(200));
    assert!(poll(&mut a, &flag()).is_pending() && poll(&mut b, &flag()).is_pending());
    run(&pool, &rt, 3);
    assert!(matches!(
        poll(&mut a, &flag()),
        Poll::Ready(Err(Rejection::Timeout(_)))
    ));
    assert!(matches!(
        poll(&mut b, &flag()),
        Poll::Ready(Err(Rejection::Timeout(_)))
    ));
    drop(held);

    // Connect timeouts and backoff retries, until the waiter's deadline.
    let (pool, rt) = pool_with(Config {
        max_size: 1,
        ..bare.clone()
    });
    let mut a = pool.acquire_timeout(ms(1000));
    assert!(poll(&mut a, &flag()).is_pending());
    run(&pool, &rt, 50);
    assert!(matches!(
        poll(&mut a, &flag()),
        Poll::Ready(Err(Rejection::Timeout(_)))
    ));

    // A checkout check that never answers, then the open that replaces it.
    let (pool, rt) = pool_with(Config {
        check_after_idle: Some(ms(10)),
        ..bare.clone()
    });
    drop(lend_one(&pool, &rt));
    rt.advance(ms(20));
    let mut a = pool.acquire_timeout(ms(300));
    assert!(poll(&mut a, &flag()).is_pending());
    let check = rt.take();
    assert!(
        matches!(check[..], [Work::Check(_)]),
        "a check, kept unanswered"
    );
    run(&pool, &rt, 1);
    drop(a);

    // A reset that never answers, then a leak report of another lease.
    let (pool, rt) = pool_with(Config {
        leak_threshold: Some(ms(80)),
        ..bare.clone()
    });
    let mut first = lend_one(&pool, &rt);
    let _second = lend_one(&pool, &rt);
    first.set_verdict(Verdict::NeedsReset);
    drop(first);
    let _reset = rt.take();
    run(&pool, &rt, 2);

    // An idle connection's lifetime and another's idle timeout, behind a held lease's
    // leak threshold.
    let (pool, rt) = pool_with(Config {
        max_size: 3,
        max_connecting: 3,
        max_lifetime: Some(ms(100)),
        lifetime_jitter_permille: 0,
        idle_timeout: Some(ms(60)),
        leak_threshold: Some(ms(500)),
        ..bare.clone()
    });
    let old = lend_one(&pool, &rt);
    rt.advance(ms(50));
    let young = lend_one(&pool, &rt);
    let _held = lend_one(&pool, &rt);
    drop(old); // idle from 50 ms: its lifetime ends at 100 ms, before its idle timeout
    rt.advance(ms(5));
    drop(young); // idle from 55 ms: its idle timeout at 115 ms, before its lifetime
    run(&pool, &rt, 3);

    // The drain deadline of a close, behind a lease's leak threshold.
    let (pool, rt) = pool_with(Config {
        leak_threshold: Some(ms(30)),
        ..bare
    });
    let held = lend_one(&pool, &rt);
    let mut closing = pool.close(ms(100));
    assert!(poll(&mut closing, &flag()).is_pending());
    run(&pool, &rt, 3);
    assert_eq!(poll(&mut closing, &flag()), Poll::Ready(1));
    drop(held);

    for expected in [
        "Waiter",
        "Connect",
        "Check",
        "Reset",
        "Leak",
        "Lifetime",
        "IdleTimeout",
        "Backoff",
        "Close",
        "Drain",
    ] {
        assert!(
            fired.iter().any(|k| k == expected),
            "no {expected} deadline fired; fired: {fired:?}"
        );
    }
}
