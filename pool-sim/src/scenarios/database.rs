//! The database misbehaves: it restarts, is down at start, leaves sockets half-open,
//! refuses the password, or connects slowly.

use pool_core::Config;

use crate::client::Workload;
use crate::db::{DbSpec, Latency, ERR_AUTH};
use crate::faults::{Fault, FaultKind};
use crate::world::{RunResult, Setup};

use super::{ms, s, Claim};

pub(super) fn db_restart() -> (Vec<Setup>, Claim) {
    let mut runs = Vec::new();
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
    (runs, |r| {
        let back = |x: &RunResult| x.first_ok_after_faults_ms.unwrap_or(f64::INFINITY) - 7000.0;
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

pub(super) fn db_down_at_start() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn half_open() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn auth_fail() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn slow_paths() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn slow_close() -> (Vec<Setup>, Claim) {
    let mut runs = Vec::new();
    for (label, early) in [
        ("max 10, lifetime 1 s, closes counted", false),
        ("same, closes forgotten at start (before)", true),
    ] {
        let mut st = Setup::new(
            label,
            Config {
                max_lifetime: Some(s(1)),
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
        st.early_close_answer = early;
        st.faults = vec![Fault::new(
            FaultKind::SlowClose { delay_ms: 800 },
            s(2),
            s(8),
        )];
        st.workload_end = s(10);
        st.end = s(12);
        runs.push(st);
    }
    (runs, |r| {
        let (a, b) = (&r[0], &r[1]);
        let expired = |x: &RunResult| x.closes.get("max_lifetime").copied().unwrap_or(0);
        (
            format!(
                "closes take 800 ms for 6 s while connections expire every second: the server sees at most {} connections from a pool of 10 ({} when a closing connection stops counting at once), at the price of a p99 wait of {:.0} ms (vs {:.0} ms); {} and {} expiries",
                a.peak_db_connections,
                b.peak_db_connections,
                a.wait_p99_ms,
                b.wait_p99_ms,
                expired(a),
                expired(b)
            ),
            a.peak_db_connections <= 10
                && b.peak_db_connections > 10
                && expired(a) > 0
                && a.rejected_total() == 0
                && a.unresolved_holding + a.unresolved_waiting == 0,
        )
    })
}
