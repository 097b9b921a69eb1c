//! Faults through the real proxy to a real PostgreSQL: the server restarted under load,
//! backends terminated while idle and while active, clients killed mid-transaction, a
//! thousand clients on a pool of ten, an upstream `max_connections` below the pool size, a
//! wrong upstream password, `query_wait_timeout` and `idle_transaction_timeout`. Each test
//! ends with `pg_stat_activity` agreeing with `SHOW POOLS` once things settle.
//!
//! Clients use the simple protocol (tokio-postgres's `simple_query`): its `query` prepares
//! named statements, which pin a client to its server, and these tests are about servers
//! moving between clients. Figures (waits, recovery times) are printed; run with
//! `--nocapture` to see them.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, connect_watched, described, Setup, TestProxy};
use pg_harness::{Backends, PgCluster, PgOptions};
use tokio_postgres::{Client, Config, SimpleQueryMessage};

/// The test user's backends, as the harness's admin counts them.
fn test_user() -> Backends {
    Backends::user(common::USER.0)
}

/// The first column of the first row of a simple query (`None` for SQL NULL).
async fn one(client: &Client, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten())
}

/// `one`, for a query that must succeed and return a value.
async fn value(client: &Client, sql: &str) -> String {
    one(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// Servers the proxy holds, by `SHOW POOLS` (every pool: active, idle, tested, login).
async fn pool_servers(proxy: &TestProxy) -> i64 {
    proxy
        .show("POOLS")
        .await
        .iter()
        .map(|pool| {
            ["sv_active", "sv_idle", "sv_tested", "sv_login"]
                .iter()
                .map(|column| pool[*column].parse::<i64>().unwrap())
                .sum::<i64>()
        })
        .sum()
}

/// Waits (bounded) until `pg_stat_activity` and `SHOW POOLS` agree on the servers the
/// proxy holds, and returns that number.
async fn settle(proxy: &TestProxy) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = pool_servers(proxy).await;
        let seen = proxy.server_backends().await;
        if shown == seen {
            return seen;
        }
        if Instant::now() > deadline {
            panic!(
                "SHOW POOLS says {shown} servers, pg_stat_activity {seen}: {:?}",
                proxy.show("POOLS").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A superuser connection to the test database over the cluster's socket: it checks
/// what was committed without being one of the test user's backends.
async fn direct(cluster: &PgCluster) -> Client {
    let mut config = Config::new();
    config
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user(pg_harness::postgres::ADMIN_USER)
        .dbname(&cluster.options().database)
        .application_name(pg_harness::postgres::ADMIN_APPLICATION_NAME);
    connect(&config)
        .await
        .expect("a direct superuser connection")
}

/// The `pg_stat_activity.state` of a backend, `None` once it is gone.
async fn backend_state(cluster: &PgCluster, pid: &str) -> Option<String> {
    let client = cluster.admin().client().await.expect("admin connection");
    let rows = client
        .simple_query(&format!(
            "SELECT state FROM pg_stat_activity WHERE pid = {pid}"
        ))
        .await
        .expect("pg_stat_activity");
    rows.into_iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_owned()),
        _ => None,
    })
}

/// Polls until the backend's state is `want` (`None`: gone), bounded.
async fn wait_for_state(cluster: &PgCluster, pid: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = backend_state(cluster, pid).await;
        if state.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid}: state {state:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- PostgreSQL restarted under load ----

#[derive(Default)]
struct LoadLog {
    successes: Vec<Instant>,
    /// When, and the SQLSTATE (or the error's text) the client saw.
    errors: Vec<(Instant, String)>,
    /// Queries or connects with no answer within the bound.
    hangs: usize,
}

/// Runs `SELECT pg_sleep(0.02)` in a loop through the proxy until `stop`, reconnecting
/// after an error; every query and connect bounded by 10 s.
async fn load(config: Config, stop: Arc<AtomicBool>, log: Arc<Mutex<LoadLog>>) {
    const BOUND: Duration = Duration::from_secs(10);
    let record_error = |e: &tokio_postgres::Error| {
        let (code, message) = described(e);
        let what = code.unwrap_or(message);
        log.lock().unwrap().errors.push((Instant::now(), what));
    };
    while !stop.load(Relaxed) {
        let client = match tokio::time::timeout(BOUND, connect(&config)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                record_error(&e);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => {
                log.lock().unwrap().hangs += 1;
                continue;
            }
        };
        while !stop.load(Relaxed) {
            match tokio::time::timeout(BOUND, client.simple_query("SELECT pg_sleep(0.02)")).await {
                Ok(Ok(_)) => log.lock().unwrap().successes.push(Instant::now()),
                Ok(Err(e)) => {
                    record_error(&e);
                    break;
                }
                Err(_) => {
                    log.lock().unwrap().hangs += 1;
                    break;
                }
            }
        }
    }
}

/// PostgreSQL restarted (`pg_ctl restart -m fast`) while six clients run queries through
/// a pool of four: the clients whose queries were running get errors (the server's 57P01
/// or the proxy's 08006), none hangs, and every client, and a new one, is served again
/// within a few seconds of the server's return, by the same proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_errors_then_service_resumes() {
    const CLIENTS: usize = 6;
    let proxy = TestProxy::start(
        Setup::default().settings("default_pool_size = 4\nquery_wait_timeout = 20"),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<LoadLog>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let workers: Vec<_> = logs
        .iter()
        .map(|log| tokio::spawn(load(proxy.config(), stop.clone(), log.clone())))
        .collect();

    // Everyone is served before the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs
        .iter()
        .any(|log| log.lock().unwrap().successes.len() < 3)
    {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_began = Instant::now();
    proxy.cluster.restart_fast_async().await.expect("restart");
    let restarted = Instant::now();

    // A new client is served by the same proxy.
    let fresh = tokio::time::timeout(Duration::from_secs(15), async {
        let client = proxy.connect().await;
        value(&client, "SELECT 1").await
    })
    .await
    .expect("a new client is served within 15 s of the restart");
    assert_eq!(fresh, "1");
    let fresh_served = restarted.elapsed();

    // Every running client is served again.
    let deadline = restarted + Duration::from_secs(15);
    let recovered = loop {
        let firsts: Vec<Option<Instant>> = logs
            .iter()
            .map(|log| {
                let log = log.lock().unwrap();
                log.successes.iter().copied().find(|at| *at > restarted)
            })
            .collect();
        if let Some(last) = firsts.iter().copied().collect::<Option<Vec<_>>>() {
            break last.into_iter().max().unwrap() - restarted;
        }
        assert!(
            Instant::now() < deadline,
            "not every client was served again within 15 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Some more load on the recovered pool, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let mut errors = Vec::new();
    let mut hangs = 0;
    for log in &logs {
        let log = log.lock().unwrap();
        hangs += log.hangs;
        errors.extend(log.errors.iter().cloned());
    }
    let codes: Vec<&str> = errors.iter().map(|(_, code)| code.as_str()).collect();
    eprintln!(
        "restart: pg_ctl restart took {:?}; errors {codes:?}; a new client served {:?} after \
         it, every running client {:?} after it",
        restarted - restart_began,
        fresh_served,
        recovered
    );
    assert_eq!(hangs, 0, "a query or connect hung");
    assert!(
        !errors.is_empty(),
        "queries running at the restart must fail"
    );
    for (at, code) in &errors {
        assert!(
            ["57P01", "08006", "57P03"].contains(&code.as_str()),
            "an unexpected error {code:?}"
        );
        assert!(
            *at >= restart_began && *at <= restarted + Duration::from_secs(5),
            "an error outside the restart: {code} at {:?} after it began",
            *at - restart_began
        );
    }
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    let servers = settle(&proxy).await;
    assert!(servers <= 4, "{servers}");
    proxy.shutdown().await;
}

/// PostgreSQL stopped for longer than `query_wait_timeout` (2 s): a logged-in client's
/// query and a new route's first login are each told 57P03 at the timeout, naming the
/// refused connect, not left hanging; once PostgreSQL is started again both are served by
/// the same proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_past_query_wait_timeout_is_told_then_served_when_back() {
    let proxy = TestProxy::start(Setup {
        databases: Some("pool_test = \"{url}\"\nsecond = \"{url}\"".into()),
        ..Setup::default().settings("default_pool_size = 2\nquery_wait_timeout = 2")
    })
    .await;
    let client = proxy.connect().await;
    assert_eq!(value(&client, "SELECT 1").await, "1");
    proxy.cluster.stop_async().await.expect("stop");

    let asked = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1"))
        .await
        .expect("the client is answered")
        .expect_err("no server while PostgreSQL is down");
    let waited = asked.elapsed();
    let (code, message) = described(&error);
    eprintln!("postgres down: a query was told after {waited:?}: {message}");
    assert_eq!(code.as_deref(), Some("57P03"), "{message}");
    assert!(message.contains("last connect error"), "{message}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");

    let second = proxy.config_as(common::USER.0, common::USER.1, "second");
    let asked = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), connect(&second))
        .await
        .expect("the login is answered")
        .expect_err("no login to a new route while PostgreSQL is down");
    let waited = asked.elapsed();
    let (code, message) = described(&error);
    eprintln!("postgres down: a new route's login was told after {waited:?}: {message}");
    assert_eq!(code.as_deref(), Some("57P03"), "{message}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");

    proxy.cluster.start_again_async().await.expect("start");
    let back = Instant::now();
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    assert_eq!(
        value(
            &connect(&second).await.expect("login when back"),
            "SELECT 1"
        )
        .await,
        "1"
    );
    eprintln!(
        "postgres down: served again {:?} after the start",
        back.elapsed()
    );
    settle(&proxy).await;
    proxy.shutdown().await;
}

// ---- backends terminated ----

/// `pg_terminate_backend` of the proxy's idle server: the client's next transaction is
/// served, without an error, on a fresh server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_while_idle_is_replaced_without_an_error() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 2")).await;
    let client = proxy.connect().await;
    let before = value(&client, "SELECT pg_backend_pid()").await;
    let admin = proxy.cluster.admin();
    assert_eq!(admin.terminate(&test_user()).await.unwrap(), 1);
    admin
        .wait_for_count(&test_user(), 0, Duration::from_secs(5))
        .await
        .unwrap();

    let after = one(&client, "SELECT pg_backend_pid()")
        .await
        .expect("the next transaction is served without an error")
        .unwrap();
    assert_ne!(after, before, "a fresh server");
    // And again, and for a new client.
    assert_eq!(value(&client, "SELECT pg_backend_pid()").await, after);
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

/// A client running `pg_sleep(10)` when its backend is terminated gets an error at once
/// (the server's 57P01, or the proxy's 08006) and loses its connection; another client
/// running queries meanwhile sees nothing; the pool serves new clients after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_while_active_fails_only_its_client() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 3")).await;
    let victim = proxy.connect().await;
    let sleeping = tokio::spawn(async move {
        let result = victim.simple_query("SELECT pg_sleep(10)").await;
        (result.map(drop), victim)
    });
    let admin = proxy.cluster.admin();
    let find = "SELECT coalesce(max(pid), 0)::int8 FROM pg_stat_activity \
                WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'";
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        match admin.query_i64(find).await.unwrap() {
            0 => assert!(Instant::now() < deadline, "the sleep never started"),
            pid => break pid,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let stop = Arc::new(AtomicBool::new(false));
    let bystander = {
        let client = proxy.connect().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(Relaxed) {
                client
                    .simple_query("SELECT 1")
                    .await
                    .expect("another client is unaffected");
                served += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            served
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let terminated = Instant::now();
    admin
        .execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let (result, victim) = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("the victim is answered, not left hanging")
        .unwrap();
    let answered = terminated.elapsed();
    let error = result.expect_err("the victim's query fails");
    let (code, message) = described(&error);
    assert!(
        matches!(code.as_deref(), Some("57P01" | "08006")),
        "{code:?} {message}"
    );
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    // Its connection is gone: the proxy closed it after telling it why.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !victim.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the victim's connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Relaxed);
    let served = bystander.await.expect("the bystander saw no error");
    assert!(served > 5, "{served}");
    eprintln!("terminate active: the victim was answered in {answered:?} with {code:?}");

    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    settle(&proxy).await;
    proxy.shutdown().await;
}

/// A backend terminated while its client sits inside a transaction (holding the server,
/// nothing in flight): the client is told at once (the server's 57P01, forwarded), its
/// connection ends, and the pool serves the next client on a fresh server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_under_an_idle_transaction_tells_its_client() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    let mut inside = connect_watched(&proxy.config()).await;
    inside.client.batch_execute("BEGIN").await.unwrap();
    let pid = value(&inside.client, "SELECT pg_backend_pid()").await;
    wait_for_state(&proxy.cluster, &pid, Some("idle in transaction")).await;
    proxy
        .cluster
        .admin()
        .execute(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let error = inside
        .ended(Duration::from_secs(5))
        .await
        .expect("the client is told why its connection ends");
    let (code, message) = described(&error);
    assert!(
        matches!(code.as_deref(), Some("57P01" | "08006")),
        "{code:?} {message}"
    );
    let next = value(&proxy.connect().await, "SELECT pg_backend_pid()").await;
    assert_ne!(next, pid);
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

// ---- clients killed mid-transaction ----

/// A client BEGINs, INSERTs a row, and its socket is dropped (no Terminate). Returns the
/// backend pid it was on.
async fn killed_mid_transaction(proxy: &TestProxy) -> String {
    let killed = connect_watched(&proxy.config()).await;
    killed
        .client
        .batch_execute("BEGIN; INSERT INTO abandoned VALUES (1)")
        .await
        .unwrap();
    let pid = value(&killed.client, "SELECT pg_backend_pid()").await;
    wait_for_state(&proxy.cluster, &pid, Some("idle in transaction")).await;
    killed.connection.abort();
    assert!(killed.connection.await.unwrap_err().is_cancelled());
    pid
}

/// The next client's view of its server: its pid, whether a transaction id is assigned,
/// and the rows it sees.
async fn next_client_view(proxy: &TestProxy) -> (String, Option<String>, String) {
    let client = proxy.connect().await;
    let rows = client
        .simple_query(
            "SELECT pg_backend_pid(), txid_current_if_assigned(), \
             (SELECT count(*) FROM abandoned)",
        )
        .await
        .expect("the next client is served");
    let row = rows
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .unwrap();
    (
        row.get(0).unwrap().to_owned(),
        row.get(1).map(str::to_owned),
        row.get(2).unwrap().to_owned(),
    )
}

async fn committed_rows(cluster: &PgCluster) -> String {
    value(&direct(cluster).await, "SELECT count(*) FROM abandoned").await
}

async fn create_abandoned_table(proxy: &TestProxy) {
    proxy
        .connect()
        .await
        .batch_execute("CREATE TABLE abandoned (v int)")
        .await
        .unwrap();
}

/// With `abandoned_transaction = "rollback"` (the default) and a pool of one: the killed
/// client's row is never committed, and its server is rolled back and lent to the next
/// client clean (same backend, no transaction, idle in `pg_stat_activity`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_transaction_is_rolled_back_and_its_server_reused() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    create_abandoned_table(&proxy).await;
    let pid = killed_mid_transaction(&proxy).await;

    let (next_pid, xid, rows) = next_client_view(&proxy).await;
    assert_eq!(next_pid, pid, "the rolled-back server is reused");
    assert_eq!(
        xid, None,
        "the next client is not inside the killed one's transaction"
    );
    assert_eq!(rows, "0");
    assert_eq!(committed_rows(&proxy.cluster).await, "0");
    wait_for_state(&proxy.cluster, &pid, Some("idle")).await;
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

/// With `abandoned_transaction = "close"`: the killed client's server is closed (its
/// backend ends) and the next client gets a new one; the row is never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_transaction_with_close_gets_its_server_closed() {
    let proxy = TestProxy::start(
        Setup::default().settings("default_pool_size = 1\nabandoned_transaction = \"close\""),
    )
    .await;
    create_abandoned_table(&proxy).await;
    let pid = killed_mid_transaction(&proxy).await;

    let (next_pid, xid, rows) = next_client_view(&proxy).await;
    assert_ne!(next_pid, pid, "the abandoned server is replaced");
    assert_eq!(xid, None);
    assert_eq!(rows, "0");
    // The abandoned pg_sleep(60) is cancelled, not left to run for nobody: its backend
    // is gone well within wait_for_state's 10 s.
    // The closed server's backend does not sleep out its 60 s for nobody.
    wait_for_state(&proxy.cluster, &pid, None).await;
    assert_eq!(committed_rows(&proxy.cluster).await, "0");
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

/// A client killed while its query runs inside a transaction: the server (with an answer
/// still to come) is closed, the row is never committed, and the pool serves the next
/// client on a new server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_its_query_runs_gets_its_server_closed() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    create_abandoned_table(&proxy).await;
    let killed = connect_watched(&proxy.config()).await;
    let client = killed.client;
    let running = tokio::spawn(async move {
        // The sleep alone in its request: nothing of its answer is on the way when the
        // client goes, so only a cancel stops it (PostgreSQL notices a closed socket only
        // when it next writes: without the cancel this backend sleeps out its 60 s).
        let _ = client
            .batch_execute("BEGIN; INSERT INTO abandoned VALUES (1)")
            .await;
        let _ = client.simple_query("SELECT pg_sleep(60)").await;
    });
    let admin = proxy.cluster.admin();
    let find = "SELECT coalesce(max(pid), 0)::int8 FROM pg_stat_activity \
                WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'";
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        match admin.query_i64(find).await.unwrap() {
            0 => assert!(Instant::now() < deadline, "the query never started"),
            pid => break pid.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    killed.connection.abort();
    let _ = running.await;

    let (next_pid, xid, rows) = next_client_view(&proxy).await;
    assert_ne!(
        next_pid, pid,
        "the server with a query in flight is not lent again"
    );
    assert_eq!((xid, rows.as_str()), (None, "0"));
    // The abandoned pg_sleep(60) is cancelled, not left to run for nobody: its backend
    // is gone well within wait_for_state's 10 s.
    // The closed server's backend does not sleep out its 60 s for nobody.
    wait_for_state(&proxy.cluster, &pid, None).await;
    assert_eq!(committed_rows(&proxy.cluster).await, "0");
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

// ---- many clients, few servers ----

/// One of the thousand: connected, `sql`, gone. The query's time (including the wait for
/// a server) and its outcome.
async fn short_lived(
    config: Config,
    sql: &'static str,
) -> (Duration, Result<(), (Option<String>, String)>) {
    let client = match tokio::time::timeout(Duration::from_secs(30), connect(&config)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return (Duration::ZERO, Err(described(&e))),
        Err(_) => return (Duration::ZERO, Err((None, "connect hung".into()))),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), client.simple_query(sql)).await;
    let took = started.elapsed();
    match result {
        Ok(Ok(_)) => (took, Ok(())),
        Ok(Err(e)) => (took, Err(described(&e))),
        Err(_) => (took, Err((None, "query hung".into()))),
    }
}

/// What a crowd of clients got.
#[derive(Debug)]
struct Crowd {
    served: usize,
    /// Told 57P03 by `query_wait_timeout`, with the pool's counts.
    told: usize,
    /// The longest query, its wait for a server included.
    longest: Duration,
    all: Duration,
    /// The most backends of the test user `pg_stat_activity` showed meanwhile.
    most_backends: i64,
}

impl Crowd {
    fn report(&self, what: &str) {
        eprintln!(
            "1,000 clients on 10 servers, {what}: {} served, {} told 57P03, longest query \
             (its wait included) {:?}, all done in {:?}, at most {} backends",
            self.served, self.told, self.longest, self.all, self.most_backends
        );
    }
}

/// `clients` clients at once, each connecting, running `sql` once and leaving, through a
/// pool of 10 with this `query_wait_timeout`. Every client must be served or told 57P03
/// with the pool's counts; anything else fails the test.
async fn crowd(clients: usize, sql: &'static str, query_wait_timeout: &str) -> Crowd {
    // MD5: SCRAM's 4096 rounds per login, on both sides, would make this a benchmark of
    // the key derivation.
    let proxy = TestProxy::start(Setup::default().settings(&format!(
        "default_pool_size = 10\nmax_client_conn = {}\nquery_wait_timeout = {query_wait_timeout}\n\
         auth_type = \"md5\"",
        clients + 100
    )))
    .await;
    // The route exists and knows its server before the crowd arrives.
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let admin = proxy.cluster.admin();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(Relaxed) {
                most = most.max(admin.count(&test_user()).await.unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(short_lived(proxy.config(), sql)))
        .collect();
    let (mut served, mut told, mut longest) = (0, 0, Duration::ZERO);
    for task in tasks {
        let (took, result) = task.await.unwrap();
        longest = longest.max(took);
        match result {
            Ok(()) => served += 1,
            Err((Some(code), message)) if code == "57P03" => {
                assert!(
                    message.contains("query_wait_timeout")
                        && message.contains("size ")
                        && message.contains("/10")
                        && message.contains("waiting"),
                    "{message}"
                );
                told += 1;
            }
            Err(other) => panic!("a client got {other:?}"),
        }
    }
    let all = started.elapsed();
    sampling.store(false, Relaxed);
    let most_backends = sampler.await.unwrap();
    assert_eq!(served + told, clients);
    assert!(most_backends <= 10, "{most_backends} backends");
    assert!(settle(&proxy).await <= 10);
    proxy.shutdown().await;
    Crowd {
        served,
        told,
        longest,
        all,
        most_backends,
    }
}

/// 1,000 clients at once on a pool of 10, each `SELECT pg_sleep(0.01)` (10 s of server
/// time in all, 1 s on 10 servers), `query_wait_timeout` 5 s: all are served, none waits
/// near the timeout, and PostgreSQL never sees more than 10 backends of the test user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_on_a_pool_of_ten_are_served() {
    let crowd = crowd(1000, "SELECT pg_sleep(0.01)", "5").await;
    crowd.report("pg_sleep(0.01), query_wait_timeout 5 s");
    assert_eq!(crowd.served, 1000, "{crowd:?}");
    assert!(crowd.longest < Duration::from_secs(5), "{crowd:?}");
}

/// 1,000 clients at once on a pool of 10, each `SELECT pg_sleep(0.05)`: 50 s of server
/// time, at least 5 s on 10 servers, with `query_wait_timeout` 2 s. Some are served, the
/// rest are told 57P03 with the pool's counts at about 2 s, none waits much longer, and
/// PostgreSQL never sees more than 10 backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_beyond_a_pool_of_ten_are_served_or_told_in_time() {
    let crowd = crowd(1000, "SELECT pg_sleep(0.05)", "2").await;
    crowd.report("pg_sleep(0.05), query_wait_timeout 2 s");
    assert!(crowd.served > 0 && crowd.told > 0, "{crowd:?}");
    assert!(crowd.longest < Duration::from_secs(4), "{crowd:?}");
}

// ---- the server refuses ----

/// The server allows the test user 3 connections (max_connections 6, 3 reserved), the
/// pool wants 10: clients beyond 3 wait for a returned server and are served; when none
/// comes back in time the client is told 57P03 naming the server's refusal (53300).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_below_the_pool_size_waits_or_names_the_refusal() {
    let proxy = TestProxy::start(Setup {
        pg: PgOptions::default()
            .max_connections(6)
            .superuser_reserved_connections(3),
        ..Setup::default().settings("default_pool_size = 10\nquery_wait_timeout = 3")
    })
    .await;
    let limit = i64::from(proxy.cluster.user_connection_limit());
    assert_eq!(limit, 3);

    // Six clients, five short queries each: they share the three servers.
    let started = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let config = proxy.config();
            tokio::spawn(async move {
                let client = connect(&config).await.expect("login");
                for _ in 0..5 {
                    client.simple_query("SELECT pg_sleep(0.05)").await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .collect();
    for client in clients {
        tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("no client hangs")
            .unwrap()
            .expect("every client is served by the servers there are");
    }
    eprintln!(
        "max_connections: 6 clients x 5 queries on 3 servers took {:?}",
        started.elapsed()
    );
    assert!(proxy.server_backends().await <= limit);

    // Three clients hold the three servers; a fourth waits, and is told why.
    let holders: Vec<Client> = {
        let mut holders = Vec::new();
        for _ in 0..3 {
            let client = proxy.connect().await;
            client.batch_execute("BEGIN").await.unwrap();
            holders.push(client);
        }
        holders
    };
    let fourth = proxy.connect().await;
    let asked = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), fourth.simple_query("SELECT 1"))
        .await
        .expect("the fourth client is answered")
        .expect_err("no server for the fourth client");
    let waited = asked.elapsed();
    let (code, message) = described(&error);
    eprintln!("max_connections: the fourth client was told after {waited:?}: {message}");
    assert_eq!(code.as_deref(), Some("57P03"), "{message}");
    assert!(
        message.contains("last connect error: server said FATAL 53300"),
        "the error names the server's refusal: {message}"
    );
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    for holder in &holders {
        holder.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    assert!(settle(&proxy).await <= limit);
    proxy.shutdown().await;
}

/// A database whose URL has the wrong password: its clients get the server's 28P01 at
/// once (well under `query_wait_timeout`), saying the server refused the proxy's login and
/// never showing the password; the proxy's other database keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_upstream_password_is_reported_at_once() {
    let proxy = TestProxy::start(Setup {
        databases: Some(
            "pool_test = \"{url}\"\n\
             wrong = \"postgresql://pool_test:not-the-password@127.0.0.1:{port}/pool_test\""
                .into(),
        ),
        ..Setup::default().settings("query_wait_timeout = 30")
    })
    .await;
    for attempt in 0..2 {
        let asked = Instant::now();
        let error = connect(&proxy.config_as(common::USER.0, common::USER.1, "wrong"))
            .await
            .expect_err("no login through a wrong upstream password");
        let took = asked.elapsed();
        let (code, message) = described(&error);
        eprintln!("wrong upstream password: attempt {attempt} told in {took:?}: {message}");
        assert_eq!(code.as_deref(), Some("28P01"), "{message}");
        assert!(
            message.contains("server refused the proxy's login"),
            "{message}"
        );
        assert!(!message.contains("not-the-password"), "{message}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

// ---- the proxy's own timeouts ----

/// A pool of one held by a client inside a transaction: a second client's query is told
/// 57P03 after `query_wait_timeout` (2 s), with the pool's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_tells_the_waiter_the_pools_counts() {
    let proxy = TestProxy::start(
        Setup::default().settings("default_pool_size = 1\nquery_wait_timeout = 2"),
    )
    .await;
    let holder = proxy.connect().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = proxy.connect().await;
    let asked = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), waiter.simple_query("SELECT 1"))
        .await
        .expect("the waiter is answered")
        .expect_err("no server within query_wait_timeout");
    let waited = asked.elapsed();
    let (code, message) = described(&error);
    eprintln!("query_wait_timeout 2 s: told after {waited:?}: {message}");
    assert_eq!(code.as_deref(), Some("57P03"), "{message}");
    assert!(
        message.contains("size 1/1") && message.contains("1 leased") && message.contains("waiting"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&proxy.connect().await, "SELECT 1").await, "1");
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}

/// `idle_transaction_timeout` 1 s: a client that BEGINs, INSERTs and goes quiet is
/// disconnected with 25P03 after about a second; its transaction is rolled back and its
/// server lent to the next client clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_disconnects_and_rolls_back() {
    let proxy = TestProxy::start(
        Setup::default().settings("default_pool_size = 1\nidle_transaction_timeout = 1"),
    )
    .await;
    create_abandoned_table(&proxy).await;
    let mut quiet = connect_watched(&proxy.config()).await;
    quiet
        .client
        .batch_execute("BEGIN; INSERT INTO abandoned VALUES (1)")
        .await
        .unwrap();
    let went_quiet = Instant::now();
    let pid = value(&quiet.client, "SELECT pg_backend_pid()").await;
    let error = quiet
        .ended(Duration::from_secs(5))
        .await
        .expect("the proxy says why it disconnects");
    let after = went_quiet.elapsed();
    let (code, message) = described(&error);
    eprintln!("idle_transaction_timeout 1 s: disconnected after {after:?}: {message}");
    assert_eq!(code.as_deref(), Some("25P03"), "{message}");
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_secs(3),
        "{after:?}"
    );

    let (next_pid, xid, rows) = next_client_view(&proxy).await;
    assert_eq!(next_pid, pid, "the rolled-back server is reused");
    assert_eq!((xid, rows.as_str()), (None, "0"));
    assert_eq!(committed_rows(&proxy.cluster).await, "0");
    wait_for_state(&proxy.cluster, &pid, Some("idle")).await;
    assert_eq!(settle(&proxy).await, 1);
    proxy.shutdown().await;
}
