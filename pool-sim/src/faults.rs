//! Server-side faults, each a window of virtual time. Client-side misbehaviour (cancelled
//! acquires, leaked leases, a slow release path) lives in [`crate::client::ClientSpec`] as
//! probabilities, because it happens per request.

use std::time::Duration;

use serde::Serialize;

/// What goes wrong at the database.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum FaultKind {
    /// Connects are refused for the window (database down or restarting).
    Down,
    /// Every backend is killed at the start of the window, and connects are refused until
    /// its end (a restart).
    Restart,
    /// At the start of the window `count` live backends silently stop answering
    /// (half-open sockets: a NAT or firewall dropped the path). The window end is only
    /// used for the plot.
    HalfOpen { count: usize },
    /// Authentication fails (fatal) for the window; "never recovers" is a window to the end.
    AuthFail,
    /// Connects take `factor` times longer.
    SlowConnect { factor: u32 },
    /// A replica stops replaying WAL for the window (`pg_wal_replay_pause()`) while the
    /// primary keeps writing: it falls behind by the time since the window opened, and
    /// catches up when it ends.
    ReplayPaused,
    /// Closes take `delay_ms`: the server keeps a backend that long after the pool
    /// closes it (slow to take the Terminate, a TLS close_notify on a slow path).
    SlowClose { delay_ms: u64 },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Down => "down",
            FaultKind::Restart => "restart",
            FaultKind::HalfOpen { .. } => "half-open",
            FaultKind::AuthFail => "auth-fail",
            FaultKind::SlowConnect { .. } => "slow-connect",
            FaultKind::ReplayPaused => "replay-paused",
            FaultKind::SlowClose { .. } => "slow-close",
        }
    }
}

/// A fault active in `[start, end)` of virtual time, on one database.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(serialize_with = "crate::vtime::ser_ms", rename = "start_ms")]
    pub start: Duration,
    #[serde(serialize_with = "crate::vtime::ser_ms", rename = "end_ms")]
    pub end: Duration,
    /// Which database: 0 the primary (the only one without replicas), `i` replica `i`.
    #[serde(skip_serializing_if = "is_primary")]
    pub db: usize,
}

fn is_primary(db: &usize) -> bool {
    *db == 0
}

impl Fault {
    pub fn new(kind: FaultKind, start: Duration, end: Duration) -> Self {
        Fault {
            kind,
            start,
            end,
            db: 0,
        }
    }

    /// A fault on replica `replica` (1 for the first).
    pub fn on_replica(replica: usize, kind: FaultKind, start: Duration, end: Duration) -> Self {
        Fault {
            db: replica,
            ..Fault::new(kind, start, end)
        }
    }
}
