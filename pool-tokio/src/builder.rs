//! Configuring a [`Pool`]: the builder, a setter per option of the core's `Config`.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pool_core::shell::SharedPool;
use pool_core::{CloseReason, Config, ConfigOverrides, ConnId, IdleOrder, Verdict};

use crate::error::BuildError;
use crate::hooks::{BoxFuture, Extensions, Hooks};
use crate::manager::Manager;
use crate::pool::{Pool, PoolInner};
use crate::runtime::{LeakHook, LeakReport, PoolInfo, TokioRuntime};

/// The pool's name when [`Builder::name`] is not called.
pub const DEFAULT_NAME: &str = "default";

/// Configures a [`Pool`]. Every option defaults to `pool_core::Config::default()`.
pub struct Builder<M: Manager> {
    manager: M,
    config: Config,
    seed: Option<u64>,
    on_leak: Option<LeakHook>,
    name: String,
    hooks: Hooks<M>,
    #[cfg(feature = "metrics")]
    metrics_interval: Option<Duration>,
}

/// A setter per option of `pool_core::config_fields!`, with the option's own doc.
macro_rules! setters {
    ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {
        impl<M: Manager> Builder<M> {
            $(
                $(#[doc = $doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.config.$name = value;
                    self
                }
            )*
        }
    };
}

pool_core::config_fields!(setters);

impl<M: Manager> Builder<M> {
    pub(crate) fn new(manager: M) -> Self {
        Builder {
            manager,
            config: Config::default(),
            seed: None,
            on_leak: None,
            name: DEFAULT_NAME.to_owned(),
            hooks: Hooks::default(),
            #[cfg(feature = "metrics")]
            metrics_interval: Some(Duration::from_secs(1)),
        }
    }

    /// The pool's name: the `db.client.connection.pool.name` of its metrics and spans,
    /// and named in its logs. Default: `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Run `hook` on every new connection once it is open and before the pool uses it
    /// (e.g. `SET search_path`, preparing statements into its [`Extensions`]). An error
    /// is a failed connect, classified by [`Manager::classify`] (a `Fatal` one fails the
    /// waiters at once) and counted against `connect_timeout`; a panic is a transient
    /// failed connect. Either way the connection is closed.
    ///
    /// ```ignore
    /// builder.after_connect(|client, _ext| Box::pin(async move {
    ///     client.batch_execute("SET search_path TO app").await
    /// }))
    /// ```
    pub fn after_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut M::Connection,
                &'c mut Extensions,
            ) -> BoxFuture<'c, Result<(), M::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.hooks.after_connect = Some(Box::new(hook));
        self
    }

    /// Judge an idle connection just before it is lent: `false` closes it (counted as
    /// `check_failed`) and the waiter gets the next one (or a new one). Only idle
    /// connections are judged: one handed straight from its return (or its reset) to a
    /// waiting caller was just judged by [`Builder::after_release`]. Runs after
    /// [`Manager::is_broken`] says it is not broken, **inside the pool's critical
    /// section**: it must be synchronous and cheap (no I/O, no locks the pool's users
    /// might hold); for a round trip, use `check_after_idle` and [`Manager::check`]. A
    /// panic counts as `false`.
    pub fn before_acquire(
        mut self,
        hook: impl Fn(&mut M::Connection, &mut Extensions) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.before_acquire = Some(Box::new(hook));
        self
    }

    /// Judge a connection coming back from its borrower (who stated no verdict), after
    /// [`Manager::is_broken`]: the worse of the two verdicts wins (`Broken` closes it,
    /// `NeedsReset` resets it before it is lent again). Synchronous and cheap: it runs in
    /// the guard's `drop`. A panic counts as `Broken`.
    pub fn after_release(
        mut self,
        hook: impl Fn(&mut M::Connection, &mut Extensions) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.hooks.after_release = Some(Box::new(hook));
        self
    }

    /// Called once per connection that joins the pool (after `after_connect`). With
    /// [`Builder::on_close`], counts connections as Prisma's `onCreate`/`onDelete` do.
    pub fn on_create(mut self, hook: impl Fn(ConnId) + Send + Sync + 'static) -> Self {
        self.hooks.on_create = Some(Box::new(hook));
        self
    }

    /// Called once per connection the pool closes, with the reason. Every connection
    /// `on_create` reported is reported here once, when the pool closes it, except one
    /// [`crate::PooledConnection::detach`]ed (no longer the pool's) or still idle when
    /// the last pool handle is dropped without [`Pool::close`].
    pub fn on_close(mut self, hook: impl Fn(ConnId, CloseReason) + Send + Sync + 'static) -> Self {
        self.hooks.on_close = Some(Box::new(hook));
        self
    }

    /// How often the pool records its gauges and histograms through the `metrics`
    /// facade (feature `metrics`), besides each [`Pool::record_metrics`] call; `None`
    /// records only on those calls. Default: every second.
    #[cfg(feature = "metrics")]
    pub fn metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// Replace the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Apply the options parsed from a connection URL (only those it set).
    pub fn options(mut self, options: ConfigOverrides) -> Self {
        options.apply(&mut self.config);
        self
    }

    /// Seed for the lifetime and backoff jitter (default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Also call `hook` for every suspected leak (besides the `tracing` warning).
    pub fn on_leak(mut self, hook: impl Fn(&LeakReport) + Send + Sync + 'static) -> Self {
        self.on_leak = Some(Arc::new(hook));
        self
    }

    /// Build the pool and start its timer task. Must run inside a tokio runtime; the
    /// pool's tasks run on that runtime.
    pub fn build(self) -> Result<Pool<M>, BuildError> {
        self.config.validate()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let seed = self.seed.unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        let manager = Arc::new(self.manager);
        let info = Arc::new(PoolInfo {
            target: manager.target(),
            name: self.name,
        });
        let runtime = TokioRuntime::new(
            manager.clone(),
            Arc::new(self.hooks),
            info.clone(),
            handle,
            self.on_leak,
            self.config.close_timeout,
        );
        let timer = runtime.timer_starter();
        let shared = SharedPool::new(self.config, seed, runtime)?;
        timer.start(shared.downgrade());
        let pool = Pool {
            shared,
            inner: Arc::new(PoolInner {
                manager,
                info,
                #[cfg(feature = "metrics")]
                exporter: crate::metrics::Exporter::default(),
            }),
        };
        #[cfg(feature = "metrics")]
        if let Some(interval) = self.metrics_interval {
            crate::metrics::start(&pool, interval);
        }
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use pool_core::{ErrorClass, Verdict};

    use super::*;

    struct NoManager;

    impl Manager for NoManager {
        type Connection = ();
        type Error = std::io::Error;
        async fn connect(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn classify(&self, _: &std::io::Error) -> ErrorClass {
            ErrorClass::Fatal
        }
        async fn check(&self, _: &mut ()) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn is_broken(&self, _: &mut ()) -> Verdict {
            Verdict::Reusable
        }
    }

    /// Each setter writes its own option and nothing else, and its doc ends with the
    /// default the core's list states (pool-core's tests check that is `Config::default()`).
    #[test]
    fn setters_write_their_option_and_document_the_real_default() {
        // Differs from the default in every option.
        let other = Config {
            max_size: 7,
            min_idle: 1,
            max_connecting: 3,
            max_waiters: 5,
            acquire_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            check_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(2),
            check_after_idle: None,
            idle_timeout: None,
            max_lifetime: None,
            lifetime_jitter_permille: 0,
            leak_threshold: None,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            idle_order: IdleOrder::Fifo,
        };
        macro_rules! check {
            ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {$(
                let doc = [$($doc),*].concat();
                assert!(doc.ends_with(&format!("Default: `{}`.", stringify!($default))), "{doc}");
                let default: $ty = Config::default().$name;
                assert_ne!(other.$name, default, stringify!($name));
                let set = Builder::new(NoManager).config(other.clone()).$name(default).config;
                assert_eq!(set, Config { $name: default, ..other.clone() });
            )*};
        }
        pool_core::config_fields!(check);
    }

    /// A URL's options override the builder's; the rest stay.
    #[test]
    fn options_override_only_what_they_set() {
        let options = ConfigOverrides {
            min_idle: Some(4),
            ..ConfigOverrides::default()
        };
        let config = Builder::new(NoManager).max_size(20).options(options).config;
        assert_eq!(
            config,
            Config {
                max_size: 20,
                min_idle: 4,
                ..Config::default()
            }
        );
    }
}
