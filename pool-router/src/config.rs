//! The routing options: each with its default and why, in one place.

use std::fmt;
use std::time::Duration;

use pool_core::HumanDuration;

/// Whether a read that no replica can serve goes to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Reads never go to the primary: they wait for a replica until their deadline, or
    /// fail at once, naming each replica, when none is in service. Protects the primary
    /// from a read storm when the replicas are down or saturated.
    Never,
    /// A read that has not got a replica connection after this long (counted from the
    /// read's start, across replicas) goes to the primary for the rest of its deadline;
    /// at once when no replica is in service.
    After(Duration),
}

/// How reads and writes are routed between the primary and its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Where a read goes when no replica can serve it. Default: `After(1 s)`.
    pub fallback: Fallback,
    /// How long a read waits on one replica before it is routed again (to another
    /// replica in service, or per `fallback`): a dead replica not yet benched costs a
    /// read at most this. Default: 500 ms.
    pub replica_wait: Duration,
    /// A replica whose replay lag exceeds this is benched until a probe finds it within
    /// it again; `None` never benches on lag. Default: `None`.
    pub max_replica_lag: Option<Duration>,
    /// After a write through a session, that session's reads go to the primary for this
    /// long (read-your-writes); `None` turns it off. Default: `None`.
    pub read_your_writes: Option<Duration>,
    /// How often each member is probed in the background (in recovery? replay lag?),
    /// and how long a probe may wait for a connection. Default: 1 s.
    pub probe_interval: Duration,
    /// A replica benched as unreachable is probed again after this, doubling per failed
    /// probe up to `bench_max`. Default: 1 s.
    pub bench_base: Duration,
    /// The longest wait between probes of an unreachable replica. Default: 30 s.
    pub bench_max: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            fallback: Fallback::After(Duration::from_secs(1)),
            replica_wait: Duration::from_millis(500),
            max_replica_lag: None,
            read_your_writes: None,
            probe_interval: Duration::from_secs(1),
            bench_base: Duration::from_secs(1),
            bench_max: Duration::from_secs(30),
        }
    }
}

/// An option out of range; the message names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfigError(pub String);

impl fmt::Display for RouterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouterConfigError {}

impl RouterConfig {
    /// Refuse options the router cannot work with, naming the option.
    pub fn validate(&self) -> Result<(), RouterConfigError> {
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(RouterConfigError(format!(
                    "`{name}` must be greater than zero"
                )))
            } else {
                Ok(())
            }
        };
        positive("replica_wait", self.replica_wait)?;
        positive("probe_interval", self.probe_interval)?;
        positive("bench_base", self.bench_base)?;
        if let Fallback::After(d) = self.fallback {
            // Zero would send every read to the primary before any replica was asked.
            positive("fallback", d)?;
        }
        if let Some(d) = self.read_your_writes {
            positive("read_your_writes", d)?;
        }
        if self.bench_max < self.bench_base {
            return Err(RouterConfigError(format!(
                "`bench_max` ({}) must be at least `bench_base` ({})",
                HumanDuration(self.bench_max),
                HumanDuration(self.bench_base)
            )));
        }
        Ok(())
    }

    /// How long an unreachable replica waits for its next probe after `strikes` failed
    /// ones in a row: `bench_base` doubled per strike after the first, capped.
    pub fn bench_for(&self, strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(1).min(32);
        self.bench_base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.bench_max)
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Never => f.write_str("never"),
            Fallback::After(d) => write!(f, "after {}", HumanDuration(*d)),
        }
    }
}
