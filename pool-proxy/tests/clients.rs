//! Real clients through the real proxy to a real PostgreSQL: psql, pgbench and
//! tokio-postgres as their users run them; the admin console; malformed startups and a full
//! proxy; session state and startup parameters on a shared server. Each test starts one
//! cluster and one proxy (authentication and TLS: tests/auth_tls.rs).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, NoTls};

use common::wire::{self, Reply};
use common::{columns, connect, rows, sqlstate, value, Setup, TestProxy, USER};

/// psql and tokio-postgres get answers through the proxy, and the admin console and
/// pg_stat_activity agree on the servers it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_are_served_and_show_pools_agrees_with_the_server() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 3")).await;
    let out = proxy
        .psql()
        .args(["-A", "-t", "-c", "SELECT 40 + 2, current_user"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42|pool_test");

    let client = proxy.connect().await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    let pools = proxy.show("POOLS").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    let pool = &pools[0];
    assert_eq!(
        (pool["database"].as_str(), pool["user"].as_str()),
        ("pool_test", "pool_test")
    );
    let servers: i64 = ["sv_active", "sv_idle", "sv_tested", "sv_login"]
        .iter()
        .map(|c| pool[*c].parse::<i64>().unwrap())
        .sum();
    assert_eq!(servers, proxy.server_backends().await, "{pool:?}");
    proxy.shutdown().await;
}

// ---- psql ----

/// One psql session through the proxy: statements, a committed and a rolled-back
/// transaction (checked from a direct connection), `\copy` in (20,000 rows, many CopyData
/// messages) and out, a `\copy` failing early while psql is still sending, an error and an
/// aborted transaction, each followed by recovery in the same session, and a notice
/// reaching psql's stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_statements_transactions_copy_errors_and_notices() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 2")).await;
    let dir = tempfile::tempdir().unwrap();
    let copy_in = dir.path().join("in.csv");
    let data: String = (10..20_010).map(|i| format!("{i},name {i}\n")).collect();
    std::fs::write(&copy_in, data).unwrap();
    // A key already loaded, early in a long file: the server fails the COPY while psql is
    // still sending.
    let failing = dir.path().join("failing.csv");
    let data: String = std::iter::once("2,again\n".to_owned())
        .chain((30_000..50_000).map(|i| format!("{i},never {i}\n")))
        .collect();
    std::fs::write(&failing, data).unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        format!(
            r#"CREATE TABLE items (id int PRIMARY KEY, name text);
INSERT INTO items VALUES (1, 'one'), (2, 'two');
SELECT count(*) FROM items;
BEGIN;
INSERT INTO items VALUES (3, 'three');
COMMIT;
BEGIN;
INSERT INTO items VALUES (4, 'four');
SELECT count(*) FROM items;
ROLLBACK;
\copy items FROM '{}' WITH (FORMAT csv)
\copy (SELECT id, name FROM items WHERE id < 10 ORDER BY id) TO STDOUT WITH (FORMAT csv)
\copy items FROM '{}' WITH (FORMAT csv)
SELECT 'after a failed copy', count(*) FROM items;
SELECT 1/0;
SELECT 'recovered', count(*) FROM items;
BEGIN;
SELECT 1/0;
SELECT 'ignored';
ROLLBACK;
DO $$BEGIN RAISE NOTICE 'notice through the proxy: %', 42; END$$;
SELECT 'done';
"#,
            copy_in.display(),
            failing.display()
        ),
    )
    .unwrap();
    let mut psql = proxy.psql();
    psql.args(["-v", "ON_ERROR_STOP=0", "-q", "-A", "-t", "-f"])
        .arg(&script);
    let out = run(psql).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "psql failed: {stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "2",
            "4",
            "1,one",
            "2,two",
            "3,three",
            "after a failed copy|20003",
            "recovered|20003",
            "done"
        ],
        "stderr: {stderr}"
    );
    assert_eq!(
        stderr.matches("ERROR:  division by zero").count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR:  duplicate key value violates unique constraint \"items_pkey\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "ERROR:  current transaction is aborted, commands ignored until end of transaction block"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("NOTICE:  notice through the proxy: 42"),
        "{stderr}"
    );

    let direct = proxy.direct().await;
    let ids = rows(&direct, "SELECT id FROM items WHERE id < 10 ORDER BY id").await;
    let ids: Vec<&str> = ids.iter().map(|row| row["id"].as_str()).collect();
    assert_eq!(
        ids,
        ["1", "2", "3"],
        "the committed row is there, the rolled-back one not"
    );
    assert_eq!(value(&direct, "SELECT count(*) FROM items").await, "20003");
    assert_eq!(
        value(&direct, "SELECT name FROM items WHERE id = 20009").await,
        "name 20009"
    );
    proxy.shutdown().await;
}

// ---- pgbench ----

/// pgbench through the proxy: `-i` (DDL, COPY, VACUUM), then `-S` and the TPC-B-like
/// script each with `-M simple` and `-M extended` (8 clients on 4 servers), `-S -M prepared` (named statements: each client
/// is pinned until it leaves, so 8 clients take turns on 4 servers) and `-C` (a login per
/// transaction). Every run processes what was asked with no failures, and SHOW STATS
/// counts at least those transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_every_query_mode_and_connect_per_transaction() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 4")).await;
    let mut init = proxy.pgbench();
    init.args(["-i", "-s", "1", "pool_test"]);
    let out = run(init).await;
    assert!(out.status.success(), "pgbench -i: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("done in"),
        "{}",
        text(&out.stderr)
    );
    let direct = proxy.direct().await;
    assert_eq!(
        value(&direct, "SELECT count(*) FROM pgbench_accounts").await,
        "100000"
    );

    let runs: [(&[&str], u64); 6] = [
        (
            &["-S", "-M", "simple", "-c", "8", "-j", "2", "-t", "25"],
            200,
        ),
        (
            &["-S", "-M", "extended", "-c", "8", "-j", "2", "-t", "25"],
            200,
        ),
        (&["-M", "simple", "-c", "8", "-j", "2", "-t", "25"], 200),
        (&["-M", "extended", "-c", "8", "-j", "2", "-t", "25"], 200),
        // Fewer threads than clients: with statements pinned, a thread blocked in one
        // client's PQprepare waiting for a server stalled its other clients' servers.
        (
            &["-S", "-M", "prepared", "-c", "8", "-j", "2", "-t", "25"],
            200,
        ),
        (&["-S", "-C", "-c", "4", "-j", "2", "-t", "25"], 100),
    ];
    for (args, transactions) in runs {
        let before = xact_count(&proxy).await;
        let mut bench = proxy.pgbench();
        bench.arg("-n").args(args).arg("pool_test");
        let out = run(bench).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "pgbench {args:?}: {stderr}\n{stdout}");
        assert!(
            stdout.contains(&format!(
                "number of transactions actually processed: {transactions}/{transactions}"
            )),
            "pgbench {args:?}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "pgbench {args:?}: {stdout}"
        );
        let counted = xact_count(&proxy).await - before;
        assert!(
            counted >= transactions,
            "pgbench {args:?} ran {transactions} transactions, SHOW STATS counted {counted}"
        );
    }
    // The TPC-B-like runs' 400 transactions each inserted one history row, committed.
    assert_eq!(
        value(&direct, "SELECT count(*) FROM pgbench_history").await,
        "400"
    );
    // ... and moved its delta into the branch, teller and account balances: no update
    // was lost or applied twice.
    assert_eq!(
        value(
            &direct,
            "SELECT (SELECT sum(delta) FROM pgbench_history) \
             = ALL (ARRAY[(SELECT sum(bbalance) FROM pgbench_branches), \
             (SELECT sum(tbalance) FROM pgbench_tellers), \
             (SELECT sum(abalance) FROM pgbench_accounts)])"
        )
        .await,
        "t"
    );
    // Every pgbench client left: no server is still lent.
    let pool = &proxy.show("POOLS").await[0];
    assert_eq!(pool["sv_active"], "0", "{pool:?}");
    assert_eq!(pool["cl_active"], "0", "{pool:?}");
    proxy.shutdown().await;
}

async fn xact_count(proxy: &TestProxy) -> u64 {
    proxy.stats_of("pool_test").await["total_xact_count"]
        .parse()
        .unwrap()
}

// ---- tokio-postgres ----

/// tokio-postgres through the proxy: pipelined `query_typed` (unnamed statements, one
/// failing in the middle) leaves no pin; pipelined `query` (named statements, one failing
/// to parse in the middle) pins; a statement prepared inside a transaction is invisible
/// until the commit; COPY in (20,000 rows in chunks), COPY aborted (CopyFail), COPY out in
/// text and binary, each with its rows counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelines_prepares_copies_and_recovers_from_errors() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 3")).await;
    let direct = proxy.direct().await;
    direct
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        .await
        .unwrap();

    // Four pipelined transactions, the third failing: the others answer, in order.
    let typed = proxy.connect().await;
    let (one, two, failed, four) = tokio::join!(
        typed.query_typed("SELECT $1::int + 1", &[(&1i32, Type::INT4)]),
        typed.query_typed("SELECT $1::text || '!'", &[(&"two", Type::TEXT)]),
        typed.query_typed("SELECT 10 / $1::int", &[(&0i32, Type::INT4)]),
        typed.query_typed("SELECT $1::int * 2", &[(&21i32, Type::INT4)]),
    );
    assert_eq!(one.unwrap()[0].get::<_, i32>(0), 2);
    assert_eq!(two.unwrap()[0].get::<_, &str>(0), "two!");
    assert_eq!(sqlstate(&failed.unwrap_err()).as_deref(), Some("22012"));
    assert_eq!(four.unwrap()[0].get::<_, i32>(0), 42);
    assert_eq!(
        typed
            .query_typed_one("SELECT 'after'::text", &[])
            .await
            .unwrap()
            .get::<_, &str>(0),
        "after"
    );
    let pool = pool_row(&proxy).await;
    assert_eq!(
        pool["sv_active"], "0",
        "unnamed statements pin nothing: {pool:?}"
    );

    // The same with `query` (named statements), the second failing at Parse.
    let named = proxy.connect().await;
    let (first, missing, third) = tokio::join!(
        named.query("SELECT 1::int", &[]),
        named.query("SELECT * FROM no_such_table", &[]),
        named.query("SELECT $1::int", &[&3i32]),
    );
    assert_eq!(first.unwrap()[0].get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&missing.unwrap_err()).as_deref(), Some("42P01"));
    assert_eq!(third.unwrap()[0].get::<_, i32>(0), 3);
    let pool = pool_row(&proxy).await;
    assert_eq!(
        pool["sv_active"], "0",
        "named statements are tracked (max_prepared_statements), not pinned: {pool:?}"
    );

    // A statement prepared and used inside one transaction.
    let mut client = proxy.connect().await;
    let tx = client.transaction().await.unwrap();
    let insert = tx.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
    for i in 0..5i32 {
        let n = tx
            .execute(&insert, &[&i, &format!("row {i}")])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_eq!(
        value(&direct, "SELECT count(*) FROM t").await,
        "0",
        "uncommitted rows are not visible outside the transaction"
    );
    tx.commit().await.unwrap();
    assert_eq!(value(&direct, "SELECT count(*) FROM t").await, "5");

    // COPY in, in chunks that split rows.
    let data: String = (100..20_100).map(|i| format!("{i}\trow {i}\n")).collect();
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(7_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);
    assert_eq!(value(&direct, "SELECT count(*) FROM t").await, "20005");

    // COPY abandoned: the sink dropped sends CopyFail; nothing is inserted, the client
    // goes on.
    {
        let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"999999\tlost\n"))
            .await
            .unwrap();
    }
    assert_eq!(value(&client, "SELECT count(*) FROM t").await, "20005");

    // COPY out, text and binary.
    let text_out: Vec<Bytes> = client
        .copy_out("COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text_out: Vec<u8> = text_out.concat();
    let text_out = String::from_utf8(text_out).unwrap();
    assert_eq!(text_out.lines().count(), 20_005);
    assert_eq!(text_out.lines().next(), Some("0\trow 0"));
    assert_eq!(text_out.lines().last(), Some("20099\trow 20099"));
    let binary: Vec<Bytes> = client
        .copy_out("COPY t TO STDOUT (FORMAT binary)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(binary_copy_rows(&binary.concat()), 20_005);
    assert_eq!(
        client
            .query_one("SELECT 7::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    proxy.shutdown().await;
}

/// Big messages both ways at once (a result of 10 MB pipelined with a 4 MiB parameter, so
/// the proxy reads and writes both sides together); and a LISTEN (which pins) receiving a
/// NOTIFY from another client while idle between transactions, with a notice on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_moves_big_messages_both_ways_and_receives_notifications() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 2")).await;
    let client = proxy.connect().await;
    let big = "x".repeat(4 << 20);
    let big_param: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&big, Type::TEXT)];
    let (many, echo) = tokio::join!(
        client.query_typed(
            "SELECT repeat('y', 1000) FROM generate_series(1, 10000)",
            &[]
        ),
        client.query_typed("SELECT length($1::text)", &big_param),
    );
    let many = many.unwrap();
    assert_eq!(many.len(), 10_000);
    assert!(many.iter().all(|row| row.get::<_, &str>(0).len() == 1000));
    assert_eq!(echo.unwrap()[0].get::<_, i32>(0), 4 << 20);

    let (listener, mut connection) = proxy.config().connect(NoTls).await.unwrap();
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            let _ = heard.send(match message {
                AsyncMessage::Notification(n) => format!("{}: {}", n.channel(), n.payload()),
                AsyncMessage::Notice(n) => format!("notice: {}", n.message()),
                _ => "other".to_owned(),
            });
        }
    });
    listener
        .batch_execute("LISTEN news; DO $$BEGIN RAISE NOTICE 'listening'; END$$")
        .await
        .unwrap();
    assert_eq!(hearing.recv().await.as_deref(), Some("notice: listening"));
    assert_eq!(
        pool_row(&proxy).await["sv_active"],
        "1",
        "LISTEN pins its client"
    );
    let speaker = proxy.connect().await;
    for text in ["first", "second"] {
        speaker
            .batch_execute(&format!("NOTIFY news, '{text}'"))
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), hearing.recv())
            .await
            .expect("the idle listener hears the notification");
        assert_eq!(heard.as_deref(), Some(format!("news: {text}").as_str()));
    }
    proxy.shutdown().await;
}

/// Rows in a binary COPY stream (PostgreSQL's format: a signature, flags, an extension
/// area, tuples of length-prefixed fields, a -1 trailer); panics if it is malformed.
fn binary_copy_rows(bytes: &[u8]) -> usize {
    assert!(
        bytes.starts_with(b"PGCOPY\n\xff\r\n\0"),
        "no binary COPY signature"
    );
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let i16_at = |at: usize| i16::from_be_bytes(bytes[at..at + 2].try_into().unwrap());
    let mut at = 11 + 4;
    at += 4 + u32_at(at) as usize;
    let mut rows = 0;
    loop {
        let fields = i16_at(at);
        at += 2;
        if fields == -1 {
            assert_eq!(at, bytes.len(), "bytes after the trailer");
            return rows;
        }
        for _ in 0..fields {
            let len = u32_at(at) as i32;
            at += 4 + len.max(0) as usize;
        }
        rows += 1;
    }
}

/// A cancel through the proxy reaches the query its client is running (SQLSTATE 57014,
/// within seconds), and a cancel from a client that holds no server reaches nobody: on a
/// pool of one server, that client's last server is the one now running another client's
/// query, which goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query_and_nothing_else() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    let idle = proxy.connect().await;
    let server_pid = value(&idle, "SELECT pg_backend_pid()").await;

    let sleeper = proxy.connect().await;
    let token = sleeper.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move {
        let result = sleeper.simple_query("SELECT pg_sleep(30)").await;
        (sleeper, result)
    });
    let admin = proxy.cluster.admin();
    wait_until("the sleep is running on the server", || async {
        admin
            .query_i64(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {server_pid} \
                 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
            ))
            .await
            .unwrap()
            == 1
    })
    .await;

    idle.cancel_token().cancel_query(NoTls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sleeping.is_finished(),
        "a cancel from a client holding no server stopped another client's query"
    );

    token.cancel_query(NoTls).await.unwrap();
    let (sleeper, result) = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("the cancelled query ends within 5 s")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
    // Both clients go on, on the same server.
    assert_eq!(value(&sleeper, "SELECT pg_backend_pid()").await, server_pid);
    assert_eq!(value(&idle, "SELECT 'fine'").await, "fine");
    proxy.shutdown().await;
}

// ---- the admin console ----

/// SHOW POOLS and SHOW STATS: PgBouncer 1.18's columns, in its order (and the installed
/// PgBouncer's, when there is one); plausible values: clients, servers in and out of a
/// transaction as pg_stat_activity sees them, exact transaction and query counts. A user
/// who is neither admin nor stats user is refused by name; a stats user may SHOW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_shows_pgbouncer_columns_and_counts_to_its_users_only() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 2")).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    value(&a, "SELECT 1").await;

    let admin = proxy.admin().await;
    let pools_columns = columns(&admin, "SHOW POOLS").await;
    let stats_columns = columns(&admin, "SHOW STATS").await;
    assert_eq!(
        pools_columns,
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode"
        ]
    );
    assert_eq!(
        stats_columns,
        [
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time"
        ]
    );
    if pg_harness::pgbouncer::pgbouncer_path().is_ok() {
        let bouncer = pg_harness::PgBouncer::start(&proxy.cluster, "transaction", 2)
            .expect("PgBouncer starts");
        let theirs = connect(&bouncer.admin_url().parse().unwrap())
            .await
            .expect("PgBouncer's console");
        assert_eq!(pools_columns, columns(&theirs, "SHOW POOLS").await);
        assert_eq!(stats_columns, columns(&theirs, "SHOW STATS").await);
    }

    // Two clients, between transactions: no server lent; then one inside a transaction.
    let pool = pool_row(&proxy).await;
    assert_eq!(
        (pool["cl_active"].as_str(), pool["cl_waiting"].as_str()),
        ("2", "0")
    );
    assert_eq!(pool["sv_active"], "0", "{pool:?}");
    assert_eq!(pool["pool_mode"], "transaction");
    b.batch_execute("BEGIN").await.unwrap();
    let pool = pool_row(&proxy).await;
    assert_eq!(pool["sv_active"], "1", "{pool:?}");
    let servers: i64 = ["sv_active", "sv_idle", "sv_tested", "sv_login"]
        .iter()
        .map(|c| pool[*c].parse::<i64>().unwrap())
        .sum();
    assert_eq!(servers, proxy.server_backends().await, "{pool:?}");
    b.batch_execute("COMMIT").await.unwrap();

    // Exact counts: five one-query transactions, then one of three queries.
    let before = proxy.stats_of("pool_test").await;
    for _ in 0..5 {
        value(&a, "SELECT 1").await;
    }
    for sql in ["BEGIN", "SELECT 1", "COMMIT"] {
        a.batch_execute(sql).await.unwrap();
    }
    let after = proxy.stats_of("pool_test").await;
    let grew = |column: &str| {
        after[column].parse::<u64>().unwrap() - before[column].parse::<u64>().unwrap()
    };
    assert_eq!(grew("total_xact_count"), 6, "{before:?} → {after:?}");
    assert_eq!(grew("total_query_count"), 8, "{before:?} → {after:?}");
    assert!(grew("total_received") > 8 * 5, "{before:?} → {after:?}");
    assert!(grew("total_sent") > 8 * 5, "{before:?} → {after:?}");
    assert!(grew("total_query_time") > 0, "{before:?} → {after:?}");
    assert!(
        grew("total_xact_time") >= grew("total_query_time") / 2,
        "{before:?} → {after:?}"
    );

    // Who may use the console.
    let refused = connect(&proxy.config_as(USER.0, USER.1, "pgbouncer"))
        .await
        .expect_err("the test user is no admin");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"), "{refused}");
    let message = refused.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("\"pool_test\"") && message.contains("admin console"),
        "{message}"
    );
    let (stats_user, stats_password) = common::STATS;
    let stats = connect(&proxy.config_as(stats_user, stats_password, "pgbouncer"))
        .await
        .expect("a stats user may use the console");
    assert_eq!(rows(&stats, "SHOW POOLS").await.len(), 1);
    assert_eq!(rows(&stats, "SHOW STATS").await[0]["database"], "pool_test");

    // A console client holds no transaction: a shutdown lets it go at once, saying why.
    let (console, connection) = proxy
        .config_as(stats_user, stats_password, "pgbouncer")
        .connect(NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    assert_eq!(rows(&console, "SHOW VERSION").await.len(), 1);
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "admin console clients held the shutdown for {:?}",
        started.elapsed()
    );
    let goodbye = connection.await.unwrap().expect_err("told to go");
    assert_eq!(sqlstate(&goodbye).as_deref(), Some("57P01"), "{goodbye}");
    drop((admin, stats));
}

// ---- protocol abuse and limits ----

/// A startup packet over 10,000 bytes gets an ErrorResponse and a disconnect at once; a
/// length that lies (100 bytes promised, 10 sent) gets one after client_login_timeout
/// (1 s) and a disconnect; an unknown database gets 3D000; with max_client_conn = 2 a
/// third client gets 53300 at once, and a place freed is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startups_an_unknown_database_and_a_full_proxy_are_answered() {
    let proxy = TestProxy::start(
        Setup::default()
            .settings("client_login_timeout = 1")
            .settings("max_client_conn = 2"),
    )
    .await;

    let mut oversized = TcpStream::connect(proxy.addr).await.unwrap();
    let mut packet = 20_000u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&wire::PROTOCOL_3_0.to_be_bytes());
    packet.extend_from_slice(b"user\0pool_test\0");
    oversized.write_all(&packet).await.unwrap();
    let started = Instant::now();
    match wire::next_reply(&mut oversized, Duration::from_secs(5)).await {
        Reply::Error { code, message, .. } => {
            assert_eq!(code, "08P01");
            assert!(message.contains("startup packet"), "{message}");
        }
        other => panic!("an oversized startup packet got {other:?}"),
    }
    assert!(matches!(
        wire::next_reply(&mut oversized, Duration::from_secs(5)).await,
        Reply::Closed
    ));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not at once"
    );

    let mut liar = TcpStream::connect(proxy.addr).await.unwrap();
    let mut packet = 100u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&wire::PROTOCOL_3_0.to_be_bytes());
    packet.extend_from_slice(b"us");
    liar.write_all(&packet).await.unwrap();
    let started = Instant::now();
    match wire::next_reply(&mut liar, Duration::from_secs(5)).await {
        Reply::Error { code, message, .. } => {
            assert_eq!(code, "08P01");
            assert!(message.contains("client_login_timeout"), "{message}");
        }
        other => panic!("a lying length got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(800) && waited < Duration::from_secs(4),
        "dropped after {waited:?}, not client_login_timeout (1 s)"
    );
    assert!(matches!(
        wire::next_reply(&mut liar, Duration::from_secs(5)).await,
        Reply::Closed
    ));

    let unknown = connect(&proxy.config_as(USER.0, USER.1, "no_such_db"))
        .await
        .expect_err("no such database");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("3D000"), "{unknown}");
    assert_eq!(
        unknown.as_db_error().unwrap().message(),
        "database \"no_such_db\" does not exist"
    );

    // The refused connections' places come back as their tasks end.
    let first = connect_while_full(&proxy).await;
    let second = connect_while_full(&proxy).await;
    let started = Instant::now();
    let full = connect(&proxy.config())
        .await
        .expect_err("the proxy is full");
    assert_eq!(sqlstate(&full).as_deref(), Some("53300"), "{full}");
    assert!(
        full.as_db_error()
            .unwrap()
            .message()
            .contains("too many clients"),
        "{full}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "not at once");
    assert_eq!(value(&first, "SELECT 1").await, "1");
    drop(second);
    let third = connect_while_full(&proxy).await;
    assert_eq!(value(&third, "SELECT 2").await, "2");
    drop(first);
    proxy.shutdown().await;
}

/// A client, retrying for up to 2 s while the proxy is full (a place is freed when the
/// task of a client that left ends, just after its socket closes).
async fn connect_while_full(proxy: &TestProxy) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match connect(&proxy.config()).await {
            Ok(client) => return client,
            Err(e) if sqlstate(&e).as_deref() == Some("53300") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

// ---- session state ----

/// On a pool of one server: a SET outside a transaction pins its client (its server stays
/// lent while it idles between transactions, and the setting holds in each of them); the
/// next client gets the same server, reset: it does not see the setting. In session pool
/// mode the setting holds across the client's transactions (a named statement too) and the
/// next client does not see it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_pinned_or_kept_for_its_client_and_never_seen_by_the_next() {
    let proxy = TestProxy::start(Setup {
        databases: Some(
            "pool_test = { url = \"{url}\", pool_size = 1 }\n\
                 sessions = { url = \"{url}\", pool_size = 1, pool_mode = \"session\" }"
                .to_owned(),
        ),
        ..Setup::default()
    })
    .await;

    let first = proxy.connect().await;
    let pid = value(&first, "SELECT pg_backend_pid()").await;
    let pool = pool_row(&proxy).await;
    assert_eq!(
        (pool["sv_active"].as_str(), pool["sv_idle"].as_str()),
        ("0", "1")
    );
    first
        .simple_query("SET statement_timeout = '1234ms'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(value(&first, "SHOW statement_timeout").await, "1234ms");
        assert_eq!(value(&first, "SELECT pg_backend_pid()").await, pid);
        let pool = pool_row(&proxy).await;
        assert_eq!(
            (pool["sv_active"].as_str(), pool["sv_idle"].as_str()),
            ("1", "0"),
            "the pinned client keeps its server between transactions"
        );
    }
    drop(first);
    let next = proxy.connect().await;
    assert_eq!(value(&next, "SHOW statement_timeout").await, "0");
    assert_eq!(
        value(&next, "SELECT pg_backend_pid()").await,
        pid,
        "the same server, reset"
    );
    drop(next);

    let session_config = proxy.config_as(USER.0, USER.1, "sessions");
    let first = connect(&session_config).await.unwrap();
    first
        .simple_query("SET statement_timeout = '4321ms'")
        .await
        .unwrap();
    let statement = first.prepare("SELECT $1::int * 2").await.unwrap();
    let pid = value(&first, "SELECT pg_backend_pid()").await;
    for i in 0..3i32 {
        first.batch_execute("BEGIN").await.unwrap();
        assert_eq!(value(&first, "SHOW statement_timeout").await, "4321ms");
        first.batch_execute("COMMIT").await.unwrap();
        let row = first.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    let sessions = proxy
        .show("POOLS")
        .await
        .into_iter()
        .find(|row| row["database"] == "sessions")
        .unwrap();
    assert_eq!(sessions["pool_mode"], "session");
    assert_eq!(sessions["sv_active"], "1", "{sessions:?}");
    drop(first);
    let next = connect(&session_config).await.unwrap();
    assert_eq!(value(&next, "SHOW statement_timeout").await, "0");
    assert_eq!(value(&next, "SELECT pg_backend_pid()").await, pid);
    let prepared = value(&next, "SELECT count(*) FROM pg_prepared_statements").await;
    assert_eq!(prepared, "0", "the last client's statement is gone");
    proxy.shutdown().await;
}

/// With session_state = "refuse": a SET outside a transaction is refused with 0A000 and
/// the client let go; the next client (same server) does not see the setting. SET LOCAL
/// inside a transaction is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_refused_leaves_the_next_client_clean() {
    let proxy = TestProxy::start(
        Setup::default()
            .settings("default_pool_size = 1")
            .settings("session_state = \"refuse\""),
    )
    .await;
    let client = proxy.connect().await;
    client
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '5s'")
        .await
        .unwrap();
    assert_eq!(value(&client, "SHOW statement_timeout").await, "5s");
    client.batch_execute("COMMIT").await.unwrap();
    let pid = value(&client, "SELECT pg_backend_pid()").await;

    let refused = client
        .simple_query("SET statement_timeout = '1234ms'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("0A000"), "{refused}");
    let message = refused.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("SET"), "{message}");
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a refused client is let go"
    );

    let next = proxy.connect().await;
    assert_eq!(value(&next, "SHOW statement_timeout").await, "0");
    assert_eq!(value(&next, "SELECT pg_backend_pid()").await, pid);
    proxy.shutdown().await;
}

// ---- startup parameters ----

/// On a pool of one server, two psql sessions with different application_name, TimeZone
/// and DateStyle (PGAPPNAME, PGTZ, PGDATESTYLE: startup parameters) and a tokio-postgres
/// client with only an application_name take turns on the same server; each sees its own
/// values in every transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_each_client_across_a_shared_server() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    let query = "SELECT current_setting('application_name'), current_setting('TimeZone'), \
                 current_setting('DateStyle'), pg_backend_pid(), \
                 extract(epoch FROM clock_timestamp());";
    let session = |app: &str, tz: &str, datestyle: &str| {
        let mut psql = proxy.psql();
        psql.args(["-q", "-A", "-t"]);
        for _ in 0..6 {
            // `\!` pauses psql between transactions without holding a server.
            psql.args(["-c", query, "-c", "\\! sleep 0.1"]);
        }
        psql.env("PGAPPNAME", app)
            .env("PGTZ", tz)
            .env("PGDATESTYLE", datestyle);
        run(psql)
    };
    // Quotes and backslashes must survive the proxy's SET; PostgreSQL itself turns
    // non-ASCII into `?`, as a direct connection shows.
    let app = "third's \\ café";
    let mut direct = proxy.cluster.config();
    direct.application_name(app);
    let expected_app = value(&connect(&direct).await.unwrap(), "SHOW application_name").await;
    assert_eq!(expected_app, "third's \\ caf??");
    let mut third_config = proxy.config();
    third_config.application_name(app);
    let other = async { connect(&third_config).await.unwrap() };
    let (ann, bob, third) = tokio::join!(
        session("ann", "America/New_York", "SQL, DMY"),
        session("bob", "Asia/Tokyo", "German, DMY"),
        async {
            let client = other.await;
            let mut seen = Vec::new();
            for _ in 0..10 {
                let row = rows(
                    &client,
                    "SELECT current_setting('application_name') AS app, \
                     current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds",
                )
                .await;
                seen.push(row[0].clone());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        }
    );
    let defaults = value(
        &proxy.direct().await,
        "SELECT current_setting('TimeZone') || ' ' || current_setting('DateStyle')",
    )
    .await;
    let mut pids = Vec::new();
    let mut spans = Vec::new();
    for (out, expected) in [
        (ann, ["ann", "America/New_York", "SQL, DMY"]),
        (bob, ["bob", "Asia/Tokyo", "German, DMY"]),
    ] {
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('|').collect()).collect();
        assert_eq!(lines.len(), 6, "{stdout}");
        for line in &lines {
            assert_eq!(line[..3], expected, "{stdout}");
            pids.push(line[3].to_owned());
        }
        let times: Vec<f64> = lines.iter().map(|l| l[4].parse().unwrap()).collect();
        spans.push((times[0], times[5]));
    }
    for row in &third {
        assert_eq!(row["app"], expected_app);
        assert_eq!(
            format!("{} {}", row["tz"], row["ds"]),
            defaults,
            "the server's defaults, not another client's"
        );
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 1, "one server for all: {pids:?}");
    let [(ann_from, ann_to), (bob_from, bob_to)] = spans[..] else {
        unreachable!()
    };
    assert!(
        ann_from < bob_to && bob_from < ann_to,
        "the two sessions' transactions interleaved: {spans:?}"
    );
    proxy.shutdown().await;
}

/// A parameter the server reports (ParameterStatus) changed where no pin sees it
/// (`set_config(..., false)` in a SELECT, as Django sets its TimeZone; a `SET` inside a
/// transaction block that commits later), or by a plain `SET` of it alone, follows its
/// client to its next transactions and never reaches another client of the same server; a
/// `SET LOCAL`, or a `SET` rolled back, leaves nothing behind. Neither client is pinned:
/// they share one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_parameters_changed_in_a_transaction_follow_their_client_only() {
    let proxy = one_server_shared().await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let show = "SELECT current_setting('TimeZone') || '|' || current_setting('DateStyle') \
                || '|' || current_setting('IntervalStyle') || '|' \
                || current_setting('application_name') || '|' || pg_backend_pid()";
    let without_pid = |seen: String| seen.rsplit_once('|').unwrap().0.to_owned();
    let first = value(&b, show).await;
    let (defaults, pid) = first.rsplit_once('|').unwrap();
    let defaults = defaults.to_owned();
    assert!(!defaults.contains("America/New_York") && !defaults.contains("client a"));

    value(
        &a,
        "SELECT set_config('TimeZone', 'America/New_York', false)",
    )
    .await;
    // A plain SET of a followed parameter, outside a transaction: followed, not pinned.
    a.batch_execute("SET application_name = 'client a'")
        .await
        .unwrap();
    // Each its own request, as a driver sends them (in one request with its COMMIT, a SET
    // is seen, and pins).
    for transaction in [
        ["BEGIN", "SET DateStyle = 'German, DMY'", "COMMIT"],
        ["BEGIN", "SET LOCAL TimeZone = 'Asia/Tokyo'", "COMMIT"],
        ["BEGIN", "SET IntervalStyle = 'iso_8601'", "ROLLBACK"],
    ] {
        for sql in transaction {
            a.batch_execute(sql).await.unwrap();
        }
    }
    let mut expected_a: Vec<&str> = defaults.split('|').collect();
    expected_a[0] = "America/New_York";
    expected_a[1] = "German, DMY";
    expected_a[3] = "client a";
    let expected_a = expected_a.join("|");
    for _ in 0..3 {
        let seen_b = value(&b, show).await;
        assert_eq!(
            without_pid(seen_b.clone()),
            defaults,
            "another client's values leaked"
        );
        assert!(
            seen_b.ends_with(&format!("|{pid}")),
            "one shared server: {seen_b}"
        );
        let seen_a = value(&a, show).await;
        assert_eq!(
            without_pid(seen_a),
            expected_a,
            "its own values followed it"
        );
    }
    // Back to the defaults with a DISCARD ALL of its own: followed too.
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(without_pid(value(&a, show).await), defaults);
    assert_eq!(without_pid(value(&b, show).await), defaults);
    proxy.shutdown().await;
}

/// A client's own `DISCARD ALL` (as .NET's Npgsql sends when its pool takes a
/// connection back) puts its session back to its startup values, as PostgreSQL does: its
/// startup `application_name` again, its `SET TimeZone` gone. The server's record of
/// what the proxy set on it is gone too, so the next client asking for the same startup
/// value gets it set again rather than the server's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_discard_all_goes_back_to_its_startup_values() {
    let proxy = one_server_shared().await;
    let show = "SELECT current_setting('application_name') || '|' \
                || current_setting('TimeZone')";
    let script = ["SET TimeZone = 'Asia/Tokyo'", "DISCARD ALL"];
    let mut direct_config = proxy.cluster.config();
    direct_config.application_name("app_a");
    let direct = connect(&direct_config).await.unwrap();
    for sql in script {
        direct.batch_execute(sql).await.unwrap();
    }
    let expected = value(&direct, show).await;
    assert!(expected.starts_with("app_a|"), "{expected}");

    let mut config = proxy.config();
    config.application_name("app_a");
    let a = connect(&config).await.unwrap();
    let c = connect(&config).await.unwrap();
    for sql in script {
        a.batch_execute(sql).await.unwrap();
    }
    assert_eq!(value(&a, show).await, expected, "as PostgreSQL");
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        value(&c, show).await,
        expected,
        "set again for the next client"
    );
    assert_eq!(value(&a, show).await, expected);
    proxy.shutdown().await;
}

// ---- helpers ----

/// A proxy with one server, whose clients wait for it at most 10 s: a client pinned by
/// mistake fails the next one's query instead of hanging the test.
async fn one_server_shared() -> TestProxy {
    TestProxy::start(Setup::default().settings("default_pool_size = 1\nquery_wait_timeout = 10"))
        .await
}

/// Runs a client program off the runtime's threads (the proxy runs on them).
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("the program runs"))
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// SHOW POOLS's row for `pool_test`.
async fn pool_row(proxy: &TestProxy) -> BTreeMap<String, String> {
    proxy
        .show("POOLS")
        .await
        .into_iter()
        .find(|row| row["database"] == "pool_test")
        .expect("a pool_test pool")
}

/// Polls `check` every 20 ms for up to 10 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A startup setting the server refuses (PGTZ=Bogus/Zone) is that client's error, with the
/// server's own SQLSTATE and words, as PostgreSQL would refuse the login; the server is
/// not harmed: the next client gets the same backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_setting_the_server_refuses_is_the_clients_error_and_spares_the_server() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    let before = value(&proxy.connect().await, "SELECT pg_backend_pid()").await;
    let mut psql = proxy.psql();
    psql.args(["-c", "SELECT 1"]).env("PGTZ", "Bogus/Zone");
    let out = run(psql).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid value for parameter \"TimeZone\": \"Bogus/Zone\""),
        "{stderr}"
    );
    let after = value(&proxy.connect().await, "SELECT pg_backend_pid()").await;
    assert_eq!(after, before, "the server was kept");
    proxy.shutdown().await;
}
