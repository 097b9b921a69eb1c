#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The tokio pool in front of a real PgBouncer in transaction mode (the "external pooler"
//! setup for serverless and many-instance deployments).
//!
//! Settings this needs, as used here:
//! - PgBouncer `pool_mode = transaction`; the pool's `max_size` may exceed PgBouncer's
//!   `default_pool_size` (clients are cheap there, server connections are not).
//! - Queries through `simple_query`, `batch_execute` or `query_typed` (one round trip,
//!   unnamed statement). tokio-postgres' `query`/`execute`/`prepare` use *named* prepared
//!   statements, which PgBouncer 1.18 in transaction mode cannot carry across server
//!   connections.
//! - `ResetMode::Rollback` (the default): a borrower that leaves a transaction open
//!   would otherwise pin one of PgBouncer's few server connections. Not
//!   `ResetMode::Discard` (`DISCARD ALL` is meaningless per transaction).

mod pg_common;

use std::time::Duration;

use pg_common::*;
use pool_suite::{Backends, PgBouncer};
use pool_tokio::ResetMode;
use tokio_postgres::types::Type;

/// 16 tasks × 20 queries through a pool of 8 client connections to PgBouncer, which
/// multiplexes them over 2 server connections; then 6 borrowers that leave a
/// transaction open (and 6 that hold a transaction past the return of others) do not
/// starve anyone, because the pool rolls back every returned connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_through_pgbouncer_transaction_mode() {
    let _watchdog = watchdog(
        "pool_through_pgbouncer_transaction_mode",
        Duration::from_secs(120),
    );
    let cluster = cluster(20);
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    let pool = pool_with(&url_for(&bouncer.url(), "pool-bouncer", ""), |b| {
        b.max_size(8).acquire_timeout(Duration::from_secs(20))
    });
    assert_eq!(pool.manager().config().get_ports(), &[bouncer.port()]);

    let tasks: Vec<_> = (0..16i64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..20i64 {
                    let c = pool.get().await.expect("get through pgbouncer");
                    let n = t * 100 + i;
                    assert_eq!(select(&c, n).await.expect("simple query"), n);
                    let rows = c
                        .query_typed("SELECT $1::int8 * 2", &[(&n, Type::INT8)])
                        .await
                        .expect("query_typed through pgbouncer");
                    assert_eq!(rows[0].get::<_, i64>(0), 2 * n);
                }
            })
        })
        .collect();
    for t in tasks {
        within(Duration::from_secs(60), "query task", t)
            .await
            .expect("query task panicked");
    }
    let m = pool.metrics();
    assert_eq!(m.grants, 320);
    assert!(m.connects_ok <= 8, "{m:?}");
    let servers = cluster
        .admin()
        .count(&Backends::user("pool_test"))
        .await
        .unwrap();
    assert!(
        (1..=2).contains(&servers),
        "PgBouncer's default_pool_size=2 bounds the server connections, saw {servers}"
    );

    // Borrowers that abandon an open transaction (a task cancelled between BEGIN and
    // COMMIT): with PgBouncer each would pin a server connection until rolled back.
    for _ in 0..6 {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        drop(c);
    }
    let after: Vec<_> = (0..8i64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let c = pool.get().await.expect("get after abandoned transactions");
                assert_eq!(select(&c, t).await.expect("not starved"), t);
            })
        })
        .collect();
    for t in after {
        within(
            Duration::from_secs(30),
            "query after abandoned transactions",
            t,
        )
        .await
        .expect("task panicked");
    }
    assert!(pool.metrics().resets_started >= 6);
    pool.check_invariants().expect("invariants");
    let forced = within(
        Duration::from_secs(10),
        "close",
        pool.close(Duration::from_secs(2)),
    )
    .await;
    assert_eq!(forced, 0);
}

/// What goes wrong without the reset: with `ResetMode::Skip`, two abandoned
/// transactions pin both of PgBouncer's server connections, and everyone else waits.
/// This shows the previous test's last phase can fail (and why `Rollback` is the
/// default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reset_abandoned_transactions_pin_pgbouncer() {
    let _watchdog = watchdog(
        "without_reset_abandoned_transactions_pin_pgbouncer",
        Duration::from_secs(120),
    );
    let cluster = cluster(20);
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    let (manager, options) =
        pool_tokio::PgManager::from_url(&url_for(&bouncer.url(), "pool-bouncer-skip", "")).unwrap();
    let pool = pool_tokio::Pool::builder(manager.reset_mode(ResetMode::Skip))
        .options(options)
        .max_size(4)
        .build()
        .unwrap();
    // Two client connections, each left inside a transaction and returned as reusable.
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    drop((a, b));
    // All four: the two pinned ones come back from idle, two are new.
    let all: Vec<_> = futures::future::join_all((0..4).map(|_| pool.get()))
        .await
        .into_iter()
        .map(|r| r.expect("a client connection"))
        .collect();
    let outcomes = futures::future::join_all(all.iter().enumerate().map(|(i, c)| async move {
        tokio::time::timeout(Duration::from_secs(2), select(c, i as i64))
            .await
            .is_ok()
    }))
    .await;
    let hung = outcomes.iter().filter(|ok| !**ok).count();
    assert_eq!(
        hung, 2,
        "the two new client connections wait for a server connection that never frees: \
         {outcomes:?}"
    );
}
