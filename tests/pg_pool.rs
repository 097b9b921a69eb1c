#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The tokio pool against a real PostgreSQL: bounds, fairness, deadlines, error reporting,
//! terminated backends, cancellation, panics, shutdown and leak reports. Each test owns
//! its cluster and tags its connections with its own `application_name`, so the server's
//! `pg_stat_activity` can be checked against the pool's own counts.

mod pg_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_common::*;
use pg_harness::Backends;
use pool_tokio::{CloseReason, LeakReport, PoolError};
use tokio_postgres::error::SqlState;

/// Scheduling slack on top of a deadline: generous, the machine may be shared and busy.
const SLACK: Duration = Duration::from_secs(3);

/// Many tasks hammer a pool of 4: the server never sees more than 4 of its backends
/// (sampled from `pg_stat_activity` throughout), and it does see 4 (the load was real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_server_connections_than_max_size() {
    let _watchdog = watchdog(
        "never_more_server_connections_than_max_size",
        Duration::from_secs(120),
    );
    const MAX: usize = 4;
    let cluster = cluster(30);
    let app = "pool-max-size";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(MAX));
    let watch = BackendWatch::start(&cluster.admin(), app).await;

    let tasks: Vec<_> = (0..40)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut max_total = 0;
                for i in 0..25 {
                    let client = pool.get().await.expect("get under load");
                    max_total = max_total.max(pool.status().total);
                    let n = t * 100 + i;
                    // A short sleep keeps the connection busy so others have to wait.
                    client
                        .simple_query("SELECT pg_sleep(0.002)")
                        .await
                        .expect("query");
                    assert_eq!(select(&client, n).await.expect("select"), n);
                }
                max_total
            })
        })
        .collect();
    let mut max_total = 0;
    for t in tasks {
        let m = within(Duration::from_secs(60), "load task", t)
            .await
            .expect("load task panicked");
        max_total = max_total.max(m);
    }
    let (peak, samples) = watch.finish().await;
    assert!(
        samples >= 10,
        "too few samples of pg_stat_activity: {samples}"
    );
    assert!(
        peak <= MAX as i64,
        "the server saw {peak} backends of a pool with max_size {MAX}"
    );
    assert_eq!(
        peak, MAX as i64,
        "40 tasks should have driven the pool to its max_size"
    );
    assert!(max_total <= MAX, "status().total reached {max_total}");
    let m = pool.metrics();
    assert_eq!(m.stats.grants, 1000);
    assert!(
        m.stats.connects_started <= MAX as u64,
        "no connection was lost, so no reconnects: {m:?}"
    );
    pool.check_invariants().expect("invariants");
}

/// max_size 1 and a holder: waiters that queued one after another get the connection in
/// that order; a `get_timeout` past its deadline fails with the timeout error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order_and_deadlines_hold() {
    let _watchdog = watchdog(
        "waiters_are_served_in_arrival_order_and_deadlines_hold",
        Duration::from_secs(120),
    );
    const WAITERS: usize = 8;
    let cluster = cluster(10);
    let app = "pool-fifo";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(1).acquire_timeout(Duration::from_secs(20))
    });
    let holder = pool.get().await.expect("first get");
    assert_eq!(select(&holder, 1).await.unwrap(), 1);

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (pool2, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let client = pool2.get().await.expect("waiter's get");
            order.lock().unwrap().push(i);
            assert_eq!(select(&client, i as i64).await.unwrap(), i as i64);
        }));
        // Waiter i is queued before waiter i+1 starts.
        wait_until(&pool, Duration::from_secs(5), "waiter queued", |p| {
            p.status().waiters == i + 1
        })
        .await;
    }
    // Nothing idle can be taken while others wait.
    assert!(pool.try_get().is_none());

    // A late caller with a short deadline times out, with the timeout error.
    let started = Instant::now();
    let deadline = Duration::from_millis(300);
    let err = pool
        .get_timeout(deadline)
        .await
        .expect_err("the only connection is held");
    let waited = started.elapsed();
    assert!(err.is_timeout(), "expected a timeout, got {err}");
    assert!(
        err.to_string().contains("timed out"),
        "message should say it timed out: {err}"
    );
    assert!(
        waited >= deadline && waited < deadline + SLACK,
        "timed out after {waited:?}, deadline {deadline:?}"
    );
    assert_eq!(pool.status().waiters, WAITERS, "the timed-out caller left");

    drop(holder);
    for t in tasks {
        within(Duration::from_secs(20), "waiter", t)
            .await
            .expect("waiter panicked");
    }
    assert_eq!(*order.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>());
    let m = pool.metrics();
    assert_eq!(m.stats.rejected_timeout, 1);
    assert_eq!(
        m.stats.connects_ok, 1,
        "max_size 1: one connection served all"
    );
    pool.check_invariants().expect("invariants");
}

/// Nothing listens at the pool's address: `get()` fails by its deadline, and the error
/// carries the connect failure ("connection refused"). A caller already waiting when the
/// server comes up is served soon after (the pool retries on its own backoff timer).
#[tokio::test]
async fn server_down_at_start_fails_by_the_deadline_naming_the_refusal() {
    let _watchdog = watchdog(
        "server_down_at_start_fails_by_the_deadline_naming_the_refusal",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    cluster.stop_async().await.expect("stop server");
    let app = "pool-down";
    let deadline = Duration::from_secs(1);
    // Default connect_timeout (10 s): no connect-timeout deadline comes to the rescue
    // of a pool that forgot to retry after its backoff.
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.acquire_timeout(deadline)
            .backoff_max(Duration::from_millis(500))
    });

    let started = Instant::now();
    let err = pool.get().await.expect_err("server is down");
    let waited = started.elapsed();
    assert!(
        waited >= deadline - Duration::from_millis(50) && waited < deadline + SLACK,
        "failed after {waited:?}, deadline {deadline:?}"
    );
    let text = err.to_string();
    match &err {
        PoolError::Timeout {
            last_connect_error: Some(last),
            ..
        } => assert!(
            last.message.to_lowercase().contains("refused"),
            "last connect error should be the refusal: {last}"
        ),
        other => panic!("expected a timeout carrying the connect error, got {other:?}"),
    }
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(pool.metrics().stats.connects_failed >= 1);

    // One caller waits (with a long deadline) while the server is still down; nothing
    // else touches the pool. The pool's own backoff timer must retry the connect once
    // the server is up: the waiter is served long before its deadline.
    let waiter = tokio::spawn(pool.get_timeout(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_again_async().await.expect("start server");
    let up = Instant::now();
    let client = within(Duration::from_secs(40), "waiter", waiter)
        .await
        .unwrap()
        .expect("the waiter is served once the server is up");
    let after_up = up.elapsed();
    assert!(
        after_up < Duration::from_secs(4),
        "served {after_up:?} after the server came up (backoff_max is 500 ms)"
    );
    assert_eq!(select(&client, 5).await.unwrap(), 5);
    pool.check_invariants().expect("invariants");
}

/// A wrong password is fatal: `get()` fails at once with the authentication error, long
/// before its deadline, instead of timing out; so do later calls.
#[tokio::test]
async fn wrong_password_fails_fast_with_the_authentication_error() {
    let _watchdog = watchdog(
        "wrong_password_fails_fast_with_the_authentication_error",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let url = cluster
        .url()
        .replace(":pool_test_pw@", ":not-the-password@");
    assert_ne!(url, cluster.url());
    let deadline = Duration::from_secs(30);
    let pool = pool_with(&url_for(&url, "pool-badpw", ""), |b| {
        b.acquire_timeout(deadline)
    });

    for attempt in 0..2 {
        let (err, waited) =
            failed_get(&pool, Duration::from_secs(10), "get with a wrong password").await;
        assert!(
            waited < Duration::from_secs(6),
            "attempt {attempt}: took {waited:?} (deadline {deadline:?}): a fatal error must not wait"
        );
        assert!(!err.is_timeout(), "attempt {attempt}: {err}");
        match &err {
            PoolError::Connect { error, source } => {
                assert_eq!(error.class, pool_tokio::ErrorClass::Fatal);
                assert!(
                    error.message.contains("password authentication failed"),
                    "{error}"
                );
                if let Some(source) = source {
                    assert_eq!(source.code(), Some(&SqlState::INVALID_PASSWORD));
                }
            }
            other => panic!("attempt {attempt}: expected a connect error, got {other:?}"),
        }
        assert!(
            err.to_string().contains("password authentication failed"),
            "{err}"
        );
        assert!(!err.to_string().contains("not-the-password"), "{err}");
    }
}

/// Backends of idle connections are terminated by the server: the next `get()`s still
/// hand out working connections (the checkout check finds the dead ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_idle_connections_are_replaced() {
    let _watchdog = watchdog(
        "terminated_idle_connections_are_replaced",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-term-idle";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(3)
            .check_after_idle(Some(Duration::from_millis(100)))
    });
    // Open three connections and return them.
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|r| r.expect("warm-up get"))
        .collect();
    for c in &held {
        select(c, 1).await.unwrap();
    }
    drop(held);
    wait_until(&pool, Duration::from_secs(5), "3 idle", |p| {
        p.status().idle == 3
    })
    .await;

    assert_eq!(admin.terminate(&Backends::app(app)).await.unwrap(), 3);
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    // Idle longer than check_after_idle: each checkout is checked first.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let clients: Vec<_> = futures::future::join_all((0..3).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|r| r.expect("get after terminate"))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            select(c, i as i64).await.expect("a working connection"),
            i as i64
        );
    }
    assert_eq!(admin.count(&Backends::app(app)).await.unwrap(), 3);
    let m = pool.metrics();
    assert_eq!(m.stats.closes(CloseReason::CheckFailed), 3, "{m:?}");
    drop(clients);
    pool.check_invariants().expect("invariants");
}

/// A connection whose backend died while it sat idle for less than `check_after_idle`:
/// no health check runs, but tokio-postgres already knows the client is closed
/// (`Client::is_closed()`, no I/O needed), so the pool should not lend it.
///
/// Found by this test: `get()` returned the closed client and the borrower's first query
/// failed with "connection closed", because `Manager::is_broken` (which checks
/// `is_closed`) was consulted only on return. `get()` and `try_get()` now consult it
/// before lending, close a broken connection and ask again within the same deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_client_is_not_lent_before_check_after_idle() {
    let _watchdog = watchdog(
        "a_closed_client_is_not_lent_before_check_after_idle",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-term-recent";
    let admin = cluster.admin();
    // Checks only for connections idle a minute or more (a plausible production choice).
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(1)
            .check_after_idle(Some(Duration::from_secs(60)))
    });
    let c = pool.get().await.unwrap();
    select(&c, 1).await.unwrap();
    drop(c);
    wait_until(&pool, Duration::from_secs(5), "1 idle", |p| {
        p.status().idle == 1
    })
    .await;
    admin.terminate(&Backends::app(app)).await.unwrap();
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    // Let tokio-postgres' connection task read the server's goodbye and end.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let c = pool.get().await.expect("get after terminate");
    assert!(
        !c.is_closed(),
        "the pool lent a client that was already closed ({})",
        pool.status()
    );
    assert_eq!(select(&c, 2).await.expect("a working connection"), 2);
}

/// With checks off, a connection that died while idle is found by its borrower, who sees
/// an error; the pool then discards it and the next borrower gets a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checks_off_a_dead_idle_connection_is_discarded_after_its_error() {
    let _watchdog = watchdog(
        "with_checks_off_a_dead_idle_connection_is_discarded_after_its_error",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-term-nocheck";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(1).check_after_idle(None)
    });
    let c = pool.get().await.unwrap();
    select(&c, 1).await.unwrap();
    drop(c);
    wait_until(&pool, Duration::from_secs(5), "1 idle", |p| {
        p.status().idle == 1
    })
    .await;
    admin.terminate(&Backends::app(app)).await.unwrap();
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = pool.get().await.unwrap();
    if let Err(e) = select(&c, 2).await {
        assert!(
            e.is_closed() || e.code() == Some(&SqlState::ADMIN_SHUTDOWN),
            "{}",
            pg_message(&e)
        );
    }
    drop(c);
    let c = within(Duration::from_secs(10), "get after the error", pool.get())
        .await
        .unwrap();
    assert_eq!(select(&c, 3).await.expect("a fresh connection"), 3);
    assert_eq!(admin.count(&Backends::app(app)).await.unwrap(), 1);
    assert_eq!(pool.metrics().stats.connects_ok, 2);
    pool.check_invariants().expect("invariants");
}

/// The backend of a *leased* connection is terminated: its borrower sees a query error,
/// the connection is discarded when returned, and the pool recovers with a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_leased_connection_errors_then_is_discarded() {
    let _watchdog = watchdog(
        "terminated_leased_connection_errors_then_is_discarded",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-term-leased";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(2));
    let client = pool.get().await.unwrap();
    assert_eq!(select(&client, 1).await.unwrap(), 1);
    let pid_before = admin.pids(&Backends::app(app)).await.unwrap();
    assert_eq!(pid_before.len(), 1);

    assert_eq!(admin.terminate(&Backends::app(app)).await.unwrap(), 1);
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    let err = within(
        Duration::from_secs(10),
        "query on a terminated backend",
        select(&client, 2),
    )
    .await
    .expect_err("the backend is gone");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        "expected a closed connection, got {}",
        pg_message(&err)
    );
    drop(client);
    let m = pool.metrics();
    assert_eq!(
        m.stats.closes(CloseReason::Broken),
        1,
        "returned as broken: {m:?}"
    );
    // Counted (closing) until its close task has dropped it, then gone.
    wait_until(&pool, Duration::from_secs(5), "the close is done", |p| {
        p.status().total == 0
    })
    .await;

    let client = pool.get().await.expect("the pool recovers");
    assert_eq!(select(&client, 3).await.unwrap(), 3);
    let pid_after = admin.pids(&Backends::app(app)).await.unwrap();
    assert_eq!(pid_after.len(), 1);
    assert_ne!(pid_after, pid_before, "a new backend");
    assert_eq!(pool.metrics().stats.connects_ok, 2);
    pool.check_invariants().expect("invariants");
}

/// 10,000 `get()` futures dropped at random points (before their first poll, while
/// queued, right after a grant, mid-query) while 8 tasks keep the pool busy. Afterwards
/// nothing is leased or waiting, the size is within bounds, the server agrees, and the
/// pool still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_storm_leaks_nothing() {
    let _watchdog = watchdog("cancellation_storm_leaks_nothing", Duration::from_secs(120));
    const MAX: usize = 5;
    const STORM: usize = 10_000;
    let cluster = cluster(20);
    let app = "pool-cancel-storm";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(MAX).acquire_timeout(Duration::from_secs(10))
    });
    let watch = BackendWatch::start(&admin, app).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let mut done = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let c = pool.get().await.expect("load get");
                    c.simple_query("SELECT pg_sleep(0.001)")
                        .await
                        .expect("load query");
                    done += 1;
                }
                done
            })
        })
        .collect();

    let mut rng = Rng::new(0x5107_2026);
    let mut completed = 0usize;
    for batch in 0..(STORM / 500) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500 {
            let pool = pool.clone();
            let delay = Duration::from_micros(rng.below(3000));
            let mode = (batch * 500 + i) % 4;
            set.spawn(async move {
                match mode {
                    // Never polled.
                    0 => {
                        drop(pool.get());
                        false
                    }
                    // Dropped by a timeout at a random point.
                    1 => tokio::time::timeout(delay, async {
                        let c = pool.get().await.expect("storm get");
                        c.simple_query("SELECT 1").await.expect("storm query");
                    })
                    .await
                    .is_ok(),
                    // Raced against a random sleep.
                    2 => tokio::select! {
                        r = pool.get() => { drop(r.expect("storm get")); true }
                        _ = tokio::time::sleep(delay) => false,
                    },
                    // Polled once, then dropped (queued or granted in between).
                    _ => {
                        let mut fut = Box::pin(pool.get());
                        let polled = futures::poll!(fut.as_mut()).is_ready();
                        tokio::task::yield_now().await;
                        drop(fut);
                        polled
                    }
                }
            });
        }
        while let Some(r) = within(Duration::from_secs(30), "storm batch", set.join_next()).await {
            completed += usize::from(r.expect("storm task panicked"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut served = 0;
    for t in load {
        served += within(Duration::from_secs(20), "load task", t)
            .await
            .expect("load task panicked");
    }
    let (peak, _) = watch.finish().await;

    wait_until(&pool, Duration::from_secs(10), "quiescent pool", |p| {
        let s = p.status();
        s.leased == 0 && s.waiters == 0 && s.opening == 0 && s.checking == 0 && s.closing == 0
    })
    .await;
    let status = pool.status();
    assert!(status.total <= MAX, "{status}");
    assert_eq!(status.idle, status.total, "{status}");
    pool.check_invariants().expect("invariants after the storm");
    admin
        .wait_for_count(
            &Backends::app(app),
            status.total as i64,
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("pg_stat_activity disagrees with {status}: {e}"));
    assert!(peak <= MAX as i64, "server saw {peak} backends");
    let m = pool.metrics();
    assert!(
        m.stats.cancelled > 1000,
        "the storm cancelled waiters: {m:?}"
    );
    assert!(served > 0, "the load made progress");
    eprintln!("storm: {completed} of {STORM} completed, load served {served}; {m:?}");

    // Still fully usable: all MAX connections at once.
    let all: Vec<_> = within(
        Duration::from_secs(10),
        "max_size gets after the storm",
        futures::future::join_all((0..MAX).map(|_| pool.get())),
    )
    .await
    .into_iter()
    .map(|r| r.expect("get after the storm"))
    .collect();
    for c in &all {
        select(c, 1).await.unwrap();
    }
}

/// A task panics while holding a connection (inside an open transaction): the connection
/// is closed as broken, nothing stays leased, invariants hold, the server agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_borrower_leaves_the_pool_consistent() {
    let _watchdog = watchdog(
        "a_panicking_borrower_leaves_the_pool_consistent",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-panic";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(2));
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let c = p.get().await.unwrap();
        c.batch_execute("BEGIN; CREATE TEMP TABLE t (x int)")
            .await
            .unwrap();
        panic!("deliberate panic while holding a connection");
    });
    let err = within(Duration::from_secs(10), "panicking task", task)
        .await
        .expect_err("the task panicked");
    assert!(err.is_panic());

    // The broken connection counts against max_size until its close finishes (issue 14),
    // so the server agrees with `total` only once nothing is closing.
    wait_until(
        &pool,
        Duration::from_secs(10),
        "the broken connection closed",
        |p| p.status().closing == 0,
    )
    .await;
    let status = pool.status();
    assert_eq!(status.leased, 0, "{status}");
    pool.check_invariants().expect("invariants after a panic");
    let m = pool.metrics();
    assert_eq!(
        m.stats.closes(CloseReason::Broken),
        1,
        "a panicking borrower's connection is closed: {m:?}"
    );
    admin
        .wait_for_count(
            &Backends::app(app),
            status.total as i64,
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // The next borrower gets a clean connection (no open transaction, no temp table).
    let c = pool.get().await.unwrap();
    let rows = c
        .simple_query("SELECT to_regclass('pg_temp.t') IS NULL")
        .await
        .unwrap();
    assert!(
        rows.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t"))
        ),
        "the panicking borrower's session state leaked to the next borrower"
    );
}

/// `close()` under load: waiters are rejected, borrowers that return in time are closed,
/// and the call returns within its drain deadline (plus slack) reporting the two
/// connections still held as forced. The server ends with none of the pool's backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_under_load_honours_the_drain_deadline() {
    let _watchdog = watchdog(
        "close_under_load_honours_the_drain_deadline",
        Duration::from_secs(120),
    );
    let cluster = cluster(20);
    let app = "pool-close";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(4));

    // Two borrowers that will not give their connection back for a long time.
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let c = pool.get().await.unwrap();
        select(&c, 1).await.unwrap();
        stuck.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(c);
        }));
    }
    // Ten busy tasks sharing the two other connections until the pool closes.
    let busy: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut ok = 0u32;
                loop {
                    match pool.get().await {
                        Ok(c) => {
                            c.simple_query("SELECT pg_sleep(0.02)")
                                .await
                                .expect("query");
                            ok += 1;
                        }
                        Err(PoolError::Closed) => return ok,
                        Err(e) => panic!("unexpected error while closing: {e}"),
                    }
                }
            })
        })
        .collect();
    wait_until(&pool, Duration::from_secs(20), "load running", |p| {
        p.metrics().stats.grants >= 12 && p.status().waiters > 0
    })
    .await;

    let drain = Duration::from_millis(500);
    let started = Instant::now();
    let forced = within(Duration::from_secs(10), "close", pool.close(drain)).await;
    let took = started.elapsed();
    assert!(
        took < drain + SLACK,
        "close took {took:?} with a {drain:?} drain deadline"
    );
    assert_eq!(forced, 2, "the two stuck borrowers were forced");
    assert!(pool.is_closed());
    let mut served = Vec::new();
    for t in busy {
        let ok = within(Duration::from_secs(5), "busy task ends", t)
            .await
            .expect("busy task panicked");
        served.push(ok);
    }
    assert!(served.iter().sum::<u32>() >= 10, "{served:?}");
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));

    // The revoked connections are closed once their borrowers let go.
    for t in stuck {
        t.abort();
        let _ = t.await;
    }
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    // Their closes complete a moment after their backends are gone.
    wait_until(&pool, Duration::from_secs(5), "none left", |p| {
        p.status().total == 0
    })
    .await;
    let s = pool.status();
    assert_eq!((s.total, s.leased, s.waiters), (0, 0, 0), "{s}");
    pool.check_invariants().expect("invariants after close");
}

/// A connection held past `leak_threshold` is reported, naming the line of the `get()`.
#[tokio::test]
async fn leak_report_names_the_source_line() {
    let _watchdog = watchdog(
        "leak_report_names_the_source_line",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let reports: Arc<Mutex<Vec<LeakReport>>> = Arc::default();
    let r = reports.clone();
    let pool = pool_with(&url_for(&cluster.url(), "pool-leak", ""), |b| {
        b.leak_threshold(Some(Duration::from_millis(200)))
            .on_leak(move |report| r.lock().unwrap().push(*report))
    });
    let line = line!() + 1;
    let held = pool.get().await.unwrap();
    select(&held, 1).await.unwrap();
    within(Duration::from_secs(10), "leak report", async {
        while reports.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let report = reports.lock().unwrap()[0];
    assert!(report.held >= Duration::from_millis(200), "{report:?}");
    let origin = report.origin.expect("the get() call site");
    assert_eq!(origin.file(), file!());
    assert_eq!(origin.line(), line);
    assert_eq!(pool.metrics().stats.leaks_suspected, 1);
    drop(held);
}

/// `evict_all` while a connection is in use (credential rotation, failover): the idle
/// backends leave `pg_stat_activity` at once, the one in use when it is returned, and
/// borrowers from then on get new backends (other `pg_backend_pid()`s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_all_replaces_idle_backends_now_and_a_used_one_on_return() {
    let _watchdog = watchdog(
        "evict_all_replaces_idle_backends_now_and_a_used_one_on_return",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-evict";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(4));
    let held = pool.get().await.unwrap();
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let held_pid = backend_pid(&held).await;
    let mut old = vec![held_pid, backend_pid(&a).await, backend_pid(&b).await];
    old.sort_unstable();
    drop((a, b));
    wait_until(&pool, Duration::from_secs(5), "two idle", |p| {
        p.status().idle == 2
    })
    .await;
    let mut pids = admin.pids(&Backends::app(app)).await.unwrap();
    pids.sort_unstable();
    assert_eq!(pids, old);

    pool.evict_all().expect("evict_all on a running pool");
    admin
        .wait_for_count(&Backends::app(app), 1, Duration::from_secs(10))
        .await
        .expect("the idle backends leave at once");
    assert_eq!(admin.pids(&Backends::app(app)).await.unwrap(), [held_pid]);
    // A closing connection counts until its close completes, which may be a moment after
    // its backend is gone.
    wait_until(&pool, Duration::from_secs(5), "one left", |p| {
        p.status().total == 1
    })
    .await;
    // The connection in use keeps working until it is returned.
    assert_eq!(select(&held, 1).await.unwrap(), 1);

    let fresh = within(Duration::from_secs(10), "get after evict_all", pool.get())
        .await
        .unwrap();
    let fresh_pid = backend_pid(&fresh).await;
    assert!(!old.contains(&fresh_pid), "a new backend: {fresh_pid}");
    drop(held);
    admin
        .wait_for_count(&Backends::app(app), 1, Duration::from_secs(10))
        .await
        .expect("the used backend leaves when returned");
    assert_eq!(admin.pids(&Backends::app(app)).await.unwrap(), [fresh_pid]);
    drop(fresh);
    // Connections opened after the eviction are kept and lent again.
    let again = pool.get().await.unwrap();
    assert_eq!(backend_pid(&again).await, fresh_pid);
    let m = pool.metrics();
    assert_eq!(m.stats.closes(CloseReason::Evicted), 3, "{m:?}");
    assert_eq!(m.stats.connects_ok, 4, "{m:?}");
    pool.check_invariants().expect("invariants");
}

/// `resize` against a real server: growing lets a waiter in at once on a new backend;
/// shrinking closes the idle backends at once and a used one when it is returned, until
/// `pg_stat_activity` holds no more than the new size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grows_for_a_waiter_and_shrinks_backends_to_the_new_size() {
    let _watchdog = watchdog(
        "resize_grows_for_a_waiter_and_shrinks_backends_to_the_new_size",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let app = "pool-resize";
    let admin = cluster.admin();
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(2));
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    // Full: a third borrower waits, until the pool grows.
    let p = pool.clone();
    let waiting = tokio::spawn(async move { p.get_timeout(Duration::from_secs(10)).await });
    wait_until(&pool, Duration::from_secs(5), "one waiter", |p| {
        p.status().waiters == 1
    })
    .await;
    pool.resize(4).expect("grow");
    let c = within(Duration::from_secs(10), "the waiter after growing", waiting)
        .await
        .unwrap()
        .expect("served by a new connection");
    admin
        .wait_for_count(&Backends::app(app), 3, Duration::from_secs(10))
        .await
        .expect("three backends");
    let d = pool.get().await.unwrap();
    drop(d);
    wait_until(&pool, Duration::from_secs(5), "one idle", |p| {
        p.status().idle == 1
    })
    .await;
    admin
        .wait_for_count(&Backends::app(app), 4, Duration::from_secs(10))
        .await
        .expect("four backends");

    // Shrink to 1: the idle backend goes at once, the used ones as they come back.
    pool.resize(1).expect("shrink");
    admin
        .wait_for_count(&Backends::app(app), 3, Duration::from_secs(10))
        .await
        .expect("the idle backend leaves at once");
    let kept_pid = backend_pid(&c).await;
    drop(a);
    drop(b);
    admin
        .wait_for_count(&Backends::app(app), 1, Duration::from_secs(10))
        .await
        .expect("returned backends leave until one is left");
    assert_eq!(admin.pids(&Backends::app(app)).await.unwrap(), [kept_pid]);
    drop(c);
    let again = pool.get().await.unwrap();
    assert_eq!(backend_pid(&again).await, kept_pid, "the one left is kept");
    // The closes complete a moment after their backends are gone.
    wait_until(&pool, Duration::from_secs(5), "one left", |p| {
        p.status().total == 1
    })
    .await;
    let s = pool.status();
    assert_eq!((s.max_size, s.total), (1, 1), "{s}");
    assert_eq!(pool.metrics().stats.closes(CloseReason::Resized), 3);
    pool.check_invariants().expect("invariants");
}
