#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! A request that times out on a slow query (the query future and then the guard are
//! dropped, as `tokio::time::timeout` around a handler does) must not hold up the next
//! borrower: the reset cancels the query on the server (`CancelRequest`) and the
//! connection is back in milliseconds, instead of the reset's `ROLLBACK` queueing behind
//! the query until it ends or `check_timeout` passes (issue 14). Before the fix the next
//! borrower of a pool of 1 waited 4.9 s for `SELECT pg_sleep(5)` to finish.

mod pg_common;

use std::time::{Duration, Instant};

use pg_common::*;
use pool_tokio::TransactionStatus;

/// How long a request may take: each slow query is abandoned after this.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// The bound: the next borrower's `SELECT 1` completes within this of the drop.
const NEXT_BORROWER: Duration = Duration::from_millis(500);
const SLOW: &str = "SELECT pg_sleep(5)";

/// The pool's backends running `pg_sleep` now.
async fn sleeping(admin: &pg_harness::PgAdmin, app: &str) -> i64 {
    admin
        .query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
             AND state = 'active' AND query LIKE '%pg_sleep%'"
        ))
        .await
        .expect("count sleeping backends")
}

/// Waits (bounded) until none of the pool's backends runs `pg_sleep`.
async fn no_sleep_left(admin: &pg_harness::PgAdmin, app: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while sleeping(admin, app).await > 0 {
        assert!(
            started.elapsed() < limit,
            "an abandoned pg_sleep still runs after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_slow_query_does_not_hold_up_the_next_borrower() {
    let _w = watchdog(
        "an_abandoned_slow_query_does_not_hold_up_the_next_borrower",
        Duration::from_secs(60),
    );
    let cluster = cluster(10);
    let app = "abandoned-1";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(1));
    let first = {
        let c = pool.get().await.unwrap();
        backend_pid(&c).await
    };

    // The request: a slow query under a request timeout.
    let request = async {
        let c = pool.get().await.unwrap();
        c.simple_query(SLOW).await.map(drop)
    };
    assert!(
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .is_err(),
        "the slow query was abandoned"
    );
    let dropped = Instant::now();
    let c = within(Duration::from_secs(10), "next get", pool.get())
        .await
        .unwrap();
    assert_eq!(select(&c, 1).await.unwrap(), 1);
    let waited = dropped.elapsed();
    eprintln!("next borrower's SELECT 1 done {waited:?} after the drop");
    assert!(
        waited < NEXT_BORROWER,
        "the next borrower waited {waited:?} behind an abandoned query"
    );
    assert_eq!(
        within(
            Duration::from_secs(5),
            "the status settles",
            c.settled_transaction_status()
        )
        .await,
        TransactionStatus::Idle
    );
    assert_eq!(
        backend_pid(&c).await,
        first,
        "cancelled, not replaced: the same backend"
    );
    drop(c);
    let admin = cluster.admin();
    no_sleep_left(&admin, app, Duration::from_secs(1)).await;
    let stats = pool.metrics().stats;
    assert_eq!(stats.closes_total(), 0, "nothing closed: {stats:?}");
    // At least the abandoned query's (`backend_pid`'s dropped statement may add one).
    assert!(stats.resets_started >= 1);
    pool.check_invariants().unwrap();
}

/// A pool of 10 and 50 requests, each timing out after 100 ms, at once: ten of them get
/// a connection and abandon `pg_sleep(5)` on it, the others give up waiting. Every slow
/// query is cancelled, the next borrower is served within 500 ms, and the server never
/// sees more than 10 connections from the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_abandoning_slow_queries_at_once_leave_the_pool_serving() {
    let _w = watchdog(
        "fifty_requests_abandoning_slow_queries_at_once_leave_the_pool_serving",
        Duration::from_secs(90),
    );
    let cluster = cluster(20);
    let app = "abandoned-50";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.max_size(10).max_connecting(10)
    });
    // Warm: ten connections, so the requests start on ready connections.
    let warm: Vec<_> = futures::future::join_all((0..10).map(|_| pool.get())).await;
    drop(warm);
    let admin = cluster.admin();
    let watch = BackendWatch::start(&admin, app).await;

    let requests = (0..50).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let request = async {
                let c = pool.get().await.unwrap();
                c.simple_query(SLOW).await.map(drop)
            };
            tokio::time::timeout(REQUEST_TIMEOUT, request)
                .await
                .is_err()
        })
    });
    let timed_out = futures::future::join_all(requests).await;
    assert!(
        timed_out.into_iter().all(|t| t.unwrap()),
        "every request timed out"
    );
    let dropped = Instant::now();
    let c = within(Duration::from_secs(10), "next get", pool.get())
        .await
        .unwrap();
    assert_eq!(select(&c, 1).await.unwrap(), 1);
    let waited = dropped.elapsed();
    eprintln!("next borrower's SELECT 1 done {waited:?} after the last drop");
    assert!(
        waited < NEXT_BORROWER,
        "the next borrower waited {waited:?} behind abandoned queries"
    );
    drop(c);
    let gone = no_sleep_left(&admin, app, Duration::from_secs(2)).await;
    eprintln!("no pg_sleep left {gone:?} after that");
    wait_until(&pool, Duration::from_secs(5), "resets done", |p| {
        p.status().checking == 0
    })
    .await;
    let (peak, samples) = watch.finish().await;
    assert!(samples > 0);
    assert!(peak <= 10, "{peak} backends from a pool of 10");
    let stats = pool.metrics().stats;
    eprintln!(
        "resets {}, closes {}, backends peak {peak}",
        stats.resets_started,
        stats.closes_total()
    );
    assert_eq!(
        stats.closes_total(),
        0,
        "every abandoned query was cancelled, no connection replaced"
    );
    pool.check_invariants().unwrap();
}

/// The same inside an open transaction: the cancelled statement fails the transaction,
/// the reset rolls it back, and the next borrower sees none of its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_query_inside_a_transaction_is_cancelled_and_rolled_back() {
    let _w = watchdog(
        "an_abandoned_query_inside_a_transaction_is_cancelled_and_rolled_back",
        Duration::from_secs(60),
    );
    let cluster = cluster(10);
    let app = "abandoned-tx";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(1));
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("CREATE TABLE abandoned_probe (n int)")
            .await
            .unwrap();
    }
    let request = async {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO abandoned_probe VALUES (1)")
            .await
            .unwrap();
        c.simple_query(SLOW).await.map(drop)
    };
    assert!(tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .is_err());
    let dropped = Instant::now();
    let c = within(Duration::from_secs(10), "next get", pool.get())
        .await
        .unwrap();
    assert_eq!(
        one(&c, "SELECT count(*) FROM abandoned_probe").await,
        "0",
        "the abandoned transaction's row"
    );
    let waited = dropped.elapsed();
    eprintln!("next borrower's SELECT done {waited:?} after the drop");
    assert!(waited < NEXT_BORROWER, "waited {waited:?}");
    assert_eq!(
        one(&c, "SELECT now() = statement_timestamp()").await,
        "t",
        "the next borrower is inside the last one's transaction"
    );
    drop(c);
    no_sleep_left(&cluster.admin(), app, Duration::from_secs(1)).await;
    pool.check_invariants().unwrap();
}
