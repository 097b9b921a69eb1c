//! The built-in scenarios: each sets up one or more runs, and states a headline claim that
//! its numbers must bear out (the tests check every claim).

use std::time::Duration;

use pool_core::Config;

use crate::client::{ClientSpec, Spike, Topology, Workload};
use crate::db::{DbSpec, Latency, ERR_AUTH, ERR_TOO_MANY};
use crate::faults::{Fault, FaultKind};
use crate::report::Report;
use crate::world::{RunResult, Setup, Sim};

/// Every built-in scenario, in tour order, with a one-line description.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("spike", "HikariCP's spike: 50 requests at once, 150 ms connects, 2 ms queries, min idle 5, max 50"),
    ("serverless", "2,000 req/s from 50 short-lived instances: (a) connection per request, (b) pool per instance, (c) one shared external pool"),
    ("db-restart", "the database restarts under load: every connection killed, connects refused for 2 s"),
    ("db-down-at-start", "the database is down for the first 3 s: timeouts must say why"),
    ("half-open", "4 connections silently stop answering (half-open sockets)"),
    ("cancel-storm", "half of all requests are cancelled at random points, including mid-query"),
    ("leak", "a few borrowers never give their connection back"),
    ("close-under-load", "the pool is closed under load with a 2 s drain window"),
    ("auth-fail", "the password is wrong and stays wrong: fail fast with the real cause"),
    ("slow-paths", "connects slow past connect_timeout for 3 s while connections expire; 20% of releases take 300 ms"),
];

pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}

fn s(x: u64) -> Duration {
    Duration::from_secs(x)
}
fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

type Claim = Box<dyn Fn(&[RunResult]) -> (String, bool)>;

/// The runs of a scenario and its claim.
pub fn build(name: &str) -> Option<(Vec<Setup>, Claim)> {
    let mut runs = Vec::new();
    let claim: Claim = match name {
        "spike" => {
            let db = DbSpec {
                connect: Latency::fixed(ms(150)),
                query: Latency::fixed(ms(2)),
                ..DbSpec::default()
            };
            let config = Config {
                max_size: 50,
                min_idle: 5,
                ..Config::default()
            };
            let wl = Workload::Open {
                rate: 0.0,
                spikes: vec![Spike { at: s(1), n: 50 }],
            };
            for (label, max_connecting) in [
                ("elision (max_connecting 2)", 2),
                ("open per waiter (max_connecting 50)", 50),
            ] {
                let mut st = Setup::new(
                    label,
                    Config {
                        max_connecting,
                        ..config.clone()
                    },
                    db.clone(),
                    wl.clone(),
                );
                st.warmup = s(1);
                st.workload_end = s(2);
                st.end = ms(2500);
                runs.push(st);
            }
            Box::new(|r| {
                let (a, b) = (&r[0], &r[1]);
                (
                    format!(
                        "after the spike the pool holds {} connections (aim <= 10; opening one per waiter leaves {})",
                        a.final_db_connections, b.final_db_connections
                    ),
                    a.final_db_connections <= 10
                        && b.final_db_connections > a.final_db_connections
                        && a.completed == 50,
                )
            })
        }
        "serverless" => {
            let db = DbSpec {
                max_connections: 100,
                connect: Latency::ms(40, 20),
                query: Latency::ms(3, 4),
                ..DbSpec::default()
            };
            let wl = Workload::Open {
                rate: 2000.0,
                spikes: vec![Spike { at: s(5), n: 300 }],
            };
            let client = ClientSpec {
                acquire_timeout: s(2),
                ..ClientSpec::default()
            };
            let mut a = Setup::new(
                "(a) connection per request",
                Config::default(),
                db.clone(),
                wl.clone(),
            );
            a.topology = Topology::Direct;
            let mut b = Setup::new(
                "(b) pool per instance (50 x max 5)",
                Config {
                    max_size: 5,
                    min_idle: 2,
                    ..Config::default()
                },
                db.clone(),
                wl.clone(),
            );
            b.topology = Topology::PerInstance {
                instances: 50,
                lifetime: s(8),
                zombie_ttl: s(15),
            };
            let mut c = Setup::new(
                "(c) shared external pool (max 40)",
                Config {
                    max_size: 40,
                    max_connecting: 4,
                    ..Config::default()
                },
                db,
                wl,
            );
            c.client.hop = ms(1);
            for mut st in [a, b, c] {
                st.client.acquire_timeout = client.acquire_timeout;
                st.workload_end = s(20);
                st.end = s(22);
                runs.push(st);
            }
            Box::new(|r| {
                let tmc =
                    |x: &RunResult| x.connect_failures.get(ERR_TOO_MANY).copied().unwrap_or(0);
                (
                    format!(
                        "\"too many clients\": (a) {}, (b) {}, (c) {}; (c) peaks at {} of {} connections",
                        tmc(&r[0]),
                        tmc(&r[1]),
                        tmc(&r[2]),
                        r[2].peak_db_connections,
                        r[2].max_connections
                    ),
                    tmc(&r[0]) > 0
                        && tmc(&r[1]) > 0
                        && tmc(&r[2]) == 0
                        && r[2].peak_db_connections <= 40
                        && r[2].rejected_total() == 0,
                )
            })
        }
        "db-restart" => {
            for (label, backoff_max) in [
                ("max 10, min idle 5, backoff cap 5 s", s(5)),
                ("same, backoff cap 500 ms", ms(500)),
            ] {
                let mut st = Setup::new(
                    label,
                    Config {
                        min_idle: 5,
                        backoff_max,
                        ..Config::default()
                    },
                    DbSpec {
                        query: Latency::ms(3, 4),
                        ..DbSpec::default()
                    },
                    Workload::Closed {
                        tasks: 20,
                        think: ms(5),
                    },
                );
                st.client.acquire_timeout = s(5);
                st.faults = vec![Fault::new(FaultKind::Restart, s(5), s(7))];
                st.warmup = ms(500);
                st.workload_end = s(15);
                st.end = s(16);
                runs.push(st);
            }
            Box::new(|r| {
                let back =
                    |x: &RunResult| x.first_ok_after_faults_ms.unwrap_or(f64::INFINITY) - 7000.0;
                let (a, b) = (&r[0], &r[1]);
                (
                    format!(
                        "service resumes {:.0} ms after the database is back ({:.0} ms with a 500 ms backoff cap, at the price of {} refused connects instead of {}); {} connections at the end",
                        back(a),
                        back(b),
                        b.connects_failed,
                        a.connects_failed,
                        a.final_db_connections
                    ),
                    r.iter().all(|x| {
                        x.final_db_connections >= 5 && x.unresolved_waiting == 0 && x.query_errors > 0
                    }) && back(a) <= 5000.0
                        && back(b) <= 500.0
                        && a.connects_failed <= 20
                        && b.connects_failed > a.connects_failed,
                )
            })
        }
        "db-down-at-start" => {
            let mut st = Setup::new(
                "max 10, min idle 2, 1 s acquire timeout",
                Config {
                    min_idle: 2,
                    ..Config::default()
                },
                DbSpec::default(),
                Workload::Closed {
                    tasks: 10,
                    think: ms(50),
                },
            );
            st.client.acquire_timeout = s(1);
            st.faults = vec![Fault::new(FaultKind::Down, s(0), s(3))];
            st.workload_end = s(10);
            st.end = s(11);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                let timeouts = a.rejections.get("timeout").copied().unwrap_or(0);
                (
                    format!(
                        "{} of {} timeouts name the cause (\"connection refused\"), service resumes {:.0} ms after the database is up",
                        a.timeouts_with_cause,
                        timeouts,
                        a.first_ok_after_faults_ms.unwrap_or(f64::INFINITY) - 3000.0
                    ),
                    timeouts > 0
                        && a.timeouts_with_cause == timeouts
                        && a.first_ok_after_faults_ms.is_some_and(|t| t <= 3000.0 + 5000.0),
                )
            })
        }
        "half-open" => {
            let mut st = Setup::new(
                "max 10, check timeout 1 s, query timeout 2 s",
                Config {
                    check_timeout: s(1),
                    idle_timeout: Some(s(5)),
                    ..Config::default()
                },
                DbSpec {
                    query: Latency::ms(3, 4),
                    ..DbSpec::default()
                },
                Workload::Closed {
                    tasks: 8,
                    think: ms(20),
                },
            );
            st.client.acquire_timeout = s(5);
            st.client.query_timeout = s(2);
            st.faults = vec![Fault::new(FaultKind::HalfOpen { count: 4 }, s(3), s(3))];
            st.workload_end = s(15);
            st.end = s(16);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                (
                    format!(
                        "{} half-open connections, {} left in use at the end; {} queries ok",
                        a.half_opened, a.half_open_left, a.completed
                    ),
                    a.half_opened > 0 && a.half_open_left == 0 && a.completed > 1000,
                )
            })
        }
        "cancel-storm" => {
            let mut st = Setup::new(
                "max 10, 800 req/s, 50% cancelled",
                Config {
                    max_waiters: 500,
                    ..Config::default()
                },
                DbSpec {
                    query: Latency::ms(5, 10),
                    ..DbSpec::default()
                },
                Workload::Open {
                    rate: 800.0,
                    spikes: vec![Spike { at: s(3), n: 200 }],
                },
            );
            st.client.acquire_timeout = s(1);
            st.client.cancel_prob = 0.5;
            st.workload_end = s(8);
            st.probe_at = Some(s(9));
            st.end = s(10);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                (
                    format!(
                        "{} cancelled ({} mid-query); afterwards {} leased, {} waiting, a probe waits {} ms",
                        a.cancelled,
                        a.cancelled_mid_query,
                        a.final_pool_leased,
                        a.final_pool_waiters,
                        a.probe_wait_ms.unwrap_or(f64::INFINITY)
                    ),
                    a.cancelled > 0
                        && a.cancelled_mid_query > 0
                        && a.final_pool_leased == 0
                        && a.final_pool_waiters == 0
                        && a.probe_wait_ms.is_some_and(|w| w < 100.0),
                )
            })
        }
        "leak" => {
            let mut st = Setup::new(
                "max 10, leak threshold 2 s",
                Config {
                    leak_threshold: Some(s(2)),
                    ..Config::default()
                },
                DbSpec {
                    query: Latency::ms(3, 4),
                    ..DbSpec::default()
                },
                Workload::Closed {
                    tasks: 20,
                    think: ms(10),
                },
            );
            st.client.acquire_timeout = s(2);
            st.client.leak_prob = 0.0005;
            st.client.leak_hold = s(60);
            st.workload_end = s(12);
            st.end = s(16);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                (
                    format!(
                        "{} leases leaked, {} reported by the pool as suspected leaks",
                        a.final_pool_leased, a.leaks_suspected
                    ),
                    a.leaks_suspected > 0 && a.leaks_suspected as usize == a.final_pool_leased,
                )
            })
        }
        "close-under-load" => {
            let mut st = Setup::new(
                "max 10, 30 tasks, close at 5 s, drain 2 s",
                Config::default(),
                DbSpec {
                    query: Latency::ms(3, 4),
                    ..DbSpec::default()
                },
                Workload::Closed {
                    tasks: 30,
                    think: ms(20),
                },
            );
            st.client.leak_prob = 0.002;
            st.client.leak_hold = s(20);
            st.close_at = Some((s(5), s(2)));
            st.workload_end = s(6);
            st.end = s(10);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                let drained = a.drained.as_ref().map_or(f64::INFINITY, |d| d.at_ms);
                (
                    format!(
                        "drained at {} ms (deadline 7000 ms), {} leases forced, {} rejected as closed, {} database connections left",
                        drained,
                        a.drained.as_ref().map_or(0, |d| d.forced),
                        a.rejections.get("closed").copied().unwrap_or(0),
                        a.final_db_connections
                    ),
                    drained <= 7000.0
                        && a.final_db_connections == 0
                        && a.unresolved_waiting == 0
                        && a.rejections.get("closed").copied().unwrap_or(0) > 0,
                )
            })
        }
        "auth-fail" => {
            let mut st = Setup::new(
                "max 10, min idle 2, wrong password",
                Config {
                    min_idle: 2,
                    ..Config::default()
                },
                DbSpec::default(),
                Workload::Closed {
                    tasks: 10,
                    think: ms(100),
                },
            );
            st.client.acquire_timeout = s(5);
            st.faults = vec![Fault::new(FaultKind::AuthFail, s(0), s(6))];
            st.workload_end = s(5);
            st.end = s(6);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                let failed = a.rejections.get("connect_failed").copied().unwrap_or(0);
                let timeouts = a.rejections.get("timeout").copied().unwrap_or(0);
                let named = a
                    .rejection_examples
                    .get("connect_failed")
                    .is_some_and(|e| e.contains(ERR_AUTH));
                (
                    format!(
                        "{failed} acquires fail fast with the real cause, {timeouts} time out, {} connect attempts in 5 s",
                        a.connects_failed
                    ),
                    failed > 0 && timeouts == 0 && named && a.completed == 0,
                )
            })
        }
        "slow-paths" => {
            let mut st = Setup::new(
                "max 10, lifetime 1 s, connect timeout 1 s",
                Config {
                    max_lifetime: Some(s(1)),
                    connect_timeout: s(1),
                    ..Config::default()
                },
                DbSpec {
                    query: Latency::ms(3, 4),
                    ..DbSpec::default()
                },
                Workload::Closed {
                    tasks: 20,
                    think: ms(10),
                },
            );
            st.client.acquire_timeout = s(2);
            st.client.slow_release_prob = 0.2;
            st.client.slow_release = ms(300);
            st.faults = vec![Fault::new(
                FaultKind::SlowConnect { factor: 100 },
                s(2),
                s(5),
            )];
            st.workload_end = s(10);
            st.end = s(12);
            runs.push(st);
            Box::new(|r| {
                let a = &r[0];
                let timeouts = a.rejections.get("timeout").copied().unwrap_or(0);
                let connect_timeouts = a.closes.get("connect_timeout").copied().unwrap_or(0);
                let named = a
                    .rejection_examples
                    .get("timeout")
                    .is_some_and(|e| e.contains("connect timed out"));
                (
                    format!(
                        "{connect_timeouts} connects abandoned at connect_timeout, {timeouts} acquires timed out naming it, service resumes {:.0} ms after connects are fast again, {} leased at the end",
                        a.first_ok_after_faults_ms.unwrap_or(f64::INFINITY) - 5000.0,
                        a.final_pool_leased
                    ),
                    connect_timeouts > 0
                        && timeouts > 0
                        && named
                        && a.final_pool_leased == 0
                        && a.unresolved_holding + a.unresolved_waiting == 0
                        && a.first_ok_after_faults_ms.is_some_and(|t| t <= 5000.0 + 3000.0),
                )
            })
        }
        _ => return None,
    };
    Some((runs, claim))
}

/// Run a built-in scenario. `Err` names the valid scenarios.
pub fn run(name: &str, seed: u64, timeline: bool) -> Result<Report, String> {
    let Some((setups, claim)) = build(name) else {
        return Err(format!(
            "unknown scenario `{name}`; valid scenarios: {}",
            names().join(", ")
        ));
    };
    let summary = SCENARIOS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let mut runs = Vec::new();
    for (i, mut st) in setups.into_iter().enumerate() {
        st.timeline = timeline;
        let sim = Sim::new(st, seed.wrapping_add(i as u64 * 0x1000_0000))?;
        runs.push(sim.run());
    }
    let (claim, claim_holds) = claim(&runs);
    Ok(Report {
        scenario: name.to_string(),
        seed,
        summary,
        runs,
        claim,
        claim_holds,
    })
}
