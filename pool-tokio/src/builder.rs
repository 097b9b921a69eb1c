//! Configuring a [`Pool`]: the builder, a setter per option of the core's `Config`.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use pool_core::shell::SharedPool;
use pool_core::{Config, ConfigOverrides, IdleOrder};

use crate::error::BuildError;
use crate::manager::Manager;
use crate::pool::Pool;
use crate::runtime::{LeakHook, LeakReport, TokioRuntime};

/// Configures a [`Pool`]. Every option defaults to `pool_core::Config::default()`.
pub struct Builder<M: Manager> {
    manager: M,
    config: Config,
    seed: Option<u64>,
    on_leak: Option<LeakHook>,
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
        }
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
        let runtime = TokioRuntime::new(manager.clone(), handle, self.on_leak);
        let timer = runtime.timer_starter();
        let shared = SharedPool::new(self.config, seed, runtime)?;
        timer.start(shared.downgrade());
        Ok(Pool { shared, manager })
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
