//! Randomized and PCT schedules of the shell with shuttle: `cargo test --features shuttle`.
//!
//! 8 to 32 tasks run random mixes of acquire (with random deadlines), hold, cancel at a
//! random point, release with every verdict, try_acquire and close, against a runtime whose
//! connects, checks and resets fail at random. Invariants are checked at random points
//! while tasks run (the check takes the pool's lock, so it sees a consistent state) and at
//! the end of every schedule, where nothing may be leased, waiting or lost.
//!
//! Iterations: `SHUTTLE_ITERATIONS` (default 1000 per test and strategy). A failure prints the schedule;
//! replay it with `SHUTTLE_REPLAY='<schedule>' cargo test --features shuttle <test name>`.
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

fn run(name: &str, f: impl Fn() + Send + Sync + 'static) {
    if let Ok(schedule) = std::env::var("SHUTTLE_REPLAY") {
        eprintln!("replaying {name}");
        shuttle::replay(f, &schedule);
        return;
    }
    let f = Arc::new(f);
    let g = f.clone();
    shuttle::check_random(move || f(), iterations());
    shuttle::check_pct(move || g(), iterations(), 3);
}

/// Connects, checks and resets run as their own tasks and fail now and then. The tasks
/// are kept, so a schedule ends only once every piece of work has answered: a completion
/// handle dropped by shuttle's teardown, outside any task, could not reach the pool.
struct Rt {
    now: Arc<AtomicU64>,
    work: Arc<std::sync::Mutex<Vec<shuttle::future::JoinHandle<()>>>>,
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

    fn arm_timer(&self, _: Instant) {}

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
    let rt = Rt {
        now: now.clone(),
        work: Arc::clone(&work),
    };
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
    // The clock: advances 1 ms per step and fires the pool's timers until every client is
    // done. Bounded: every deadline is under 60 ms, so 10,000 steps is far past them all;
    // a client still waiting then is a lost wake-up and shuttle reports the deadlock.
    let (p, d, n) = (pool.clone(), done.clone(), now.clone());
    let ticker = spawn(async move {
        for _ in 0..10_000 {
            if d.load(Ordering::SeqCst) == tasks {
                break;
            }
            n.fetch_add(1_000_000, Ordering::SeqCst);
            p.handle_timeout();
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
        now.fetch_add(100_000_000, Ordering::SeqCst);
        pool.handle_timeout();
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
