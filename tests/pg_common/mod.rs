//! Helpers shared by the real-PostgreSQL pool tests (`tests/pg_*.rs`, `tests/pgbouncer.rs`,
//! `tests/users_service.rs`). Each test file uses a different subset.
#![allow(dead_code)]

pub mod certs;

use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pg_harness::{PgAdmin, PgCluster};
use pool_tokio::{Builder, PgManager, Pool};
use tokio::task::JoinHandle;

pub type PgPool = Pool<PgManager>;

/// Ends the whole test process if the test holding it runs longer than `limit`. The
/// `tokio::time::timeout`s inside a test cannot fire when a deadlock blocks every worker
/// thread (a pool bug); this turns such a hang into a failure instead of a stuck CI run.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(test: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Straight to file descriptor 2: `eprintln!` from a thread spawned by a test goes
        // to libtest's capture buffer, which `process::exit` throws away, leaving only
        // "error: test failed" and no name.
        let message =
            format!("\nwatchdog: test `{test}` still running after {limit:?}: hung; aborting\n");
        let _ = std::io::stderr().write_all(message.as_bytes());
        std::process::exit(101);
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Bounds an await: panics naming `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still not done after {limit:?}"),
    }
}

/// A `get()` that must fail (bounded by `limit`): its error and how long it took.
pub async fn failed_get(
    pool: &PgPool,
    limit: Duration,
    what: &str,
) -> (pool_tokio::PoolError<tokio_postgres::Error>, Duration) {
    let started = std::time::Instant::now();
    let err = within(limit, what, pool.get()).await.expect_err(what);
    (err, started.elapsed())
}

/// The cluster's test-user URL tagged with `application_name = app` (so the admin can
/// count this pool's backends) plus `extra` query parameters (`&name=value...`).
pub fn url_for(base: &str, app: &str, extra: &str) -> String {
    format!("{base}?application_name={app}&sslmode=disable{extra}")
}

/// A pool over `PgManager::from_url(url)`, configured further by `configure`.
pub fn pool_with(
    url: &str,
    configure: impl FnOnce(Builder<PgManager>) -> Builder<PgManager>,
) -> PgPool {
    let (manager, options) = PgManager::from_url(url).expect("valid pool URL");
    configure(Pool::builder(manager).options(options).seed(7))
        .build()
        .expect("valid pool configuration")
}

/// `SELECT n` over the simple protocol (also works through PgBouncer).
pub async fn select(client: &tokio_postgres::Client, n: i64) -> Result<i64, tokio_postgres::Error> {
    let rows = client.simple_query(&format!("SELECT {n}::int8")).await?;
    Ok(first_value(&rows).parse().expect("an integer"))
}

/// The first column of the first row in a simple query's answer.
pub fn first_value(rows: &[tokio_postgres::SimpleQueryMessage]) -> String {
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("one row")
}

/// The first column of the first row of a simple query; panics naming `sql` if it fails.
pub async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.expect(sql);
    first_value(&rows)
}

/// `SHOW setting` over the simple protocol (also works through PgBouncer).
pub async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    let rows = client
        .simple_query(&format!("SHOW {setting}"))
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {}", pg_message(&e)));
    first_value(&rows)
}

/// The server's process id for this connection's backend.
pub async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0)
}

/// The server's message for a database error (tokio-postgres' Display is only "db
/// error"), else the error's own text.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Polls `pg_stat_activity` on one admin connection and records the most client backends
/// ever seen with `application_name = app`.
pub struct BackendWatch {
    peak: Arc<AtomicI64>,
    samples: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl BackendWatch {
    pub async fn start(admin: &PgAdmin, app: &str) -> BackendWatch {
        let client = admin.client().await.expect("admin connection");
        let peak = Arc::new(AtomicI64::new(0));
        let samples = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, st, app) = (peak.clone(), samples.clone(), stop.clone(), app.to_owned());
        let task = tokio::spawn(async move {
            let sql = "SELECT count(*) FROM pg_stat_activity \
                       WHERE backend_type = 'client backend' AND application_name = $1";
            let stmt = client.prepare(sql).await.expect("prepare count");
            while !st.load(Ordering::SeqCst) {
                let n: i64 = client
                    .query_one(&stmt, &[&app])
                    .await
                    .expect("count backends")
                    .get(0);
                p.fetch_max(n, Ordering::SeqCst);
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        BackendWatch {
            peak,
            samples,
            stop,
            task,
        }
    }

    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::SeqCst)
    }

    /// Stops polling; returns (peak, number of samples taken).
    pub async fn finish(self) -> (i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        let result = (self.peak(), self.samples.clone());
        within(Duration::from_secs(10), "backend watcher", self.task)
            .await
            .expect("backend watcher panicked");
        (
            result.0.max(self.peak.load(Ordering::SeqCst)),
            result.1.load(Ordering::SeqCst),
        )
    }
}

/// Waits (bounded) until `cond(pool)` holds; panics with the pool's status otherwise.
pub async fn wait_until(
    pool: &PgPool,
    limit: Duration,
    what: &str,
    cond: impl Fn(&PgPool) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond(pool) {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{what}: not reached within {limit:?}; pool {}",
                pool.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A cluster with room for `max_connections` backends (the test user gets 3 fewer).
pub fn cluster(max_connections: u32) -> PgCluster {
    PgCluster::start(pg_harness::PgOptions::default().max_connections(max_connections))
        .expect("start PostgreSQL (scripts/install-deps.sh installs it)")
}

/// A small deterministic generator (xorshift64*), for random-but-replayable delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
