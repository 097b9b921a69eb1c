//! Randomized and PCT schedules of the shell with shuttle: `cargo test --features shuttle`.
//!
//! 8 to 32 tasks run random mixes of acquire (with random deadlines), hold, cancel at a
//! random point, release with every verdict, try_acquire and close, against a runtime whose
//! connects, checks and resets fail at random. Invariants are checked at random points
//! while tasks run (the check takes the pool's lock, so it sees a consistent state) and at
//! the end of every schedule, where nothing may be leased, waiting or lost.
//!
//! The runtime keeps one timer as pool-tokio does (moved only earlier by `arm_timer`,
//! cleared when it fires), and the clock task calls `handle_timeout` only when that timer
//! is due: a deadline the shell never armed, or armed too late, is never acted on, and a
//! waiter behind it is still waiting when the clock stops (a deadlock).
//!
//! Schedules are seeded, so a run is deterministic: `SHUTTLE_SEED` (default
//! `DEFAULT_SEED`) seeds both strategies, `SHUTTLE_ITERATIONS` (default 1000) schedules
//! each per test. Every test prints its seed; a failure also prints its schedule. Replay
//! the run with the same `SHUTTLE_SEED` and `SHUTTLE_ITERATIONS`, or the one schedule with
//! `SHUTTLE_REPLAY='<schedule>' cargo test --features shuttle <test name>`.
#![cfg(feature = "shuttle")]

// pool-core's own source, built with its shell on shuttle's primitives (verify/shuttle).
use pool_core_shuttle as pool_core;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use futures::FutureExt;
use pool_core::shell::{Moment, Runtime, SharedPool, Work};
use pool_core::{Config, ConnectError, Instant, Rejection, Verdict};
use shuttle::future::{block_on, spawn, yield_now};
use shuttle::rand::{thread_rng, Rng};

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// CI's seed: every run explores the same schedules. `scripts/deep-check.sh` picks a new
/// one each time (and prints it).
const DEFAULT_SEED: u64 = 0x05EE_D0F5_1070;

fn seed() -> u64 {
    match std::env::var("SHUTTLE_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SHUTTLE_SEED={v:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

fn run(name: &str, f: impl Fn() + Send + Sync + 'static) {
    if let Ok(schedule) = std::env::var("SHUTTLE_REPLAY") {
        eprintln!("replaying {name}");
        shuttle::replay(f, &schedule);
        return;
    }
    let (seed, n) = (seed(), iterations());
    // Captured by the test harness and shown if the test fails.
    eprintln!(
        "{name}: seed {seed}, {n} random and {n} PCT schedules; replay with \
         SHUTTLE_SEED={seed} SHUTTLE_ITERATIONS={n} cargo test --features shuttle \
         --test shuttle_shell {name}"
    );
    let f = Arc::new(f);
    let g = f.clone();
    shuttle::check_random_with_seed(move || f(), seed, n);
    let pct = shuttle::scheduler::PctScheduler::new_from_seed(seed, 3, n);
    shuttle::Runner::new(pct, shuttle::Config::default()).run(move || g());
}

/// Connects, checks and resets run as their own tasks and fail now and then. The tasks
/// are kept, so a schedule ends only once every piece of work has answered: a completion
/// handle dropped by shuttle's teardown, outside any task, could not reach the pool.
struct Rt {
    now: Arc<AtomicU64>,
    work: Arc<std::sync::Mutex<Vec<shuttle::future::JoinHandle<()>>>>,
    /// The one timer: where the shell last armed it, until it fires.
    timer: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Rt {
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        // Spawn before locking: spawning is a scheduling point, and a task switched out
        // while holding this (std) lock would block the others for real.
        let handle = spawn(work);
        self.work.lock().unwrap().push(handle);
    }
}

/// Wait for every piece of work the runtime was given, including work the answers give.
fn drain(work: &std::sync::Mutex<Vec<shuttle::future::JoinHandle<()>>>) {
    loop {
        let handles = std::mem::take(&mut *work.lock().unwrap());
        if handles.is_empty() {
            return;
        }
        for h in handles {
            block_on(h).unwrap();
        }
    }
}

impl Runtime<u64> for Rt {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.load(Ordering::SeqCst))
    }

    fn execute(&self, work: Work<u64>) {
        match work {
            Work::Open(open) => {
                self.spawn(async move {
                    yield_now().await;
                    let result = match thread_rng().gen_range(0..10) {
                        0 => Err(ConnectError::transient("connection refused")),
                        1 => Err(ConnectError::fatal("password authentication failed")),
                        // The connect task dies without answering.
                        2 => return drop(open),
                        _ => Ok(open.conn().get()),
                    };
                    open.finish(result);
                });
            }
            Work::Check(upkeep) | Work::Reset(upkeep) => {
                self.spawn(async move {
                    yield_now().await;
                    let ok = thread_rng().gen_bool(0.8);
                    upkeep.finish(ok);
                });
            }
            Work::Close { .. } | Work::LeakSuspected { .. } | Work::Drained { .. } => {}
        }
    }

    fn arm_timer(&self, at: Instant) {
        // Only ever earlier: two inputs on two tasks may arm out of order.
        let mut timer = self.timer.lock().unwrap();
        if timer.is_none_or(|t| at < t) {
            *timer = Some(at);
        }
    }

    /// Now and then a connection is found dead at checkout or at return.
    fn judge(&self, _: &mut u64, _: Moment) -> Verdict {
        if thread_rng().gen_ratio(1, 10) {
            Verdict::Broken
        } else {
            Verdict::Reusable
        }
    }
}

fn config(max_size: usize) -> Config {
    Config {
        max_size,
        min_idle: 1,
        max_connecting: 2,
        max_waiters: 12,
        check_after_idle: Some(Duration::from_millis(1)),
        check_timeout: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(30),
        idle_timeout: Some(Duration::from_millis(50)),
        max_lifetime: Some(Duration::from_millis(200)),
        leak_threshold: Some(Duration::from_millis(40)),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(8),
        ..Config::default()
    }
}

/// One task's random life: a few acquires, each held, cancelled or failed.
async fn client(pool: SharedPool<u64>, ops: usize) {
    for _ in 0..ops {
        let timeout = Duration::from_millis(thread_rng().gen_range(1..60));
        match thread_rng().gen_range(0..10) {
            // Cancel at a random point: poll once (maybe queue), then drop.
            0 | 1 => {
                let mut acquire = pool.acquire_timeout(timeout);
                let polled = acquire.poll_unpin(&mut Context::from_waker(&noop_waker()));
                if let Poll::Ready(Ok(lease)) = polled {
                    drop(lease);
                }
                yield_now().await;
                drop(acquire);
            }
            2 => {
                if let Some(lease) = pool.try_acquire() {
                    yield_now().await;
                    drop(lease);
                }
            }
            _ => match pool.acquire_timeout(timeout).await {
                Ok(mut lease) => {
                    for _ in 0..thread_rng().gen_range(0..3) {
                        yield_now().await;
                    }
                    lease.set_verdict(match thread_rng().gen_range(0..6) {
                        0 => Verdict::Broken,
                        1 => Verdict::NeedsReset,
                        _ => Verdict::Reusable,
                    });
                }
                Err(Rejection::Timeout(_))
                | Err(Rejection::QueueFull { .. })
                | Err(Rejection::Closed)
                | Err(Rejection::ConnectFailed(_)) => {}
            },
        }
        if thread_rng().gen_range(0..8) == 0 {
            pool.check_invariants().unwrap();
        }
    }
}

fn scenario(tasks: usize, max_size: usize, with_close: bool) {
    let now = Arc::new(AtomicU64::new(0));
    let work = Arc::default();
    let timer: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let rt = Rt {
        now: now.clone(),
        work: Arc::clone(&work),
        timer: Arc::clone(&timer),
    };
    // The timer fires if it is armed and due: cleared first (the firing arms the next).
    let fire = move |pool: &SharedPool<u64>, now: u64| {
        let due = {
            let mut t = timer.lock().unwrap();
            match *t {
                Some(at) if at.as_nanos() <= now => t.take().is_some(),
                _ => false,
            }
        };
        if due {
            pool.handle_timeout();
        }
    };
    let fire = Arc::new(fire);
    let pool = SharedPool::new(config(max_size), 7, rt).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (pool, done) = (pool.clone(), done.clone());
        let ops = thread_rng().gen_range(1..4);
        handles.push(spawn(async move {
            client(pool, ops).await;
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // The clock: advances 1 ms per step and fires the pool's timer when it is due, until
    // every client is done. Bounded: every deadline is under 60 ms, so 10,000 steps is far
    // past them all; a client still waiting then is a lost wake-up or a deadline never
    // armed, and shuttle reports the deadlock.
    let (p, d, n, f) = (pool.clone(), done.clone(), now.clone(), fire.clone());
    let ticker = spawn(async move {
        for _ in 0..10_000 {
            if d.load(Ordering::SeqCst) == tasks {
                break;
            }
            let t = n.fetch_add(1_000_000, Ordering::SeqCst) + 1_000_000;
            f(&p, t);
            yield_now().await;
        }
    });
    let closer = with_close.then(|| {
        let p = pool.clone();
        spawn(async move {
            for _ in 0..thread_rng().gen_range(0..20) {
                yield_now().await;
            }
            p.close(Duration::from_millis(thread_rng().gen_range(0..30)))
                .await
        })
    });
    for h in handles {
        block_on(h).unwrap();
    }
    block_on(ticker).unwrap();
    drain(&work);
    pool.check_invariants().unwrap();
    let s = pool.status();
    assert_eq!(
        (s.leased, s.waiters),
        (0, 0),
        "nothing leased or waiting at the end: {s}"
    );
    assert!(s.total <= max_size, "{s}");
    // Every acquire got exactly one answer (block_on returned once per future; a second
    // answer would hit the shell's slot invariant), and the counters add up.
    let st = pool.stats();
    let answered = st.grants
        + st.rejected_timeout
        + st.rejected_queue_full
        + st.rejected_closed
        + st.rejected_connect_failed
        + st.cancelled;
    assert!(answered >= st.acquires, "{st:?}");
    if let Some(closer) = closer {
        // Drain deadlines are under 30 ms and the clock ran past them, or every lease
        // came back: the close must resolve.
        let t = now.fetch_add(100_000_000, Ordering::SeqCst) + 100_000_000;
        fire(&pool, t);
        block_on(closer).unwrap();
        drain(&work);
        pool.check_invariants().unwrap();
        assert_eq!(pool.status().total, 0);
    }
}

#[test]
fn eight_tasks_share_two_connections() {
    run("eight_tasks_share_two_connections", || {
        scenario(8, 2, false)
    });
}

#[test]
fn thirty_two_tasks_share_four_connections() {
    run("thirty_two_tasks_share_four_connections", || {
        scenario(32, 4, false)
    });
}

#[test]
fn close_under_load_with_sixteen_tasks() {
    run("close_under_load_with_sixteen_tasks", || {
        scenario(16, 3, true)
    });
}
