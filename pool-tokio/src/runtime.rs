//! The `Runtime` the shell runs on: tokio tasks for the work, one timer task per pool,
//! tokio's clock (so `tokio::time::pause()` drives the pool in tests), and the manager's
//! judgement of a connection.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pool_core::shell::{Moment, Runtime, Upkeep, WeakPool, Work};
use pool_core::{ConnId, ConnectError, ErrorClass, HumanDuration, Instant, LeaseId, Verdict};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::error::error_chain;
use crate::hooks::{catch_panic, worse, Conn, Hooks};
use crate::manager::{Manager, Target};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease held longer than `leak_threshold`, as told to a [`crate::Builder::on_leak`]
/// hook (and logged as a `tracing` warning).
#[derive(Clone, Copy, Debug)]
pub struct LeakReport {
    pub lease: LeaseId,
    pub held: Duration,
    /// Where the leaking `get()` / `get_timeout()` / `try_get()` was called.
    pub origin: Option<&'static Location<'static>>,
}

pub(crate) type LeakHook = Arc<dyn Fn(&LeakReport) + Send + Sync>;

/// The pool's name and what it connects to, for spans, metrics and logs.
#[derive(Debug)]
pub(crate) struct PoolInfo {
    pub(crate) name: String,
    pub(crate) target: Target,
}

impl PoolInfo {
    /// The `pool.connect` span for `conn`, carrying the pool's name and OpenTelemetry's
    /// database fields (evaluated only when a subscriber wants the span).
    pub(crate) fn connect_span(&self, conn: ConnId) -> tracing::Span {
        let t = &self.target;
        tracing::debug_span!(
            "pool.connect",
            conn = conn.get(),
            db.system.name = t.system,
            server.address = t.address.as_deref(),
            server.port = t.port,
            db.client.connection.pool.name = self.name.as_str(),
        )
    }

    /// The `pool.get` span, with the same fields.
    pub(crate) fn get_span(&self) -> tracing::Span {
        let t = &self.target;
        tracing::debug_span!(
            "pool.get",
            db.system.name = t.system,
            server.address = t.address.as_deref(),
            server.port = t.port,
            db.client.connection.pool.name = self.name.as_str(),
        )
    }
}

/// The shell's runtime. Owned by the pool; when the pool goes, it tells the timer task to
/// end.
pub(crate) struct TokioRuntime<M: Manager> {
    pub(crate) manager: Arc<M>,
    pub(crate) hooks: Arc<Hooks<M>>,
    pub(crate) info: Arc<PoolInfo>,
    handle: Handle,
    /// Core time zero.
    base: tokio::time::Instant,
    /// The timer task's deadline and bell, shared with it.
    timer: Arc<Timer>,
    /// Tasks running an open, check or reset, so a `Close` for their connection can abort
    /// them. Each task removes its own entry before reporting.
    tasks: Arc<Mutex<HashMap<ConnId, AbortHandle>>>,
    on_leak: Option<LeakHook>,
    /// The pool's `close_timeout`: a close still running then is dropped (its socket
    /// closes with it), as the core stops counting it.
    close_timeout: Duration,
}

pub(crate) struct TimerStarter {
    timer: Arc<Timer>,
    handle: Handle,
}

impl TimerStarter {
    pub(crate) fn start<C: Send + 'static>(self, pool: WeakPool<C>) {
        self.handle.spawn(run_timer(self.timer, pool));
    }
}

/// The one timer: when it must next fire, and the bell that wakes its task early.
#[derive(Default)]
pub(crate) struct Timer {
    deadline: Mutex<Option<tokio::time::Instant>>,
    notify: Notify,
    /// Set when the pool is gone: the task ends.
    done: std::sync::atomic::AtomicBool,
}

impl<M: Manager> TokioRuntime<M> {
    pub(crate) fn new(
        manager: Arc<M>,
        hooks: Arc<Hooks<M>>,
        info: Arc<PoolInfo>,
        handle: Handle,
        on_leak: Option<LeakHook>,
        close_timeout: Duration,
    ) -> Self {
        TokioRuntime {
            manager,
            hooks,
            info,
            handle,
            base: tokio::time::Instant::now(),
            timer: Arc::default(),
            tasks: Arc::default(),
            on_leak,
            close_timeout,
        }
    }

    /// What starts the timer task, once the pool this runtime runs exists.
    pub(crate) fn timer_starter(&self) -> TimerStarter {
        TimerStarter {
            timer: self.timer.clone(),
            handle: self.handle.clone(),
        }
    }

    /// Spawn `fut` as the task working on `conn`, abortable by a `Close` for it.
    fn spawn_tracked<F>(&self, conn: ConnId, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // Insert under the lock the task must take to remove itself, so a fast task can
        // never remove its entry before it was inserted.
        let mut tasks = lock(&self.tasks);
        let task = self.handle.spawn(fut);
        tasks.insert(conn, task.abort_handle());
    }

    /// Run a health check or a reset on a connection the pool lent for it.
    fn spawn_upkeep(&self, mut upkeep: Upkeep<Conn<M::Connection>>, kind: UpkeepKind) {
        let conn = upkeep.conn();
        let (manager, tasks) = (self.manager.clone(), self.tasks.clone());
        let span = match kind {
            UpkeepKind::Check => tracing::debug_span!("pool.check", conn = conn.get()),
            UpkeepKind::Reset => tracing::debug_span!("pool.reset", conn = conn.get()),
        };
        self.spawn_tracked(
            conn,
            async move {
                let result = match kind {
                    UpkeepKind::Check => manager.check(&mut upkeep.connection().conn).await,
                    UpkeepKind::Reset => manager.reset(&mut upkeep.connection().conn).await,
                };
                lock(&tasks).remove(&conn);
                if let Err(e) = &result {
                    tracing::info!(error = %error_chain(e), "{} failed", kind.name());
                }
                upkeep.finish(result.is_ok());
            }
            .instrument(span),
        );
    }
}

impl<M: Manager> Drop for TokioRuntime<M> {
    fn drop(&mut self) {
        self.timer
            .done
            .store(true, std::sync::atomic::Ordering::Release);
        self.timer.notify.notify_one();
    }
}

#[derive(Clone, Copy)]
enum UpkeepKind {
    Check,
    Reset,
}

impl UpkeepKind {
    fn name(self) -> &'static str {
        match self {
            UpkeepKind::Check => "health check",
            UpkeepKind::Reset => "reset",
        }
    }
}

impl<M: Manager> Runtime<Conn<M::Connection>> for TokioRuntime<M> {
    fn now(&self) -> Instant {
        let nanos = tokio::time::Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX - 1))
    }

    fn execute(&self, work: Work<Conn<M::Connection>>) {
        match work {
            Work::Open(open) => {
                let conn = open.conn();
                let (manager, hooks, tasks) =
                    (self.manager.clone(), self.hooks.clone(), self.tasks.clone());
                let span = self.info.connect_span(conn);
                self.spawn_tracked(
                    conn,
                    async move {
                        let started = tokio::time::Instant::now();
                        let result = connect(&*manager, &hooks).await;
                        lock(&tasks).remove(&conn);
                        match &result {
                            Ok(_) => {
                                tracing::debug!(elapsed = %HumanDuration(started.elapsed()), "connected");
                                hooks.on_create(conn);
                            }
                            Err(e) => {
                                tracing::warn!(class = ?e.class, error = %e.message, "connect failed")
                            }
                        }
                        open.finish(result);
                    }
                    .instrument(span),
                );
            }
            Work::Check(upkeep) => self.spawn_upkeep(upkeep, UpkeepKind::Check),
            Work::Reset(upkeep) => self.spawn_upkeep(upkeep, UpkeepKind::Reset),
            Work::Close {
                conn,
                connection,
                reason,
                done,
            } => {
                tracing::debug!(
                    conn = conn.get(),
                    reason = reason.as_str(),
                    held = connection.is_some(),
                    "closing connection"
                );
                // An open, check or reset still running for it was abandoned by the core.
                if let Some(task) = lock(&self.tasks).remove(&conn) {
                    task.abort();
                }
                if let Some(connection) = connection {
                    self.hooks.on_close(conn, reason);
                    let manager = self.manager.clone();
                    let limit = self.close_timeout;
                    self.handle.spawn(async move {
                        // Until `done` answers, the connection counts against max_size.
                        // Past the close timeout it is dropped mid-close (its socket
                        // closes with it) and left to the core's own close timeout,
                        // which counts it abandoned.
                        match tokio::time::timeout(limit, manager.close(connection.conn)).await {
                            Ok(()) => done.finish(),
                            Err(_) => {
                                tracing::warn!(
                                    conn = conn.get(),
                                    timeout = %HumanDuration(limit),
                                    "close did not finish within close_timeout; connection dropped"
                                );
                                done.abandon();
                            }
                        }
                    });
                }
            }
            Work::LeakSuspected {
                lease,
                held,
                origin,
            } => {
                match origin {
                    Some(at) => tracing::warn!(
                        lease = %lease,
                        held = %HumanDuration(held),
                        origin = %at,
                        "connection held longer than leak_threshold: suspected leak (acquired at {at})"
                    ),
                    None => tracing::warn!(
                        lease = %lease,
                        held = %HumanDuration(held),
                        "connection held longer than leak_threshold: suspected leak"
                    ),
                }
                if let Some(hook) = &self.on_leak {
                    hook(&LeakReport {
                        lease,
                        held,
                        origin,
                    });
                }
            }
            Work::Drained { forced } => {
                tracing::info!(forced, "pool closed and drained");
            }
        }
    }

    fn arm_timer(&self, at: Instant) {
        // A deadline beyond what tokio's clock can represent is never.
        let Some(when) = (at != Instant::NEVER)
            .then(|| self.base.checked_add(Duration::from_nanos(at.as_nanos())))
            .flatten()
        else {
            return;
        };
        {
            // Only ever earlier: two inputs on two threads may arm out of order.
            let mut deadline = lock(&self.timer.deadline);
            if deadline.is_some_and(|d| d <= when) {
                return;
            }
            *deadline = Some(when);
        }
        self.timer.notify.notify_one();
    }

    /// The one judgement, at checkout and at return: the manager's `is_broken`, then
    /// `before_acquire` (checkout) or `after_release` (return).
    fn judge(&self, connection: &mut Conn<M::Connection>, moment: Moment) -> Verdict {
        let verdict = self.manager.is_broken(&mut connection.conn);
        if verdict == Verdict::Broken {
            return verdict;
        }
        match moment {
            Moment::Return => worse(verdict, self.hooks.after_release(connection)),
            Moment::Checkout if !self.hooks.before_acquire(connection) => Verdict::Broken,
            Moment::Checkout => verdict,
        }
    }
}

/// Open a connection and run `after_connect` on it. A hook that fails or panics fails the
/// connect (its error classified by the manager; a panic is transient) and the connection
/// is closed.
async fn connect<M: Manager>(
    manager: &M,
    hooks: &Hooks<M>,
) -> Result<Conn<M::Connection>, ConnectError> {
    let failed = |e: M::Error| {
        ConnectError::new(manager.classify(&e), error_chain(&e)).with_source(Arc::new(e))
    };
    let mut conn = Conn::new(manager.connect().await.map_err(failed)?);
    let Some(after_connect) = &hooks.after_connect else {
        return Ok(conn);
    };
    let error = match catch_panic(after_connect(&mut conn.conn, &mut conn.extensions)).await {
        Ok(Ok(())) => return Ok(conn),
        Ok(Err(e)) => {
            let e = failed(e);
            ConnectError {
                message: format!("after_connect: {}", e.message).into(),
                ..e
            }
        }
        Err(()) => ConnectError::new(ErrorClass::Transient, "after_connect: the hook panicked"),
    };
    manager.close(conn.conn).await;
    Err(error)
}

/// The pool's one timer: sleep until the deadline the pool last armed (woken early when
/// it arms an earlier one), then call `handle_timeout`, which arms the next. Holds the
/// pool only weakly, and ends when the runtime (owned by the pool) is dropped.
async fn run_timer<C: Send + 'static>(timer: Arc<Timer>, pool: WeakPool<C>) {
    loop {
        let notified = timer.notify.notified();
        tokio::pin!(notified);
        // Registered before reading the deadline: an arm after the read still wakes us.
        notified.as_mut().enable();
        if timer.done.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let deadline = *lock(&timer.deadline);
        match deadline {
            Some(when) => {
                tokio::select! {
                    biased;
                    _ = &mut notified => continue,
                    _ = tokio::time::sleep_until(when) => {}
                }
            }
            None => {
                notified.await;
                continue;
            }
        }
        {
            // This firing handles everything due by now; a later deadline armed in the
            // meantime stays.
            let now = tokio::time::Instant::now();
            let mut d = lock(&timer.deadline);
            if d.is_some_and(|d| d <= now) {
                *d = None;
            }
        }
        let Some(pool) = pool.upgrade() else { return };
        pool.handle_timeout();
    }
}
