//! Property tests of the routing policy: random sets, options, loads, hop outcomes,
//! probes and writes. After every input the router's invariants hold, and every route
//! obeys the rules the guide states: a read goes only to a replica in service, never
//! past its deadline, its `replica_wait` or its fallback bound; to the primary only for
//! read-your-writes, a set without replicas, or a fallback that allows it; refused only
//! when it may not fall back and no replica is in service, or its time is up. Every read
//! ends. An unreachable replica comes back only through a probe that reached it. The same
//! inputs give the same routes.

use std::sync::Arc;
use std::time::Duration;

use pool_core::{Instant, Status};
use pool_router::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum LoadKind {
    Idle(usize),
    Queue(usize),
    Failing,
}

#[derive(Clone, Debug)]
enum Outcome {
    Served,
    Busy,
    Unreachable,
    Refused { unreachable: bool },
}

#[derive(Clone, Debug)]
enum Op {
    Read {
        loads: Vec<LoadKind>,
        outcomes: Vec<Outcome>,
        deadline_ms: u64,
        wrote_ms_ago: Option<u64>,
    },
    Probe(usize, u8, u64),
    Write,
    Advance(u64),
}

fn load_kind() -> impl Strategy<Value = LoadKind> {
    prop_oneof![
        (0usize..3).prop_map(LoadKind::Idle),
        (0usize..5).prop_map(LoadKind::Queue),
        Just(LoadKind::Failing),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Served),
        2 => Just(Outcome::Busy),
        1 => Just(Outcome::Unreachable),
        1 => any::<bool>().prop_map(|unreachable| Outcome::Refused { unreachable }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            prop::collection::vec(load_kind(), 4),
            prop::collection::vec(outcome(), 0..6),
            1u64..4000,
            prop::option::of(0u64..2000),
        )
            .prop_map(|(loads, outcomes, deadline_ms, wrote_ms_ago)| Op::Read {
                loads,
                outcomes,
                deadline_ms,
                wrote_ms_ago
            }),
        2 => (0usize..5, 0u8..5, 0u64..3000).prop_map(|(m, k, lag)| Op::Probe(m, k, lag)),
        1 => Just(Op::Write),
        2 => (0u64..3000).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = RouterConfig> {
    (
        prop::option::of(1u64..3000),
        1u64..1500,
        prop::option::of(1u64..2000),
        prop::option::of(1u64..2000),
        1u64..2000,
        1u64..2000,
        0u64..10_000,
    )
        .prop_map(
            |(fallback, wait, lag, ryw, probe, base, extra)| RouterConfig {
                fallback: fallback.map_or(Fallback::Never, |d| Fallback::After(ms(d))),
                replica_wait: ms(wait),
                max_replica_lag: lag.map(ms),
                read_your_writes: ryw.map(ms),
                probe_interval: ms(probe),
                bench_base: ms(base),
                bench_max: ms(base + extra),
            },
        )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn load(kind: &LoadKind) -> Load {
    let mut status = Status {
        max_size: 3,
        ..Status::default()
    };
    let mut connect_error = None;
    match kind {
        LoadKind::Idle(n) => {
            status.idle = *n;
            status.total = *n;
        }
        LoadKind::Queue(n) => {
            status.leased = 3;
            status.total = 3;
            status.waiters = *n;
        }
        LoadKind::Failing => connect_error = Some(Arc::from("connection refused")),
    }
    Load {
        status,
        connect_error,
    }
}

fn unreachable_benched(m: &Member) -> bool {
    matches!(
        m.state,
        State::Benched {
            reason: BenchReason::Unreachable { .. },
            ..
        }
    )
}

/// Run `ops`; returns a trace of every answer (for the determinism check).
fn run(config: &RouterConfig, replicas: usize, ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
    let addrs: Vec<String> = (0..replicas).map(|i| format!("r{i}")).collect();
    let mut r = Router::new(config.clone(), "p", &addrs).unwrap();
    let mut now = Instant::ZERO;
    let mut trace = Vec::new();
    for op in ops {
        let before: Vec<Member> = r.members().to_vec();
        let mut probed = None;
        match op {
            Op::Advance(d) => now = now + ms(*d),
            Op::Write => {
                let primary_in_recovery = !r.members()[0].state.in_service();
                let w = r.route_write(now);
                prop_assert_eq!(w.is_err(), primary_in_recovery);
                trace.push(format!("{w:?}"));
            }
            Op::Probe(m, kind, lag) => {
                let id = MemberId(*m % (replicas + 1));
                let probe = match kind {
                    0 => Probe::Standby { behind: None },
                    1 => Probe::Standby {
                        behind: Some(ms(*lag)),
                    },
                    2 => Probe::Primary,
                    3 => Probe::Unreachable {
                        error: "refused".into(),
                    },
                    _ => Probe::Inconclusive,
                };
                // Probes are polled first, as the monitor does, when one is due.
                let _ = r.poll_probe(now);
                prop_assert!(r.probe_finished(now, id, probe.clone()));
                if let (Role::Replica, Probe::Standby { .. }, Some(max)) =
                    (r.members()[id.0].role, &probe, config.max_replica_lag)
                {
                    let m = &r.members()[id.0];
                    prop_assert_eq!(m.state.in_service(), m.lag.unwrap() <= max);
                }
                probed = Some(id);
                trace.push(format!("{:?}", r.members()[id.0].state));
            }
            Op::Read {
                loads,
                outcomes,
                deadline_ms,
                wrote_ms_ago,
            } => {
                let last_write = wrote_ms_ago.map(|a| now - ms(a));
                let mut read = Read::new(now, now + ms(*deadline_ms), last_write);
                let mut outcomes = outcomes.iter().cycle();
                let mut decisions = 0;
                loop {
                    decisions += 1;
                    prop_assert!(decisions < 10_000, "a read that never ends");
                    let route = r.route_read(now, &mut read, |m| load(&loads[m.0 - 1]));
                    r.check_invariants().map_err(TestCaseError::fail)?;
                    trace.push(format!("{route:?}"));
                    let ryw = matches!((config.read_your_writes, last_write), (Some(w), Some(at)) if now < at + w);
                    // Every replica in service refused this read at once (a full queue).
                    let all_refused = r.members()[1..]
                        .iter()
                        .filter(|m| m.state.in_service())
                        .all(|m| {
                            read.hops().iter().any(|h| {
                                h.member == m.id
                                    && matches!(h.ended, Some((_, HopEnd::Failed { .. })))
                            })
                        });
                    match route {
                        Route::Replica { member, until } => {
                            prop_assert!(!member.is_primary() && member.0 <= replicas);
                            prop_assert!(r.members()[member.0].state.in_service());
                            prop_assert!(
                                !load(&loads[member.0 - 1]).failing(),
                                "routed to a failing replica"
                            );
                            prop_assert!(!ryw);
                            prop_assert!(until > now && until <= read.deadline);
                            prop_assert!(until <= now + config.replica_wait);
                            if let Fallback::After(d) = config.fallback {
                                prop_assert!(until <= read.started + d);
                            }
                            let end = match outcomes.next().unwrap_or(&Outcome::Served) {
                                Outcome::Served => HopEnd::Served,
                                Outcome::Busy => {
                                    now = until;
                                    HopEnd::TimedOut {
                                        status: load(&LoadKind::Queue(2)).status,
                                        error: None,
                                    }
                                }
                                Outcome::Unreachable => {
                                    now = until;
                                    HopEnd::TimedOut {
                                        status: Status::default(),
                                        error: Some("refused".into()),
                                    }
                                }
                                Outcome::Refused { unreachable } => HopEnd::Failed {
                                    error: "fatal".into(),
                                    unreachable: *unreachable,
                                },
                            };
                            let served = end == HopEnd::Served;
                            prop_assert!(r.hop_ended(now, &mut read, end));
                            if served {
                                break;
                            }
                        }
                        Route::Primary { why, until } => {
                            prop_assert_eq!(until, read.deadline);
                            match why {
                                PrimaryWhy::ReadYourWrites => prop_assert!(ryw),
                                PrimaryWhy::NoReplicas => prop_assert_eq!(replicas, 0),
                                PrimaryWhy::NoReplicaInService => {
                                    prop_assert!(matches!(config.fallback, Fallback::After(_)));
                                    prop_assert!(all_refused);
                                }
                                PrimaryWhy::WaitedForReplicas => {
                                    let Fallback::After(d) = config.fallback else {
                                        return Err(TestCaseError::fail("fell back with Never"));
                                    };
                                    prop_assert!(now >= read.started + d);
                                }
                            }
                            prop_assert!(r.hop_ended(now, &mut read, HopEnd::Served));
                            break;
                        }
                        Route::Refused => {
                            prop_assert!(
                                now >= read.deadline
                                    || (config.fallback == Fallback::Never && all_refused && !ryw)
                            );
                            let text = r.explain(now, &read).to_string();
                            prop_assert!(text.starts_with("no replica could serve the read"));
                            break;
                        }
                    }
                }
            }
        }
        r.check_invariants().map_err(TestCaseError::fail)?;
        // Only a probe that reached it brings an unreachable replica back.
        for (b, a) in before.iter().zip(r.members()) {
            if unreachable_benched(b) && a.state.in_service() {
                prop_assert_eq!(probed, Some(a.id), "{} came back without a probe", a);
            }
        }
    }
    Ok(trace)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn routes_obey_the_policy(
        config in config(),
        replicas in 0usize..5,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let a = run(&config, replicas.min(4), &ops)?;
        let b = run(&config, replicas.min(4), &ops)?;
        prop_assert_eq!(a, b, "the same inputs gave different routes");
    }
}
