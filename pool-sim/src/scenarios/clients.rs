//! Clients give up, hold on, or are cut off: cancellations, leaked leases, the pool
//! closed under load, and queries abandoned mid-flight.

use pool_core::Config;

use crate::client::{Spike, Workload};
use crate::db::{DbSpec, Latency};
use crate::world::{AbandonedQueries, AbandonedReset, AbandonedStats, Setup};

use super::{ms, s, Claim};

pub(super) fn cancel_storm() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn leak() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn close_under_load() -> (Vec<Setup>, Claim) {
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
    (vec![st], |r| {
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

pub(super) fn abandoned_query() -> (Vec<Setup>, Claim) {
    let mut runs = Vec::new();
    for (label, reset) in [
        (
            "max 10, 100 ms request timeout, cancelled",
            AbandonedReset::Cancel {
                stop: Latency::ms(1, 4),
            },
        ),
        (
            "same, reset waits for the query (before)",
            AbandonedReset::WaitForQuery,
        ),
    ] {
        // 20 tasks on a pool of 10: a waiter is always there when a query is abandoned.
        let mut st = Setup::new(
            label,
            Config::default(),
            DbSpec {
                // 2% of queries are slow: 1-2.5 s.
                query: Latency::ms(2, 3).with_tail(20, 500),
                ..DbSpec::default()
            },
            Workload::Closed {
                tasks: 20,
                think: ms(5),
            },
        );
        st.client.acquire_timeout = s(1);
        st.abandoned = Some(AbandonedQueries {
            give_up_after: ms(100),
            reset,
        });
        st.workload_end = s(8);
        st.end = s(10);
        runs.push(st);
    }
    (runs, |r| {
        let (a, b) = (&r[0], &r[1]);
        let none = AbandonedStats::default();
        let (x, y) = (
            a.abandoned.as_ref().unwrap_or(&none),
            b.abandoned.as_ref().unwrap_or(&none),
        );
        (
            format!(
                "{} slow queries abandoned at 100 ms: the reset cancels each, its slot is busy at most {} ms and the next borrower waits at most {} ms; the server runs at most {} queries (max_size 10). Waiting for the query instead (before issue 14): slots busy up to {} ms, the next borrower waits up to {} ms, {:.0} instead of {:.0} queries/s",
                x.abandoned,
                x.slot_busy_max_ms,
                x.next_wait_max_ms,
                x.peak_running_queries,
                y.slot_busy_max_ms,
                y.next_wait_max_ms,
                b.throughput_per_s,
                a.throughput_per_s
            ),
            x.abandoned > 0
                && x.slot_busy_max_ms <= 20.0
                && x.next_wait_max_ms <= 50.0
                && x.peak_running_queries <= 10
                && a.rejected_total() == 0
                && a.unresolved_holding + a.unresolved_waiting == 0
                && y.slot_busy_max_ms > 500.0
                && y.next_wait_max_ms > 100.0,
        )
    })
}
