//! A primary and two read replicas, each with its own pool, routed by the real
//! pool-router: a replica dies and restarts, or its replay pauses.

use pool_core::Config;
use pool_router::{Fallback, RouterConfig};

use crate::client::Workload;
use crate::db::{DbSpec, Latency};
use crate::faults::{Fault, FaultKind};
use crate::world::{ReplicaSetup, RunResult, Setup};

use super::{ms, s, Claim};

/// The routing both scenarios use: fall back to the primary after 1 s, at most 200 ms on
/// one replica, a probe every 250 ms, unreachable replicas probed from 250 ms up to 2 s.
fn routing() -> RouterConfig {
    RouterConfig {
        fallback: Fallback::After(s(1)),
        replica_wait: ms(200),
        probe_interval: ms(250),
        bench_base: ms(250),
        bench_max: s(2),
        max_replica_lag: Some(s(1)),
        ..RouterConfig::default()
    }
}

fn setup(label: &str, replicas: usize, fault: Fault) -> Setup {
    let mut st = Setup::new(
        label,
        Config {
            max_size: 8,
            min_idle: 2,
            ..Config::default()
        },
        DbSpec {
            query: Latency::ms(3, 4),
            ..DbSpec::default()
        },
        Workload::Closed {
            tasks: 24,
            think: ms(5),
        },
    );
    st.client.acquire_timeout = s(3);
    st.replicas = Some(ReplicaSetup {
        replicas,
        routing: routing(),
        write_ratio: 0.2,
    });
    st.faults = vec![fault];
    st.warmup = ms(500);
    st.workload_end = s(12);
    st.end = s(13);
    st
}

/// When member `m` was first benched after `t` ms, and when it last returned after `u`.
fn bench_and_back(r: &RunResult, m: usize, t: f64, u: f64) -> (f64, f64) {
    let rs = r.replicas.as_ref().expect("a replica run");
    let benched = rs.benched_at_ms[m]
        .iter()
        .find(|x| **x >= t)
        .map_or(f64::INFINITY, |x| x - t);
    let back = rs.restored_at_ms[m]
        .iter()
        .rfind(|x| **x >= u)
        .map_or(f64::INFINITY, |x| x - u);
    (benched, back)
}

pub(super) fn replica_down() -> (Vec<Setup>, Claim) {
    let runs = vec![
        setup(
            "two replicas, replica-1 down 4-7 s",
            2,
            Fault::on_replica(1, FaultKind::Restart, s(4), s(7)),
        ),
        setup(
            "one replica, down 4-7 s: reads fall back",
            1,
            Fault::on_replica(1, FaultKind::Restart, s(4), s(7)),
        ),
    ];
    (runs, |r| {
        let (a, b) = (&r[0], &r[1]);
        let lone = b.replicas.as_ref().expect("a replica run");
        let (lone_benched, lone_back) = bench_and_back(b, 1, 4000.0, 7000.0);
        let rs = a.replicas.as_ref().expect("a replica run");
        let (benched, back) = bench_and_back(a, 1, 4000.0, 7000.0);
        let by = &rs.reads_by_member;
        (
            format!(
                "replica-1 benched {benched:.0} ms after it died, back {back:.0} ms after its restart; {} reads failed, the slowest waited {} ms (replica_wait 200 ms); reads primary/replica-1/replica-2 {}/{}/{}; alone, its {} reads fell back to the primary ({} failed)",
                rs.reads_failed + rs.writes_failed,
                rs.read_wait_max_ms,
                by[0],
                by[1],
                by[2],
                lone.reads_by_member[0],
                lone.reads_failed + lone.writes_failed
            ),
            rs.reads_failed == 0
                && rs.writes_failed == 0
                && benched <= 1000.0
                && rs.read_wait_max_ms <= 2.0 * 200.0 + 50.0
                && back <= 2000.0 + 250.0
                && rs.reads_after_faults[1] > 100
                && by[2] > by[1]
                && lone.reads_failed + lone.writes_failed == 0
                && lone.reads_by_member[0] > 1000
                && lone_benched <= 1000.0
                && lone_back <= 2000.0 + 250.0
                && lone.read_wait_max_ms <= 2.0 * 200.0 + 50.0
                && lone.reads_after_faults[1] > 100,
        )
    })
}

pub(super) fn replica_lag() -> (Vec<Setup>, Claim) {
    let st = setup(
        "two replicas, replica-1 replay paused 4-8 s",
        2,
        Fault::on_replica(1, FaultKind::ReplayPaused, s(4), s(8)),
    );
    (vec![st], |r| {
        let a = &r[0];
        let rs = a.replicas.as_ref().expect("a replica run");
        let (benched, back) = bench_and_back(a, 1, 4000.0, 8000.0);
        let last_stale = rs.last_stale_read_ms.map_or(0.0, |t| t - 4000.0);
        (
            format!(
                "replica-1 benched {benched:.0} ms after its replay paused (max_replica_lag 1 s, probes every 250 ms); {} reads served past the limit, the last {last_stale:.0} ms after the pause; back {back:.0} ms after the replay resumed; {} reads failed",
                rs.stale_reads,
                rs.reads_failed + rs.writes_failed
            ),
            (1000.0..=1000.0 + 2.0 * 250.0).contains(&benched)
                && (rs.stale_reads == 0 || last_stale <= benched + 200.0)
                && back <= 2.0 * 250.0
                && rs.reads_failed + rs.writes_failed == 0
                && rs.reads_after_faults[1] > 100,
        )
    })
}
