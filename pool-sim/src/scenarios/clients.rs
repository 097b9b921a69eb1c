//! Clients give up, hold on, or are cut off: cancellations, leaked leases, and the pool
//! closed under load.

use pool_core::Config;

use crate::client::{Spike, Workload};
use crate::db::{DbSpec, Latency};
use crate::world::Setup;

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
