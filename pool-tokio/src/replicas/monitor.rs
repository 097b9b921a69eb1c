//! The background monitor: probes each member when the router says it is due (every
//! `probe_interval`; an unreachable replica with backoff) and reports what it found.
//! Probes borrow a connection from the member's own pool, so a probe of a benched
//! replica is also what reconnects it; no caller ever waits for a probe.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use pool_router::{MemberId, Probe};

use super::{ReplicaProbe, SetInner};
use crate::error::PoolError;

/// Start the monitor. It holds the set weakly and ends when the set is dropped or closed.
pub(super) fn start<M: ReplicaProbe>(set: &Arc<SetInner<M>>) {
    let weak: Weak<SetInner<M>> = Arc::downgrade(set);
    let wake = set.wake.clone();
    tokio::spawn(async move {
        loop {
            let notified = wake.notified();
            let sleep = {
                let Some(set) = weak.upgrade() else { return };
                if set.closed.load(Ordering::SeqCst) {
                    return;
                }
                let now = set.now();
                while let Some(member) = set.with_router(|r| r.poll_probe(now)) {
                    tokio::spawn(probe(set.clone(), member));
                }
                let (next, interval) =
                    set.with_router(|r| (r.next_probe_at(), r.config().probe_interval));
                next.map_or(interval, |at| at.saturating_since(now))
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = notified => {}
            }
        }
    });
}

/// Probe one member and report the finding.
async fn probe<M: ReplicaProbe>(set: Arc<SetInner<M>>, member: MemberId) {
    let bound = set.with_router(|r| r.config().probe_interval);
    let pool = set.pools[member.0].clone();
    let finding = match pool.get_timeout(bound).await {
        Ok(mut conn) => match tokio::time::timeout(bound, pool.manager().probe(&mut conn)).await {
            Ok(Ok(finding)) => finding,
            Ok(Err(e)) => {
                tracing::debug!(set = %set.name, pool = pool.name(), error = %crate::error::error_chain(&e), "probe query failed");
                Probe::Inconclusive
            }
            Err(_) => {
                // A query still in flight: not worth a reset's wait.
                conn.mark_broken();
                Probe::Inconclusive
            }
        },
        Err(PoolError::Timeout {
            last_connect_error: Some(e),
            status,
            ..
        }) if status.idle + status.leased + status.checking == 0 => unreachable(&pool, member, e),
        Err(PoolError::Connect { error, .. }) => unreachable(&pool, member, error),
        Err(PoolError::Closed) => return,
        Err(_) => Probe::Inconclusive,
    };
    let now = set.now();
    set.with_router(|r| r.probe_finished(now, member, finding));
    #[cfg(feature = "metrics")]
    record(&set);
    set.wake.notify_one();
}

/// A probe that found no connection because the member's connects fail. A primary whose
/// connects say it does not take writes is in recovery as far as writes go: reported so,
/// and writes are refused at once until a probe finds it writable.
fn unreachable<M: ReplicaProbe>(
    pool: &crate::Pool<M>,
    member: MemberId,
    error: pool_core::ConnectError,
) -> Probe {
    if member.is_primary() && pool.manager().refuses_writes(&error) {
        Probe::Standby { behind: None }
    } else {
        Probe::Unreachable {
            error: error.message,
        }
    }
}

/// The set's own series, per member, labelled with the member pool's name
/// (`db.client.connection.pool.name`) and its role (`pool.replica.role`): replay lag,
/// whether it is in service, and the router's counters.
#[cfg(feature = "metrics")]
pub(super) fn record<M: crate::Manager>(set: &SetInner<M>) {
    use ::metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
    const POOL_NAME: &str = "db.client.connection.pool.name";
    const ROLE: &str = "pool.replica.role";
    describe_gauge!(
        "pool.replica.lag",
        Unit::Seconds,
        "Replay lag a probe measured"
    );
    describe_gauge!(
        "pool.replica.in_service",
        Unit::Count,
        "1 when the member takes its traffic, 0 when benched"
    );
    describe_counter!(
        "pool.replica.reads",
        Unit::Count,
        "Reads served by the member"
    );
    describe_counter!(
        "pool.replica.fallback_reads",
        Unit::Count,
        "Reads the primary served for the replicas (fallback, read-your-writes)"
    );
    describe_counter!(
        "pool.replica.writes",
        Unit::Count,
        "Writes routed to the primary"
    );
    describe_counter!(
        "pool.replica.writes_refused",
        Unit::Count,
        "Writes refused because the primary was in recovery"
    );
    describe_counter!(
        "pool.replica.hops_timed_out",
        Unit::Count,
        "Reads that waited out replica_wait on the member and moved on"
    );
    describe_counter!(
        "pool.replica.benched",
        Unit::Count,
        "Times the member was benched"
    );
    let members = set.with_router(|r| r.members().to_vec());
    for (m, pool) in members.iter().zip(&set.pools) {
        let labels = [
            (POOL_NAME, pool.name().to_owned()),
            (ROLE, m.role.as_str().to_owned()),
        ];
        if let Some(lag) = m.lag {
            gauge!("pool.replica.lag", &labels).set(lag.as_secs_f64());
        }
        gauge!("pool.replica.in_service", &labels).set(if m.state.in_service() {
            1.0
        } else {
            0.0
        });
        let c = &m.counters;
        counter!("pool.replica.reads", &labels).absolute(c.reads);
        counter!("pool.replica.fallback_reads", &labels).absolute(c.fallback_reads);
        counter!("pool.replica.writes", &labels).absolute(c.writes);
        counter!("pool.replica.writes_refused", &labels).absolute(c.writes_refused);
        counter!("pool.replica.hops_timed_out", &labels).absolute(c.hops_timed_out);
        counter!("pool.replica.benched", &labels).absolute(c.benched);
    }
}
