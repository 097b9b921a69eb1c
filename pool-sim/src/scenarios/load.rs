//! Load shapes: a sudden spike, and a serverless fleet (connection per request, pool per
//! instance, one shared pool).

use pool_core::Config;

use crate::client::{ClientSpec, Spike, Topology, Workload};
use crate::db::{DbSpec, Latency, ERR_TOO_MANY};
use crate::world::{RunResult, Setup};

use super::{ms, s, Claim};

pub(super) fn spike() -> (Vec<Setup>, Claim) {
    let mut runs = Vec::new();
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
    (runs, |r| {
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

pub(super) fn serverless() -> (Vec<Setup>, Claim) {
    let mut runs = Vec::new();
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
    (runs, |r| {
        let tmc = |x: &RunResult| x.connect_failures.get(ERR_TOO_MANY).copied().unwrap_or(0);
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
