//! The policy's rules, each shown on a small router.

use std::sync::Arc;
use std::time::Duration;

use pool_core::{Instant, Status};

use crate::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Instant {
    Instant::from_nanos(n * 1_000_000)
}

fn router(replicas: usize, config: RouterConfig) -> Router {
    let addrs: Vec<String> = (0..replicas)
        .map(|i| format!("10.0.0.{}:5432", i + 2))
        .collect();
    Router::new(config, "10.0.0.1:5432", &addrs).unwrap()
}

fn idle(n: usize) -> Load {
    Load {
        status: Status {
            max_size: 10,
            total: n,
            idle: n,
            ..Status::default()
        },
        connect_error: None,
    }
}

fn queued(waiters: usize) -> Load {
    Load {
        status: Status {
            max_size: 2,
            total: 2,
            leased: 2,
            waiters,
            ..Status::default()
        },
        connect_error: None,
    }
}

fn down() -> Load {
    Load {
        status: Status {
            max_size: 10,
            ..Status::default()
        },
        connect_error: Some("connection refused".into()),
    }
}

fn read_at(now: Instant) -> Read {
    Read::new(now, now + Duration::from_secs(5), None)
}

fn replica_of(route: &Route) -> usize {
    match route {
        Route::Replica { member, .. } => member.0,
        other => panic!("expected a replica, got {other:?}"),
    }
}

#[test]
fn equally_good_replicas_take_reads_in_turn() {
    let mut r = router(3, RouterConfig::default());
    let mut seen = Vec::new();
    for _ in 0..6 {
        let mut read = read_at(at(0));
        seen.push(replica_of(&r.route_read(at(0), &mut read, |_| idle(1))));
        r.hop_ended(at(0), &mut read, HopEnd::Served);
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3]);
    assert_eq!(r.members()[2].counters.reads, 2);
    r.check_invariants().unwrap();
}

#[test]
fn idle_first_then_the_shortest_queue() {
    let mut r = router(3, RouterConfig::default());
    let loads = [queued(3), idle(1), queued(1)];
    let mut read = read_at(at(0));
    let route = r.route_read(at(0), &mut read, |m| loads[m.0 - 1].clone());
    assert_eq!(replica_of(&route), 2, "the one with an idle connection");
    let loads = [queued(3), queued(2), queued(1)];
    let mut read = read_at(at(0));
    let route = r.route_read(at(0), &mut read, |m| loads[m.0 - 1].clone());
    assert_eq!(replica_of(&route), 3, "then the shortest queue");
}

#[test]
fn a_failing_replica_is_benched_in_the_decision_that_sees_it() {
    let mut r = router(2, RouterConfig::default());
    let mut read = read_at(at(0));
    let route = r.route_read(
        at(0),
        &mut read,
        |m| if m.0 == 1 { down() } else { queued(5) },
    );
    assert_eq!(replica_of(&route), 2, "moved on at once, despite the queue");
    let m1 = &r.members()[1];
    assert!(matches!(
        &m1.state,
        State::Benched { reason: BenchReason::Unreachable { strikes: 1, error }, .. } if &**error == "connection refused"
    ));
    // Benched: not asked for its load again.
    let mut read = read_at(at(1));
    let route = r.route_read(at(1), &mut read, |m| {
        assert_ne!(m.0, 1, "a benched replica's pool is not consulted");
        idle(1)
    });
    assert_eq!(replica_of(&route), 2);
    r.check_invariants().unwrap();
}

#[test]
fn a_hop_that_times_out_moves_the_read_and_benches_only_an_unreachable_replica() {
    let config = RouterConfig {
        fallback: Fallback::Never,
        ..RouterConfig::default()
    };
    let mut r = router(2, config);
    let mut read = read_at(at(0));
    let route = r.route_read(at(0), &mut read, |_| idle(0));
    let Route::Replica { member, until } = route else {
        panic!("{route:?}")
    };
    assert_eq!(member.0, 1);
    assert_eq!(until, at(500), "replica_wait bounds the hop");
    // Busy, not broken: not benched; the read tries the other replica.
    let busy = Status {
        max_size: 2,
        total: 2,
        leased: 2,
        waiters: 4,
        ..Status::default()
    };
    r.hop_ended(
        at(500),
        &mut read,
        HopEnd::TimedOut {
            status: busy,
            error: None,
        },
    );
    assert!(r.members()[1].state.in_service());
    assert_eq!(
        replica_of(&r.route_read(at(500), &mut read, |_| idle(0))),
        2
    );
    // Timed out with a connect error and nothing open: benched.
    r.hop_ended(
        at(1000),
        &mut read,
        HopEnd::TimedOut {
            status: Status::default(),
            error: Some("connection refused".into()),
        },
    );
    assert!(!r.members()[2].state.in_service());
    // Both tried: a read that may not fall back goes round again, to the one in service.
    assert_eq!(
        replica_of(&r.route_read(at(1000), &mut read, |_| idle(0))),
        1
    );
    assert_eq!(r.members()[1].counters.hops_timed_out, 1);
    r.check_invariants().unwrap();
}

#[test]
fn fallback_after_a_wait_goes_to_the_primary() {
    let config = RouterConfig {
        fallback: Fallback::After(ms(800)),
        ..RouterConfig::default()
    };
    let mut r = router(1, config);
    let mut read = read_at(at(0));
    let Route::Replica { until, .. } = r.route_read(at(0), &mut read, |_| idle(0)) else {
        panic!()
    };
    assert_eq!(until, at(500));
    r.hop_ended(
        at(500),
        &mut read,
        HopEnd::TimedOut {
            status: Status::default(),
            error: None,
        },
    );
    // Tried already, goes round again, but only until the fallback bound.
    let Route::Replica { until, .. } = r.route_read(at(500), &mut read, |_| idle(0)) else {
        panic!()
    };
    assert_eq!(until, at(800));
    r.hop_ended(
        at(800),
        &mut read,
        HopEnd::TimedOut {
            status: Status::default(),
            error: None,
        },
    );
    assert_eq!(
        r.route_read(at(800), &mut read, |_| idle(0)),
        Route::Primary {
            why: PrimaryWhy::WaitedForReplicas,
            until: read.deadline
        }
    );
    r.hop_ended(at(801), &mut read, HopEnd::Served);
    assert_eq!(r.members()[0].counters.fallback_reads, 1);
    // With every replica benched: the primary at once.
    let mut read = read_at(at(900));
    assert_eq!(
        r.route_read(at(900), &mut read, |_| down()),
        Route::Primary {
            why: PrimaryWhy::NoReplicaInService,
            until: read.deadline
        }
    );
}

#[test]
fn fallback_never_refuses_when_no_replica_is_in_service() {
    let config = RouterConfig {
        fallback: Fallback::Never,
        ..RouterConfig::default()
    };
    let mut r = router(2, config);
    let mut read = read_at(at(0));
    assert_eq!(r.route_read(at(0), &mut read, |_| down()), Route::Refused);
    let report = r.explain(at(0), &read).to_string();
    assert!(
        report.starts_with("no replica could serve the read within 0s (fallback to the primary: never): replica-1 at 10.0.0.2:5432: benched: unreachable (1 failed in a row): connection refused; next probe in 1s; replica-2 at 10.0.0.3:5432: benched"),
        "{report}"
    );
    // Past the deadline: refused, whatever the replicas.
    let mut late = Read::new(at(0), at(10), None);
    assert_eq!(r.route_read(at(10), &mut late, |_| idle(1)), Route::Refused);
}

#[test]
fn a_timeout_report_names_each_replicas_counts_and_last_error() {
    let config = RouterConfig {
        fallback: Fallback::Never,
        ..RouterConfig::default()
    };
    let mut r = router(2, config);
    let mut read = Read::new(at(0), at(700), None);
    r.route_read(at(0), &mut read, |_| idle(0));
    let full = Status {
        max_size: 2,
        total: 2,
        leased: 2,
        waiters: 3,
        ..Status::default()
    };
    r.hop_ended(
        at(500),
        &mut read,
        HopEnd::TimedOut {
            status: full,
            error: None,
        },
    );
    r.route_read(at(500), &mut read, |_| idle(0));
    r.hop_ended(
        at(700),
        &mut read,
        HopEnd::TimedOut {
            status: Status {
                max_size: 2,
                ..Status::default()
            },
            error: Some("connection refused".into()),
        },
    );
    assert_eq!(
        r.route_read(at(700), &mut read, |_| idle(1)),
        Route::Refused
    );
    let text = r.explain(at(700), &read).to_string();
    assert!(text.contains("within 700ms"), "{text}");
    assert!(
        text.contains("replica-1 at 10.0.0.2:5432: no connection in time (size 2/2: 0 idle, 2 leased, 0 opening, 0 checking, 0 closing; 3 waiting)"),
        "{text}"
    );
    assert!(
        text.contains("replica-2 at 10.0.0.3:5432: no connection in time (size 0/2: 0 idle, 0 leased, 0 opening, 0 checking, 0 closing; 0 waiting), last connect error: connection refused; now benched: unreachable"),
        "{text}"
    );
}

#[test]
fn unreachable_replicas_are_probed_with_backoff_and_return_on_success() {
    let config = RouterConfig {
        bench_base: Duration::from_secs(1),
        bench_max: Duration::from_secs(4),
        ..RouterConfig::default()
    };
    let mut r = router(1, config);
    let id = MemberId(1);
    // First probes are due at once, primary first.
    assert_eq!(r.poll_probe(at(0)), Some(MemberId::PRIMARY));
    assert_eq!(r.poll_probe(at(0)), Some(id));
    assert_eq!(r.poll_probe(at(0)), None, "both under way");
    r.probe_finished(at(0), MemberId::PRIMARY, Probe::Primary);
    let mut t = 0;
    let mut gaps = Vec::new();
    for _ in 0..5 {
        r.probe_finished(
            at(t),
            id,
            Probe::Unreachable {
                error: "refused".into(),
            },
        );
        r.check_invariants().unwrap();
        let next = r.members()[1]
            .next_probe(r.config().probe_interval)
            .unwrap();
        gaps.push(next.saturating_since(at(t)).as_secs());
        t = next.as_nanos() / 1_000_000;
        while r.poll_probe(at(t)) != Some(id) {}
    }
    assert_eq!(gaps, [1, 2, 4, 4, 4], "doubling, capped at bench_max");
    assert_eq!(r.members()[1].strikes(), 5);
    r.probe_finished(at(t), id, Probe::Standby { behind: None });
    assert!(r.members()[1].state.in_service());
    assert_eq!(r.members()[1].strikes(), 0);
    assert_eq!(r.members()[1].counters.probes_failed, 5);
    r.check_invariants().unwrap();
}

#[test]
fn a_lagging_replica_is_benched_until_it_catches_up() {
    let config = RouterConfig {
        max_replica_lag: Some(ms(1000)),
        ..RouterConfig::default()
    };
    let mut r = router(2, config);
    let id = MemberId(1);
    // Just received WAL after an hour of quiet: not taken for an hour behind.
    r.probe_finished(
        at(0),
        id,
        Probe::Standby {
            behind: Some(Duration::from_secs(3600)),
        },
    );
    assert!(r.members()[1].state.in_service());
    assert_eq!(r.members()[1].lag, Some(Duration::ZERO));
    r.probe_finished(
        at(900),
        id,
        Probe::Standby {
            behind: Some(Duration::from_secs(3600)),
        },
    );
    assert_eq!(r.members()[1].lag, Some(ms(900)));
    assert!(r.members()[1].state.in_service());
    r.probe_finished(
        at(1500),
        id,
        Probe::Standby {
            behind: Some(ms(1400)),
        },
    );
    assert!(matches!(
        r.members()[1].state,
        State::Benched { reason: BenchReason::Lagging { lag }, .. } if lag == ms(1400)
    ));
    // Reads avoid it.
    for i in 0..4 {
        let mut read = read_at(at(1500 + i));
        assert_eq!(
            replica_of(&r.route_read(at(1500 + i), &mut read, |_| idle(1))),
            2
        );
    }
    r.probe_finished(at(2500), id, Probe::Standby { behind: None });
    assert!(r.members()[1].state.in_service());
    assert_eq!(r.members()[1].counters.benched, 1);
    r.check_invariants().unwrap();
}

#[test]
fn a_promoted_replica_and_a_demoted_primary_are_benched() {
    let mut r = router(1, RouterConfig::default());
    r.probe_finished(at(0), MemberId(1), Probe::Primary);
    assert!(matches!(
        r.members()[1].state,
        State::Benched {
            reason: BenchReason::NotStandby,
            ..
        }
    ));
    assert_eq!(r.route_write(at(0)), Ok(MemberId::PRIMARY));
    r.probe_finished(at(10), MemberId::PRIMARY, Probe::Standby { behind: None });
    let refused = r.route_write(at(2010)).unwrap_err();
    let text = refused.to_string();
    assert!(
        text.starts_with("primary at 10.0.0.1:5432 does not take writes: in recovery"),
        "{text}"
    );
    assert!(text.contains("found 2s ago"), "{text}");
    assert_eq!(r.members()[0].counters.writes_refused, 1);
    r.probe_finished(at(3000), MemberId::PRIMARY, Probe::Primary);
    assert_eq!(r.route_write(at(3000)), Ok(MemberId::PRIMARY));
    r.check_invariants().unwrap();
}

#[test]
fn read_your_writes_goes_to_the_primary_within_the_window() {
    let config = RouterConfig {
        read_your_writes: Some(ms(300)),
        ..RouterConfig::default()
    };
    let mut r = router(1, config);
    let mut read = Read::new(at(100), at(5000), Some(at(0)));
    assert!(matches!(
        r.route_read(at(100), &mut read, |_| idle(1)),
        Route::Primary {
            why: PrimaryWhy::ReadYourWrites,
            ..
        }
    ));
    let mut read = Read::new(at(300), at(5000), Some(at(0)));
    assert_eq!(
        replica_of(&r.route_read(at(300), &mut read, |_| idle(1))),
        1
    );
    let mut read = Read::new(at(300), at(5000), None);
    assert_eq!(
        replica_of(&r.route_read(at(300), &mut read, |_| idle(1))),
        1
    );
}

#[test]
fn a_set_without_replicas_reads_from_the_primary() {
    let mut r = router(
        0,
        RouterConfig {
            fallback: Fallback::Never,
            ..RouterConfig::default()
        },
    );
    let mut read = read_at(at(0));
    assert!(matches!(
        r.route_read(at(0), &mut read, |_| unreachable!()),
        Route::Primary {
            why: PrimaryWhy::NoReplicas,
            ..
        }
    ));
    r.check_invariants().unwrap();
}

#[test]
fn time_never_runs_backwards_and_hops_close_once() {
    let mut r = router(1, RouterConfig::default());
    let mut read = read_at(at(1000));
    r.route_read(at(1000), &mut read, |_| idle(1));
    assert!(r.hop_ended(at(10), &mut read, HopEnd::Served));
    assert_eq!(read.hops()[0].ended.as_ref().unwrap().0, at(1000));
    assert!(
        !r.hop_ended(at(1001), &mut read, HopEnd::Served),
        "no open hop"
    );
    assert_eq!(r.members()[1].counters.reads, 1);
    // Routing again closes an unreported hop as abandoned.
    let mut read = read_at(at(1000));
    r.route_read(at(1000), &mut read, |_| idle(1));
    r.route_read(at(1000), &mut read, |_| idle(1));
    assert_eq!(read.hops()[0].ended.as_ref().unwrap().1, HopEnd::Abandoned);
    assert!(!r.probe_finished(at(0), MemberId(7), Probe::Primary));
}

#[test]
fn options_out_of_range_are_named() {
    let err = |c: RouterConfig| c.validate().unwrap_err().to_string();
    assert!(err(RouterConfig {
        replica_wait: Duration::ZERO,
        ..RouterConfig::default()
    })
    .contains("`replica_wait`"));
    assert!(err(RouterConfig {
        fallback: Fallback::After(Duration::ZERO),
        ..RouterConfig::default()
    })
    .contains("`fallback`"));
    assert!(err(RouterConfig {
        bench_max: ms(10),
        ..RouterConfig::default()
    })
    .contains("`bench_max` (10ms) must be at least `bench_base` (1s)"));
    assert!(err(RouterConfig {
        read_your_writes: Some(Duration::ZERO),
        ..RouterConfig::default()
    })
    .contains("`read_your_writes`"));
    assert!(Router::new(
        RouterConfig {
            probe_interval: Duration::ZERO,
            ..RouterConfig::default()
        },
        "",
        &[]
    )
    .is_err());
    let c = RouterConfig::default();
    assert_eq!(c.bench_for(u32::MAX), c.bench_max);
    let _ = Arc::<str>::from("");
}
