//! Pool configuration: every knob in one place, every default argued.

use std::fmt;
use std::time::Duration;

use IdleOrder::Lifo;

/// Which idle connection a checkout takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum IdleOrder {
    /// Most recently returned first. The default: a few hot connections serve the load and
    /// the rest stay idle long enough for `idle_timeout` to shrink the pool.
    Lifo,
    /// Least recently returned first: spreads use over every connection (and keeps them all
    /// warm, so the pool never shrinks under steady load).
    Fifo,
}

/// The list every description of the options is generated from: each option's name,
/// type, doc and default, once. It calls `callback!` with the list, each option as
///
/// ```text
/// /// doc lines, ending with a generated "Default: `expr`." line
/// name: Type = default_expr,
/// ```
///
/// so other crates can generate their own views of the options (the tokio adapter's
/// builder setters, say) with the same docs. `Duration` and `IdleOrder` must be in scope
/// where the callback expands; a callback that evaluates the defaults also needs this
/// module's `secs`, `millis` and `IdleOrder::Lifo` (the defaults are written with them,
/// not `Duration::from_secs`: paths written in a macro's body stringify as
/// `Duration :: from_secs`). Other crates read the values from `Config::default()`. In
/// this crate the list generates [`Config`], its `Default`, [`Config::FIELDS`] and
/// [`ConfigOverrides`].
///
/// ```
/// macro_rules! names {
///     ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {
///         [$(stringify!($name)),*]
///     };
/// }
/// assert_eq!(pool_core::config_fields!(names)[0], "max_size");
/// ```
#[macro_export]
macro_rules! config_fields {
    ($($callback:ident)::+) => {
        $crate::__config_fields_with_defaults! {
            $($callback)::+;

            /// Most connections the pool holds, in any state but closed. HikariCP's
            /// default, and `cores * 2 + spindles` for a small database server. A pool is a
            /// throttle on the database, not a booster; see docs/guides/pool-sizing.md.
            max_size: usize = 10,
            /// Idle connections kept warm in the background (HikariCP's `minimumIdle`). By
            /// default none: the pool opens connections on demand and shrinks to nothing
            /// when unused, which is what a serverless or rarely-used service wants; raise
            /// it to hide connect latency.
            min_idle: usize = 0,
            /// Most connections being opened at once. Small, because opening is slow
            /// (handshake, auth, a forked backend), and under a spike a returned connection
            /// usually serves a waiter long before a new one is ready; HikariCP opens one at
            /// a time for this reason.
            max_connecting: usize = 2,
            /// Most acquires allowed to wait; beyond it an acquire is rejected at once (load
            /// shedding). At the default size and millisecond queries the default queue is
            /// already seconds long, and rejecting fast beats timing out slowly.
            max_waiters: usize = 10_000,
            /// Default total time an acquire may wait, covering any connect it waits on.
            /// Used by the shell and adapters to turn "now" into a deadline. The default is
            /// every peer's.
            acquire_timeout: Duration = secs(30),
            /// Longest a connect may take before it is abandoned and counted as a transient
            /// failure. Loopback takes milliseconds, a cold serverless database a few
            /// seconds.
            connect_timeout: Duration = secs(10),
            /// Longest a health check or a reset may take before the connection is closed.
            /// The default is HikariCP's `validationTimeout`.
            check_timeout: Duration = secs(5),
            /// Longest a close may take. A closing connection still counts against
            /// `max_size` (the server still has it) until the embedder says it is gone
            /// or this passes; then it is abandoned and counted as gone. A healthy server
            /// takes a Terminate in microseconds; the default is `check_timeout`'s: a
            /// server that has not let go in 5 s is stuck, and the slot is worth more.
            close_timeout: Duration = secs(5),
            /// Check a connection on checkout only if it sat idle longer than this; `None`
            /// never checks. The default is HikariCP's bypass window: a connection used
            /// moments ago is almost surely alive, and checking it would cost a round trip
            /// per checkout.
            check_after_idle: Option<Duration> = Some(millis(500)),
            /// Close connections idle this long, down to `min_idle`; `None` keeps them. The
            /// default is HikariCP's.
            idle_timeout: Option<Duration> = Some(secs(600)),
            /// Close connections this old (when idle, or when returned); `None` keeps them.
            /// The default is HikariCP's: below typical server, proxy and NAT limits, and it
            /// lets the pool pick up DNS and failover changes.
            max_lifetime: Option<Duration> = Some(secs(1800)),
            /// Each connection's lifetime is shortened by a random part of this fraction, in
            /// per-mille, so connections opened together do not expire together. The
            /// default is HikariCP's variance, 2.5 %.
            lifetime_jitter_permille: u16 = 25,
            /// Report a lease held longer than this as a suspected leak; `None` disables it.
            /// A pooled connection held for minutes is almost always a bug.
            leak_threshold: Option<Duration> = Some(secs(300)),
            /// First retry delay after a failed connect; it doubles per consecutive failure,
            /// with jitter. The default is HikariCP's and sqlx's: a restart is often over in
            /// a second.
            backoff_base: Duration = millis(10),
            /// Cap on the retry delay. The default is below HikariCP's 5 s: a refused
            /// connect costs a restarting server almost nothing, while every second of
            /// backoff after it is back is a second of outage (`pool-sim run db-restart`: a
            /// 5 s cap adds ~4 s). With `max_connecting` 2, a pool still makes at most a few
            /// attempts per second.
            backoff_max: Duration = secs(1),
            /// Idle connections handed out most- or least-recently-used first.
            idle_order: IdleOrder = Lifo,
        }
    };
}

/// The second step of [`config_fields!`]: appends each option's generated "Default" line
/// to its doc, then calls the callback. Not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __config_fields_with_defaults {
    (
        $($callback:ident)::+;
        $($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*
    ) => {
        $($callback)::+! {
            $(
                $(#[doc = $doc])*
                #[doc = ""]
                #[doc = concat!("Default: `", stringify!($default), "`.")]
                $name: $ty = $default,
            )*
        }
    };
}

/// The names the defaults in [`config_fields!`] are written with.
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

macro_rules! define_config {
    ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {
        /// How the pool behaves. Build with `Config::default()` and change what you need;
        /// the pool validates it when it is built.
        ///
        /// With the `arbitrary` feature, `Config` implements `arbitrary::Arbitrary` for
        /// fuzzing; the values it draws favour the scales that matter (see the `fuzz` module),
        /// and need not be valid.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzz::field))]
                pub $name: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)* }
            }
        }

        impl Config {
            /// Every option's name, in declaration order: what a [`ConfigError`] names.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($name)),*];
        }

        /// Some of the options, each `None` unless set: what a connection URL states (see
        /// `pool_tokio::PgManager::from_url`). [`ConfigOverrides::apply`] writes the ones
        /// that are set over a [`Config`].
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct ConfigOverrides {
            $(
                #[doc = concat!("Overrides [`Config::", stringify!($name), "`].")]
                pub $name: Option<$ty>,
            )*
        }

        impl ConfigOverrides {
            /// Write the options that are set over `config`; leave the rest.
            pub fn apply(&self, config: &mut Config) {
                $(
                    if let Some(value) = self.$name {
                        config.$name = value;
                    }
                )*
            }
        }
    };
}

config_fields!(define_config);

/// The largest `max_size` accepted: PostgreSQL's own ceiling on `max_connections`. A
/// larger value is a typo, and the pool would try to honour it.
pub const MAX_SIZE_LIMIT: usize = 262_143;

/// A configuration the pool refuses to run with. Names the field and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pool option `{}`: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        field,
        problem: problem.into(),
    })
}

fn nonzero(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return invalid(field, "must be greater than zero");
    }
    Ok(())
}

impl Config {
    /// Reject configurations that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_size == 0 {
            return invalid("max_size", "must be at least 1");
        }
        if self.max_size > MAX_SIZE_LIMIT {
            return invalid(
                "max_size",
                format!("({}) must be at most {MAX_SIZE_LIMIT}", self.max_size),
            );
        }
        if self.min_idle > self.max_size {
            return invalid(
                "min_idle",
                format!(
                    "({}) must not exceed max_size ({})",
                    self.min_idle, self.max_size
                ),
            );
        }
        if self.max_connecting == 0 {
            return invalid("max_connecting", "must be at least 1");
        }
        nonzero("acquire_timeout", self.acquire_timeout)?;
        nonzero("connect_timeout", self.connect_timeout)?;
        nonzero("check_timeout", self.check_timeout)?;
        nonzero("close_timeout", self.close_timeout)?;
        if let Some(d) = self.idle_timeout {
            nonzero("idle_timeout", d)?;
        }
        if let Some(d) = self.max_lifetime {
            nonzero("max_lifetime", d)?;
        }
        if let Some(d) = self.leak_threshold {
            nonzero("leak_threshold", d)?;
        }
        if self.lifetime_jitter_permille > 500 {
            return invalid(
                "lifetime_jitter_permille",
                format!(
                    "({}) must be at most 500 (half the lifetime)",
                    self.lifetime_jitter_permille
                ),
            );
        }
        nonzero("backoff_base", self.backoff_base)?;
        if self.backoff_max < self.backoff_base {
            return invalid(
                "backoff_max",
                format!(
                    "({}) must be at least backoff_base ({})",
                    crate::time::HumanDuration(self.backoff_max),
                    crate::time::HumanDuration(self.backoff_base)
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: Config) -> &'static str {
        let field = c.validate().unwrap_err().field;
        assert!(Config::FIELDS.contains(&field), "{field}");
        field
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    /// The defaults documented (and generated) from the list are `Config::default()`'s,
    /// field by field, and `FIELDS` names each field once, in order.
    #[test]
    fn the_list_states_the_defaults_and_names() {
        macro_rules! check {
            ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {{
                let d = Config::default();
                $(
                    let value: $ty = $default;
                    assert_eq!(d.$name, value, stringify!($name));
                    let doc = [$($doc),*].concat();
                    assert!(
                        doc.ends_with(&format!("Default: `{}`.", stringify!($default))),
                        "{doc}"
                    );
                )*
                assert_eq!(Config::FIELDS, [$(stringify!($name)),*]);
            }};
        }
        config_fields!(check);
        assert_eq!(Config::FIELDS.len(), 16);
        assert_eq!(Config::default().backoff_max, Duration::from_secs(1));
    }

    /// Only the options that are set are applied.
    #[test]
    fn overrides_apply_only_what_is_set() {
        let mut config = Config::default();
        ConfigOverrides::default().apply(&mut config);
        assert_eq!(config, Config::default());
        ConfigOverrides {
            max_size: Some(3),
            idle_timeout: Some(None),
            ..ConfigOverrides::default()
        }
        .apply(&mut config);
        assert_eq!(
            config,
            Config {
                max_size: 3,
                idle_timeout: None,
                ..Config::default()
            }
        );
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let d = Config::default;
        assert_eq!(field_of(Config { max_size: 0, ..d() }), "max_size");
        assert_eq!(
            field_of(Config {
                max_size: usize::MAX,
                ..d()
            }),
            "max_size"
        );
        assert_eq!(
            field_of(Config {
                min_idle: 11,
                ..d()
            }),
            "min_idle"
        );
        assert_eq!(
            field_of(Config {
                max_connecting: 0,
                ..d()
            }),
            "max_connecting"
        );
        let zero = Duration::ZERO;
        assert_eq!(
            field_of(Config {
                acquire_timeout: zero,
                ..d()
            }),
            "acquire_timeout"
        );
        assert_eq!(
            field_of(Config {
                connect_timeout: zero,
                ..d()
            }),
            "connect_timeout"
        );
        assert_eq!(
            field_of(Config {
                check_timeout: zero,
                ..d()
            }),
            "check_timeout"
        );
        assert_eq!(
            field_of(Config {
                close_timeout: zero,
                ..d()
            }),
            "close_timeout"
        );
        assert_eq!(
            field_of(Config {
                idle_timeout: Some(zero),
                ..d()
            }),
            "idle_timeout"
        );
        assert_eq!(
            field_of(Config {
                max_lifetime: Some(zero),
                ..d()
            }),
            "max_lifetime"
        );
        assert_eq!(
            field_of(Config {
                leak_threshold: Some(zero),
                ..d()
            }),
            "leak_threshold"
        );
        assert_eq!(
            field_of(Config {
                lifetime_jitter_permille: 501,
                ..d()
            }),
            "lifetime_jitter_permille"
        );
        assert_eq!(
            field_of(Config {
                backoff_base: zero,
                ..d()
            }),
            "backoff_base"
        );
        let small = Duration::from_millis(1);
        assert_eq!(
            field_of(Config {
                backoff_max: small,
                ..d()
            }),
            "backoff_max"
        );
    }

    #[test]
    fn boundary_values_are_accepted() {
        let d = Config::default;
        Config {
            max_size: MAX_SIZE_LIMIT,
            ..d()
        }
        .validate()
        .unwrap();
        Config {
            min_idle: 10,
            ..d()
        }
        .validate()
        .unwrap();
        Config {
            lifetime_jitter_permille: 500,
            ..d()
        }
        .validate()
        .unwrap();
        let base = Duration::from_millis(10);
        Config {
            backoff_base: base,
            backoff_max: base,
            ..d()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn error_message_names_field_and_values() {
        let e = Config {
            min_idle: 12,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pool option `min_idle`: (12) must not exceed max_size (10)"
        );
    }
}
