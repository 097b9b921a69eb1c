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
            FaultKind::SlowClose { .. } => "slow-close",
        }
    }
}

/// A fault active in `[start, end)` of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(serialize_with = "crate::vtime::ser_ms", rename = "start_ms")]
    pub start: Duration,
    #[serde(serialize_with = "crate::vtime::ser_ms", rename = "end_ms")]
    pub end: Duration,
}

impl Fault {
    pub fn new(kind: FaultKind, start: Duration, end: Duration) -> Self {
        Fault { kind, start, end }
    }
}
