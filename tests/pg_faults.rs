#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The tokio pool against a real PostgreSQL that misbehaves: a full restart under load,
//! a server with fewer slots than the pool wants, and a half-open (blackholed) network.

mod pg_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_common::*;
use pg_harness::{Backends, FaultProxy, PgCluster, PgOptions};
use pool_tokio::CloseReason;

/// `pg_ctl restart -m fast` while 50 tasks run queries. Every task is bounded; after the
/// server is back, every task's queries succeed again within a few seconds, no task
/// hangs, and nothing stays leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_under_load_recovers_every_task() {
    let _watchdog = watchdog(
        "full_restart_under_load_recovers_every_task",
        Duration::from_secs(120),
    );
    const TASKS: usize = 50;
    const MAX: usize = 10;
    /// After the restart returns, queries may fail for this long; not after.
    const RECOVERY: Duration = Duration::from_secs(4);
    /// How long tasks keep querying once recovery is over.
    const STEADY: Duration = Duration::from_secs(2);

    let cluster = cluster(30);
    let app = "pool-restart";
    let pool = pool_with(&url_for(&cluster.url(), app, "&connect_timeout=2"), |b| {
        b.max_size(MAX)
            .acquire_timeout(Duration::from_secs(3))
            .backoff_max(Duration::from_millis(500))
    });
    let stop = Arc::new(AtomicBool::new(false));
    // Each task's successful attempts so far: the restart waits until every task has one.
    let succeeded: Arc<Vec<AtomicU64>> = Arc::new((0..TASKS).map(|_| AtomicU64::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (pool, stop, succeeded) = (pool.clone(), stop.clone(), succeeded.clone());
            tokio::spawn(async move {
                // (when the attempt started and ended, whether it succeeded, the error)
                let mut log: Vec<(Instant, Instant, bool, String)> = Vec::new();
                let mut i = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    // A hung attempt is a failure, not a hang of the test.
                    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
                        let client = pool.get().await.map_err(|e| e.to_string())?;
                        let n = t as i64 * 1_000_000 + i;
                        match select(&client, n).await {
                            Ok(v) if v == n => Ok(()),
                            Ok(v) => Err(format!("wrong answer {v}")),
                            Err(e) => Err(pg_message(&e)),
                        }
                    })
                    .await
                    .unwrap_or_else(|_| Err("attempt hung for 5 s".into()));
                    let ok = outcome.is_ok();
                    if ok {
                        succeeded[t].fetch_add(1, Ordering::SeqCst);
                    }
                    log.push((
                        started,
                        Instant::now(),
                        ok,
                        outcome.err().unwrap_or_default(),
                    ));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                log
            })
        })
        .collect();

    wait_until(&pool, Duration::from_secs(30), "warm-up", |p| {
        p.metrics().stats.grants >= 200 && succeeded.iter().all(|n| n.load(Ordering::SeqCst) > 0)
    })
    .await;
    let restart_began = Instant::now();
    within(
        Duration::from_secs(60),
        "restart",
        cluster.restart_fast_async(),
    )
    .await
    .expect("restart");
    let back = Instant::now();
    tokio::time::sleep(RECOVERY + STEADY).await;
    stop.store(true, Ordering::SeqCst);

    let mut failures_during = 0;
    for (t, task) in tasks.into_iter().enumerate() {
        let log = within(Duration::from_secs(15), "query task ends", task)
            .await
            .expect("query task panicked");
        let before: Vec<_> = log
            .iter()
            .filter(|(_, ended, ..)| *ended < restart_began)
            .collect();
        assert!(
            !before.is_empty() && before.iter().all(|(_, _, ok, _)| *ok),
            "task {t}: failures before the restart: {before:?}"
        );
        failures_during += log.iter().filter(|(_, _, ok, _)| !ok).count();
        let late: Vec<_> = log
            .iter()
            .filter(|(at, ..)| *at >= back + RECOVERY)
            .collect();
        assert!(!late.is_empty(), "task {t} made no attempt after recovery");
        let late_failures: Vec<_> = late.iter().filter(|(_, _, ok, _)| !ok).collect();
        assert!(
            late_failures.is_empty(),
            "task {t}: still failing {RECOVERY:?} after the server was back: {late_failures:?}"
        );
    }
    wait_until(&pool, Duration::from_secs(10), "nothing leased", |p| {
        let s = p.status();
        s.leased == 0 && s.waiters == 0
    })
    .await;
    let status = pool.status();
    assert!(status.total <= MAX, "{status}");
    pool.check_invariants()
        .expect("invariants after the restart");
    let m = pool.metrics();
    assert!(
        failures_during > 0
            || m.stats.closes(CloseReason::CheckFailed) + m.stats.closes(CloseReason::Broken) > 0,
        "the restart went unnoticed; did it happen? {m:?}"
    );
    assert!(
        cluster.admin().count(&Backends::app(app)).await.unwrap() <= MAX as i64,
        "backends after recovery"
    );
    eprintln!("restart: {failures_during} failed attempts in all; {m:?}");
}

/// The server has 5 slots for the test user, the pool wants 10: the pool works with the
/// 5 it gets, every request is served, and it retries the rest with backoff, not a
/// storm of connects (each refused connect costs the server a fork).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_server_slots_than_max_size_no_connect_storm() {
    let _watchdog = watchdog(
        "fewer_server_slots_than_max_size_no_connect_storm",
        Duration::from_secs(120),
    );
    const WINDOW: Duration = Duration::from_secs(4);
    let cluster = PgCluster::start(
        PgOptions::default()
            .max_connections(8)
            .superuser_reserved_connections(3),
    )
    .expect("start PostgreSQL");
    let slots = cluster.user_connection_limit() as usize;
    assert_eq!(slots, 5);
    let app = "pool-few-slots";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(10)
            .acquire_timeout(Duration::from_secs(20))
            .backoff_base(Duration::from_millis(10))
            .backoff_max(Duration::from_secs(1))
    });
    let watch = BackendWatch::start(&cluster.admin(), app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let mut served = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let c = pool.get().await.expect("every request is served");
                    c.simple_query("SELECT pg_sleep(0.005)")
                        .await
                        .expect("query");
                    served += 1;
                }
                served
            })
        })
        .collect();
    tokio::time::sleep(WINDOW).await;
    stop.store(true, Ordering::SeqCst);
    let mut served = 0;
    for t in tasks {
        served += within(Duration::from_secs(30), "load task", t)
            .await
            .expect("load task panicked");
    }
    let elapsed = started.elapsed();
    let (peak, _) = watch.finish().await;
    let m = pool.metrics();
    eprintln!("few slots: served {served} in {elapsed:?}; {m:?}");

    assert!(served >= 20, "requests were served: {served}");
    assert!(peak as usize <= slots, "server saw {peak} backends");
    assert!(
        m.stats.connects_failed >= 1,
        "the server never refused a connect: the test did not reach its limit: {m:?}"
    );
    assert!(m.stats.connects_ok >= 2, "{m:?}");
    // Backoff from 10 ms doubling to 1 s: a few dozen attempts over the window at most.
    // Without backoff, refused connects (about a millisecond each on loopback) would
    // number in the thousands.
    let secs = elapsed.as_secs_f64().ceil() as u64;
    let bound = 10 + 10 * secs;
    assert!(
        m.stats.connects_started <= bound,
        "connect storm: {} connects in {elapsed:?} (bound {bound}); {m:?}",
        m.stats.connects_started
    );
    pool.check_invariants().expect("invariants");
}

/// A half-open connection (the network silently drops everything, sockets stay open):
/// the checkout check times out and evicts it, and `get()`'s deadline still holds even
/// though every replacement connect hangs too. After the network heals, the pool serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_is_evicted_by_the_check_timeout() {
    let _watchdog = watchdog(
        "half_open_connection_is_evicted_by_the_check_timeout",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let proxy = FaultProxy::start(cluster.addr())
        .await
        .expect("start proxy");
    let app = "pool-blackhole";
    let check_timeout = Duration::from_millis(300);
    let pool = pool_with(
        &url_for(
            &cluster.url_on_port(proxy.port()),
            app,
            "&connect_timeout=1",
        ),
        |b| {
            b.max_size(2)
                .check_after_idle(Some(Duration::from_millis(50)))
                .check_timeout(check_timeout)
                .connect_timeout(Duration::from_secs(1))
                .acquire_timeout(Duration::from_secs(10))
        },
    );
    let c = pool.get().await.unwrap();
    assert_eq!(select(&c, 1).await.unwrap(), 1);
    drop(c);
    wait_until(&pool, Duration::from_secs(5), "idle", |p| {
        p.status().idle == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // idle > check_after_idle

    proxy.blackhole();
    let deadline = Duration::from_millis(1500);
    let started = Instant::now();
    let err = within(
        Duration::from_secs(10),
        "get through a blackhole",
        pool.get_timeout(deadline),
    )
    .await
    .expect_err("nothing gets through a blackhole");
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(3),
        "get_timeout({deadline:?}) returned after {waited:?}"
    );
    let m = pool.metrics();
    assert_eq!(
        m.stats.closes(CloseReason::CheckTimeout),
        1,
        "the half-open connection was evicted by its check: {m:?}"
    );
    assert!(m.stats.checks_started >= 1, "{m:?}");
    pool.check_invariants().expect("invariants");

    proxy.resume();
    let c = within(
        Duration::from_secs(15),
        "get after the network heals",
        async {
            loop {
                match pool.get_timeout(Duration::from_secs(3)).await {
                    Ok(c) => break c,
                    Err(e) if e.is_timeout() => continue,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        },
    )
    .await;
    assert_eq!(select(&c, 2).await.unwrap(), 2);
    drop(c);
    wait_until(&pool, Duration::from_secs(10), "settled", |p| {
        let s = p.status();
        s.leased == 0 && s.opening == 0 && s.checking == 0
    })
    .await;
    pool.check_invariants().expect("invariants");
}
