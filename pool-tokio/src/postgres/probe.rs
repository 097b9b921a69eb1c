//! How a PostgreSQL member of a replica set is probed: one simple query (no prepared
//! statement, so it also works behind PgBouncer) saying whether the server is in recovery
//! and, when it has received WAL it has not replayed, how old its last replayed
//! transaction is.

use std::time::Duration;

use pool_core::ConnectError;
use pool_router::Probe;
use tokio_postgres::SimpleQueryMessage;

use super::{refuses_writes, PgConnection, PgManager};
use crate::replicas::ReplicaProbe;

/// `pg_is_in_recovery()`, and the replay lag only while received WAL waits to be
/// replayed: a standby that has replayed all it received is not behind, however old its
/// last transaction (a quiet primary writes nothing to replay). The age of its last
/// replayed transaction is -1 when it has replayed none since it started (unknown: the
/// router then counts the lag from the first probe that saw it behind), and at least 0
/// (a commit replayed after the probe's statement began is newer than its `now()`). The
/// `pg_last_*` functions are open to every role.
pub const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn() \
     THEN coalesce(greatest(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0), -1)::float8 END";

impl ReplicaProbe for PgManager {
    async fn probe(&self, client: &mut PgConnection) -> Result<Probe, tokio_postgres::Error> {
        let rows = client.simple_query(PROBE_SQL).await?;
        let Some(row) = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        }) else {
            return Ok(Probe::Inconclusive);
        };
        Ok(match row.get(0) {
            Some("t") => Probe::Standby {
                behind: row.get(1).and_then(|s| s.parse::<f64>().ok()).map(|age| {
                    if age.is_finite() && age >= 0.0 {
                        Duration::from_secs_f64(age)
                    } else {
                        // Nothing replayed yet: as old as it can be.
                        Duration::MAX
                    }
                }),
            },
            Some("f") => Probe::Primary,
            _ => Probe::Inconclusive,
        })
    }

    fn refuses_writes(&self, error: &ConnectError) -> bool {
        refuses_writes(&error.message)
    }
}
