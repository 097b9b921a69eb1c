//! Pool configuration: every knob in one place, every default argued.

use std::fmt;
use std::time::Duration;

/// Which idle connection a checkout takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleOrder {
    /// Most recently returned first. The default: a few hot connections serve the load and
    /// the rest stay idle long enough for `idle_timeout` to shrink the pool.
    Lifo,
    /// Least recently returned first: spreads use over every connection (and keeps them all
    /// warm, so the pool never shrinks under steady load).
    Fifo,
}

/// How the pool behaves. Build with `Config::default()` and change what you need; the pool
/// validates it when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most connections the pool holds, in any state but closed. Default 10: HikariCP's
    /// default, and `cores * 2 + spindles` for a small database server. A pool is a
    /// throttle on the database, not a booster; see docs/guides/pool-sizing.md.
    pub max_size: usize,
    /// Idle connections kept warm in the background (HikariCP's `minimumIdle`). Default 0:
    /// the pool opens connections on demand and shrinks to nothing when unused, which is
    /// what a serverless or rarely-used service wants; raise it to hide connect latency.
    pub min_idle: usize,
    /// Most connections being opened at once. Default 2: opening is slow (handshake, auth,
    /// a forked backend), and under a spike a returned connection usually serves a waiter
    /// long before a new one is ready; HikariCP opens one at a time for this reason.
    pub max_connecting: usize,
    /// Most acquires allowed to wait; beyond it an acquire is rejected at once (load
    /// shedding). Default 10,000: at ten connections and millisecond queries that queue is
    /// already seconds long, and rejecting fast beats timing out slowly.
    pub max_waiters: usize,
    /// Default total time an acquire may wait, covering any connect it waits on. Used by
    /// the shell and adapters to turn "now" into a deadline. Default 30 s, as every peer.
    pub acquire_timeout: Duration,
    /// Longest a connect may take before it is abandoned and counted as a transient
    /// failure. Default 10 s: loopback takes milliseconds, a cold serverless database a few
    /// seconds.
    pub connect_timeout: Duration,
    /// Longest a health check or a reset may take before the connection is closed.
    /// Default 5 s (HikariCP's `validationTimeout`).
    pub check_timeout: Duration,
    /// Check a connection on checkout only if it sat idle longer than this; `None` never
    /// checks. Default 500 ms (HikariCP's bypass window): a connection used moments ago is
    /// almost surely alive, and checking it would cost a round trip per checkout.
    pub check_after_idle: Option<Duration>,
    /// Close connections idle this long, down to `min_idle`; `None` keeps them. Default
    /// 10 min (HikariCP).
    pub idle_timeout: Option<Duration>,
    /// Close connections this old (when idle, or when returned); `None` keeps them.
    /// Default 30 min (HikariCP): below typical server, proxy and NAT limits, and it lets
    /// the pool pick up DNS and failover changes.
    pub max_lifetime: Option<Duration>,
    /// Each connection's lifetime is shortened by a random part of this fraction, in
    /// per-mille, so connections opened together do not expire together. Default 25 (2.5 %,
    /// HikariCP's variance).
    pub lifetime_jitter_permille: u16,
    /// Report a lease held longer than this as a suspected leak; `None` disables it.
    /// Default 5 min: a pooled connection held that long is almost always a bug.
    pub leak_threshold: Option<Duration>,
    /// First retry delay after a failed connect; it doubles per consecutive failure, with
    /// jitter. Default 10 ms (HikariCP, sqlx): a restart is often over in a second.
    pub backoff_base: Duration,
    /// Cap on the retry delay. Default 1 s, below HikariCP's 5 s: a refused connect costs
    /// a restarting server almost nothing, while every second of backoff after it is back
    /// is a second of outage (`pool-sim run db-restart`: a 5 s cap adds ~4 s). With
    /// `max_connecting` 2, a pool still makes at most a few attempts per second.
    pub backoff_max: Duration,
    /// Idle connections handed out most- or least-recently-used first. Default LIFO.
    pub idle_order: IdleOrder,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_size: 10,
            min_idle: 0,
            max_connecting: 2,
            max_waiters: 10_000,
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            check_after_idle: Some(Duration::from_millis(500)),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            lifetime_jitter_permille: 25,
            leak_threshold: Some(Duration::from_secs(300)),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            idle_order: IdleOrder::Lifo,
        }
    }
}

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
                    "({:?}) must be at least backoff_base ({:?})",
                    self.backoff_max, self.backoff_base
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
        c.validate().unwrap_err().field
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
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
