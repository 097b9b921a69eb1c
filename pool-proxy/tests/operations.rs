//! Operations (issue 13), through the real proxy to a real PostgreSQL 15: the console's
//! SHOW CLIENTS, SERVERS, DATABASES and CONFIG against what the clients are doing and
//! what the server sees; PAUSE and RESUME around open transactions; RELOAD growing and
//! shrinking pools under connected clients, adding and removing databases, refusing a
//! bad file; SHUTDOWN draining; `/metrics` read with a Prometheus parser; `/health`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    columns, connect, get, rows, sample, sqlstate, value, Setup, TestProxy, ADMIN, STATS,
};
use pool_proxy::config::SETTINGS;
use tokio_postgres::Client;

/// PgBouncer 1.18's SHOW CLIENTS and SHOW SERVERS columns.
const CONNECTION_COLUMNS: [&str; 18] = [
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
];

const DATABASE_COLUMNS: [&str; 13] = [
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
];

async fn client_named(proxy: &TestProxy, name: &str) -> Client {
    let mut config = proxy.config();
    config.application_name(name);
    connect(&config)
        .await
        .expect("the proxy lets the test user in")
}

/// The SHOW CLIENTS row of the client with this application_name.
fn row_of<'a>(rows: &'a [BTreeMap<String, String>], app: &str) -> &'a BTreeMap<String, String> {
    rows.iter()
        .find(|row| row["application_name"] == app)
        .unwrap_or_else(|| panic!("no row for {app}: {rows:?}"))
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SHOW CLIENTS and SHOW SERVERS list what the clients do: a client inside a
/// transaction is `active`, linked to a server that is `active`, linked back, whose
/// `remote_pid` is the backend the client sees; a client blocked behind it is `waiting`
/// with a growing wait; an idle one is `idle`; after COMMIT both sides are idle and
/// unlinked. SHOW DATABASES and SHOW CONFIG: PgBouncer's columns, the pool's size and
/// connections, every setting once with its default and whether RELOAD changes it, no
/// password anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_list_clients_servers_databases_and_settings_as_they_are() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 1")).await;
    let a = client_named(&proxy, "client_a").await;
    let b = client_named(&proxy, "client_b").await;
    let admin = proxy.admin().await;

    assert_eq!(columns(&admin, "SHOW CLIENTS").await, CONNECTION_COLUMNS);
    assert_eq!(columns(&admin, "SHOW SERVERS").await, CONNECTION_COLUMNS);
    assert_eq!(columns(&admin, "SHOW DATABASES").await, DATABASE_COLUMNS);
    assert_eq!(
        columns(&admin, "show config;").await,
        ["key", "value", "default", "changeable"]
    );
    if pg_harness::pgbouncer::pgbouncer_path().is_ok() {
        let bouncer = pg_harness::PgBouncer::start(&proxy.cluster, "transaction", 2)
            .expect("PgBouncer starts");
        let theirs = connect(&bouncer.admin_url().parse().unwrap())
            .await
            .expect("PgBouncer's console");
        for what in ["CLIENTS", "SERVERS", "DATABASES", "CONFIG"] {
            let sql = format!("SHOW {what}");
            assert_eq!(
                columns(&admin, &sql).await,
                columns(&theirs, &sql).await,
                "{sql}"
            );
        }
    }

    // a inside a transaction, holding the one server; b waiting behind it.
    a.batch_execute("BEGIN").await.unwrap();
    let pid = value(&a, "SELECT pg_backend_pid()").await;
    let b_query = tokio::spawn(async move {
        let answer = value(&b, "SELECT 'b done'").await;
        (b, answer)
    });
    eventually(Duration::from_secs(5), "b waits", || async {
        let clients = rows(&admin, "SHOW CLIENTS").await;
        row_of(&clients, "client_b")["state"] == "waiting"
    })
    .await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let a_row = row_of(&clients, "client_a").clone();
    assert_eq!(a_row["state"], "active", "{a_row:?}");
    assert_eq!(
        (
            a_row["type"].as_str(),
            a_row["user"].as_str(),
            a_row["database"].as_str()
        ),
        ("C", "pool_test", "pool_test")
    );
    assert_eq!(a_row["addr"], "127.0.0.1");
    assert_eq!(a_row["local_port"], proxy.addr.port().to_string());
    assert!(a_row["connect_time"].ends_with(" UTC"), "{a_row:?}");
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    let server = &servers[0];
    assert_eq!(server["state"], "active", "{server:?}");
    assert_eq!(server["link"], a_row["ptr"], "{server:?} vs {a_row:?}");
    assert_eq!(a_row["link"], server["ptr"], "{server:?} vs {a_row:?}");
    assert_eq!(server["remote_pid"], pid, "{server:?}");
    // The proxy's end, as the server sees its client.
    let seen = value(
        &a,
        "SELECT host(client_addr) || ' ' || client_port FROM pg_stat_activity \
         WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(
        format!("{} {}", server["local_addr"], server["local_port"]),
        seen,
        "{server:?}"
    );
    assert_eq!(
        (
            server["type"].as_str(),
            server["database"].as_str(),
            server["port"].clone()
        ),
        ("S", "pool_test", proxy.cluster.port().to_string())
    );
    let admin_row = clients
        .iter()
        .find(|row| row["database"] == "pgbouncer")
        .expect("the console's own client is listed");
    assert_eq!(admin_row["user"], ADMIN.0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let b_row = row_of(&clients, "client_b");
    let waited = b_row["wait"].parse::<u64>().unwrap() * 1_000_000
        + b_row["wait_us"].parse::<u64>().unwrap();
    assert!(waited >= 300_000, "{b_row:?}");
    assert_eq!(b_row["link"], "", "{b_row:?}");

    let databases = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(databases.len(), 1, "{databases:?}");
    let db = &databases[0];
    assert_eq!(
        (
            db["name"].as_str(),
            db["host"].as_str(),
            db["force_user"].as_str(),
            db["pool_size"].as_str(),
            db["pool_mode"].as_str(),
            db["current_connections"].as_str(),
            db["paused"].as_str(),
        ),
        (
            "pool_test",
            "127.0.0.1",
            "pool_test",
            "1",
            "transaction",
            "1",
            "0"
        ),
        "{db:?}"
    );

    a.batch_execute("COMMIT").await.unwrap();
    let (b, answer) = b_query.await.unwrap();
    assert_eq!(answer, "b done");
    let clients = rows(&admin, "SHOW CLIENTS").await;
    for app in ["client_a", "client_b"] {
        let row = row_of(&clients, app);
        assert_eq!(
            (row["state"].as_str(), row["link"].as_str()),
            ("idle", ""),
            "{row:?}"
        );
    }
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert_eq!(
        (servers[0]["state"].as_str(), servers[0]["link"].as_str()),
        ("idle", ""),
        "{servers:?}"
    );
    drop(b);

    // Every setting once, in the list's order, with its default; none shows a password.
    let config = rows(&admin, "SHOW CONFIG").await;
    let keys: Vec<&str> = config.iter().map(|row| row["key"].as_str()).collect();
    let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    assert_eq!(keys, names);
    let setting = |key: &str| config.iter().find(|row| row["key"] == key).unwrap().clone();
    let pool_size = setting("default_pool_size");
    assert_eq!(
        (
            pool_size["value"].as_str(),
            pool_size["default"].as_str(),
            pool_size["changeable"].as_str()
        ),
        ("1", "20", "yes")
    );
    assert_eq!(setting("listen_port")["changeable"], "no");
    assert_eq!(setting("metrics_addr")["value"], "");
    let everything = format!("{config:?}{databases:?}");
    assert!(!everything.contains(common::USER.1), "a password is shown");

    // A stats user may SHOW, not change.
    let stats = connect(&proxy.config_as(STATS.0, STATS.1, "pgbouncer"))
        .await
        .unwrap();
    row_of(&rows(&stats, "SHOW CLIENTS").await, "client_a");
    let refused = stats.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused}");
    let unknown = admin.simple_query("SHOW NONSENSE").await.unwrap_err();
    assert_eq!(sqlstate(&unknown).as_deref(), Some("42601"), "{unknown}");
}

/// PAUSE waits for the open transaction to finish and only then returns; while paused a
/// new query waits (listed `waiting`, SHOW DATABASES `paused` 1) and runs after RESUME.
/// A database PAUSE does not hold another database; RESUME of what is not paused fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_transactions_and_holds_new_ones_until_resume() {
    let proxy = TestProxy::start(Setup {
        databases: Some("pool_test = \"{url}\"\nother = \"{url}\"".to_owned()),
        ..Setup::default()
    })
    .await;
    let a = client_named(&proxy, "client_a").await;
    let b = client_named(&proxy, "client_b").await;
    let other = connect(&proxy.config_as(common::USER.0, common::USER.1, "other"))
        .await
        .unwrap();
    let admin = proxy.admin().await;

    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    let pause = {
        let config = proxy.config_as(ADMIN.0, ADMIN.1, "pgbouncer");
        tokio::spawn(async move {
            let console = connect(&config).await.unwrap();
            console.simple_query("PAUSE pool_test").await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned with a transaction open"
    );
    // The transaction goes on while PAUSE waits.
    a.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap();

    // Paused: b's query waits; the other database is served.
    let b_query = tokio::spawn(async move { value(&b, "SELECT 'b after resume'").await });
    assert_eq!(value(&other, "SELECT 'other'").await, "other");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!b_query.is_finished(), "a query ran while paused");
    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(row_of(&clients, "client_b")["state"], "waiting");
    let databases = rows(&admin, "SHOW DATABASES").await;
    let paused: BTreeMap<&str, &str> = databases
        .iter()
        .map(|row| (row["name"].as_str(), row["paused"].as_str()))
        .collect();
    assert_eq!(paused, BTreeMap::from([("other", "0"), ("pool_test", "1")]));

    admin.simple_query("RESUME pool_test").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), b_query)
        .await
        .expect("the query runs after RESUME")
        .unwrap();
    assert_eq!(answer, "b after resume");
    let not_paused = admin.simple_query("RESUME pool_test").await.unwrap_err();
    let message = |e: &tokio_postgres::Error| e.as_db_error().unwrap().message().to_owned();
    assert!(
        message(&not_paused).contains("not paused"),
        "{not_paused:?}"
    );
    let unknown = admin.simple_query("PAUSE nosuchdb").await.unwrap_err();
    assert!(message(&unknown).contains("nosuchdb"), "{unknown:?}");

    // PAUSE of everything with nothing lent returns at once.
    let started = Instant::now();
    admin.simple_query("PAUSE").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    admin.simple_query("RESUME").await.unwrap();
    assert_eq!(value(&a, "SELECT 'a'").await, "a");
}

/// Rewrites the test proxy's file: `edit` gets the text and returns the new one.
fn rewrite(proxy: &TestProxy, edit: impl FnOnce(String) -> String) {
    let path = proxy.dir.path().join("proxy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
}

/// RELOAD through psql (which prints the NOTICEs): its status, stdout and stderr.
fn psql_reload(proxy: &TestProxy) -> (bool, String) {
    let output = std::process::Command::new(common::bin("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.addr.port().to_string(),
            "-U",
            ADMIN.0,
            "-d",
            "pgbouncer",
            "-c",
            "RELOAD",
        ])
        .env("PGPASSWORD", ADMIN.1)
        .output()
        .expect("psql runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Holds `clients` inside a transaction each at once; their backends' pids.
async fn all_in_transactions(clients: &[Client]) -> Vec<String> {
    let mut pids = Vec::new();
    for client in clients {
        client.batch_execute("BEGIN").await.unwrap();
        pids.push(value(client, "SELECT pg_backend_pid()::text").await);
    }
    for client in clients {
        client.batch_execute("COMMIT").await.unwrap();
    }
    pids
}

/// RELOAD with a bigger default_pool_size lets four connected clients hold four servers
/// at once (two before); with a smaller one the pool shrinks to one server, and the same
/// clients, never disconnected, keep working. A changed listen_port is kept and named in
/// a NOTICE. A new database appears; a removed one refuses new clients while its
/// connected client goes on. A file that does not load fails RELOAD with the error and
/// keeps the configuration in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resizes_pools_under_connected_clients_and_keeps_the_old_config_on_error() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 2")).await;
    let clients = futures::future::join_all((0..4).map(|_| proxy.connect())).await;
    for client in &clients {
        value(client, "SELECT 1").await;
    }
    let admin = proxy.admin().await;

    // Grow: four transactions at once (with two servers the third BEGIN would wait for
    // ever, as the first two are held).
    rewrite(&proxy, |text| {
        text.replace("default_pool_size = 2", "default_pool_size = 4")
            .replace("listen_port = 0", "listen_port = 1")
            .replace("[databases]\n", "[databases]\nextra = \"{url}\"\n")
            .replace("{url}", &proxy.cluster.url())
    });
    let (ok, output) = psql_reload(&proxy);
    assert!(ok, "{output}");
    assert!(
        output.contains("listen_port changed but needs a restart"),
        "{output}"
    );
    let pids = tokio::time::timeout(Duration::from_secs(10), all_in_transactions(&clients))
        .await
        .expect("four clients hold four servers at once after RELOAD");
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 4, "{pids:?}");
    let config = rows(&admin, "SHOW CONFIG").await;
    let shown = |key: &str| {
        config
            .iter()
            .find(|row| row["key"] == key)
            .map(|row| row["value"].clone())
            .unwrap()
    };
    assert_eq!(shown("default_pool_size"), "4");
    assert_eq!(shown("listen_port"), "0", "the running value is kept");
    let extra = connect(&proxy.config_as(common::USER.0, common::USER.1, "extra"))
        .await
        .expect("a database added by RELOAD accepts clients");
    assert_eq!(value(&extra, "SELECT 'extra'").await, "extra");

    // Shrink to one: idle servers close now; the clients keep working one at a time. And
    // a pool-side timeout: idle servers now close after 1 s (600 s before).
    rewrite(&proxy, |text| {
        let mut text = text.replace(
            "default_pool_size = 4",
            "default_pool_size = 1\nserver_idle_timeout = 1",
        );
        let start = text.find("extra = ").unwrap();
        let end = start + text[start..].find('\n').unwrap() + 1;
        text.replace_range(start..end, "");
        text
    });
    let (ok, output) = psql_reload(&proxy);
    assert!(ok, "{output}");
    for client in &clients {
        assert_eq!(value(client, "SELECT 'still here'").await, "still here");
    }
    eventually(
        Duration::from_secs(5),
        "the pool shrinks to one server",
        || async {
            proxy.server_backends().await
                <= 1 + rows(&admin, "SHOW SERVERS")
                    .await
                    .iter()
                    .filter(|r| r["database"] == "extra")
                    .count() as i64
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "idle servers close after the reloaded server_idle_timeout",
        || async {
            !rows(&admin, "SHOW SERVERS")
                .await
                .iter()
                .any(|r| r["database"] == "pool_test")
        },
    )
    .await;
    let pool = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(pool[0]["name"], "pool_test");
    assert_eq!(pool[0]["pool_size"], "1", "{pool:?}");
    // The removed database: its client goes on, new ones are refused.
    assert_eq!(value(&extra, "SELECT 'extra still'").await, "extra still");
    let refused = connect(&proxy.config_as(common::USER.0, common::USER.1, "extra"))
        .await
        .expect_err("a removed database refuses new clients");
    assert_eq!(sqlstate(&refused).as_deref(), Some("3D000"), "{refused}");

    // A bad file: RELOAD fails naming it, and nothing changes.
    rewrite(&proxy, |text| {
        text.replace("default_pool_size = 1", "default_pool_size = \"many\"")
    });
    let error = admin.simple_query("RELOAD").await.unwrap_err();
    let message = error.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("default_pool_size") && message.contains("unchanged"),
        "{message}"
    );
    let config = rows(&admin, "SHOW CONFIG").await;
    let pool_size = config
        .iter()
        .find(|row| row["key"] == "default_pool_size")
        .unwrap();
    assert_eq!(pool_size["value"], "1");
    for client in &clients {
        assert_eq!(
            value(client, "SELECT 'after bad reload'").await,
            "after bad reload"
        );
    }
}

/// SHUTDOWN on the console drains as SIGTERM does: the client inside a transaction
/// commits, then is told 57P01; new clients are refused; the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_command_drains_like_sigterm() {
    let mut proxy = TestProxy::start(Setup::default()).await;
    let mut inside = common::connect_watched(&proxy.config()).await;
    inside.client.batch_execute("BEGIN").await.unwrap();
    inside
        .client
        .batch_execute("CREATE TEMP TABLE t (x int)")
        .await
        .unwrap();
    let admin = proxy.admin().await;
    let _ = admin.simple_query("SHUTDOWN").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        connect(&proxy.config()).await.is_err(),
        "a new client was let in after SHUTDOWN"
    );
    assert!(
        !proxy.stopped(Duration::from_millis(300)).await,
        "stopped mid-transaction"
    );
    inside
        .client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    inside.client.batch_execute("COMMIT").await.unwrap();
    let goodbye = inside.ended(Duration::from_secs(5)).await;
    let goodbye = goodbye.expect("told why");
    assert_eq!(sqlstate(&goodbye).as_deref(), Some("57P01"), "{goodbye}");
    assert!(
        proxy.stopped(Duration::from_secs(10)).await,
        "the proxy did not stop"
    );
}

/// `/metrics` parses as Prometheus text and counts what was done: at least the
/// transactions run, the pinned client (and its server active, its state active), the
/// wait histogram's count at least the transactions; `/health` is 200, still 200 while
/// paused, 503 once a shutdown has begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_done_and_health_follows_shutdown() {
    let proxy = TestProxy::start(Setup::default().settings("metrics_addr = \"127.0.0.1:0\"")).await;
    let metrics = proxy.metrics.expect("metrics_addr is set");
    let route = [("database", "pool_test"), ("user", "pool_test")];
    let a = proxy.connect().await;
    for _ in 0..5 {
        value(&a, "SELECT 1").await;
    }
    let pinned = proxy.connect().await;
    pinned.batch_execute("SET work_mem = '8MB'").await.unwrap();

    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    let transactions = sample(&scrape, "pool_proxy_transactions_total", &route);
    assert!(transactions >= 5.0, "{transactions}");
    assert!(sample(&scrape, "pool_proxy_queries_total", &route) >= 5.0);
    assert_eq!(sample(&scrape, "pool_proxy_pins_total", &route), 1.0);
    let with_state = |state| [route[0], route[1], ("state", state)];
    assert_eq!(
        sample(&scrape, "pool_proxy_servers", &with_state("active")),
        1.0
    );
    assert_eq!(
        sample(&scrape, "pool_proxy_clients", &with_state("active")),
        1.0
    );
    assert_eq!(
        sample(&scrape, "pool_proxy_clients", &with_state("idle")),
        1.0
    );
    assert_eq!(
        sample(&scrape, "pool_proxy_clients", &with_state("waiting")),
        0.0
    );
    assert!(sample(&scrape, "pool_proxy_wait_seconds", &route) >= transactions);
    assert_eq!(sample(&scrape, "pool_proxy_pool_size", &route), 20.0);
    assert_eq!(
        sample(&scrape, "pool_proxy_paused", &[("database", "pool_test")]),
        0.0
    );

    assert_eq!(get(metrics, "/health").await, (200, "ok\n".to_owned()));
    let admin = proxy.admin().await;
    drop(pinned);
    admin.simple_query("PAUSE").await.unwrap();
    assert_eq!(get(metrics, "/health").await.0, 200, "healthy while paused");
    let (_, body) = get(metrics, "/metrics").await;
    assert!(
        body.contains("pool_proxy_paused{database=\"pool_test\"} 1"),
        "{body}"
    );
    admin.simple_query("RESUME").await.unwrap();

    // A transaction keeps the drain going while /health is asked.
    a.batch_execute("BEGIN").await.unwrap();
    let _ = admin.simple_query("SHUTDOWN").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(metrics, "/health").await.0, 503);
    a.batch_execute("COMMIT").await.unwrap();
}
