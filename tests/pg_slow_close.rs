#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! `max_size` is a cap on the connections the database sees, including ones the pool is
//! closing (issue 14): a close that is slow (a server or network slow to take the
//! Terminate, a TLS close_notify) keeps its slot until it is done, or until
//! `close_timeout` abandons it (the connection is dropped then, closing its socket).
//! Before the fix a closing connection stopped counting at once, and with `max_size` 1
//! the server saw 2 connections from the pool.

mod pg_common;

use std::time::{Duration, Instant};

use pg_common::*;
use pool_tokio::{ErrorClass, Manager, PgConnection, PgManager, Pool, Verdict};

/// `PgManager`, with a close that holds the connection (still open on the server) for
/// `delay` before dropping it.
struct SlowClose {
    inner: PgManager,
    delay: Duration,
}

impl Manager for SlowClose {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        self.inner.connect().await
    }

    fn classify(&self, e: &tokio_postgres::Error) -> ErrorClass {
        self.inner.classify(e)
    }

    async fn check(&self, c: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        self.inner.check(c).await
    }

    async fn reset(&self, c: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        self.inner.reset(c).await
    }

    fn is_broken(&self, c: &mut PgConnection) -> Verdict {
        self.inner.is_broken(c)
    }

    async fn close(&self, c: PgConnection) {
        tokio::time::sleep(self.delay).await;
        drop(c);
    }
}

fn slow_pool(url: &str, delay: Duration, close_timeout: Duration) -> Pool<SlowClose> {
    let (inner, options) = PgManager::from_url(url).expect("valid pool URL");
    Pool::builder(SlowClose { inner, delay })
        .options(options)
        .max_size(1)
        .close_timeout(close_timeout)
        .seed(7)
        .build()
        .expect("valid pool configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_connection_counts_against_max_size_until_its_close_is_done() {
    let _w = watchdog(
        "a_closing_connection_counts_against_max_size_until_its_close_is_done",
        Duration::from_secs(60),
    );
    let cluster = cluster(10);
    let app = "slow-close";
    let delay = Duration::from_millis(500);
    let pool = slow_pool(
        &url_for(&cluster.url(), app, ""),
        delay,
        Duration::from_secs(5),
    );
    let admin = cluster.admin();
    let watch = BackendWatch::start(&admin, app).await;
    let mut pids = Vec::new();
    for round in 0..3 {
        let mut c = within(Duration::from_secs(10), "get", pool.get())
            .await
            .unwrap();
        pids.push(backend_pid(&c).await);
        c.mark_broken();
        drop(c);
        let s = pool.status();
        assert_eq!((s.closing, s.total), (1, 1), "round {round}: {s}");
        // The next borrower waits for the close: the slot is still the old connection's.
        let asked = Instant::now();
        let c = within(Duration::from_secs(10), "get after a close", pool.get())
            .await
            .unwrap();
        let waited = asked.elapsed();
        eprintln!("round {round}: the next get waited {waited:?} for a {delay:?} close");
        assert!(
            waited >= delay - Duration::from_millis(50),
            "round {round}: a new connection after {waited:?}, before the close was done"
        );
        assert_ne!(backend_pid(&c).await, *pids.last().unwrap());
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.status().closing > 0 {
        assert!(
            Instant::now() < deadline,
            "closes not done: {}",
            pool.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (peak, samples) = watch.finish().await;
    assert!(samples > 10, "{samples} samples");
    assert_eq!(
        peak, 1,
        "the server saw {peak} connections from a pool of 1"
    );
    let stats = pool.metrics().stats;
    assert_eq!(stats.closes_abandoned, 0);
    pool.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_past_close_timeout_is_abandoned_and_its_connection_dropped() {
    let _w = watchdog(
        "a_close_past_close_timeout_is_abandoned_and_its_connection_dropped",
        Duration::from_secs(60),
    );
    let cluster = cluster(10);
    let app = "stuck-close";
    let close_timeout = Duration::from_millis(300);
    let pool = slow_pool(
        &url_for(&cluster.url(), app, ""),
        Duration::from_secs(3600),
        close_timeout,
    );
    let mut c = pool.get().await.unwrap();
    let old = backend_pid(&c).await;
    c.mark_broken();
    drop(c);
    let asked = Instant::now();
    let c = within(Duration::from_secs(10), "get", pool.get())
        .await
        .unwrap();
    let waited = asked.elapsed();
    eprintln!("a stuck close held the slot for {waited:?} (close_timeout {close_timeout:?})");
    assert!(
        waited >= close_timeout - Duration::from_millis(20),
        "{waited:?}"
    );
    assert!(
        waited < close_timeout + Duration::from_secs(2),
        "{waited:?}"
    );
    assert_ne!(backend_pid(&c).await, old);
    assert_eq!(pool.metrics().stats.closes_abandoned, 1);
    // Abandoned means dropped: its socket closed, the server lets the backend go.
    let admin = cluster.admin();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = admin
            .query_i64(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {old}"
            ))
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned backend {old} is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    pool.check_invariants().unwrap();
}
