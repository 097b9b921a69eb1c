//! The swarm and the size search, including proof that their checks can fail.

use std::time::Duration;

use pool_core::Config;
use pool_sim::client::Workload;
use pool_sim::db::DbSpec;
use pool_sim::size::{search, SizeQuery};
use pool_sim::swarm::{self, liveness_failures, run_range, run_seed, setup_for};
use pool_sim::world::{Setup, Sim};

#[test]
fn a_few_hundred_seeds_pass() {
    let s = run_range(0, 300, false, false);
    assert!(s.failures.is_empty(), "{}", s.text());
    assert!(s.invariant_checks > 100_000, "{}", s.invariant_checks);
    assert_eq!(s.invariant_checks, s.pool_inputs);
}

#[test]
fn seeds_generate_varied_worlds() {
    let a = setup_for(1);
    let b = setup_for(2);
    assert_ne!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(format!("{a:?}"), format!("{:?}", setup_for(1)));
    let with_faults = (0..200)
        .filter(|s| !setup_for(*s).faults.is_empty())
        .count();
    assert!(with_faults > 100, "{with_faults}");
    let closed = (0..200)
        .filter(|s| setup_for(*s).close_at.is_some())
        .count();
    assert!(closed > 5, "{closed}");
}

#[test]
fn a_failing_seed_prints_its_replay_command() {
    let mut s = run_range(5, 1, false, false);
    assert!(s.failures.is_empty());
    s.failures.push(swarm::SeedOutcome {
        seed: 5,
        failure: Some("liveness: example".into()),
        events: 0,
        pool_inputs: 0,
        invariant_checks: 0,
    });
    assert!(s
        .text()
        .contains("replay: cargo run --release -p pool-sim -- swarm --from 5 --seeds 1 --verbose"));
}

#[test]
fn a_panic_is_caught_and_reported_with_its_seed() {
    let o = swarm::guarded(42, || panic!("boom in the core"));
    assert_eq!(o.seed, 42);
    assert_eq!(o.failure.as_deref(), Some("panic: boom in the core"));
}

/// The liveness checks are not vacuous: an embedder that loses the pool's timer leaves
/// waiters past their deadline, and the swarm's rules say so.
#[test]
fn a_lost_timer_is_caught() {
    let mut st = Setup::new(
        "lost timer",
        Config {
            max_size: 1,
            ..Config::default()
        },
        DbSpec::default(),
        Workload::Closed {
            tasks: 5,
            think: Duration::ZERO,
        },
    );
    st.client.acquire_timeout = Duration::from_millis(5);
    st.client.leak_prob = 1.0;
    st.client.leak_hold = Duration::from_secs(100);
    st.end = Duration::from_secs(2);
    st.drop_timers = true;
    let r = Sim::new(st.clone(), 1).unwrap().run();
    assert!(!liveness_failures(&st, &r).is_empty());
    assert!(
        r.liveness[0].contains("still waiting after its deadline"),
        "{:?}",
        r.liveness
    );
    st.drop_timers = false;
    st.client.leak_hold = Duration::from_millis(1);
    let r = Sim::new(st.clone(), 1).unwrap().run();
    assert!(r.liveness.is_empty(), "{:?}", r.liveness);
}

#[test]
fn run_seed_reports_counts() {
    let o = run_seed(3);
    assert!(o.failure.is_none(), "{:?}", o.failure);
    assert!(o.pool_inputs > 0 && o.invariant_checks == o.pool_inputs);
}

#[test]
fn size_search_recommends_the_smallest_meeting_size() {
    let q = SizeQuery {
        rate: 1000.0,
        query_ms: 5.0,
        connect_ms: 20.0,
        p99_wait_ms: 2.0,
        seed: 1,
        max_size: 50,
    };
    let r = search(&q);
    let n = r.recommended.expect("some size meets a 2 ms p99 at load 5");
    let last = r.rows.last().unwrap();
    assert_eq!(last.size, n);
    assert!(last.p99_ms.unwrap() <= 2.0);
    // Every smaller size searched misses the target, and overloaded ones are not simulated.
    for row in &r.rows[..r.rows.len() - 1] {
        assert!(!row.meets);
        if row.utilization >= 1.0 {
            assert!(row.p99_ms.is_none());
        }
    }
    assert!(r.rows[0].size <= 5, "the search starts at the offered load");
    assert!(n > 5 && n < 20, "{n}");
    assert!(r.text().contains(&format!("recommended: max_size = {n}")));
}
