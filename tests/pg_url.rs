#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! Connection URL keys against a real PostgreSQL: what the server sees for the keys that
//! reach it (Prisma's `schema`, libpq's `options`, `host=` for a Unix socket,
//! `fallback_application_name`, `target_session_attrs`).

mod pg_common;

use std::time::Duration;

use pg_common::*;
use pg_harness::{PgBouncer, PgCluster};
use pool_tokio::Manager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_the_server_as_meant() {
    let _watchdog = watchdog("keys_reach_the_server_as_meant", Duration::from_secs(120));
    let cluster = PgCluster::start_async(pg_harness::PgOptions::default())
        .await
        .expect("start PostgreSQL");
    let o = cluster.options();

    // Prisma's schema (a name that needs quoting) after libpq's own options; over TCP.
    let url = format!(
        "{}?sslmode=disable&options=-c%20work_mem%3D3MB&schema=My%20Schema\
         &fallback_application_name=fallback&target_session_attrs=read-write\
         &pool_timeout=0&connection_limit=2",
        cluster.url()
    );
    let pool = pool_with(&url, |b| b);
    assert!(pool.config().acquire_timeout > Duration::from_secs(365 * 24 * 3600));
    let client = within(Duration::from_secs(30), "get", pool.get())
        .await
        .expect("get");
    assert_eq!(show(&client, "search_path").await, "\"My Schema\"");
    assert_eq!(show(&client, "work_mem").await, "3MB");
    assert_eq!(show(&client, "application_name").await, "fallback");
    // pool_timeout=0: a waiter waits (it neither fails at once nor times out) until a
    // connection comes back.
    let other = within(Duration::from_secs(30), "second get", pool.get())
        .await
        .expect("second get");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(drop) }
    });
    wait_until(&pool, Duration::from_secs(10), "a waiter queued", |p| {
        p.status().waiters == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter ended without a connection"
    );
    drop(client);
    within(Duration::from_secs(10), "the waiter", waiter)
        .await
        .expect("waiter task")
        .expect("the waiter gets the returned connection");
    drop(other);
    pool.close(Duration::from_secs(5)).await;

    // host= names the Unix socket directory (the harness trusts local connections).
    let socket = cluster.socket_dir().display().to_string();
    let url = format!(
        "postgresql://{}@/{}?host={}&port={}&schema=public&application_name=over-socket",
        o.user,
        o.database,
        socket.replace('/', "%2F"),
        cluster.port()
    );
    let pool = pool_with(&url, |b| b);
    let client = within(Duration::from_secs(30), "get over the socket", pool.get())
        .await
        .expect("get over the socket");
    assert_eq!(show(&client, "search_path").await, "\"public\"");
    let row = client
        .query_one(
            "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "connected over TCP, not the socket");
    drop(client);
    pool.close(Duration::from_secs(5)).await;
}

/// The URL Prisma users carry to PgBouncer in transaction mode works as pasted: `schema`
/// `public` is not sent (PgBouncer refuses the `options` startup parameter, which this
/// test also shows), and the manager knows it is behind PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prisma_url_through_pgbouncer() {
    let _watchdog = watchdog("a_prisma_url_through_pgbouncer", Duration::from_secs(120));
    let cluster = cluster(20);
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    let prisma = "?schema=public&pgbouncer=true&connection_limit=1&statement_cache_size=0\
                  &pool_timeout=0&sslmode=disable";
    let pool = pool_with(&format!("{}{prisma}", bouncer.url()), |b| b);
    assert!(pool.manager().pgbouncer());
    assert_eq!(pool.config().max_size, 1);
    let client = within(Duration::from_secs(30), "get through PgBouncer", pool.get())
        .await
        .expect("get through PgBouncer");
    assert_eq!(select(&client, 5).await.expect("select"), 5);
    drop(client);
    pool.close(Duration::from_secs(5)).await;

    // What sending the schema would do: PgBouncer refuses the connection.
    let (manager, _) = pool_tokio::PgManager::from_url(&format!(
        "{}?schema=public&sslmode=disable",
        bouncer.url()
    ))
    .unwrap();
    let e = within(
        Duration::from_secs(30),
        "connect with options",
        manager.connect(),
    )
    .await
    .expect_err("PgBouncer accepted the options startup parameter");
    let text = pg_message(&e);
    assert!(text.contains("options"), "{text}");
}
