//! A member of the set (the primary, or one replica) as the router sees it: in service or
//! benched and why, its last measured lag, and what was routed to it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pool_core::{HumanDuration, Instant};

/// A member's index: the primary is 0, replicas follow in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub usize);

impl MemberId {
    pub const PRIMARY: MemberId = MemberId(0);

    pub fn is_primary(self) -> bool {
        self == MemberId::PRIMARY
    }
}

/// What a member is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes the writes (and reads when they fall back).
    Primary,
    /// Takes reads.
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Why a member takes no traffic of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchReason {
    /// A replica whose connects fail while it holds no connection (or whose probe found
    /// none): `error` is the last connect error, `strikes` the failures in a row. It is
    /// probed again at the bench's `next_probe` and returns when a probe succeeds.
    Unreachable { error: Arc<str>, strikes: u32 },
    /// A replica whose replay lag exceeded `max_replica_lag`; returns when a probe finds
    /// it within it again.
    Lagging { lag: Duration },
    /// A replica that is not in recovery: promoted, or its URL names a primary. Reads
    /// there would not follow the primary's writes; returns when a probe finds it in
    /// recovery again.
    NotStandby,
    /// The primary is in recovery (a standby: demoted, or failed over): writes are
    /// refused at once instead of being sent to a server that cannot take them.
    InRecovery,
}

/// Whether a member takes traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    InService,
    Benched {
        reason: BenchReason,
        /// When it was benched (for this reason).
        since: Instant,
    },
}

impl State {
    pub fn in_service(&self) -> bool {
        matches!(self, State::InService)
    }
}

/// What was routed to a member and what came of it, since the router was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads that got a connection here.
    pub reads: u64,
    /// Of those, reads that fell back to the primary (or went there for
    /// read-your-writes): primary only.
    pub fallback_reads: u64,
    /// Writes routed here (primary only).
    pub writes: u64,
    /// Writes refused because the primary was benched in recovery.
    pub writes_refused: u64,
    /// Reads that waited out `replica_wait` here without a connection, and were routed
    /// again.
    pub hops_timed_out: u64,
    /// Reads this member's pool refused (a fatal connect error, a full queue).
    pub hops_failed: u64,
    /// Times it was benched, for any reason.
    pub benched: u64,
    /// Probes that answered (standby or primary).
    pub probes_ok: u64,
    /// Probes that found no connection because its connects fail.
    pub probes_failed: u64,
}

/// One member: its name, role, state, lag and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// Short, for metrics labels and logs: `primary`, `replica-1`, ...
    pub name: Arc<str>,
    /// Where it is (`host:port`, never credentials), for error messages; may be empty.
    pub address: Arc<str>,
    pub role: Role,
    pub state: State,
    /// The replay lag the last probe measured (replicas; zero when caught up).
    pub lag: Option<Duration>,
    pub counters: Counters,
    /// The last probe's start; `None` before the first.
    pub(crate) last_probe: Option<Instant>,
    /// A probe is under way (its answer not in yet).
    pub(crate) probing: bool,
    /// When an unreachable member is probed next.
    pub(crate) retry_at: Option<Instant>,
    /// Since when consecutive probes found WAL received but not replayed.
    pub(crate) behind_since: Option<Instant>,
}

impl Member {
    pub(crate) fn new(id: MemberId, name: &str, address: &str, role: Role) -> Self {
        Member {
            id,
            name: name.into(),
            address: address.into(),
            role,
            state: State::InService,
            lag: None,
            counters: Counters::default(),
            last_probe: None,
            probing: false,
            retry_at: None,
            behind_since: None,
        }
    }

    /// Failed probes or connects in a row (zero unless benched as unreachable).
    pub fn strikes(&self) -> u32 {
        match &self.state {
            State::Benched {
                reason: BenchReason::Unreachable { strikes, .. },
                ..
            } => *strikes,
            _ => 0,
        }
    }

    /// When it is probed next, if no probe is under way.
    pub fn next_probe(&self, interval: Duration) -> Option<Instant> {
        if self.probing {
            return None;
        }
        Some(match (self.retry_at, self.last_probe) {
            (Some(at), _) => at,
            (None, Some(last)) => last + interval,
            (None, None) => Instant::ZERO,
        })
    }

    pub(crate) fn bench(&mut self, now: Instant, reason: BenchReason) {
        let same_kind = matches!(
            (&self.state, &reason),
            (State::Benched { reason: a, .. }, b) if std::mem::discriminant(a) == std::mem::discriminant(b)
        );
        let since = match &self.state {
            State::Benched { since, .. } if same_kind => *since,
            _ => {
                self.counters.benched += 1;
                now
            }
        };
        self.state = State::Benched { reason, since };
    }

    pub(crate) fn restore(&mut self) {
        self.state = State::InService;
        self.retry_at = None;
    }
}

/// `replica-1 at 127.0.0.1:5433`, or the name alone without an address.
impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.address.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{} at {}", self.name, self.address)
        }
    }
}

impl fmt::Display for BenchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchReason::Unreachable { error, strikes } => {
                write!(f, "unreachable ({strikes} failed in a row): {error}")
            }
            BenchReason::Lagging { lag } => {
                write!(f, "replay lag {} past max_replica_lag", HumanDuration(*lag))
            }
            BenchReason::NotStandby => {
                f.write_str("not in recovery (promoted, or not a standby): reads there would not follow the primary")
            }
            BenchReason::InRecovery => {
                f.write_str("in recovery (a standby: demoted, or failed over)")
            }
        }
    }
}
