//! The tokio adapter driven by an in-memory manager under tokio's paused clock.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_tokio::{CloseReason, ErrorClass, Manager, Pool, PoolError, Verdict};

#[derive(Debug, Clone)]
struct FakeError {
    message: String,
    fatal: bool,
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FakeError {}

#[derive(Debug)]
struct FakeConn {
    id: usize,
    broken: bool,
    dirty: bool,
}

/// Counts everything; failures and delays are injected through `Knobs`.
#[derive(Default)]
struct Knobs {
    connects: AtomicUsize,
    connects_dropped: AtomicUsize,
    checks: AtomicUsize,
    resets: AtomicUsize,
    closes: AtomicUsize,
    /// Errors the next connects return, in order; then they succeed.
    failures: Mutex<VecDeque<FakeError>>,
    /// Fail every connect with this error.
    always_fail: Mutex<Option<FakeError>>,
    connect_delay: Mutex<Duration>,
    /// Health checks fail while set.
    fail_checks: std::sync::atomic::AtomicBool,
}

struct Fake {
    knobs: Arc<Knobs>,
}

/// Counts connect futures dropped before they finished (aborted tasks).
struct DropGuard(Arc<Knobs>, bool);
impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.connects_dropped.fetch_add(1, SeqCst);
        }
    }
}

impl Manager for Fake {
    type Connection = FakeConn;
    type Error = FakeError;

    async fn connect(&self) -> Result<FakeConn, FakeError> {
        let id = self.knobs.connects.fetch_add(1, SeqCst);
        let mut guard = DropGuard(self.knobs.clone(), false);
        let delay = *self.knobs.connect_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        guard.1 = true;
        if let Some(e) = self.knobs.always_fail.lock().unwrap().clone() {
            return Err(e);
        }
        if let Some(e) = self.knobs.failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        Ok(FakeConn {
            id,
            broken: false,
            dirty: false,
        })
    }

    fn classify(&self, e: &FakeError) -> ErrorClass {
        if e.fatal {
            ErrorClass::Fatal
        } else {
            ErrorClass::Transient
        }
    }

    async fn check(&self, c: &mut FakeConn) -> Result<(), FakeError> {
        self.knobs.checks.fetch_add(1, SeqCst);
        if c.broken || self.knobs.fail_checks.load(SeqCst) {
            Err(FakeError {
                message: "dead".into(),
                fatal: false,
            })
        } else {
            Ok(())
        }
    }

    async fn reset(&self, c: &mut FakeConn) -> Result<(), FakeError> {
        self.knobs.resets.fetch_add(1, SeqCst);
        c.dirty = false;
        Ok(())
    }

    fn is_broken(&self, c: &mut FakeConn) -> Verdict {
        if c.broken {
            Verdict::Broken
        } else if c.dirty {
            Verdict::NeedsReset
        } else {
            Verdict::Reusable
        }
    }

    async fn close(&self, c: FakeConn) {
        self.knobs.closes.fetch_add(1, SeqCst);
        let _ = c;
    }

    fn target(&self) -> pool_tokio::Target {
        pool_tokio::Target {
            system: Some("fakedb"),
            address: Some("fake-host".into()),
            port: Some(7),
        }
    }
}

fn fake() -> (Fake, Arc<Knobs>) {
    let knobs = Arc::new(Knobs::default());
    (
        Fake {
            knobs: knobs.clone(),
        },
        knobs,
    )
}

fn pool_of(max_size: usize) -> (Pool<Fake>, Arc<Knobs>) {
    let (m, k) = fake();
    let pool = Pool::builder(m).max_size(max_size).seed(1).build().unwrap();
    (pool, k)
}

/// Let spawned tasks run (the paused clock does not move while tasks are runnable).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let (pool, _) = pool_of(1);
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let p = pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let c = p.get().await.unwrap();
            order.lock().unwrap().push(i);
            // Hold it across a yield so the next waiter really waits for this return.
            tokio::task::yield_now().await;
            drop(c);
        }));
        // Each one queued before the next arrives.
        settle().await;
        assert_eq!(pool.status().waiters, i + 1);
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    pool.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn timeout_carries_the_last_connect_error_and_counts() {
    let (pool, knobs) = pool_of(2);
    *knobs.always_fail.lock().unwrap() = Some(FakeError {
        message: "connection refused (fake)".into(),
        fatal: false,
    });
    let start = tokio::time::Instant::now();
    let err = match pool.get_timeout(Duration::from_secs(2)).await {
        Err(e) => e,
        Ok(_) => panic!("a refusing database cannot lend a connection"),
    };
    // Timed out at its deadline, not before: transient errors are retried.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(
        knobs.connects.load(SeqCst) > 1,
        "transient errors are retried"
    );
    match &err {
        PoolError::Timeout {
            waited,
            last_connect_error,
            source,
            ..
        } => {
            assert_eq!(*waited, Duration::from_secs(2));
            let last = last_connect_error.as_ref().expect("the last connect error");
            assert_eq!(&*last.message, "connection refused (fake)");
            assert_eq!(
                source.as_ref().unwrap().message,
                "connection refused (fake)"
            );
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let text = err.to_string();
    assert!(text.contains("timed out after 2s"), "{text}");
    assert!(text.contains("connection refused (fake)"), "{text}");
    assert!(text.contains("/2"), "the counts: {text}");
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "connection refused (fake)");
}

#[tokio::test(start_paused = true)]
async fn fatal_connect_error_fails_fast() {
    let (pool, knobs) = pool_of(2);
    *knobs.always_fail.lock().unwrap() = Some(FakeError {
        message: "password authentication failed for user \"app\"".into(),
        fatal: true,
    });
    *knobs.connect_delay.lock().unwrap() = Duration::from_millis(20);
    let start = tokio::time::Instant::now();
    let err = pool.get().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "waited {:?} for a fatal error",
        start.elapsed()
    );
    match &err {
        PoolError::Connect { error, source } => {
            assert!(error.is_fatal());
            assert!(source.as_ref().unwrap().fatal);
        }
        other => panic!("expected Connect, got {other}"),
    }
    assert!(err.to_string().contains("password authentication failed"));
}

#[tokio::test(start_paused = true)]
async fn try_get_never_waits_nor_opens() {
    let (pool, knobs) = pool_of(1);
    assert!(pool.try_get().is_none());
    settle().await;
    assert_eq!(knobs.connects.load(SeqCst), 0, "try_get must not open");
    let c = pool.get().await.unwrap();
    assert!(pool.try_get().is_none(), "the only connection is lent");
    drop(c);
    let again = pool.try_get().expect("an idle connection");
    assert_eq!(again.id, 0);
    assert_eq!(knobs.connects.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn detach_frees_capacity() {
    let (pool, knobs) = pool_of(1);
    let c = pool.get().await.unwrap();
    let conn: FakeConn = c.detach();
    assert_eq!(conn.id, 0);
    assert_eq!(pool.status().total, 0);
    let c2 = pool
        .get_timeout(Duration::from_secs(1))
        .await
        .expect("the detached slot is free again");
    assert_eq!(c2.id, 1);
    assert_eq!(knobs.connects.load(SeqCst), 2);
    assert_eq!(pool.metrics().stats.detached, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_gets_leave_nothing_leased() {
    let (pool, knobs) = pool_of(3);
    *knobs.connect_delay.lock().unwrap() = Duration::from_millis(10);
    // Round 1: many gets polled once (queued, connects in flight), then dropped.
    let mut futs: Vec<_> = (0..50).map(|_| Box::pin(pool.get())).collect();
    for f in &mut futs {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    assert_eq!(pool.status().waiters, 50);
    drop(futs);
    assert_eq!(pool.status().waiters, 0);
    // Round 2: gets cancelled by a timeout at every stage, including after connects land.
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(i % 15), async {
                let c = pool.get().await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
                drop(c);
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = pool.status();
    assert_eq!((s.leased, s.waiters), (0, 0), "{s}");
    pool.check_invariants().unwrap();
    // All capacity is usable.
    let all: Vec<_> =
        futures::future::join_all((0..3).map(|_| pool.get_timeout(Duration::from_secs(1))))
            .await
            .into_iter()
            .map(|r| r.expect("every slot is free"))
            .collect();
    assert_eq!(pool.status().leased, 3);
    drop(all);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_holder_returns_its_connection_as_broken() {
    let (pool, knobs) = pool_of(1);
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let c = p.get().await.unwrap();
        assert_eq!(c.id, 0);
        panic!("the borrower fails mid-transaction");
    });
    assert!(task.await.unwrap_err().is_panic());
    settle().await;
    let m = pool.metrics();
    assert_eq!(m.stats.closes(CloseReason::Broken), 1, "{m:?}");
    assert_eq!(knobs.closes.load(SeqCst), 1, "the manager closed it");
    assert_eq!(pool.status().leased, 0);
    // The next borrower gets a fresh connection.
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1);
}

#[tokio::test(start_paused = true)]
async fn is_broken_and_reset_verdicts_are_honoured() {
    let (pool, knobs) = pool_of(1);
    let mut c = pool.get().await.unwrap();
    c.dirty = true;
    drop(c);
    settle().await;
    assert_eq!(knobs.resets.load(SeqCst), 1, "a dirty connection is reset");
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.id, 0);
    assert!(!c.dirty, "the next borrower never sees dirty state");
    c.broken = true;
    drop(c);
    settle().await;
    assert_eq!(pool.metrics().stats.closes(CloseReason::Broken), 1);
    assert_eq!(pool.get().await.unwrap().id, 1);
}

#[tokio::test(start_paused = true)]
async fn close_honours_the_drain_deadline() {
    let (pool, knobs) = pool_of(2);
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    drop(b); // idle: closed at once
    let start = tokio::time::Instant::now();
    let closing = tokio::spawn(pool.close(Duration::from_secs(5)));
    settle().await;
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(
        !closing.is_finished(),
        "a lease is out and the drain has time left"
    );
    let forced = closing.await.unwrap();
    assert_eq!(forced, 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "ends at the drain deadline"
    );
    drop(a); // comes back after revocation: closed, not lent
    settle().await;
    assert_eq!(knobs.closes.load(SeqCst), 2);
    assert_eq!(pool.status().total, 0);
}

#[tokio::test(start_paused = true)]
async fn close_ends_early_when_everything_is_returned() {
    let (pool, _) = pool_of(2);
    let a = pool.get().await.unwrap();
    let closing = tokio::spawn(pool.close(Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = tokio::time::Instant::now();
    drop(a);
    assert_eq!(closing.await.unwrap(), 0);
    assert!(start.elapsed() < Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn leak_warning_names_the_callers_location() {
    let (m, _) = fake();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = Pool::builder(m)
        .leak_threshold(Some(Duration::from_secs(1)))
        .on_leak(move |r| s.lock().unwrap().push(*r))
        .build()
        .unwrap();
    let line = line!() + 1;
    let leaked = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports = seen.lock().unwrap().clone();
    assert_eq!(reports.len(), 1);
    let origin = reports[0].origin.expect("the get() location");
    assert_eq!(origin.file(), file!());
    assert_eq!(origin.line(), line);
    assert!(reports[0].held >= Duration::from_secs(1));
    drop(leaked);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_aborts_the_open() {
    let (m, knobs) = fake();
    *knobs.connect_delay.lock().unwrap() = Duration::from_secs(3600);
    let pool = Pool::builder(m)
        .max_size(1)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = pool
        .get_timeout(Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    settle().await;
    assert!(knobs.connects.load(SeqCst) >= 1);
    assert_eq!(
        knobs.connects_dropped.load(SeqCst),
        knobs.connects.load(SeqCst) - pool.status().opening,
        "every abandoned open was aborted"
    );
    assert!(knobs.connects_dropped.load(SeqCst) >= 1);
}

#[tokio::test(start_paused = true)]
async fn the_timer_closes_idle_connections() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m)
        .idle_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    assert_eq!(pool.status().idle, 1);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(pool.status().idle, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(pool.status().idle, 0, "idle_timeout fired");
    assert_eq!(knobs.closes.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_kept_in_the_background() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m).min_idle(3).build().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.status().idle, 3);
    assert_eq!(knobs.connects.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_timer() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m).build().unwrap();
    drop(pool.get().await.unwrap());
    // The manager lives in the pool; the timer task holds the adapter's state.
    assert!(Arc::strong_count(&knobs) >= 2);
    drop(pool);
    settle().await;
    assert_eq!(
        Arc::strong_count(&knobs),
        1,
        "the timer task and every other task are gone"
    );
}

#[tokio::test(start_paused = true)]
async fn build_errors_name_the_field() {
    let (m, _) = fake();
    let err = Pool::builder(m)
        .max_size(2)
        .min_idle(3)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`min_idle`"), "{err}");
}

#[test]
fn build_outside_a_runtime_is_an_error() {
    let (m, _) = fake();
    assert_eq!(
        Pool::builder(m).build().unwrap_err(),
        pool_tokio::BuildError::NoRuntime
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_waits_and_holds() {
    let (pool, _) = pool_of(1);
    let c = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(c);
    let m = pool.metrics();
    assert_eq!(
        (m.stats.acquires, m.stats.grants, m.stats.connects_ok),
        (1, 1, 1)
    );
    assert_eq!(m.stats.hold.count(), 1);
    assert_eq!(m.stats.hold.max(), Duration::from_millis(5));
    assert_eq!(m.stats.wait.count(), 1);
    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"hold\":{\"count\":1"), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_a_multi_thread_runtime() {
    let (pool, _) = pool_of(4);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let c = pool.get().await.unwrap();
                tokio::task::yield_now().await;
                drop(c);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = pool.status();
    assert_eq!((s.leased, s.waiters), (0, 0));
    assert!(s.total <= 4);
    pool.check_invariants().unwrap();
    assert_eq!(pool.metrics().stats.grants, 64 * 50);
}

#[tokio::test(start_paused = true)]
async fn mark_broken_overrides_the_managers_verdict() {
    let (pool, knobs) = pool_of(1);
    let mut c = pool.get().await.unwrap();
    c.mark_broken();
    drop(c);
    settle().await;
    assert_eq!(pool.metrics().stats.closes(CloseReason::Broken), 1);
    assert_eq!(knobs.closes.load(SeqCst), 1);
    assert_eq!(pool.get().await.unwrap().id, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_checkout_check_replaces_the_connection() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m)
        .check_after_idle(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    // Used moments ago: lent without a check.
    drop(pool.get().await.unwrap());
    assert_eq!(knobs.checks.load(SeqCst), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    knobs.fail_checks.store(true, SeqCst);
    let c = pool.get().await.unwrap();
    assert_eq!(knobs.checks.load(SeqCst), 1);
    assert_eq!(c.id, 1, "the dead connection was replaced");
    assert_eq!(pool.metrics().stats.closes(CloseReason::CheckFailed), 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_leak_warning_in_the_log_names_file_and_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The current-thread runtime runs the timer task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (m, _) = fake();
    let pool = Pool::builder(m)
        .leak_threshold(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let line = line!() + 1;
    let leaked = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warning = log
        .lines()
        .find(|l| l.contains("suspected leak"))
        .unwrap_or_else(|| panic!("no leak warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!("{}:{line}", file!())),
        "{warning}"
    );
    drop(leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_races_on_a_multi_thread_runtime() {
    let (pool, _) = pool_of(2);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let get = pool.get_timeout(Duration::from_secs(5));
            // Cancel at a spread of moments: before, during and after the grant.
            let _ = tokio::time::timeout(Duration::from_micros(i * 7 % 300), async {
                let c = get.await.unwrap();
                tokio::task::yield_now().await;
                drop(c);
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = pool.status();
    assert_eq!((s.leased, s.waiters), (0, 0), "{s}");
    pool.check_invariants().unwrap();
    let a = pool.get_timeout(Duration::from_secs(1)).await.unwrap();
    let b = pool.get_timeout(Duration::from_secs(1)).await.unwrap();
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn huge_timeouts_mean_never() {
    let (pool, _) = pool_of(1);
    let held = pool.get_timeout(Duration::MAX).await.unwrap();
    let waiting = tokio::spawn(pool.get_timeout(Duration::from_secs(u64::MAX / 4)));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!waiting.is_finished());
    drop(held);
    assert!(waiting.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn evict_all_closes_idle_now_and_borrowed_ones_when_returned() {
    let (pool, knobs) = pool_of(3);
    let held = pool.get().await.unwrap();
    let idle = pool.get().await.unwrap();
    assert_eq!((held.id, idle.id), (0, 1));
    drop(idle);
    settle().await;
    pool.evict_all().unwrap();
    settle().await;
    assert_eq!(
        knobs.closes.load(SeqCst),
        1,
        "the idle one is closed at once"
    );
    assert_eq!(pool.status().idle, 0);
    // New borrowers get new connections while the evicted one is still out.
    let fresh = pool.get().await.unwrap();
    assert_eq!(fresh.id, 2);
    drop(held);
    settle().await;
    assert_eq!(
        knobs.closes.load(SeqCst),
        2,
        "the borrowed one when returned"
    );
    drop(fresh);
    settle().await;
    assert_eq!(pool.get().await.unwrap().id, 2, "new connections are kept");
    assert_eq!(pool.metrics().stats.closes(CloseReason::Evicted), 2);
    pool.check_invariants().unwrap();
    let _ = pool.close(Duration::ZERO).await;
    assert!(matches!(pool.evict_all(), Err(PoolError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn resize_grows_for_waiters_and_shrinks_as_connections_return() {
    let (pool, knobs) = pool_of(1);
    let first = pool.get().await.unwrap();
    let p = pool.clone();
    let waiting = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    settle().await;
    assert_eq!(pool.status().waiters, 1);
    pool.resize(2).unwrap();
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        1,
        "a new open for the waiter"
    );
    assert_eq!(pool.config().max_size, 2);
    let err = pool.resize(0).unwrap_err();
    assert_eq!(err.field, "max_size");
    pool.resize(1).unwrap();
    settle().await;
    // Connection 1 went idle when the waiter dropped it: closed at once.
    assert_eq!(knobs.closes.load(SeqCst), 1);
    assert_eq!(pool.status().total, 1);
    drop(first);
    settle().await;
    let s = pool.status();
    assert_eq!((s.total, s.idle, s.max_size), (1, 1, 1));
    assert_eq!(pool.metrics().stats.closes(CloseReason::Resized), 1);
    pool.check_invariants().unwrap();
}

// ---- hooks -----------------------------------------------------------------------------

/// What a hook saw, in order.
type Log = Arc<Mutex<Vec<String>>>;

fn log_of(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A statement-cache stand-in kept in a connection's extensions.
#[derive(Debug, PartialEq)]
struct Setup(usize);

/// `after_connect` runs once per new connection, before anyone borrows it, and what it
/// stores in the connection's extensions the borrowers see.
#[tokio::test(start_paused = true)]
async fn after_connect_sets_up_each_new_connection_once() {
    let (m, knobs) = fake();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let pool = Pool::builder(m)
        .max_size(2)
        .after_connect(move |conn, ext| {
            let r = r.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.fetch_add(1, SeqCst);
                ext.insert(Setup(conn.id));
                Ok(())
            })
        })
        .build()
        .unwrap();
    let a = pool.get().await.unwrap();
    assert_eq!(a.extensions().get::<Setup>(), Some(&Setup(a.id)));
    let b = pool.get().await.unwrap();
    assert_eq!(b.extensions().get::<Setup>(), Some(&Setup(b.id)));
    drop((a, b));
    for _ in 0..5 {
        let c = pool.get().await.unwrap();
        assert!(c.extensions().get::<Setup>().is_some());
    }
    assert_eq!(runs.load(SeqCst), 2, "once per connection, not per borrow");
    assert_eq!(knobs.connects.load(SeqCst), 2);
}

/// An `after_connect` error is a failed connect, classified by the manager: a fatal one
/// fails the waiter at once with the hook's error, and the connection is closed.
#[tokio::test(start_paused = true)]
async fn an_after_connect_error_is_a_failed_connect_and_closes_the_connection() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m)
        .after_connect(|_, _| {
            Box::pin(async {
                Err(FakeError {
                    message: "permission denied for schema app".into(),
                    fatal: true,
                })
            })
        })
        .build()
        .unwrap();
    let err = pool.get().await.map(|_| ()).unwrap_err();
    match &err {
        PoolError::Connect { error, source } => {
            assert_eq!(
                &*error.message,
                "after_connect: permission denied for schema app"
            );
            assert!(error.is_fatal());
            assert!(source.is_some(), "the hook's own error travels with it");
        }
        other => panic!("expected a connect error, got {other}"),
    }
    settle().await;
    assert_eq!(knobs.closes.load(SeqCst), 1, "the connection was closed");
    assert_eq!(pool.status().total, 0);
}

/// A panicking `after_connect` is a transient failed connect: the connection is closed
/// and the waiter gets an answer (here: its timeout, naming the panic).
#[tokio::test(start_paused = true)]
async fn a_panicking_after_connect_closes_the_connection_and_answers_the_waiter() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m)
        .after_connect(|_, _| Box::pin(async { panic!("hook bug") }))
        .build()
        .unwrap();
    let err = pool
        .get_timeout(Duration::from_secs(1))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        err.to_string().contains("after_connect: the hook panicked"),
        "{err}"
    );
    settle().await;
    let connects = knobs.connects.load(SeqCst);
    assert!(connects >= 1);
    assert_eq!(
        knobs.closes.load(SeqCst),
        connects,
        "every connection closed"
    );
    pool.check_invariants().unwrap();
}

/// `before_acquire` judges an idle connection at checkout: `false` closes it and the
/// waiter gets another; a panic counts as `false`.
#[tokio::test(start_paused = true)]
async fn before_acquire_can_refuse_an_idle_connection() {
    let (m, knobs) = fake();
    let log: Log = Log::default();
    let l = log.clone();
    let pool = Pool::builder(m)
        .max_size(1)
        .before_acquire(move |conn, ext| {
            l.lock().unwrap().push(format!("check {}", conn.id));
            match ext.get::<&str>() {
                Some(&"stale") => false,
                Some(&"panic") => panic!("hook bug"),
                _ => true,
            }
        })
        .build()
        .unwrap();
    // A fresh connection goes straight to its waiter: nothing idle to judge.
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.id, 0);
    drop(c);
    let mut c2 = pool.get().await.unwrap();
    assert_eq!(c2.id, 0, "judged and kept");
    c2.extensions_mut().insert("stale");
    drop(c2);
    c = pool.get().await.unwrap();
    assert_eq!(c.id, 1, "the stale one was closed, a new one opened");
    c.extensions_mut().insert("panic");
    drop(c);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 2, "a panicking hook closes the connection");
    drop(c);
    settle().await;
    assert_eq!(
        log_of(&log),
        ["check 0", "check 0", "check 1"],
        "judged at each checkout of an idle connection"
    );
    assert_eq!(pool.metrics().stats.closes(CloseReason::CheckFailed), 2);
    assert_eq!(knobs.closes.load(SeqCst), 2);
    pool.check_invariants().unwrap();
}

/// `after_release` judges a returned connection (the worse of its verdict and the
/// manager's wins); it is skipped when the borrower stated a verdict; a panic is
/// `Broken`.
#[tokio::test(start_paused = true)]
async fn after_release_verdicts_are_honoured() {
    let (m, knobs) = fake();
    let verdict = Arc::new(Mutex::new(Verdict::Reusable));
    let calls = Arc::new(AtomicUsize::new(0));
    let (v, n) = (verdict.clone(), calls.clone());
    let pool = Pool::builder(m)
        .max_size(1)
        .after_release(move |_, _| {
            n.fetch_add(1, SeqCst);
            let v = *v.lock().unwrap();
            if v == Verdict::Broken {
                panic!("hook bug: panics count as broken")
            }
            v
        })
        .build()
        .unwrap();
    drop(pool.get().await.unwrap());
    settle().await;
    assert_eq!((calls.load(SeqCst), knobs.resets.load(SeqCst)), (1, 0));
    *verdict.lock().unwrap() = Verdict::NeedsReset;
    drop(pool.get().await.unwrap());
    settle().await;
    assert_eq!((calls.load(SeqCst), knobs.resets.load(SeqCst)), (2, 1));
    // A stated verdict skips the hook.
    let mut c = pool.get().await.unwrap();
    c.set_verdict(Verdict::Reusable);
    drop(c);
    settle().await;
    assert_eq!((calls.load(SeqCst), knobs.resets.load(SeqCst)), (2, 1));
    // The manager's Broken wins over the hook's NeedsReset (and skips it).
    let mut c = pool.get().await.unwrap();
    assert_eq!(c.id, 0);
    c.broken = true;
    drop(c);
    settle().await;
    assert_eq!(calls.load(SeqCst), 2);
    // A panicking hook: the connection is closed, the next borrower gets a new one.
    *verdict.lock().unwrap() = Verdict::Broken;
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1);
    drop(c);
    settle().await;
    assert_eq!(calls.load(SeqCst), 3);
    assert_eq!(pool.metrics().stats.closes(CloseReason::Broken), 2);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 2);
    drop(c);
    pool.check_invariants().unwrap();
}

/// `on_create` and `on_close` count connections as Prisma's onCreate/onDelete do: every
/// connection created is reported closed once, with its reason.
#[tokio::test(start_paused = true)]
async fn on_create_and_on_close_report_every_connection_once() {
    let (m, knobs) = fake();
    let log: Log = Log::default();
    let (created, closed) = (log.clone(), log.clone());
    let pool = Pool::builder(m)
        .max_size(3)
        .on_create(move |conn| created.lock().unwrap().push(format!("create {conn}")))
        .on_close(move |conn, reason| {
            closed
                .lock()
                .unwrap()
                .push(format!("close {conn} {}", reason.as_str()))
        })
        .build()
        .unwrap();
    let mut a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let c = pool.get().await.unwrap();
    a.mark_broken();
    drop(a);
    drop(b);
    let _detached = c.detach();
    assert_eq!(pool.close(Duration::from_secs(1)).await, 0);
    settle().await;
    let log = log_of(&log);
    let names = |prefix: &str| log.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(names("create"), 3, "{log:?}");
    assert_eq!(
        names("close"),
        2,
        "the detached one is no longer the pool's: {log:?}"
    );
    assert!(log.iter().any(|l| l.ends_with(" broken")), "{log:?}");
    assert!(log.iter().any(|l| l.ends_with(" pool_closed")), "{log:?}");
    assert_eq!(knobs.closes.load(SeqCst), 2);
}

/// A panicking `on_create`/`on_close` is logged and otherwise ignored: the connection
/// is still lent and still closed.
#[tokio::test(start_paused = true)]
async fn panicking_counter_hooks_change_nothing() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m)
        .on_create(|_| panic!("on_create bug"))
        .on_close(|_, _| panic!("on_close bug"))
        .build()
        .unwrap();
    let mut c = pool.get().await.unwrap();
    c.mark_broken();
    drop(c);
    settle().await;
    assert_eq!(knobs.closes.load(SeqCst), 1);
    assert_eq!(pool.status().total, 0);
}

/// Extensions live and die with their connection: the next borrower of the same
/// connection sees what the last one stored; a new connection starts empty.
#[tokio::test(start_paused = true)]
async fn extensions_live_and_die_with_the_connection() {
    let (pool, _) = pool_of(1);
    let mut c = pool.get().await.unwrap();
    assert!(c.extensions().is_empty());
    *c.extensions_mut().get_or_insert_with(|| 0u32) += 1;
    drop(c);
    let mut c = pool.get().await.unwrap();
    *c.extensions_mut().get_or_insert_with(|| 0u32) += 1;
    assert_eq!(c.extensions().get::<u32>(), Some(&2));
    c.mark_broken();
    drop(c);
    let c = pool.get().await.unwrap();
    assert_eq!(c.id, 1);
    assert!(c.extensions().is_empty(), "a new connection starts empty");
}

// ---- name, health, spans, metrics --------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn health_reports_the_last_connect_error_and_how_long_ago() {
    let (m, knobs) = fake();
    let pool = Pool::builder(m).name("users").build().unwrap();
    assert_eq!(pool.name(), "users");
    assert!(pool.health().can_serve(), "{}", pool.health());
    *knobs.always_fail.lock().unwrap() = Some(FakeError {
        message: "connection refused (fake)".into(),
        fatal: false,
    });
    let _ = pool
        .get_timeout(Duration::from_millis(100))
        .await
        .map(|_| ());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = pool.health();
    assert!(!health.can_serve(), "{health}");
    let (error, ago) = health.last_connect_error.clone().unwrap();
    assert_eq!(&*error.message, "connection refused (fake)");
    assert!(
        ago >= Duration::from_secs(1) && ago <= Duration::from_secs(3),
        "{ago:?}"
    );
    let text = health.to_string();
    assert!(text.starts_with("not ready ("), "{text}");
    assert!(text.contains("ago: connection refused (fake)"), "{text}");
    *knobs.always_fail.lock().unwrap() = None;
    drop(pool.get().await.unwrap());
    let health = pool.health();
    assert!(health.can_serve(), "{health}");
    assert_eq!(health.last_connect_error, None);
    assert!(health.to_string().starts_with("ready (size 1/"), "{health}");
    pool.close(Duration::ZERO).await;
    assert!(!pool.health().can_serve());
}

/// The `pool.get` and `pool.connect` spans carry the pool's name and what the manager
/// connects to, under OpenTelemetry's field names.
#[tokio::test(start_paused = true)]
async fn spans_carry_the_pool_name_and_the_server() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (m, _) = fake();
    let pool = Pool::builder(m).name("orders").build().unwrap();
    drop(pool.get().await.unwrap());
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for (span, event) in [("pool.get{", "acquired"), ("pool.connect{", "connected")] {
        let line = log
            .lines()
            .find(|l| l.contains(span) && l.contains(event))
            .unwrap_or_else(|| panic!("no {event} in {span}:\n{log}"));
        for field in [
            "db.system.name=\"fakedb\"",
            "server.address=\"fake-host\"",
            "server.port=7",
            "db.client.connection.pool.name=\"orders\"",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
}

/// The `metrics` feature records OpenTelemetry's connection-pool series, labelled with
/// the pool's name, when asked (and every `metrics_interval`).
#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn metrics_are_recorded_under_the_otel_names() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (m, _) = fake();
    let pool = Pool::builder(m)
        .name("billing")
        .max_size(1)
        .min_idle(1)
        .metrics_interval(None)
        .build()
        .unwrap();
    let held = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let timed_out = pool.get_timeout(Duration::from_millis(5)).await.map(|_| ());
    assert!(timed_out.unwrap_err().is_timeout());
    drop(held);
    let _other = pool.get().await.unwrap();
    metrics::with_local_recorder(&recorder, || pool.record_metrics());
    // A second recording adds nothing to the histograms.
    metrics::with_local_recorder(&recorder, || pool.record_metrics());
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        assert!(
            labels.contains(&"db.client.connection.pool.name=billing".to_string()),
            "{key:?}"
        );
        let state = labels
            .iter()
            .find_map(|l| l.strip_prefix("db.client.connection.state="))
            .map(|s| format!("[{s}]"))
            .unwrap_or_default();
        let value = match value {
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Counter(c) => c as f64,
            DebugValue::Histogram(h) => h.len() as f64,
        };
        seen.insert(format!("{}{state}", key.name()), value);
    }
    let expect = [
        ("db.client.connection.count[idle]", 0.0),
        ("db.client.connection.count[used]", 1.0),
        ("db.client.connection.max", 1.0),
        ("db.client.connection.idle.min", 1.0),
        ("db.client.connection.pending_requests", 0.0),
        ("db.client.connection.timeouts", 1.0),
        ("db.client.connection.create_time", 1.0),
        ("db.client.connection.wait_time", 2.0),
        ("db.client.connection.use_time", 1.0),
    ];
    for (name, value) in expect {
        assert_eq!(seen.get(name), Some(&value), "{name}: {seen:?}");
    }
}
