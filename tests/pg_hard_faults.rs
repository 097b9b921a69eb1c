#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The tokio pool against a PostgreSQL that suffers a hard fault (issue 14): `kill -9` of
//! the postmaster, and every server process frozen with SIGSTOP (a hung host, a paused VM).
//! Ten tasks share a pool of five, each request bounded as a service bounds it. Under both
//! faults every `get` answers within its timeout, no request gets another's answer,
//! service resumes within seconds of the server being back, and afterwards the server's
//! backends from the pool are exactly the pool's connections, none of them leased.

mod pg_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_common::*;
use pg_harness::{Backends, PgCluster};
use tokio::task::JoinHandle;

const TASKS: usize = 10;
const MAX: usize = 5;
/// Each `get`'s timeout: it must answer (a connection or an error) within this plus SLACK.
const GET_TIMEOUT: Duration = Duration::from_secs(1);
/// A request's bound on its query: a frozen server never answers one.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(500);
/// After the server is back, requests may fail for this long; not after.
const RECOVERY: Duration = Duration::from_secs(3);
/// How long requests go on once recovery is over.
const STEADY: Duration = Duration::from_secs(1);

/// One request: a `get`, then a query on the connection.
#[derive(Debug)]
struct Attempt {
    started: Instant,
    /// How long the `get` took to answer.
    get_took: Duration,
    ended: Instant,
    outcome: Result<(), String>,
}

async fn attempt(pool: &PgPool, n: i64) -> Attempt {
    let started = Instant::now();
    // Bounded beyond the `get`'s own timeout so that a hang is reported, not waited out.
    let got = tokio::time::timeout(
        GET_TIMEOUT + Duration::from_secs(10),
        pool.get_timeout(GET_TIMEOUT),
    )
    .await;
    let get_took = started.elapsed();
    let outcome = match got {
        Err(_) => Err(format!("get hung for {get_took:?}")),
        Ok(Err(e)) => Err(format!("get: {e}")),
        Ok(Ok(client)) => match tokio::time::timeout(QUERY_TIMEOUT, select(&client, n)).await {
            Ok(Ok(v)) if v == n => Ok(()),
            Ok(Ok(v)) => panic!("request {n} got the answer {v}: another request's"),
            Ok(Err(e)) => Err(format!("query: {}", pg_message(&e))),
            Err(_) => Err(format!("query unanswered after {QUERY_TIMEOUT:?}")),
        },
    };
    Attempt {
        started,
        get_took,
        ended: Instant::now(),
        outcome,
    }
}

/// A `get` while the server is down or frozen: it must answer within its timeout (plus
/// SLACK). Returns what it says, as a user would see it. It may get a connection: one the
/// pool cannot know is dead or stuck yet.
async fn probe(pool: &PgPool) -> Result<(), String> {
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let got = within(
        limit + Duration::from_secs(10),
        "a get while the server is out",
        pool.get_timeout(limit),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took <= limit + SLACK,
        "a get_timeout({limit:?}) answered after {took:?}"
    );
    got.map(drop).map_err(|e| {
        assert!(e.is_timeout(), "{e}");
        error_text(&e)
    })
}

/// An error and its sources, as a log line shows them.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The pool under test and the tasks sending it requests until `stop`.
struct Load {
    pool: PgPool,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Attempt>>>,
}

impl Load {
    /// Starts the requests and returns once they are being served.
    async fn start(cluster: &PgCluster, app: &str) -> Load {
        let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| b.max_size(MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TASKS)
            .map(|t| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut log = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        log.push(attempt(&pool, t as i64 * 1_000_000 + i).await);
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    log
                })
            })
            .collect();
        wait_until(&pool, Duration::from_secs(30), "warm-up", |p| {
            p.metrics().stats.grants >= 100
        })
        .await;
        Load { pool, stop, tasks }
    }

    /// Runs on through recovery and a steady spell after the server came `back`, then
    /// checks what every request saw and that the pool and the server agree.
    async fn finish(self, cluster: &PgCluster, app: &str, fault: Instant, back: Instant) {
        tokio::time::sleep((back + RECOVERY + STEADY).saturating_duration_since(Instant::now()))
            .await;
        self.stop.store(true, Ordering::SeqCst);
        let mut attempts = Vec::new();
        for task in self.tasks {
            attempts.extend(
                within(Duration::from_secs(15), "request task ends", task)
                    .await
                    .expect("request task panicked"),
            );
        }

        let slowest = attempts
            .iter()
            .max_by_key(|a| a.get_took)
            .expect("requests");
        assert!(
            slowest.get_took <= GET_TIMEOUT + SLACK,
            "a get answered after {:?} ({:?}), past its timeout {GET_TIMEOUT:?}",
            slowest.get_took,
            slowest.outcome
        );
        let before: Vec<_> = attempts.iter().filter(|a| a.ended < fault).collect();
        assert!(
            !before.is_empty() && before.iter().all(|a| a.outcome.is_ok()),
            "failures before the fault: {:?}",
            before
                .iter()
                .filter(|a| a.outcome.is_err())
                .collect::<Vec<_>>()
        );
        let failed: Vec<_> = attempts.iter().filter(|a| a.outcome.is_err()).collect();
        assert!(
            !failed.is_empty(),
            "the fault went unnoticed; did it happen?"
        );
        let late: Vec<_> = attempts
            .iter()
            .filter(|a| a.started >= back + RECOVERY)
            .collect();
        assert!(
            late.len() >= TASKS,
            "too few requests after recovery: {}",
            late.len()
        );
        let late_failures: Vec<_> = late.iter().filter(|a| a.outcome.is_err()).collect();
        assert!(
            late_failures.is_empty(),
            "still failing {RECOVERY:?} after the server was back: {late_failures:?}"
        );
        let first_served = attempts
            .iter()
            .filter(|a| a.started >= back && a.outcome.is_ok())
            .map(|a| a.started + a.get_took)
            .min()
            .expect("served after the server was back");
        let last_failed = failed
            .iter()
            .map(|a| a.started + a.get_took)
            .max()
            .expect("failures");

        // Settled: nothing leased or in flight, and the server's backends from this pool
        // are the pool's connections.
        let admin = cluster.admin();
        let settle_began = Instant::now();
        let deadline = settle_began + Duration::from_secs(10);
        let on_server = loop {
            let status = self.pool.status();
            let on_server = admin
                .count(&Backends::app(app))
                .await
                .expect("count backends");
            let quiet = status.leased == 0
                && status.waiters == 0
                && status.opening == 0
                && status.checking == 0
                && status.closing == 0;
            if quiet && on_server == status.total as i64 {
                break on_server;
            }
            assert!(
                Instant::now() < deadline,
                "not settled within 10 s: the server has {on_server} backends from the pool, \
                 the pool says {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(on_server >= 1, "the pool kept no connection");
        self.pool
            .check_invariants()
            .expect("invariants after the fault");
        eprintln!(
            "{app}: {} requests, {} failed; slowest get {:?}; first served {:?} and last \
             failure {:?} after the server was back; settled in {:?} with {on_server} \
             connections; {:?}",
            attempts.len(),
            failed.len(),
            slowest.get_took,
            first_served.saturating_duration_since(back),
            last_failed.saturating_duration_since(back),
            settle_began.elapsed(),
            self.pool.metrics().stats,
        );
    }
}

/// `kill -9` of the postmaster under load, half a second down (as a supervisor restarts
/// it), then started again: the server's crash recovery included, requests are served
/// again within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_postmaster_under_load() {
    let _watchdog = watchdog(
        "kill_9_of_the_postmaster_under_load",
        Duration::from_secs(60),
    );
    let cluster = cluster(20);
    let app = "pool-kill-9";
    let load = Load::start(&cluster, app).await;
    let fault = Instant::now();
    within(
        Duration::from_secs(15),
        "kill -9",
        cluster.kill_hard_async(),
    )
    .await
    .expect("kill -9 of the postmaster");
    let seen = probe(&load.pool).await;
    eprintln!("kill -9: a get while down: {seen:?}");
    if let Err(seen) = seen {
        assert!(
            seen.contains("refused"),
            "names the refused connects: {seen}"
        );
    }
    tokio::time::sleep(
        (fault + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    )
    .await;
    within(
        Duration::from_secs(30),
        "start after kill -9",
        cluster.start_again_async(),
    )
    .await
    .expect("start after kill -9");
    let back = Instant::now();
    eprintln!("kill -9: down for {:?}", back - fault);
    load.finish(&cluster, app, fault, back).await;
}

/// Every server process stopped for two seconds under load: connections stay open but
/// nothing answers, connects get no answer either. Requests time out (none hangs), and
/// after the thaw service resumes within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_under_load() {
    let _watchdog = watchdog("a_frozen_server_under_load", Duration::from_secs(60));
    let cluster = cluster(20);
    let app = "pool-frozen";
    let load = Load::start(&cluster, app).await;
    let fault = Instant::now();
    within(Duration::from_secs(15), "freeze", cluster.freeze_async())
        .await
        .expect("freeze the server");
    // Once the requests under way at the freeze have timed out, their connections are
    // being reset (a cancel the frozen server never answers).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = probe(&load.pool).await;
    eprintln!("freeze: a get while frozen: {seen:?}");
    let thaw_at = fault + Duration::from_secs(2);
    tokio::time::sleep(thaw_at.saturating_duration_since(Instant::now())).await;
    within(Duration::from_secs(15), "thaw", cluster.thaw_async())
        .await
        .expect("thaw the server");
    let back = Instant::now();
    load.finish(&cluster, app, fault, back).await;
}
