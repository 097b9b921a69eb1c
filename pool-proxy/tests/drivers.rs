//! The drivers of other ecosystems through the real proxy: psycopg 3 (Python) and
//! node-postgres (JavaScript), as `scripts/install-deps.sh` installs them, each running its
//! conformance script (`drivers/*/conformance.*`: transactions, parameter types, prepared
//! statements across transactions, psycopg's cache evicting with SQL `DEALLOCATE`, errors
//! and recovery, cancel, 50 concurrent connections)
//! once straight to PostgreSQL and once through the proxy in transaction mode on a pool of
//! 5 servers. The two transcripts must be identical, and the proxy must have shared its 5
//! servers among the 50 clients: never more servers, never fewer clients at once.
//!
//! Prepared statements: the scripts prepare named statements (psycopg `prepare=True`,
//! node-postgres `{ name, text, values }`) and reuse them across transactions; the proxy
//! tracks them (`max_prepared_statements`), so no client is pinned ([`pinned_clients`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, TestProxy, USER};
use pg_harness::PgOptions;

/// Servers in the proxy's pool.
const POOL_SIZE: usize = 5;
/// Clients each script holds open at once in its concurrency section (`CLIENTS` there).
const CLIENTS: usize = 50;
/// Transactions each of them runs (`TRANSACTIONS` there).
const TRANSACTIONS: u64 = 3;
/// A script that has not finished by then is killed and fails the test.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_sees_through_the_proxy_what_it_sees_from_postgresql() {
    conformance(Driver::psycopg()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_sees_through_the_proxy_what_it_sees_from_postgresql() {
    conformance(Driver::node_postgres()).await;
}

async fn conformance(driver: Driver) {
    // Direct, the script's 50 concurrent clients and its two others need backends of their own.
    let pg = PgOptions::default().max_connections(CLIENTS as u32 + 20);
    let setup = Setup {
        pg,
        ..Setup::default()
    }
    .settings(&format!("default_pool_size = {POOL_SIZE}"))
    .settings("metrics_addr = \"127.0.0.1:0\"");
    let proxy = TestProxy::start(setup).await;

    let direct = driver.run(proxy.cluster.port()).await;
    direct.assert_passed("straight to PostgreSQL");

    // The proxy's route to pool_test is made by the first client: its counts are this run's.
    let (through, peaks) = driver.run_watched(&proxy).await;
    through.assert_passed("through the proxy");
    let transactions = xact_count(&proxy).await;
    eprintln!(
        "{}: {:?} direct, {:?} through the proxy: {peaks:?}, {transactions} transactions, \
         pinned clients: {:?}",
        driver.name,
        direct.took,
        through.took,
        pinned_clients(&proxy).await
    );
    assert_eq!(
        pinned_clients(&proxy).await,
        0.0,
        "named statements are tracked across servers, not pinned"
    );

    assert_same_transcript(driver.name, &direct.transcript, &through.transcript);
    for line in [
        "transaction: ids after commit and rollback: 1",
        "prepared: after transaction 3: 4 rows",
        "error: SELECT 1/0 -> 22012",
        "cancel: pg_sleep -> 57014",
        "done: 0 unexpected",
    ] {
        assert!(
            through.transcript.lines().any(|l| l == line),
            "{}: the transcript lacks {line:?}:\n{}",
            driver.name,
            through.transcript
        );
    }
    let concurrent = format!("concurrent: {CLIENTS} clients saw [1");
    assert!(
        through.transcript.contains(&concurrent),
        "{}: {concurrent:?} missing:\n{}",
        driver.name,
        through.transcript
    );

    assert!(
        peaks.servers <= POOL_SIZE && peaks.backends <= POOL_SIZE as i64,
        "{}: the proxy held more than {POOL_SIZE} servers: {peaks:?}",
        driver.name
    );
    assert!(
        peaks.clients >= CLIENTS,
        "{}: the {CLIENTS} concurrent clients were never all connected to the proxy at once: \
         {peaks:?}",
        driver.name
    );
    assert!(
        transactions >= CLIENTS as u64 * TRANSACTIONS,
        "{}: SHOW STATS counted {transactions} transactions, fewer than the concurrent \
         clients ran",
        driver.name
    );
    proxy.shutdown().await;
}

/// One installed driver: the program that runs its conformance script.
struct Driver {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
    /// Where the script runs (node resolves `require('pg')` from there).
    dir: PathBuf,
}

impl Driver {
    fn psycopg() -> Driver {
        let root = repo_root();
        Driver {
            name: "psycopg",
            program: root.join(".venv-drivers/bin/python"),
            script: root.join("drivers/python/conformance.py"),
            dir: root.join("drivers/python"),
        }
        .installed("-c", "import psycopg")
    }

    fn node_postgres() -> Driver {
        let root = repo_root();
        Driver {
            name: "node-postgres",
            program: PathBuf::from("node"),
            script: root.join("drivers/node/conformance.js"),
            dir: root.join("drivers/node"),
        }
        .installed("-e", "require('pg')")
    }

    /// Fails (never skips) when the driver is missing: the tests would otherwise pass
    /// without having run it.
    fn installed(self, flag: &str, check: &str) -> Driver {
        let status = Command::new(&self.program)
            .args([flag, check])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "{} is not installed ({} {flag} {check:?} failed: {status:?}): run \
             scripts/install-deps.sh",
            self.name,
            self.program.display()
        );
        self
    }

    /// Runs the script against `127.0.0.1:port` as the test user, its password in the
    /// environment (never on a command line).
    async fn run(&self, port: u16) -> Run {
        let url = format!("postgresql://{}@127.0.0.1:{port}/pool_test", USER.0);
        let mut command = Command::new(&self.program);
        command
            .arg(&self.script)
            .arg(url)
            .current_dir(&self.dir)
            .env("PGPASSWORD", USER.1)
            .env_remove("PGOPTIONS")
            .env_remove("PGSSLMODE")
            .env_remove("PGSERVICE");
        let name = self.name;
        tokio::task::spawn_blocking(move || Run::of(name, command))
            .await
            .expect("the script's runner")
    }

    /// Runs the script through the proxy, sampling the proxy's and the server's counts
    /// every 20 ms meanwhile.
    async fn run_watched(&self, proxy: &TestProxy) -> (Run, Peaks) {
        let run = self.run(proxy.addr.port());
        tokio::pin!(run);
        let mut peaks = Peaks::default();
        loop {
            tokio::select! {
                done = &mut run => return (done, peaks),
                () = tokio::time::sleep(Duration::from_millis(20)) => peaks.sample(proxy).await,
            }
        }
    }
}

/// A finished run of a conformance script.
struct Run {
    name: &'static str,
    status: ExitStatus,
    took: Duration,
    transcript: String,
    stderr: String,
}

impl Run {
    /// Runs `command` to its end, or kills it at [`SCRIPT_DEADLINE`]. Its output goes to
    /// files, so that a chatty script cannot block on a full pipe.
    fn of(name: &'static str, mut command: Command) -> Run {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let file = |path: &Path| std::fs::File::create(path).expect("an output file");
        let mut child = command
            .stdout(file(&out))
            .stderr(file(&err))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: the script does not start: {e}"));
        let started = Instant::now();
        let deadline = started + SCRIPT_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("the script's status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name}: the script ran past {SCRIPT_DEADLINE:?}; its transcript so far:\n{}",
                    read(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            name,
            status,
            took: started.elapsed(),
            transcript: read(&out),
            stderr: read(&err),
        }
    }

    fn assert_passed(&self, how: &str) {
        assert!(
            self.status.success(),
            "{} {how}: {}\n--- transcript ---\n{}--- stderr ---\n{}",
            self.name,
            self.status,
            self.transcript,
            self.stderr
        );
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The two transcripts line by line, naming the first line that differs.
fn assert_same_transcript(name: &str, direct: &str, through: &str) {
    if direct == through {
        return;
    }
    let (d, t): (Vec<&str>, Vec<&str>) = (direct.lines().collect(), through.lines().collect());
    let at = d.iter().zip(&t).take_while(|(a, b)| a == b).count();
    panic!(
        "{name}: the transcripts differ at line {}:\n  direct: {:?}\n  proxy:  {:?}\n\
         --- direct ---\n{direct}--- through the proxy ---\n{through}",
        at + 1,
        d.get(at),
        t.get(at)
    );
}

/// The most the proxy held at once, sampled while a script ran through it.
#[derive(Debug, Default)]
struct Peaks {
    /// Servers in `SHOW POOLS` (active, idle, being tested, logging in).
    servers: usize,
    /// The test user's backends in `pg_stat_activity`.
    backends: i64,
    /// Clients logged in (`cl_active` + `cl_waiting`).
    clients: usize,
    /// Clients waiting for a server.
    waiting: usize,
}

impl Peaks {
    async fn sample(&mut self, proxy: &TestProxy) {
        self.backends = self.backends.max(proxy.server_backends().await);
        // No row until the first client of pool_test logs in.
        let pools = proxy.show("POOLS").await;
        let Some(pool) = pools.into_iter().find(|row| row["database"] == "pool_test") else {
            return;
        };
        let count = |columns: &[&str]| -> usize {
            columns
                .iter()
                .map(|c| pool[*c].parse::<usize>().expect("a count"))
                .sum()
        };
        self.servers = self
            .servers
            .max(count(&["sv_active", "sv_idle", "sv_tested", "sv_login"]));
        self.clients = self.clients.max(count(&["cl_active", "cl_waiting"]));
        self.waiting = self.waiting.max(count(&["cl_waiting"]));
    }
}

async fn xact_count(proxy: &TestProxy) -> u64 {
    proxy.stats_of("pool_test").await["total_xact_count"]
        .parse()
        .expect("total_xact_count is a count")
}

/// Clients the proxy pinned to their servers on `pool_test` (its `/metrics`).
async fn pinned_clients(proxy: &TestProxy) -> f64 {
    common::metric(proxy, "pool_proxy_pins_total", &[("database", "pool_test")]).await
}

/// The workspace's root, where `scripts/install-deps.sh` puts the drivers.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("pool-proxy sits in the workspace")
        .to_path_buf()
}
