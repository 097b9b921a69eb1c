#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The default reset (`ResetMode::Auto`) against a real PostgreSQL: a connection returned
//! inside a transaction, a failed transaction or with a query still in flight never
//! reaches the next borrower dirty; an idle one goes back with no statement sent and
//! nothing in the server log. The cluster logs every statement (`log_statement = all`),
//! so the log shows exactly which `ROLLBACK`s the pool sent.

mod pg_common;

use std::time::Duration;

use pg_common::*;
use pg_harness::{PgCluster, PgOptions};
use pool_tokio::{PgConnection, ResetMode, TransactionStatus};

const NO_TX_WARNING: &str = "there is no transaction in progress";

fn logging_cluster() -> PgCluster {
    PgCluster::start(
        PgOptions::default()
            .max_connections(10)
            .setting("log_statement", "'all'"),
    )
    .expect("start PostgreSQL (scripts/install-deps.sh installs it)")
}

/// How many lines of the server log contain `needle`.
fn log_count(cluster: &PgCluster, needle: &str) -> usize {
    std::fs::read_to_string(cluster.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits (bounded) until the server log holds at least `n` lines with `needle`.
async fn wait_log(cluster: &PgCluster, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log_count(cluster, needle) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} `{needle}` lines in the server log: {}",
            cluster.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connection's status once nothing is queued or in flight (bounded): right after a
/// query, or a return whose `Close` is still in flight, `transaction_status()` may say
/// `Unknown` for as long as the connection task waits for a core on a loaded machine.
async fn settled(c: &PgConnection) -> TransactionStatus {
    within(
        Duration::from_secs(5),
        "the status settles",
        c.settled_transaction_status(),
    )
    .await
}

/// Waits (bounded) for the connection's status to become `want`.
async fn wait_status(c: &PgConnection, want: TransactionStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.transaction_status() != want {
        assert!(
            std::time::Instant::now() < deadline,
            "status {:?}, expected {want:?}",
            c.transaction_status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the next borrower must see: no transaction left open by the last one (a fresh
/// statement's transaction starts now), and none of the rows a rolled-back insert left.
async fn assert_clean(c: &PgConnection, rows: i64, what: &str) {
    assert_eq!(settled(c).await, TransactionStatus::Idle, "{what}: status");
    assert_eq!(
        one(c, "SELECT now() = statement_timestamp()").await,
        "t",
        "{what}: the next borrower is inside the last one's transaction"
    );
    assert_eq!(
        one(c, "SELECT count(*) FROM reset_probe").await,
        rows.to_string(),
        "{what}: rows"
    );
}

/// Idle returns send nothing and log nothing; a return inside `BEGIN`, inside a failed
/// transaction, and after `COMMIT` are each judged by the status the server reported,
/// and only the first two get a `ROLLBACK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reset_rolls_back_only_dirty_connections() {
    let _watchdog = watchdog(
        "auto_reset_rolls_back_only_dirty_connections",
        Duration::from_secs(120),
    );
    const RETURNS: usize = 200;
    let cluster = logging_cluster();
    let pool = pool_with(&url_for(&cluster.url(), "reset-auto", ""), |b| {
        b.max_size(2)
    });
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("CREATE TABLE reset_probe (x int)")
            .await
            .unwrap();
    }
    for i in 0..RETURNS {
        let c = pool.get().await.unwrap();
        assert_eq!(select(&c, i as i64).await.unwrap(), i as i64);
    }
    let m = pool.metrics();
    // A return is judged the instant the borrower's query ends; on a multi-threaded
    // runtime the connection task may rarely still be finishing its poll then, and the
    // connection goes through a reset task that only settles the status (no statement:
    // the server log below has no ROLLBACK for these). The old default reset all 200.
    let idle_resets = m.stats.resets_started;
    eprintln!("idle returns that went through a reset task: {idle_resets} of {RETURNS}");
    assert!(
        idle_resets < RETURNS as u64 / 10,
        "idle returns were reset: {m:?}"
    );
    assert_eq!(m.stats.grants, RETURNS as u64 + 1);

    // Inside BEGIN, with an insert.
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (1)")
            .await
            .unwrap();
        assert_eq!(settled(&c).await, TransactionStatus::InTransaction);
    }
    wait_until(&pool, Duration::from_secs(5), "reset done", |p| {
        p.status().leased == 0 && p.status().checking == 0
    })
    .await;
    for _ in 0..2 {
        // Both connections (whichever got the dirty one) are clean.
        let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        assert_clean(&a, 0, "after BEGIN").await;
        assert_clean(&b, 0, "after BEGIN").await;
    }

    // Inside a failed transaction.
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (2)")
            .await
            .unwrap();
        c.simple_query("SELECT 1/0")
            .await
            .expect_err("division by zero");
        // The error is reported before its ReadyForQuery may have been read.
        wait_status(&c, TransactionStatus::Failed).await;
    }
    for _ in 0..2 {
        let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        assert_clean(&a, 0, "after a failed transaction").await;
        assert_clean(&b, 0, "after a failed transaction").await;
    }

    // After COMMIT: nothing to do.
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (3); COMMIT")
            .await
            .unwrap();
    }
    let c = pool.get().await.unwrap();
    assert_clean(&c, 1, "after COMMIT").await;
    drop(c);

    // The server's view: two ROLLBACKs (for the two dirty returns), no warnings.
    wait_log(&cluster, "statement: SELECT count(*) FROM reset_probe", 9).await;
    assert_eq!(
        log_count(&cluster, "statement: ROLLBACK"),
        2,
        "{}",
        cluster.log_tail(40)
    );
    assert_eq!(log_count(&cluster, NO_TX_WARNING), 0);
    pool.check_invariants().expect("invariants");
}

/// The old default, for contrast: `ResetMode::Rollback` sends a ROLLBACK per return and
/// the server logs one warning for each (so the zero above is a real zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_mode_warns_once_per_idle_return() {
    let _watchdog = watchdog(
        "rollback_mode_warns_once_per_idle_return",
        Duration::from_secs(120),
    );
    const RETURNS: usize = 20;
    let cluster = logging_cluster();
    let (manager, options) =
        pool_tokio::PgManager::from_url(&url_for(&cluster.url(), "reset-rollback", "")).unwrap();
    let pool = pool_tokio::Pool::builder(manager.reset_mode(ResetMode::Rollback))
        .options(options)
        .max_size(1)
        .build()
        .unwrap();
    for i in 0..RETURNS {
        let c = pool.get().await.unwrap();
        assert_eq!(select(&c, i as i64).await.unwrap(), i as i64);
    }
    wait_log(&cluster, NO_TX_WARNING, RETURNS - 1).await;
    assert_eq!(pool.metrics().stats.resets_started, RETURNS as u64);
}

/// A borrower cancelled mid-query (its future dropped while the server still runs
/// `BEGIN; SELECT pg_sleep(..)`) returns a connection whose last status is stale: the
/// reset waits for the answer, sees the transaction, and rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borrower_cancelled_mid_query_leaves_no_transaction() {
    let _watchdog = watchdog(
        "a_borrower_cancelled_mid_query_leaves_no_transaction",
        Duration::from_secs(120),
    );
    let cluster = logging_cluster();
    let pool = pool_with(&url_for(&cluster.url(), "reset-cancel", ""), |b| {
        b.max_size(1)
    });
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("CREATE TABLE reset_probe (x int)")
            .await
            .unwrap();
    }
    {
        let c = pool.get().await.unwrap();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(100),
            c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (1); SELECT pg_sleep(0.5)"),
        )
        .await;
        assert!(cancelled.is_err(), "the query was still running");
        assert_eq!(c.transaction_status(), TransactionStatus::Unknown);
    }
    let c = within(Duration::from_secs(10), "get after the cancel", pool.get())
        .await
        .unwrap();
    assert_clean(&c, 0, "after a cancelled query").await;
    drop(c);
    let m = pool.metrics();
    assert!(m.stats.resets_started >= 1, "{m:?}");
    assert_eq!(m.stats.connects_ok, 1, "the connection was kept: {m:?}");
    wait_log(&cluster, "statement: SELECT count(*) FROM reset_probe", 1).await;
    assert_eq!(log_count(&cluster, "statement: ROLLBACK"), 1);
    assert_eq!(log_count(&cluster, NO_TX_WARNING), 0);
}

/// A request handed to tokio-postgres but not yet written when the guard is dropped
/// (its future polled once, then dropped, on a single-threaded runtime where the
/// connection task has not run yet): nothing on the wire says "in flight", but the
/// connection task's pending wake-up does, and the `BEGIN` never reaches the next
/// borrower.
#[tokio::test(flavor = "current_thread")]
async fn a_request_queued_but_unsent_is_not_missed() {
    let _watchdog = watchdog(
        "a_request_queued_but_unsent_is_not_missed",
        Duration::from_secs(120),
    );
    let cluster = logging_cluster();
    let pool = pool_with(&url_for(&cluster.url(), "reset-queued", ""), |b| {
        b.max_size(1)
    });
    {
        let c = pool.get().await.unwrap();
        c.batch_execute("CREATE TABLE reset_probe (x int)")
            .await
            .unwrap();
    }
    // On one thread the connection task never runs during a judgement: idle returns are
    // never reset.
    for i in 0..50 {
        let c = pool.get().await.unwrap();
        assert_eq!(select(&c, i).await.unwrap(), i);
    }
    assert_eq!(pool.metrics().stats.resets_started, 0);
    {
        let c = pool.get().await.unwrap();
        assert_eq!(c.transaction_status(), TransactionStatus::Idle);
        let mut begin = Box::pin(c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (1)"));
        assert!(futures::poll!(begin.as_mut()).is_pending());
        drop(begin);
        assert_eq!(c.transaction_status(), TransactionStatus::Unknown);
    }
    let c = within(Duration::from_secs(10), "get after the drop", pool.get())
        .await
        .unwrap();
    assert_clean(&c, 0, "after an unsent BEGIN").await;
    assert_eq!(pool.metrics().stats.resets_started, 1);
    assert_eq!(log_count(&cluster, NO_TX_WARNING), 0);
}

/// The manager opens the socket itself: a Unix socket when the host is a path, the next
/// host when the first refuses, and `target_session_attrs` checked after the login.
#[tokio::test(flavor = "current_thread")]
async fn the_managers_own_socket_follows_the_config() {
    use pool_tokio::Manager;
    let _watchdog = watchdog(
        "the_managers_own_socket_follows_the_config",
        Duration::from_secs(120),
    );
    let cluster = logging_cluster();
    let o = cluster.options();

    // Unix socket (pg-harness trusts local connections).
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user(&o.user)
        .dbname(&o.database);
    let m = pool_tokio::PgManager::new(config.clone());
    let c = m.connect().await.expect("connect over the Unix socket");
    assert_eq!(c.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        one(
            &c,
            "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        .await,
        "t",
        "a Unix-socket session has no client address"
    );
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(c.transaction_status(), TransactionStatus::InTransaction);

    // Two hosts, the first refusing: the second serves.
    let url = cluster
        .url()
        .replacen("@127.0.0.1:", "@127.0.0.1:1,127.0.0.1:", 1);
    let (m, _) = pool_tokio::PgManager::from_url(&format!("{url}?sslmode=disable")).unwrap();
    let c = m.connect().await.expect("the second host");
    assert_eq!(select(&c, 7).await.unwrap(), 7);
    // Only the first host: the refusal is reported.
    let (m, _) = pool_tokio::PgManager::from_url(&format!(
        "{}?sslmode=disable",
        url.split(',').next().unwrap().to_owned() + "/pool_test"
    ))
    .unwrap();
    let e = m.connect().await.expect_err("refused");
    let text = format!("{e} {:?}", std::error::Error::source(&e));
    assert!(
        text.contains("error connecting to server at 127.0.0.1:1"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains(&o.password), "{text}");

    // target_session_attrs: a primary is read-write, not read-only.
    config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    let c = pool_tokio::PgManager::new(config.clone())
        .connect()
        .await
        .expect("read-write");
    assert_eq!(select(&c, 1).await.unwrap(), 1);
    config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadOnly);
    let e = pool_tokio::PgManager::new(config)
        .connect()
        .await
        .expect_err("a primary is not read-only");
    let text = format!("{e} {:?}", std::error::Error::source(&e));
    assert!(text.contains("not read-only"), "{text}");
}

/// `query("..", ..)` with a string prepares a named statement and, when it is dropped,
/// queues a `Close` the connection task may not have written when the guard comes back:
/// then the status is not known at return and the return goes through a reset task,
/// which sends nothing (a `Close` + `Sync` cannot change the status): no `ROLLBACK`, no
/// warning, no new connection, and the next borrower is outside any transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_close_needs_no_rollback() {
    let _watchdog = watchdog("a_queued_close_needs_no_rollback", Duration::from_secs(120));
    const RETURNS: i32 = 50;
    let cluster = logging_cluster();
    let pool = pool_with(&url_for(&cluster.url(), "reset-close", ""), |b| {
        b.max_size(1)
    });
    for i in 0..RETURNS {
        let c = pool.get().await.unwrap();
        let row = c.query_one("SELECT $1::int4", &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    let c = pool.get().await.unwrap();
    assert_eq!(settled(&c).await, TransactionStatus::Idle);
    assert_eq!(one(&c, "SELECT now() = statement_timestamp()").await, "t");
    drop(c);
    let m = pool.metrics();
    eprintln!(
        "returns after query(&str) that went through a reset task: {} of {RETURNS}",
        m.stats.resets_started
    );
    assert_eq!(m.stats.connects_ok, 1, "{m:?}");
    wait_log(
        &cluster,
        "statement: SELECT now() = statement_timestamp()",
        1,
    )
    .await;
    assert_eq!(log_count(&cluster, "statement: ROLLBACK"), 0);
    assert_eq!(log_count(&cluster, NO_TX_WARNING), 0);
}
