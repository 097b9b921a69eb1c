//! Named prepared statements through transaction pooling (`max_prepared_statements`),
//! against a real PostgreSQL: a client's statements work on whichever server its
//! transaction lands on, without pinning, and every answer is the one PostgreSQL gives a
//! client connected to it directly.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::wire::RawClient;
use common::{rows, sqlstate, value, Setup, TestProxy};
use pg_harness::PgOptions;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use tokio_postgres::Client;

/// A proxy in front of a cluster that trusts loopback (so a hand-written client needs no
/// SCRAM), with these settings.
async fn proxy_with(settings: &str) -> TestProxy {
    let pg = PgOptions {
        hba: vec!["host all all 127.0.0.1/32 trust".into()],
        ..PgOptions::default()
    };
    TestProxy::start(
        Setup {
            pg,
            ..Setup::default()
        }
        .settings("auth_type = \"trust\"")
        .settings(settings),
    )
    .await
}

/// `pool_proxy_statements_prepared_total` for the test route.
async fn prepared_on_servers(proxy: &TestProxy) -> f64 {
    common::metric(
        proxy,
        "pool_proxy_statements_prepared_total",
        &[("database", "pool_test")],
    )
    .await
}

async fn pid(client: &Client) -> String {
    value(client, "SELECT pg_backend_pid()").await
}

/// Pool of 2. Client A's statement is prepared on one server; a second client then holds
/// that server, so A's next transaction lands on the other, which has never seen the
/// statement: it is prepared there unseen, and A's pid changes (a pinned client could
/// not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_in_one_transaction_runs_in_the_next_on_another_server() {
    let proxy = proxy_with("default_pool_size = 2\nmetrics_addr = \"127.0.0.1:0\"").await;
    let (b, c) = (proxy.connect().await, proxy.connect().await);
    let a = proxy.connect().await;
    // B and C hold both servers; C lets go of its own, and A prepares there.
    b.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let (b_pid, c_pid) = (pid(&b).await, pid(&c).await);
    assert_ne!(b_pid, c_pid);
    c.batch_execute("COMMIT").await.unwrap();
    let statement = a.prepare("SELECT $1::int * 10").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        a.query_one(&statement, &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        10
    );
    assert_eq!(
        pid(&a).await,
        c_pid,
        "A's first transaction ran where C's had"
    );
    a.batch_execute("COMMIT").await.unwrap();
    // C takes that server back; B lets go of the other: A's next transaction goes there.
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(pid(&c).await, c_pid);
    b.batch_execute("COMMIT").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        pid(&a).await,
        b_pid,
        "A's next transaction is on the other server"
    );
    assert_eq!(
        a.query_one(&statement, &[&7i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        70,
        "the statement runs on a server it was never prepared on by the client"
    );
    a.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // And outside a transaction, many times, wherever it lands.
    for i in 0..20i32 {
        let row = a.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 10);
    }
    assert_eq!(
        prepared_on_servers(&proxy).await,
        2.0,
        "prepared once on each server, then reused"
    );
    proxy.shutdown().await;
}

/// Two clients, one server (pool of 1), the same statement names (tokio-postgres names
/// each client's first statement `s0`) for different statements: each client always runs
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_name_for_different_statements_from_two_clients_never_mixes_them_up() {
    let proxy = proxy_with("default_pool_size = 1").await;
    let (a, b) = (proxy.connect().await, proxy.connect().await);
    a.batch_execute("CREATE TABLE IF NOT EXISTS mixed (who text)")
        .await
        .unwrap();
    let insert = a
        .prepare("INSERT INTO mixed VALUES ($1::text) RETURNING who")
        .await
        .unwrap();
    let select = b.prepare("SELECT $1::text || ' selected'").await.unwrap();
    for i in 0..10 {
        let row = a.query_one(&insert, &[&format!("a{i}")]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("a{i}"));
        let row = b.query_one(&select, &[&format!("b{i}")]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("b{i} selected"));
    }
    assert_eq!(pid(&a).await, pid(&b).await, "one server for both");
    let direct = proxy.direct().await;
    assert_eq!(
        value(&direct, "SELECT count(*) FROM mixed WHERE who LIKE 'a%'").await,
        "10"
    );
    assert_eq!(value(&direct, "SELECT count(*) FROM mixed").await, "10");
    proxy.shutdown().await;
}

// ---- by hand: pipelines, errors, Close, and the same answers as PostgreSQL's ----

fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::parse(name, sql, types.iter().copied(), &mut b).unwrap();
    b.to_vec()
}

fn bind(statement: &str, params: &[&str]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::bind(
        "",
        statement,
        None::<i16>,
        params.iter().copied(),
        |p: &str, buf: &mut BytesMut| {
            buf.extend_from_slice(p.as_bytes());
            Ok(IsNull::No)
        },
        None::<i16>,
        &mut b,
    )
    .map_err(|_| ())
    .unwrap();
    b.to_vec()
}

fn execute() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::execute("", 0, &mut b).unwrap();
    b.to_vec()
}

fn describe(name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::describe(b'S', name, &mut b).unwrap();
    b.to_vec()
}

fn close(name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::close(b'S', name, &mut b).unwrap();
    b.to_vec()
}

fn sync() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::sync(&mut b);
    b.to_vec()
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::query(sql, &mut b).unwrap();
    b.to_vec()
}

/// Requests that exercise the hard cases, each answered up to its ReadyForQuery (an empty
/// one reads the next answer to a pipeline).
fn script() -> Vec<Vec<u8>> {
    vec![
        // Parse, Bind, Execute pipelined with one Sync.
        [
            parse("p1", "SELECT $1::int * 3", &[23]),
            bind("p1", &["5"]),
            execute(),
            sync(),
        ]
        .concat(),
        // Reused in the next transaction, with a Describe.
        [describe("p1"), bind("p1", &["6"]), execute(), sync()].concat(),
        // An error after a Parse: the Parse stands, the Bind fails (no parameter given).
        [
            parse("p2", "SELECT $1::int", &[23]),
            bind("p2", &[]),
            execute(),
            sync(),
        ]
        .concat(),
        [bind("p2", &["42"]), execute(), sync()].concat(),
        // A Parse that fails defines nothing; the error names the client's statement.
        [
            parse("p3", "SELEC 1", &[]),
            bind("p3", &[]),
            execute(),
            sync(),
        ]
        .concat(),
        [bind("p3", &[]), execute(), sync()].concat(),
        // A name defined twice.
        [parse("p1", "SELECT 2", &[]), sync()].concat(),
        // An error early in a batch: the Parse and Close after it never happen.
        [
            parse("", "SELECT 1/0", &[]),
            bind("", &[]),
            execute(),
            parse("p4", "SELECT 4", &[]),
            close("p1"),
            sync(),
        ]
        .concat(),
        [
            bind("p4", &[]),
            execute(),
            bind("p1", &["1"]),
            execute(),
            sync(),
        ]
        .concat(),
        // Close, then use: gone for this client.
        [close("p1"), sync()].concat(),
        [bind("p1", &["1"]), execute(), sync()].concat(),
        // The same text again under a new name: works (the server may still have it).
        [
            parse("p5", "SELECT $1::int * 3", &[23]),
            bind("p5", &["7"]),
            execute(),
            sync(),
        ]
        .concat(),
        // Inside a transaction that fails and is rolled back: statements survive.
        query("BEGIN"),
        [
            parse("p6", "SELECT 6", &[]),
            bind("p6", &[]),
            execute(),
            sync(),
        ]
        .concat(),
        query("SELECT 1/0"),
        query("ROLLBACK"),
        [bind("p6", &[]), execute(), sync()].concat(),
        // SQL DEALLOCATE of a protocol-level statement (PHP's PDO, Rails, psycopg with an
        // older libpq): between transactions, in PostgreSQL's spellings, and then gone.
        [parse("p7", "SELECT 7", &[]), sync()].concat(),
        query("DEALLOCATE p7"),
        [bind("p7", &[]), execute(), sync()].concat(),
        [parse("P8", "SELECT 8", &[]), sync()].concat(),
        query("deallocate prepare \"P8\" ;"),
        [bind("P8", &[]), execute(), sync()].concat(),
        query("DEALLOCATE nosuch"),
        // Inside a transaction, and pipelined behind a query still running; then in a
        // failed transaction, where it is refused and the statement stays.
        query("BEGIN"),
        [parse("p9", "SELECT 9", &[]), sync()].concat(),
        [query("SELECT pg_sleep(0.01)"), query("DEALLOCATE p9")].concat(),
        Vec::new(),
        query("SELECT 1/0"),
        query("DEALLOCATE p6"),
        query("ROLLBACK"),
        [
            bind("p6", &[]),
            execute(),
            bind("p9", &[]),
            execute(),
            sync(),
        ]
        .concat(),
        // DEALLOCATE ALL: every statement of the client is gone.
        query("DEALLOCATE ALL"),
        [bind("p5", &["1"]), execute(), sync()].concat(),
    ]
}

async fn transcript(client: &mut RawClient) -> Vec<String> {
    let mut out = Vec::new();
    for (i, request) in script().iter().enumerate() {
        client.send(request).await;
        let replies = client.until_ready().await;
        out.push(format!("{i}: {replies:?}"));
    }
    out
}

/// The script's answers through the proxy (pool of 2, so requests move between servers)
/// equal PostgreSQL's to a direct client, message for message and error for error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_pipelines_and_errors_are_answered_as_postgresql_answers_them() {
    let proxy = proxy_with("default_pool_size = 2").await;
    let user = common::USER.0;
    let mut direct = RawClient::login(
        format!("127.0.0.1:{}", proxy.cluster.port())
            .parse()
            .unwrap(),
        user,
        "pool_test",
    )
    .await;
    let expected = transcript(&mut direct).await;
    // A second client keeps moving a server in and out, so the script's requests land on
    // both servers.
    let other = proxy.connect().await;
    let mover = tokio::spawn(async move {
        for _ in 0..200 {
            if other.batch_execute("SELECT pg_sleep(0.002)").await.is_err() {
                break;
            }
        }
    });
    let mut proxied = RawClient::login(proxy.addr, user, "pool_test").await;
    let got = transcript(&mut proxied).await;
    mover.abort();
    for (want, got) in expected.iter().zip(&got) {
        assert_eq!(got, want);
    }
    assert_eq!(got.len(), expected.len());
    assert!(
        !expected.join("\n").contains("pool_proxy_"),
        "sanity: PostgreSQL never saw the proxy's names"
    );
    proxy.shutdown().await;
}

/// `max_prepared_statements = 2`, pool of 1: five statements used in turn keep working,
/// and the server never holds more than two of the proxy's statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_server_bound_evicts_the_least_recently_used_statement() {
    let proxy = proxy_with(
        "default_pool_size = 1\nmax_prepared_statements = 2\nmetrics_addr = \"127.0.0.1:0\"",
    )
    .await;
    let client = proxy.connect().await;
    let mut statements = Vec::new();
    for k in 1..=5i32 {
        statements.push((
            k,
            client
                .prepare(&format!("SELECT $1::int + {k}"))
                .await
                .unwrap(),
        ));
    }
    for round in 0..3i32 {
        for (k, statement) in &statements {
            let row = client.query_one(statement, &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), round + k);
            let held: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pool_proxy_%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(held <= 2, "{held} statements on the server, bound 2");
        }
    }
    // Five statements in turn through room for two: each use after the first round
    // prepares its statement again, and the metric shows the churn.
    assert!(prepared_on_servers(&proxy).await >= 15.0);
    proxy.shutdown().await;
}

/// DDL changes a prepared query's result type: the next run fails with PostgreSQL's own
/// error (0A000, as without a pooler), and the statement prepared again then works,
/// since the stale one on the server is dropped (not kept for the same text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_stale_by_ddl_errors_once_then_the_statement_prepared_again_works() {
    let proxy = proxy_with("default_pool_size = 1").await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE grows (a int); INSERT INTO grows VALUES (1)")
        .await
        .unwrap();
    let statement = client.prepare("SELECT * FROM grows").await.unwrap();
    assert_eq!(client.query(&statement, &[]).await.unwrap().len(), 1);
    proxy
        .direct()
        .await
        .batch_execute("ALTER TABLE grows ADD COLUMN b int DEFAULT 2")
        .await
        .unwrap();
    let error = client.query(&statement, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("0A000"), "{error}");
    let again = client.prepare("SELECT * FROM grows").await.unwrap();
    let rows = client.query(&again, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(1), 2, "the new column is there");
    proxy.shutdown().await;
}

/// The server restarts between a prepare and its execution: the proxy's record of the
/// dead server goes with it, and the statement is prepared on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_survives_a_server_restart_between_prepare_and_execute() {
    let proxy = proxy_with("default_pool_size = 1").await;
    let client = proxy.connect().await;
    let statement = client.prepare("SELECT $1::int - 1").await.unwrap();
    let before = pid(&client).await;
    proxy.cluster.restart_fast_async().await.unwrap();
    let mut answered = None;
    // The proxy may lend the old (dead) server once before it notices; a client sees that
    // as one failed query, as it would with PostgreSQL itself restarting.
    for _ in 0..2 {
        match client.query_one(&statement, &[&5i32]).await {
            Ok(row) => {
                answered = Some(row.get::<_, i32>(0));
                break;
            }
            Err(e) => eprintln!("after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered, Some(4));
    assert_ne!(pid(&client).await, before, "a new server");
    proxy.shutdown().await;
}

/// pgbench -M prepared with fewer threads than clients (each thread's clients share a
/// blocking loop, so a pinned client waiting for a server would stall the others): every
/// transaction runs, none fails, over a pool smaller than the client count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_runs_on_a_small_pool_without_failures() {
    let proxy = proxy_with("default_pool_size = 3").await;
    let mut init = proxy.pgbench();
    init.args(["-i", "-s", "1", "-q", "pool_test"]);
    let out = tokio::task::spawn_blocking(move || init.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bench = proxy.pgbench();
    bench.args([
        "-n",
        "-S",
        "-M",
        "prepared",
        "-c",
        "8",
        "-j",
        "2",
        "-t",
        "50",
        "pool_test",
    ]);
    let out = tokio::task::spawn_blocking(move || bench.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of transactions actually processed: 400/400"),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{stdout}"
    );
    let pools = rows(&proxy.admin().await, "SHOW POOLS").await;
    assert_eq!(pools[0]["sv_active"], "0", "{pools:?}");
    proxy.shutdown().await;
}
