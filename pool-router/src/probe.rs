//! What a background probe of a member found.

use std::sync::Arc;
use std::time::Duration;

/// A probe's finding, reported with [`crate::Router::probe_finished`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// In recovery (a standby). `behind` is the server's replay lag when it has received
    /// WAL it has not replayed yet (PostgreSQL: `now() - pg_last_xact_replay_timestamp()`
    /// while `pg_last_wal_receive_lsn() <> pg_last_wal_replay_lsn()`); `None` when it has
    /// replayed everything it received, i.e. it is not behind.
    Standby { behind: Option<Duration> },
    /// Not in recovery: it takes writes.
    Primary,
    /// No connection within the probe's bound because the pool's connects fail: its
    /// last connect error.
    Unreachable { error: Arc<str> },
    /// No connection within the bound, no connect error (the pool is busy); or the probe
    /// query failed on a live connection. Nothing learned.
    Inconclusive,
}
