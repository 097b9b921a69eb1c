//! Hooks configured on the [`crate::Builder`], the per-connection [`Extensions`], and
//! the connection as the pool holds it (the manager's connection with its extensions).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;

use pool_core::{CloseReason, ConnId, Verdict};

use crate::manager::Manager;

/// A boxed future borrowing the connection, as [`crate::Builder::after_connect`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Per-connection user state, keyed by type (e.g. a statement cache): created empty with
/// the connection, dropped with it. Reach it from the hooks and from
/// [`crate::PooledConnection::extensions_mut`]. Empty, it allocates nothing.
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl Extensions {
    /// Store `value`, returning the previous value of its type.
    pub fn insert<T: Send + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    pub fn get<T: Send + 'static>(&self) -> Option<&T> {
        self.map.get(&TypeId::of::<T>())?.downcast_ref()
    }

    pub fn get_mut<T: Send + 'static>(&mut self) -> Option<&mut T> {
        self.map.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// The value of type `T`, stored first by `make` if there is none.
    pub fn get_or_insert_with<T: Send + 'static>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        self.map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(make()))
            .downcast_mut()
            .expect("stored under its own type id")
    }

    pub fn remove<T: Send + 'static>(&mut self) -> Option<T> {
        self.map
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.len())
            .finish()
    }
}

/// A connection as the pool holds it: the manager's connection and its extensions.
pub(crate) struct Conn<C> {
    pub(crate) conn: C,
    pub(crate) extensions: Extensions,
}

impl<C> Conn<C> {
    pub(crate) fn new(conn: C) -> Self {
        Conn {
            conn,
            extensions: Extensions::default(),
        }
    }
}

pub(crate) type AfterConnect<M> = Box<
    dyn for<'c> Fn(
            &'c mut <M as Manager>::Connection,
            &'c mut Extensions,
        ) -> BoxFuture<'c, Result<(), <M as Manager>::Error>>
        + Send
        + Sync,
>;
pub(crate) type BeforeAcquire<C> = Box<dyn Fn(&mut C, &mut Extensions) -> bool + Send + Sync>;
pub(crate) type AfterRelease<C> = Box<dyn Fn(&mut C, &mut Extensions) -> Verdict + Send + Sync>;
pub(crate) type OnCreate = Box<dyn Fn(ConnId) + Send + Sync>;
pub(crate) type OnClose = Box<dyn Fn(ConnId, CloseReason) + Send + Sync>;

/// Every hook the builder set. Shared by the runtime (which runs them all).
pub(crate) struct Hooks<M: Manager> {
    pub(crate) after_connect: Option<AfterConnect<M>>,
    pub(crate) before_acquire: Option<BeforeAcquire<M::Connection>>,
    pub(crate) after_release: Option<AfterRelease<M::Connection>>,
    pub(crate) on_create: Option<OnCreate>,
    pub(crate) on_close: Option<OnClose>,
}

impl<M: Manager> Default for Hooks<M> {
    fn default() -> Self {
        Hooks {
            after_connect: None,
            before_acquire: None,
            after_release: None,
            on_create: None,
            on_close: None,
        }
    }
}

impl<M: Manager> Hooks<M> {
    /// The judgement at checkout: `before_acquire`, false if it panics.
    pub(crate) fn before_acquire(&self, conn: &mut Conn<M::Connection>) -> bool {
        let Some(hook) = &self.before_acquire else {
            return true;
        };
        catch_unwind(AssertUnwindSafe(|| {
            hook(&mut conn.conn, &mut conn.extensions)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("before_acquire hook panicked; closing the connection");
            false
        })
    }

    /// The judgement at return: `after_release`, `Broken` if it panics.
    pub(crate) fn after_release(&self, conn: &mut Conn<M::Connection>) -> Verdict {
        let Some(hook) = &self.after_release else {
            return Verdict::Reusable;
        };
        catch_unwind(AssertUnwindSafe(|| {
            hook(&mut conn.conn, &mut conn.extensions)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("after_release hook panicked; closing the connection");
            Verdict::Broken
        })
    }

    pub(crate) fn on_create(&self, conn: ConnId) {
        if let Some(hook) = &self.on_create {
            if catch_unwind(AssertUnwindSafe(|| hook(conn))).is_err() {
                tracing::error!(conn = conn.get(), "on_create hook panicked");
            }
        }
    }

    pub(crate) fn on_close(&self, conn: ConnId, reason: CloseReason) {
        if let Some(hook) = &self.on_close {
            if catch_unwind(AssertUnwindSafe(|| hook(conn, reason))).is_err() {
                tracing::error!(conn = conn.get(), "on_close hook panicked");
            }
        }
    }
}

/// The worse of two verdicts: `Broken` over `NeedsReset` over `Reusable`.
pub(crate) fn worse(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: Verdict| match v {
        Verdict::Reusable => 0,
        Verdict::NeedsReset => 1,
        Verdict::Broken => 2,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// Poll `fut`, turning a panic into `Err(())`: an `after_connect` hook that panics is a
/// failed connect, and the connection it held is still closed.
pub(crate) async fn catch_panic<T>(mut fut: BoxFuture<'_, T>) -> Result<T, ()> {
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_keyed_by_type() {
        let mut ext = Extensions::default();
        assert!(ext.is_empty());
        assert_eq!(ext.insert(5u32), None);
        assert_eq!(ext.insert(6u32), Some(5));
        ext.insert(String::from("cache"));
        assert_eq!(ext.get::<u32>(), Some(&6));
        *ext.get_mut::<String>().unwrap() += "d";
        assert_eq!(ext.get::<String>().map(String::as_str), Some("cached"));
        *ext.get_or_insert_with(|| 0u64) += 2;
        *ext.get_or_insert_with(|| 0u64) += 2;
        assert_eq!(ext.get::<u64>(), Some(&4));
        assert_eq!(ext.len(), 3);
        assert_eq!(ext.remove::<u32>(), Some(6));
        assert_eq!(ext.get::<u32>(), None);
    }

    #[test]
    fn the_worse_verdict_wins() {
        use Verdict::*;
        assert_eq!(worse(Reusable, NeedsReset), NeedsReset);
        assert_eq!(worse(Broken, NeedsReset), Broken);
        assert_eq!(worse(Reusable, Reusable), Reusable);
    }
}
