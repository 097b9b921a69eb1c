#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The tokio pool in front of a real PgBouncer in transaction mode (the "external pooler"
//! setup for serverless and many-instance deployments).
//!
//! Settings this needs, as used here (see docs/guides/serverless-and-pgbouncer.md):
//! - PgBouncer `pool_mode = transaction`; the pool's `max_size` may exceed PgBouncer's
//!   `default_pool_size` (clients are cheap there, server connections are not).
//! - Queries through `simple_query`, `batch_execute` or `query_typed` (one round trip,
//!   unnamed statement). tokio-postgres' `query`/`execute`/`prepare` use *named* prepared
//!   statements, which PgBouncer 1.18 in transaction mode cannot carry across server
//!   connections.
//! - `ResetMode::Auto` (the default): a borrower that leaves a transaction open would
//!   otherwise pin one of PgBouncer's few server connections (the status byte the
//!   pool reads is the server's, forwarded by PgBouncer). Not
//!   `ResetMode::Discard` (`DISCARD ALL` is meaningless per transaction).

mod pg_common;

use std::time::Duration;

use pg_common::*;
use pg_harness::{Backends, PgBouncer};
use pool_tokio::ResetMode;
use tokio_postgres::types::Type;

/// The serverless story: four "instances", each with its own tiny pool configured as
/// docs/guides/serverless-and-pgbouncer.md recommends, share one PgBouncer in transaction
/// mode that multiplexes their 8 client connections over 2 server connections. Every
/// query succeeds; then borrowers that abandon open transactions do not starve anyone,
/// because the pool rolls back every returned connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverless_instances_share_pgbouncer_in_transaction_mode() {
    let _watchdog = watchdog(
        "serverless_instances_share_pgbouncer_in_transaction_mode",
        Duration::from_secs(120),
    );
    const INSTANCES: usize = 4;
    let cluster = cluster(20);
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    // The guide's parameters.
    let params = "&connection_limit=2&min_idle=0&idle_timeout=30&pool_timeout=10&connect_timeout=5";
    let pools: Vec<PgPool> = (0..INSTANCES)
        .map(|i| {
            pool_with(
                &url_for(&bouncer.url(), &format!("instance-{i}"), params),
                |b| b,
            )
        })
        .collect();
    for pool in &pools {
        assert_eq!(pool.config().max_size, 2);
        assert_eq!(pool.config().acquire_timeout, Duration::from_secs(10));
        assert_eq!(pool.manager().config().get_ports(), &[bouncer.port()]);
    }

    let tasks: Vec<_> = pools
        .iter()
        .flat_map(|pool| (0..4i64).map(move |t| (pool.clone(), t)))
        .enumerate()
        .map(|(k, (pool, _))| {
            tokio::spawn(async move {
                for i in 0..20i64 {
                    let c = pool.get().await.expect("get through pgbouncer");
                    let n = k as i64 * 100 + i;
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
    for pool in &pools {
        let m = pool.metrics();
        assert_eq!(m.stats.grants, 80);
        assert!(m.stats.connects_ok <= 2, "{m:?}");
    }
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
    for _ in 0..3 {
        for pool in &pools[..2] {
            let c = pool.get().await.unwrap();
            c.batch_execute("BEGIN; SELECT 1").await.unwrap();
            drop(c);
        }
    }
    let after: Vec<_> = pools
        .iter()
        .enumerate()
        .flat_map(|(i, pool)| (0..2i64).map(move |t| (pool.clone(), i as i64 * 10 + t)))
        .map(|(pool, n)| {
            tokio::spawn(async move {
                let c = pool.get().await.expect("get after abandoned transactions");
                assert_eq!(select(&c, n).await.expect("not starved"), n);
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
    for pool in &pools {
        pool.check_invariants().expect("invariants");
        let forced = within(
            Duration::from_secs(10),
            "close",
            pool.close(Duration::from_secs(2)),
        )
        .await;
        assert_eq!(forced, 0);
    }
}

/// A wrong password through PgBouncer must fail fast, like one straight to PostgreSQL
/// (`pg_pool.rs`), and as docs/guides/serverless-and-pgbouncer.md promises.
///
/// Found by this test: PgBouncer 1.18 (scram-sha-256) answers a wrong password with
/// `FATAL: SASL authentication failed` and SQLSTATE 08P01 (protocol violation), not
/// 28P01, which `pool_tokio::postgres::classify` called transient, so the caller waited
/// its whole `pool_timeout`. `classify` now treats 08P01 "authentication failed" as fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_through_pgbouncer_fails_fast() {
    let _watchdog = watchdog(
        "wrong_password_through_pgbouncer_fails_fast",
        Duration::from_secs(120),
    );
    let cluster = cluster(10);
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    let url = bouncer
        .url()
        .replace(":pool_test_pw@", ":not-the-password@");
    assert_ne!(url, bouncer.url());
    let pool = pool_with(
        &url_for(&url, "pool-bouncer-badpw", "&pool_timeout=10"),
        |b| b,
    );
    let (err, waited) =
        failed_get(&pool, Duration::from_secs(30), "get with a wrong password").await;
    assert!(
        !err.is_timeout() && waited < Duration::from_secs(5),
        "took {waited:?} and failed with: {err}"
    );
    assert!(
        matches!(&err, pool_tokio::PoolError::Connect { error, .. }
            if error.class == pool_tokio::ErrorClass::Fatal),
        "{err:?}"
    );
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

/// What goes wrong without the reset: with `ResetMode::Skip`, two abandoned
/// transactions pin both of PgBouncer's server connections, and everyone else waits.
/// This shows the previous test's last phase can fail (and why the default resets).
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
