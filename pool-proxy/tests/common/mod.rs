//! The proxy under test: a real PostgreSQL cluster (pg-harness) and the real pool-proxy
//! in front of it, started in-process from a configuration file written as a user would
//! (`config::load`, the same path the binary takes), listening on a free loopback port.
//! Clients: tokio-postgres here; psql and pgbench as commands.

#![allow(dead_code)]

pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use pg_harness::{PgCluster, PgOptions};
use pool_proxy::{Proxy, ProxyHandle};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The users file's users: (name, password).
pub const USER: (&str, &str) = ("pool_test", "pool_test_pw");
pub const ADMIN: (&str, &str) = ("admin", "admin_pw");
pub const STATS: (&str, &str) = ("stats", "stats_pw");

/// How to set up a [`TestProxy`].
#[derive(Default)]
pub struct Setup {
    pub pg: PgOptions,
    /// Extra top-level settings, TOML lines (e.g. `default_pool_size = 2`).
    pub settings: String,
    /// The `[databases]` table's body; `None`: `pool_test` = the cluster's test URL.
    /// `{url}` is replaced by the test user's URL, `{port}` by the cluster's port.
    pub databases: Option<String>,
    /// The users file's lines; `None`: USER, ADMIN and STATS with their passwords.
    pub users: Option<String>,
}

impl Setup {
    pub fn settings(mut self, lines: &str) -> Self {
        self.settings.push_str(lines);
        self.settings.push('\n');
        self
    }
}

pub struct TestProxy {
    pub cluster: PgCluster,
    pub addr: SocketAddr,
    /// Where `/metrics` and `/health` answer, when the setup set `metrics_addr`.
    pub metrics: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    handle: ProxyHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(setup: Setup) -> TestProxy {
        let cluster = PgCluster::start_async(setup.pg)
            .await
            .expect("cluster starts");
        let dir = tempfile::tempdir().expect("a scratch directory");
        let users = setup.users.unwrap_or_else(|| {
            [USER, ADMIN, STATS]
                .iter()
                .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
                .collect()
        });
        std::fs::write(dir.path().join("users.txt"), users).unwrap();
        let databases = setup
            .databases
            .unwrap_or_else(|| "pool_test = \"{url}\"".to_owned())
            .replace("{url}", &cluster.url())
            .replace("{port}", &cluster.port().to_string());
        let toml = format!(
            "listen_addr = \"127.0.0.1\"\nlisten_port = 0\nauth_file = \"users.txt\"\n\
             admin_users = [\"admin\"]\nstats_users = [\"stats\"]\n{}\n[databases]\n{databases}\n",
            setup.settings
        );
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, toml).unwrap();
        let config = pool_proxy::config::load(
            [
                "pool-proxy".into(),
                "--config".into(),
                path.into_os_string(),
            ],
            &|_| None,
        )
        .expect("the test configuration loads");
        let proxy = Proxy::bind(config).await.expect("the proxy binds");
        let addr = proxy.local_addr();
        let metrics = proxy.metrics_addr();
        let handle = proxy.handle();
        let task = Some(tokio::spawn(proxy.run()));
        TestProxy {
            cluster,
            addr,
            metrics,
            dir,
            handle,
            task,
        }
    }

    /// A tokio-postgres configuration reaching the proxy as `user` / `password`.
    pub fn config_as(&self, user: &str, password: &str, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname(database);
        config
    }

    /// The test user's configuration for the proxy's `pool_test` database.
    pub fn config(&self) -> tokio_postgres::Config {
        self.config_as(USER.0, USER.1, "pool_test")
    }

    /// A client of the proxy, its connection task spawned.
    pub async fn connect(&self) -> Client {
        connect(&self.config())
            .await
            .expect("the proxy lets the test user in")
    }

    /// An admin console client.
    pub async fn admin(&self) -> Client {
        connect(&self.config_as(ADMIN.0, ADMIN.1, "pgbouncer"))
            .await
            .expect("the admin console lets the admin in")
    }

    /// `SHOW <what>` on the admin console, as rows of column → value.
    pub async fn show(&self, what: &str) -> Vec<BTreeMap<String, String>> {
        rows(&self.admin().await, &format!("SHOW {what}")).await
    }

    /// psql reaching the proxy as the test user (`-X`, stop on error); add arguments.
    pub fn psql(&self) -> Command {
        self.client_command("psql", &["-X", "-v", "ON_ERROR_STOP=1", "-d", "pool_test"])
    }

    /// pgbench reaching the proxy as the test user; add arguments, then the database name.
    pub fn pgbench(&self) -> Command {
        self.client_command("pgbench", &[])
    }

    fn client_command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(program));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.addr.port().to_string(),
            "-U",
            USER.0,
        ])
        .args(args)
        .env("PGPASSWORD", USER.1)
        .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// A client straight to the cluster (not through the proxy), as the test user.
    pub async fn direct(&self) -> Client {
        connect(&self.cluster.config())
            .await
            .expect("the cluster lets the test user in")
    }

    /// `SHOW STATS`'s row for `database`.
    pub async fn stats_of(&self, database: &str) -> BTreeMap<String, String> {
        self.show("STATS")
            .await
            .into_iter()
            .find(|row| row["database"] == database)
            .unwrap_or_else(|| panic!("SHOW STATS has no row for {database}"))
    }

    /// Backends of the test user on the cluster (pg_stat_activity, client backends).
    pub async fn server_backends(&self) -> i64 {
        self.cluster
            .admin()
            .query_i64(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' \
                 AND backend_type = 'client backend'",
                USER.0
            ))
            .await
            .expect("pg_stat_activity")
    }

    /// Waits (at most `within`) for the proxy to stop by itself (e.g. after the console's
    /// SHUTDOWN); whether it did.
    pub async fn stopped(&mut self, within: std::time::Duration) -> bool {
        let Some(task) = self.task.as_mut() else {
            return true;
        };
        match tokio::time::timeout(within, task).await {
            Ok(result) => {
                result.expect("the proxy task ends cleanly");
                self.task = None;
                true
            }
            Err(_) => false,
        }
    }

    /// Shuts the proxy down (SIGTERM's path) and waits for it to finish draining.
    pub async fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            task.await.expect("the proxy task ends cleanly");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects with tokio-postgres and spawns the connection task.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A simple query's rows as column → value maps.
pub async fn rows(client: &Client, sql: &str) -> Vec<BTreeMap<String, String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A PostgreSQL client program (psql, pgbench) from the harness's PostgreSQL.
pub fn bin(program: &str) -> PathBuf {
    pg_harness::pg_bin_dir()
        .expect("PostgreSQL's binaries")
        .join(program)
}

/// An error's SQLSTATE and message, as the client saw them.
pub fn described(e: &tokio_postgres::Error) -> (Option<String>, String) {
    match e.as_db_error() {
        Some(db) => (Some(db.code().code().to_owned()), db.message().to_owned()),
        None => (None, e.to_string()),
    }
}

/// A client whose connection task is kept: its result is what the server (the proxy)
/// said when it ended the connection, and aborting it drops the socket abruptly (no
/// Terminate), as a killed process would.
pub struct Watched {
    pub client: Client,
    pub connection: JoinHandle<Result<(), tokio_postgres::Error>>,
}

pub async fn connect_watched(config: &tokio_postgres::Config) -> Watched {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("the proxy lets the test user in");
    Watched {
        client,
        connection: tokio::spawn(connection),
    }
}

impl Watched {
    /// Waits (at most `within`) for the connection to end; the error it ended with.
    pub async fn ended(&mut self, within: std::time::Duration) -> Option<tokio_postgres::Error> {
        match tokio::time::timeout(within, &mut self.connection).await {
            Ok(Ok(result)) => result.err(),
            Ok(Err(join)) => panic!("the connection task failed: {join}"),
            Err(_) => panic!("the connection is still open after {within:?}"),
        }
    }
}

/// A simple query's column names, in order (its first result set).
pub async fn columns(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|message| match message {
            SimpleQueryMessage::RowDescription(columns) => {
                Some(columns.iter().map(|c| c.name().to_owned()).collect())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no result set"))
}

/// The SQLSTATE of a server's (or the proxy's) error, `None` for any other failure.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    described(error).0
}

/// A simple query's one value.
pub async fn value(client: &Client, sql: &str) -> String {
    let rows = rows(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    assert_eq!(rows[0].len(), 1, "{sql}: {rows:?}");
    rows[0].values().next().unwrap().clone()
}

/// A GET over plain HTTP/1.1: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One sample's value from a parsed scrape, by name and labels.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v))
        | Some(prometheus_parse::Value::Gauge(v))
        | Some(prometheus_parse::Value::Untyped(v)) => *v,
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            buckets.last().map_or(0.0, |b| b.count)
        }
        other => panic!("{name}{labels:?}: {other:?}"),
    }
}

/// A sample of the proxy's `/metrics` (it must have been started with `metrics_addr`).
pub async fn metric(proxy: &TestProxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    let addr = proxy
        .metrics
        .expect("the proxy serves /metrics (set metrics_addr)");
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    sample(&scrape, name, labels)
}
