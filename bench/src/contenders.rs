//! The four contenders over a no-op connection: pool-tokio, deadpool, bb8, and the floor
//! (a bare tokio `Semaphore` guarding the same objects).

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection: nothing to open, check or close.
#[derive(Debug, Default)]
pub(crate) struct Noop(#[allow(dead_code)] u64);

/// A pool as the benchmark sees it: a handle that hands out a guard.
pub(crate) trait Contender: Clone + Send + Sync + 'static {
    type Guard: Send + 'static;
    fn get(&self) -> impl Future<Output = Self::Guard> + Send;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Ours,
    Deadpool,
    Bb8,
    Floor,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Ours, Kind::Deadpool, Kind::Bb8, Kind::Floor];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| format!("{k:?}").eq_ignore_ascii_case(s))
    }

    /// The contenders to run: all, or the one `--only` names.
    pub fn selected(only: Option<Kind>) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| only.is_none_or(|o| o == *k))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "pool-tokio",
            Kind::Deadpool => "deadpool 0.13",
            Kind::Bb8 => "bb8 0.9",
            Kind::Floor => "Semaphore (floor)",
        }
    }
}

// ---- pool-tokio ---------------------------------------------------------------------------

pub(crate) struct OursManager;

impl pool_tokio::Manager for OursManager {
    type Connection = Noop;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Noop, std::io::Error> {
        Ok(Noop::default())
    }

    fn classify(&self, _: &std::io::Error) -> pool_tokio::ErrorClass {
        pool_tokio::ErrorClass::Transient
    }

    async fn check(&self, _: &mut Noop) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn is_broken(&self, _: &mut Noop) -> pool_tokio::Verdict {
        pool_tokio::Verdict::Reusable
    }
}

#[derive(Clone)]
pub(crate) struct Ours(pub pool_tokio::Pool<OursManager>);

impl Ours {
    /// Default options except the size and the queue bound. Must run inside a runtime.
    pub fn new(max_size: usize, max_waiters: usize) -> Ours {
        Ours(
            pool_tokio::Pool::builder(OursManager)
                .max_size(max_size)
                .max_waiters(max_waiters)
                .build()
                .expect("build pool-tokio"),
        )
    }
}

impl Contender for Ours {
    type Guard = pool_tokio::PooledConnection<OursManager>;
    fn get(&self) -> impl Future<Output = Self::Guard> + Send {
        let get = self.0.get();
        async move { get.await.expect("pool-tokio get") }
    }
}

// ---- deadpool -----------------------------------------------------------------------------

pub(crate) struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = Noop;
    type Error = Infallible;

    async fn create(&self) -> Result<Noop, Infallible> {
        Ok(Noop::default())
    }

    async fn recycle(
        &self,
        _: &mut Noop,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct Deadpool(pub deadpool::managed::Pool<DeadpoolManager>);

impl Deadpool {
    pub fn new(max_size: usize) -> Deadpool {
        Deadpool(
            deadpool::managed::Pool::builder(DeadpoolManager)
                .max_size(max_size)
                .build()
                .expect("build deadpool"),
        )
    }
}

impl Contender for Deadpool {
    type Guard = deadpool::managed::Object<DeadpoolManager>;
    fn get(&self) -> impl Future<Output = Self::Guard> + Send {
        let pool = self.0.clone();
        async move { pool.get().await.expect("deadpool get") }
    }
}

// ---- bb8 ----------------------------------------------------------------------------------

pub(crate) struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = Noop;
    type Error = Infallible;

    async fn connect(&self) -> Result<Noop, Infallible> {
        Ok(Noop::default())
    }

    async fn is_valid(&self, _: &mut Noop) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Noop) -> bool {
        false
    }
}

#[derive(Clone)]
pub(crate) struct Bb8(pub bb8::Pool<Bb8Manager>);

impl Bb8 {
    /// Default options except the size (so `test_on_check_out` stays on, as shipped).
    pub async fn new(max_size: u32) -> Bb8 {
        Bb8(bb8::Pool::builder()
            .max_size(max_size)
            .build(Bb8Manager)
            .await
            .expect("build bb8"))
    }
}

impl Contender for Bb8 {
    type Guard = bb8::PooledConnection<'static, Bb8Manager>;
    fn get(&self) -> impl Future<Output = Self::Guard> + Send {
        let pool = self.0.clone();
        async move { pool.get_owned().await.expect("bb8 get") }
    }
}

// ---- the floor ----------------------------------------------------------------------------

/// A FIFO semaphore with one permit per object, and the objects in a plain `Vec`.
#[derive(Clone)]
pub(crate) struct Floor(Arc<FloorInner>);

pub(crate) struct FloorInner {
    permits: Arc<Semaphore>,
    objects: Mutex<Vec<Noop>>,
}

impl Floor {
    pub fn new(size: usize) -> Floor {
        Floor(Arc::new(FloorInner {
            permits: Arc::new(Semaphore::new(size)),
            objects: Mutex::new((0..size).map(|_| Noop::default()).collect()),
        }))
    }
}

pub(crate) struct FloorGuard {
    pool: Arc<FloorInner>,
    object: Option<Noop>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for FloorGuard {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            self.pool
                .objects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(object);
        }
        // The permit is released after the object is back.
    }
}

impl Contender for Floor {
    type Guard = FloorGuard;
    fn get(&self) -> impl Future<Output = FloorGuard> + Send {
        let pool = self.0.clone();
        async move {
            let permit = pool
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let object = pool.objects.lock().unwrap_or_else(|p| p.into_inner()).pop();
            FloorGuard {
                pool,
                object,
                _permit: permit,
            }
        }
    }
}
