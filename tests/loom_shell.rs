//! Exhaustive interleavings of the shell with loom: `cargo test --features loom`.
//!
//! Each model runs a few threads against a real `SharedPool` and checks that every acquire
//! ends with exactly one answer, no wake-up is lost (loom reports a deadlock if a thread
//! parks forever), and no connection or capacity leaks. Preemption bound: see
//! `PREEMPTION_BOUND` and docs/verification.md.
//!
//! The runtime keeps one timer as pool-tokio does (moved only earlier by `arm_timer`,
//! cleared when it fires), and a timer thread calls `handle_timeout` only when that timer
//! is due: a deadline the shell never armed, or armed too late, is never acted on, and the
//! waiter behind it parks forever.
#![cfg(feature = "loom")]

// pool-core's own source, built with its shell on loom's primitives (verify/loom).
use pool_core_loom as pool_core;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use futures::FutureExt;
use loom::future::block_on;
use loom::thread;
use pool_core::shell::{Opening, Runtime, SharedPool, Work};
use pool_core::{Config, Instant, Rejection};

/// A lost wake-up needs a preemption between "decide to wait" and "register the waker",
/// plus one on the waking side: bound 2 is the smallest that can show it. Two-thread
/// models run at 3; the three-thread model at 2 (at 3 it takes minutes). Setting
/// `LOOM_MAX_PREEMPTIONS` overrides both for deeper runs (docs/verification.md).
const PREEMPTION_BOUND: usize = 3;
const PREEMPTION_BOUND_THREE_THREADS: usize = 2;

fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(PREEMPTION_BOUND, f);
}

/// Opens inline (or queues opens for a thread to answer); time moves only when told. A
/// queued open holds the pool: every model answers the opens it queues.
#[derive(Default)]
struct Rt {
    now: AtomicU64,
    queue_opens: bool,
    opens: StdMutex<VecDeque<Opening<u32>>>,
    /// The one timer: where the shell last armed it, until it fires.
    timer: StdMutex<Option<Instant>>,
}

#[derive(Clone)]
struct Handle(std::sync::Arc<Rt>);

impl Runtime<u32> for Handle {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.now.load(Ordering::SeqCst))
    }
    fn execute(&self, work: Work<u32>) {
        if let Work::Open(open) = work {
            if self.0.queue_opens {
                self.0.opens.lock().unwrap().push_back(open);
            } else {
                let connection = open.conn().get() as u32;
                open.finish(Ok(connection));
            }
        }
    }
    fn arm_timer(&self, at: Instant) {
        // Only ever earlier: two inputs on two threads may arm out of order.
        let mut timer = self.0.timer.lock().unwrap();
        if timer.is_none_or(|t| at < t) {
            *timer = Some(at);
        }
    }
}

impl Handle {
    /// The timer thread's step: move the clock to `ms`, and fire the timer if it is armed
    /// and due (cleared first: the firing arms the next one).
    fn tick_to(&self, pool: &SharedPool<u32>, ms: u64) {
        let now = Duration::from_millis(ms).as_nanos() as u64;
        self.0.now.store(now, Ordering::SeqCst);
        let due = {
            let mut timer = self.0.timer.lock().unwrap();
            match *timer {
                Some(at) if at.as_nanos() <= now => timer.take().is_some(),
                _ => false,
            }
        };
        if due {
            pool.handle_timeout();
        }
    }
}

fn pool(max_size: usize, queue_opens: bool) -> (SharedPool<u32>, Handle) {
    let rt = Handle(std::sync::Arc::new(Rt {
        queue_opens,
        ..Rt::default()
    }));
    let config = Config {
        max_size,
        max_connecting: max_size,
        check_after_idle: None,
        leak_threshold: None,
        ..Config::default()
    };
    (SharedPool::new(config, 0, rt.clone()).unwrap(), rt)
}

fn assert_quiescent(pool: &SharedPool<u32>, max_size: usize) {
    pool.check_invariants().unwrap();
    let s = pool.status();
    assert_eq!((s.leased, s.waiters), (0, 0), "{s}");
    assert!(s.total <= max_size, "{s}");
    assert_eq!(s.idle, s.total, "{s}");
}

fn contend(threads: usize, max_size: usize) {
    let bound = if threads > 2 {
        PREEMPTION_BOUND_THREE_THREADS
    } else {
        PREEMPTION_BOUND
    };
    model_bounded(bound, move || {
        let (pool, _) = pool(max_size, false);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let lease = block_on(pool.acquire()).expect("no deadline passes");
                    drop(lease);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_quiescent(&pool, max_size);
    });
}

#[test]
fn two_threads_contend_for_one_connection() {
    contend(2, 1);
}

#[test]
fn three_threads_contend_for_two_connections() {
    contend(3, 2);
}

#[test]
fn an_acquire_dropped_while_its_grant_is_in_flight_loses_nothing() {
    model(|| {
        let (pool, _) = pool(1, false);
        let lease = block_on(pool.acquire()).unwrap();
        let p = pool.clone();
        let canceller = thread::spawn(move || {
            let mut acquire = p.acquire();
            let waker = noop_waker();
            // Queue (or win at once), then give up.
            if let Poll::Ready(Ok(lease)) = acquire.poll_unpin(&mut Context::from_waker(&waker)) {
                drop(lease);
            }
            drop(acquire);
        });
        let releaser = thread::spawn(move || drop(lease));
        canceller.join().unwrap();
        releaser.join().unwrap();
        assert_quiescent(&pool, 1);
        assert_eq!(pool.status().idle, 1, "the connection is back, not lost");
    });
}

/// The waiter's task moves (a new waker) while the grant lands in its cell: the pick-up
/// happens without the pool lock, so the waker swap and the delivery meet only at the
/// cell. A lost wake shows as a deadlock.
#[test]
fn a_waiter_changes_its_waker_while_its_grant_lands() {
    model(|| {
        let (pool, _) = pool(1, false);
        let lease = block_on(pool.acquire()).unwrap();
        let mut acquire = pool.acquire();
        let first = noop_waker();
        assert!(acquire
            .poll_unpin(&mut Context::from_waker(&first))
            .is_pending());
        let releaser = thread::spawn(move || drop(lease));
        // Polled again with this thread's waker, racing the release.
        let lease = block_on(acquire).expect("granted once the lease is back");
        releaser.join().unwrap();
        drop(lease);
        assert_quiescent(&pool, 1);
    });
}

#[test]
fn a_release_on_another_thread_races_a_new_acquire() {
    model(|| {
        let (pool, _) = pool(1, false);
        let lease = block_on(pool.acquire()).unwrap();
        let p = pool.clone();
        let acquirer = thread::spawn(move || drop(block_on(p.acquire()).unwrap()));
        let releaser = thread::spawn(move || drop(lease));
        releaser.join().unwrap();
        acquirer.join().unwrap();
        assert_quiescent(&pool, 1);
    });
}

#[test]
fn close_races_acquire_and_release() {
    model(|| {
        let (pool, _) = pool(1, false);
        let lease = block_on(pool.acquire()).unwrap();
        let p = pool.clone();
        let acquirer = thread::spawn(move || match block_on(p.acquire()) {
            Ok(lease) => drop(lease),
            Err(Rejection::Closed) => {}
            Err(other) => panic!("unexpected {other}"),
        });
        let releaser = thread::spawn(move || drop(lease));
        let forced = block_on(pool.close(Duration::from_secs(3600)));
        assert_eq!(forced, 0, "every lease came back before the drain deadline");
        releaser.join().unwrap();
        acquirer.join().unwrap();
        pool.check_invariants().unwrap();
        assert_eq!(pool.status().total, 0);
    });
}

/// One waiter with a 10 ms deadline and the open queued for it: `answer` runs on one
/// thread while the deadline passes on another. Returns the waiter's one answer.
fn race_open_against_deadline(
    answer: impl FnOnce(Opening<u32>) + Send + 'static,
) -> (
    Result<pool_core::shell::Lease<u32>, Rejection>,
    SharedPool<u32>,
    Handle,
) {
    let (pool, rt) = pool(1, true);
    let mut acquire = pool.acquire_timeout(Duration::from_millis(10));
    let waker = noop_waker();
    assert!(acquire
        .poll_unpin(&mut Context::from_waker(&waker))
        .is_pending());
    let open =
        rt.0.opens
            .lock()
            .unwrap()
            .pop_front()
            .expect("an open was asked for");
    let connector = thread::spawn(move || answer(open));
    let (p, r) = (pool.clone(), rt.clone());
    let timer = thread::spawn(move || r.tick_to(&p, 10));
    let result = block_on(acquire);
    connector.join().unwrap();
    timer.join().unwrap();
    (result, pool, rt)
}

#[test]
fn a_failed_connect_races_the_waiters_deadline() {
    model(|| {
        let (result, pool, _rt) = race_open_against_deadline(|open| {
            open.finish(Err(pool_core::ConnectError::transient("refused")))
        });
        assert!(matches!(result, Err(Rejection::Timeout(_))), "{result:?}");
        pool.check_invariants().unwrap();
        let s = pool.status();
        assert_eq!((s.total, s.waiters, s.leased), (0, 0, 0), "{s}");
    });
}

/// The new seam: a connect task that dies without answering (aborted, panicked) answers
/// for itself through its dropped `Opening`, racing the waiter's deadline; the waiter
/// gets exactly one answer, naming the failure, and nothing is left behind.
#[test]
fn an_open_dropped_unanswered_races_the_waiters_deadline() {
    model(|| {
        let (result, pool, rt) = race_open_against_deadline(drop);
        let Err(Rejection::Timeout(report)) = result else {
            panic!("{result:?}")
        };
        if let Some(e) = &report.last_connect_error {
            assert!(e.message.contains("without an answer"), "{e}");
        }
        assert_eq!(pool.stats().connects_failed, 1);
        pool.check_invariants().unwrap();
        let s = pool.status();
        assert_eq!((s.total, s.waiters, s.leased), (0, 0, 0), "{s}");
        // A retry the backoff allowed may have queued another open: answer it (outside
        // the queue's lock: the answer may queue another).
        loop {
            let open = rt.0.opens.lock().unwrap().pop_front();
            let Some(open) = open else { break };
            drop(open);
        }
    });
}

/// Two deadlines fire in turn while an acquire on another thread arms a third between
/// them: the timer thread acts only on what the shell armed, so the first firing must arm
/// the next deadline, and the new acquire must move the timer earlier whether it lands
/// before, during or after that firing. A deadline left unarmed parks its waiter forever.
#[test]
fn deadlines_fire_in_turn_while_an_acquire_arms_another() {
    model(|| {
        let (pool, rt) = pool(1, false);
        let held = block_on(pool.acquire()).unwrap();
        let waker = noop_waker();
        let mut a = pool.acquire_timeout(Duration::from_millis(10));
        let mut b = pool.acquire_timeout(Duration::from_millis(20));
        for w in [&mut a, &mut b] {
            assert!(w.poll_unpin(&mut Context::from_waker(&waker)).is_pending());
        }
        let (p, r) = (pool.clone(), rt.clone());
        let timer = thread::spawn(move || {
            r.tick_to(&p, 10);
            r.tick_to(&p, 20);
        });
        let c = pool.acquire_until(Instant::from_nanos(15_000_000));
        for w in [c, a, b] {
            assert!(matches!(block_on(w), Err(Rejection::Timeout(_))));
        }
        timer.join().unwrap();
        drop(held);
        assert_quiescent(&pool, 1);
    });
}
