//! The `Runtime` the shell runs on: tokio tasks for the work, one timer task per pool,
//! and tokio's clock (so `tokio::time::pause()` drives the pool in tests).

use std::collections::HashMap;
use std::panic::Location;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pool_core::shell::{Runtime, SharedPool, Work};
use pool_core::{ConnId, ConnectError, ErrorClass, Instant, LeaseId};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::error::error_chain;
use crate::manager::Manager;

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

/// A failed connect: the core's message (compared by pointer) and the manager's error.
type LastError<E> = (Arc<str>, Arc<E>);

pub(crate) type LeakHook = Arc<dyn Fn(&LeakReport) + Send + Sync>;

/// State shared by the runtime (inside the shell), the pool handle and the timer task.
pub(crate) struct Glue<M: Manager> {
    pub(crate) manager: Arc<M>,
    handle: Handle,
    /// Core time zero.
    base: tokio::time::Instant,
    pub(crate) timer: TimerCell,
    /// Tasks running an open, check or reset, so a `Close` for their connection can abort
    /// them. Each task removes its own entry before reporting.
    tasks: Mutex<HashMap<ConnId, AbortHandle>>,
    /// The last failed connect: the core's message (by pointer) and the manager's error.
    last_error: Mutex<Option<LastError<M::Error>>>,
    on_leak: Option<LeakHook>,
}

/// The timer's next deadline, and the bell that wakes it early.
pub(crate) struct TimerCell {
    deadline: Mutex<Option<Instant>>,
    pub(crate) notify: Notify,
}

impl<M: Manager> Glue<M> {
    pub(crate) fn new(manager: Arc<M>, handle: Handle, on_leak: Option<LeakHook>) -> Self {
        Glue {
            manager,
            handle,
            base: tokio::time::Instant::now(),
            timer: TimerCell {
                deadline: Mutex::new(None),
                notify: Notify::new(),
            },
            tasks: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
            on_leak,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        let nanos = tokio::time::Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX - 1))
    }

    /// `None` for a deadline beyond what the clock can represent: never.
    fn to_tokio(&self, at: Instant) -> Option<tokio::time::Instant> {
        if at == Instant::NEVER {
            return None;
        }
        self.base.checked_add(Duration::from_nanos(at.as_nanos()))
    }

    /// The manager's error behind a `ConnectError` the core reported, if it was the last.
    pub(crate) fn source_of(&self, error: &ConnectError) -> Option<Arc<M::Error>> {
        let last = lock(&self.last_error);
        match &*last {
            Some((message, source)) if Arc::ptr_eq(message, &error.message) => Some(source.clone()),
            _ => None,
        }
    }

    /// Spawn `fut` as the task working on `conn`, abortable by a `Close` for it.
    fn spawn_tracked<F>(self: &Arc<Self>, conn: ConnId, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        // Insert under the lock the task must take to remove itself, so a fast task can
        // never remove its entry before it was inserted.
        let mut tasks = lock(&self.tasks);
        let task = self.handle.spawn(fut);
        tasks.insert(conn, task.abort_handle());
    }

    /// Run a health check or a reset on a connection the pool holds, and report whether
    /// it may be lent again.
    fn spawn_upkeep(
        self: &Arc<Self>,
        pool: &SharedPool<M::Connection>,
        conn: ConnId,
        mut connection: M::Connection,
        kind: Upkeep,
    ) {
        let (pool, g) = (pool.clone(), self.clone());
        let span = match kind {
            Upkeep::Check => tracing::debug_span!("pool.check", conn = conn.get()),
            Upkeep::Reset => tracing::debug_span!("pool.reset", conn = conn.get()),
        };
        self.spawn_tracked(
            conn,
            async move {
                let result = match kind {
                    Upkeep::Check => g.manager.check(&mut connection).await,
                    Upkeep::Reset => g.manager.reset(&mut connection).await,
                };
                g.finish(conn);
                if let Err(e) = &result {
                    tracing::info!(error = %error_chain(e), "{} failed", kind.name());
                }
                let ok = result.is_ok();
                match kind {
                    Upkeep::Check => pool.check_finished(conn, connection, ok),
                    Upkeep::Reset => pool.reset_finished(conn, connection, ok),
                }
            }
            .instrument(span),
        );
    }

    fn finish(&self, conn: ConnId) {
        lock(&self.tasks).remove(&conn);
    }
}

/// Work on an established connection the pool holds between two loans.
#[derive(Clone, Copy)]
enum Upkeep {
    Check,
    Reset,
}

impl Upkeep {
    fn name(self) -> &'static str {
        match self {
            Upkeep::Check => "health check",
            Upkeep::Reset => "reset",
        }
    }
}

/// The shell's runtime: a thin handle on [`Glue`].
pub(crate) struct TokioRuntime<M: Manager>(pub(crate) Arc<Glue<M>>);

impl<M: Manager> Runtime<M::Connection> for TokioRuntime<M> {
    fn now(&self) -> Instant {
        self.0.now()
    }

    fn execute(&self, pool: &SharedPool<M::Connection>, work: Work<M::Connection>) {
        let glue = &self.0;
        match work {
            Work::Open { conn } => {
                let pool = pool.clone();
                let g = glue.clone();
                let span = tracing::debug_span!("pool.connect", conn = conn.get());
                glue.spawn_tracked(
                    conn,
                    async move {
                        let started = tokio::time::Instant::now();
                        let result = g.manager.connect().await;
                        g.finish(conn);
                        let result = result.map_err(|e| {
                            let class = g.manager.classify(&e);
                            let message: Arc<str> = error_chain(&e).into();
                            tracing::warn!(class = ?class, error = %message, "connect failed");
                            *lock(&g.last_error) = Some((message.clone(), Arc::new(e)));
                            match class {
                                ErrorClass::Fatal => ConnectError::fatal(message),
                                ErrorClass::Transient => ConnectError::transient(message),
                            }
                        });
                        if result.is_ok() {
                            tracing::debug!(elapsed = ?started.elapsed(), "connected");
                        }
                        pool.connect_finished(conn, result);
                    }
                    .instrument(span),
                );
            }
            Work::Check { conn, connection } => {
                glue.spawn_upkeep(pool, conn, connection, Upkeep::Check)
            }
            Work::Reset { conn, connection } => {
                glue.spawn_upkeep(pool, conn, connection, Upkeep::Reset)
            }
            Work::Close {
                conn,
                connection,
                reason,
            } => {
                tracing::debug!(
                    conn = conn.get(),
                    reason = reason.as_str(),
                    held = connection.is_some(),
                    "closing connection"
                );
                // An open, check or reset still running for it is abandoned by the core.
                if let Some(task) = lock(&glue.tasks).remove(&conn) {
                    task.abort();
                }
                if let Some(connection) = connection {
                    let g = glue.clone();
                    glue.handle.spawn(async move {
                        g.manager.close(connection).await;
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
                        held = ?held,
                        origin = %at,
                        "connection held longer than leak_threshold: suspected leak (acquired at {at})"
                    ),
                    None => tracing::warn!(
                        lease = %lease,
                        held = ?held,
                        "connection held longer than leak_threshold: suspected leak"
                    ),
                }
                if let Some(hook) = &glue.on_leak {
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

    fn arm_timer(&self, _pool: &SharedPool<M::Connection>, at: Instant) {
        let cell = &self.0.timer;
        {
            let mut deadline = lock(&cell.deadline);
            if deadline.is_some_and(|d| d <= at) {
                return;
            }
            *deadline = Some(at);
        }
        cell.notify.notify_one();
    }
}

/// What the timer task needs to reach the pool without keeping it alive.
pub(crate) trait Timed: Send + Sync + 'static {
    fn handle_timeout(&self) -> Option<Instant>;
}

/// The pool's one timer: sleep until the earliest deadline (woken early when an earlier
/// one is armed), call `handle_timeout`, repeat. Holds the pool only weakly: it ends once
/// the last handle is gone.
pub(crate) async fn run_timer<M: Manager, P: Timed>(glue: Arc<Glue<M>>, pool: Weak<P>) {
    let cell = &glue.timer;
    loop {
        if pool.strong_count() == 0 {
            return;
        }
        let notified = cell.notify.notified();
        tokio::pin!(notified);
        // Registered before reading the deadline: an arm after the read still wakes us.
        notified.as_mut().enable();
        let deadline = *lock(&cell.deadline);
        match deadline.and_then(|at| glue.to_tokio(at)) {
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
        let Some(pool) = pool.upgrade() else { return };
        let now = glue.now();
        {
            // Everything due by `now` is handled by this call; later deadlines armed
            // meanwhile stay.
            let mut d = lock(&cell.deadline);
            if d.is_some_and(|d| d <= now) {
                *d = None;
            }
        }
        let next = pool.handle_timeout();
        if let Some(next) = next {
            let mut d = lock(&cell.deadline);
            if d.is_none_or(|d| next < d) {
                *d = Some(next);
            }
        }
    }
}
