//! SIGTERM to the `pool-proxy` binary, as an operator (or a container runtime) sends it,
//! in front of a real PostgreSQL: the listener closes at once, an idle client is told
//! 57P01 and let go, a client inside a transaction may finish it and is then let go, and
//! the process exits 0; a transaction still open at `shutdown_timeout` is cut off, never
//! committed, and the process exits then.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{connect, connect_watched, described, rows, ADMIN, USER};
use pg_harness::{Backends, PgCluster, PgOptions};
use tokio_postgres::{Client, Config};

/// The binary, running from a configuration written to a scratch directory.
struct Binary {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Kept open: the binary's stdout is a pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Binary {
    /// Starts `pool-proxy --config proxy.toml` (a free port, the test users, the
    /// cluster's test database, then `settings`) and reads the address it prints.
    fn start(cluster: &PgCluster, settings: &str) -> Binary {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let users: String = [USER, ADMIN]
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.path().join("users.txt"), users).unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            format!(
                "listen_addr = \"127.0.0.1\"\nlisten_port = 0\nauth_file = \"users.txt\"\n\
                 admin_users = [\"admin\"]\n{settings}\n[databases]\npool_test = \"{}\"\n",
                cluster.url()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pool-proxy"))
            .arg("--config")
            .arg(&path)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the first line is the address, not {line:?}"))
            .parse()
            .unwrap();
        Binary {
            child,
            addr,
            dir,
            _stdout: stdout,
        }
    }

    fn config_as(&self, user: &str, password: &str, database: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    fn config(&self) -> Config {
        self.config_as(USER.0, USER.1, "pool_test")
    }

    /// `kill -TERM <pid>`; when it was sent.
    fn sigterm(&self) -> Instant {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        sent
    }

    /// Waits (at most `within`) for the process to exit.
    async fn exited(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after SIGTERM; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // Only if a test failed before the process exited.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `SHOW POOLS` on the binary's admin console agrees with `pg_stat_activity`.
async fn assert_pools_agree(binary: &Binary, cluster: &PgCluster) {
    let admin = connect(&binary.config_as(ADMIN.0, ADMIN.1, "pgbouncer"))
        .await
        .expect("the admin console");
    let shown: i64 = rows(&admin, "SHOW POOLS")
        .await
        .iter()
        .map(|pool| {
            ["sv_active", "sv_idle", "sv_tested", "sv_login"]
                .iter()
                .map(|column| pool[*column].parse::<i64>().unwrap())
                .sum::<i64>()
        })
        .sum();
    let seen = cluster
        .admin()
        .count(&Backends::user(USER.0))
        .await
        .unwrap();
    assert_eq!(shown, seen, "SHOW POOLS against pg_stat_activity");
}

/// The rows committed in `drained`, seen by the superuser.
async fn committed(cluster: &PgCluster) -> i64 {
    let mut config = Config::new();
    config
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user(pg_harness::postgres::ADMIN_USER)
        .dbname(&cluster.options().database);
    let client: Client = connect(&config).await.unwrap();
    client
        .query_one("SELECT count(*) FROM drained", &[])
        .await
        .unwrap()
        .get(0)
}

async fn setup(settings: &str) -> (PgCluster, Binary) {
    let cluster = PgCluster::start_async(PgOptions::default())
        .await
        .expect("cluster starts");
    let binary = Binary::start(&cluster, settings);
    connect(&binary.config())
        .await
        .unwrap()
        .batch_execute("CREATE TABLE drained (v int)")
        .await
        .unwrap();
    (cluster, binary)
}

/// SIGTERM with one client idle, one on the admin console and one inside a transaction
/// (`shutdown_timeout` 10 s): the idle ones are told 57P01 at once; new connections are refused; the other commits,
/// is then told 57P01, and the process exits 0 right after, well before the timeout,
/// having closed its servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transaction_finish_then_exits_0() {
    let (cluster, mut binary) = setup("default_pool_size = 2\nshutdown_timeout = 10").await;
    let mut inside = connect_watched(&binary.config()).await;
    inside
        .client
        .batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .unwrap();
    let mut idle = connect_watched(&binary.config()).await;
    idle.client.batch_execute("SELECT 1").await.unwrap();
    let mut console = connect_watched(&binary.config_as(ADMIN.0, ADMIN.1, "pgbouncer")).await;
    console.client.batch_execute("SHOW POOLS").await.unwrap();
    assert_pools_agree(&binary, &cluster).await;

    let signalled = binary.sigterm();
    let error = idle
        .ended(Duration::from_secs(3))
        .await
        .expect("the idle client is told why");
    let told_idle = signalled.elapsed();
    let (code, message) = described(&error);
    assert_eq!(code.as_deref(), Some("57P01"), "{message}");
    assert!(told_idle < Duration::from_secs(1), "{told_idle:?}");
    let error = console
        .ended(Duration::from_secs(3))
        .await
        .expect("the admin console's client is told why");
    let (code, message) = described(&error);
    assert_eq!(code.as_deref(), Some("57P01"), "{message}");

    let refused = connect(&binary.config()).await;
    assert!(
        refused.is_err(),
        "a new connection after SIGTERM is refused"
    );

    inside
        .client
        .batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .expect("the transaction finishes");
    let error = inside
        .ended(Duration::from_secs(3))
        .await
        .expect("the client is told why, after its commit");
    let (code, message) = described(&error);
    assert_eq!(code.as_deref(), Some("57P01"), "{message}");

    let status = binary.exited(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    eprintln!(
        "SIGTERM: the idle client was told in {told_idle:?}; the process exited {took:?} \
         after the signal"
    );
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(committed(&cluster).await, 2);
    cluster
        .admin()
        .wait_for_count(&Backends::user(USER.0), 0, Duration::from_secs(5))
        .await
        .expect("the proxy's servers are closed");
}

/// SIGTERM with a client that never ends its transaction (`shutdown_timeout` 2 s): at
/// about 2 s the client is told 57P01 and let go, its row is never committed, and the
/// process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_off_an_endless_transaction_at_shutdown_timeout() {
    let (cluster, mut binary) = setup("default_pool_size = 2\nshutdown_timeout = 2").await;
    let mut inside = connect_watched(&binary.config()).await;
    inside
        .client
        .batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .unwrap();
    assert_pools_agree(&binary, &cluster).await;

    let signalled = binary.sigterm();
    let status = binary.exited(Duration::from_secs(6)).await;
    let took = signalled.elapsed();
    let error = inside
        .ended(Duration::from_secs(1))
        .await
        .expect("the client is told why its connection ends");
    let (code, message) = described(&error);
    eprintln!(
        "SIGTERM, shutdown_timeout 2 s: exited after {took:?}; the client was told {message}"
    );
    assert_eq!(code.as_deref(), Some("57P01"), "{message}");
    assert_eq!(status.code(), Some(0), "{}", binary.log());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    cluster
        .admin()
        .wait_for_count(&Backends::user(USER.0), 0, Duration::from_secs(5))
        .await
        .expect("the proxy's servers are closed");
    assert_eq!(committed(&cluster).await, 0);
}
