//! Each built-in scenario's headline claim, checked with explicit numbers on several
//! seeds (the claim text is what the tour prints; these assertions are what it means).

use pool_sim::db::ERR_TOO_MANY;
use pool_sim::report::Report;
use pool_sim::scenarios;
use pool_sim::world::RunResult;

const SEEDS: [u64; 3] = [1, 2, 3];

fn run(name: &str, seed: u64) -> Report {
    let r = scenarios::run(name, seed, false).expect("scenario exists");
    for run in &r.runs {
        assert!(run.error.is_none(), "{name} seed {seed}: {:?}", run.error);
        assert!(
            run.liveness.is_empty(),
            "{name} seed {seed}: {:?}",
            run.liveness
        );
        assert_eq!(
            run.invariant_checks, run.pool_inputs,
            "invariants are checked after every pool input"
        );
    }
    assert!(r.claim_holds, "{name} seed {seed}: {}", r.claim);
    r
}

fn too_many(r: &RunResult) -> u64 {
    r.connect_failures.get(ERR_TOO_MANY).copied().unwrap_or(0)
}

#[test]
fn spike_ends_with_few_connections() {
    for seed in SEEDS {
        let r = run("spike", seed);
        let (elision, per_waiter) = (&r.runs[0], &r.runs[1]);
        assert!(
            elision.final_db_connections <= 10,
            "{}",
            elision.final_db_connections
        );
        assert!(elision.final_db_connections >= 5, "min idle kept");
        assert_eq!(elision.completed, 50, "every spike request served");
        assert_eq!(elision.rejected_total(), 0);
        assert!(
            per_waiter.final_db_connections >= 40,
            "the contrast: a storm of opens"
        );
        assert!(elision.invariant_checks > 50);
    }
}

#[test]
fn serverless_explodes_without_a_shared_pool() {
    let r = run("serverless", 1);
    let (a, b, c) = (&r.runs[0], &r.runs[1], &r.runs[2]);
    // (a) demand beyond max_connections: the server turns connects away.
    assert!(too_many(a) > 0);
    assert_eq!(a.peak_db_connections, a.max_connections);
    // (b) per-instance pools (and frozen instances' zombies) exhaust the server too.
    assert!(too_many(b) > 0);
    assert!(b.rejected_total() > 0);
    // (c) one shared pool never comes near the limit and serves everything.
    assert_eq!(too_many(c), 0);
    assert!(c.peak_db_connections <= 40 && c.peak_db_connections < c.max_connections);
    assert_eq!(c.rejected_total(), 0);
    assert!(c.completed > b.completed && c.completed > a.completed);
}

#[test]
fn db_restart_recovers() {
    for seed in SEEDS {
        let r = run("db-restart", seed);
        for x in &r.runs {
            assert!(x.query_errors > 0, "the restart killed connections in use");
            let back = x.first_ok_after_faults_ms.expect("service resumed");
            assert!(
                back >= 7000.0,
                "no query can succeed while the database is down"
            );
            assert!(x.final_db_connections >= 5, "min idle restored");
            assert!(x.completed > 10_000);
        }
        assert!(r.runs[1].first_ok_after_faults_ms < r.runs[0].first_ok_after_faults_ms);
    }
}

#[test]
fn db_down_at_start_timeouts_name_the_cause() {
    for seed in SEEDS {
        let r = run("db-down-at-start", seed);
        let x = &r.runs[0];
        let timeouts = x.rejections["timeout"];
        assert!(timeouts > 0);
        assert_eq!(x.timeouts_with_cause, timeouts);
        assert!(x.rejection_examples["timeout"].contains("connection refused"));
        assert!(x.completed > 0);
    }
}

#[test]
fn half_open_connections_are_evicted() {
    for seed in SEEDS {
        let x = &run("half-open", seed).runs[0];
        assert!(x.half_opened > 0);
        assert_eq!(x.half_open_left, 0);
    }
}

#[test]
fn cancel_storm_loses_no_capacity() {
    for seed in SEEDS {
        let x = &run("cancel-storm", seed).runs[0];
        assert!(x.cancelled > 100 && x.cancelled_mid_query > 0);
        assert_eq!(x.final_pool_leased, 0);
        assert_eq!(x.final_pool_waiters, 0);
        assert!(x.probe_wait_ms.is_some());
    }
}

#[test]
fn leaks_are_reported() {
    for seed in SEEDS {
        let x = &run("leak", seed).runs[0];
        assert!(x.leaks_suspected > 0);
        assert_eq!(x.leaks_suspected as usize, x.final_pool_leased);
        assert!(x.leaked >= x.leaks_suspected);
    }
}

#[test]
fn close_under_load_drains_by_the_deadline() {
    for seed in SEEDS {
        let x = &run("close-under-load", seed).runs[0];
        let d = x.drained.as_ref().expect("Drained reported");
        assert!(d.at_ms <= 7000.0);
        assert_eq!(x.final_db_connections, 0);
        assert_eq!(x.final_pool_total, 0);
        assert!(x.rejections["closed"] > 0);
    }
}

#[test]
fn auth_failure_fails_fast_with_the_cause() {
    for seed in SEEDS {
        let x = &run("auth-fail", seed).runs[0];
        assert!(x.rejections["connect_failed"] > 0);
        assert!(!x.rejections.contains_key("timeout"));
        assert!(x.wait_max_ms == 0.0 && x.completed == 0);
    }
}

#[test]
fn unknown_scenario_names_the_valid_ones() {
    let e = scenarios::run("nope", 1, false).unwrap_err();
    for n in scenarios::names() {
        assert!(e.contains(n), "{e}");
    }
}

#[test]
fn plot_is_an_svg_with_fault_windows() {
    let r = scenarios::run("db-restart", 1, true).unwrap();
    let dir = std::env::temp_dir().join(format!("pool-sim-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("restart.svg");
    pool_sim::plot::write_svg(&r, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(svg.starts_with("<svg"));
    for label in [
        "fault: restart",
        "open at the database",
        "waiters",
        "leased",
        "idle",
    ] {
        assert!(svg.contains(label), "missing {label}");
    }
    assert!(
        svg.matches("<polyline").count() >= 10,
        "five series per panel"
    );
}

#[test]
fn slow_connects_time_out_and_say_so() {
    for seed in SEEDS {
        let x = &run("slow-paths", seed).runs[0];
        assert!(x.closes["connect_timeout"] > 0);
        assert!(x.rejection_examples["timeout"].contains("connect timed out after 1s"));
        assert_eq!(x.timeouts_with_cause, x.rejections["timeout"]);
        assert_eq!(x.final_pool_leased, 0, "slow releases still come back");
        let back = x.first_ok_after_faults_ms.expect("service resumed");
        assert!(back <= 8000.0, "{back}");
    }
}

#[test]
fn slow_close_keeps_the_server_within_max_size() {
    for seed in SEEDS {
        let r = run("slow-close", seed);
        let (counted, forgotten) = (&r.runs[0], &r.runs[1]);
        assert!(
            counted.peak_db_connections <= 10,
            "{}",
            counted.peak_db_connections
        );
        assert!(
            forgotten.peak_db_connections > 10,
            "the contrast: closing connections forgotten at once exceed max_size ({})",
            forgotten.peak_db_connections
        );
        assert!(counted.closes.get("max_lifetime").copied().unwrap_or(0) > 20);
        assert_eq!(counted.rejected_total(), 0);
        assert_eq!(counted.final_pool_total, 0);
    }
}

#[test]
fn abandoned_queries_are_cancelled_and_the_next_borrower_is_served() {
    for seed in SEEDS {
        let r = run("abandoned-query", seed);
        let (cancel, wait) = (&r.runs[0], &r.runs[1]);
        let (x, y) = (
            cancel.abandoned.as_ref().expect("the model is on"),
            wait.abandoned.as_ref().expect("the model is on"),
        );
        assert!(x.abandoned > 100, "{}", x.abandoned);
        assert_eq!(
            cancel.cancelled_mid_query, x.abandoned,
            "every request that gave up left its query running at the server"
        );
        // The cancel round trip, at most 5 ms for the server to stop, the reset's answer.
        assert!(x.slot_busy_max_ms <= 6.0, "{}", x.slot_busy_max_ms);
        assert!(x.next_wait_max_ms <= 50.0, "{}", x.next_wait_max_ms);
        assert!(x.peak_running_queries <= 10, "{}", x.peak_running_queries);
        assert_eq!(cancel.rejected_total(), 0);
        assert_eq!(cancel.final_pool_leased + cancel.final_pool_waiters, 0);
        // The contrast: a reset that waits holds the slot for the rest of the query
        // (1-2.5 s) and the pool of 10 clogs.
        assert!(y.slot_busy_max_ms > 1000.0, "{}", y.slot_busy_max_ms);
        assert!(y.next_wait_max_ms > 100.0, "{}", y.next_wait_max_ms);
        assert!(
            cancel.throughput_per_s > 3.0 * wait.throughput_per_s,
            "{} vs {}",
            cancel.throughput_per_s,
            wait.throughput_per_s
        );
    }
}

#[test]
fn replica_down_moves_reads_and_brings_them_back() {
    for seed in SEEDS {
        let r = run("replica-down", seed);
        let (two, one) = (&r.runs[0], &r.runs[1]);
        let rs = two.replicas.as_ref().expect("replica figures");
        assert_eq!(rs.reads_failed + rs.writes_failed, 0);
        assert_eq!(two.rejected_total(), 0);
        // Benched within the second after it died, back after its restart.
        let benched = rs.benched_at_ms[1][0];
        assert!((4000.0..5000.0).contains(&benched), "{benched}");
        let back = *rs.restored_at_ms[1].last().unwrap();
        assert!((7000.0..9500.0).contains(&back), "{back}");
        // While it was out, replica-2 took its reads: no read waited past two hops.
        assert!(rs.read_wait_max_ms <= 450.0, "{}", rs.read_wait_max_ms);
        assert!(rs.reads_by_member[2] > rs.reads_by_member[1]);
        assert!(rs.reads_after_faults[1] > 100, "reads came back");
        assert_eq!(
            rs.reads_by_member[0], 0,
            "no fallback needed with a healthy replica"
        );
        // Alone, the replica's reads fell back to the primary, and came back after.
        let rs = one.replicas.as_ref().expect("replica figures");
        assert_eq!(rs.reads_failed + rs.writes_failed, 0);
        assert!(rs.reads_by_member[0] > 1000);
        assert!(rs.reads_after_faults[1] > 100);
        assert!(rs.writes > 1000);
    }
}

#[test]
fn runs_without_abandoned_queries_report_none() {
    let r = run("cancel-storm", 1);
    assert!(r.runs[0].cancelled_mid_query > 0);
    assert!(r.runs[0].abandoned.is_none());
    let json = serde_json::to_string(&r).expect("serializes");
    assert!(!json.contains("abandoned"), "{json}");
}

#[test]
fn replica_lag_benches_past_max_replica_lag_and_restores() {
    for seed in SEEDS {
        let r = run("replica-lag", seed);
        let rs = r.runs[0].replicas.as_ref().expect("replica figures");
        // Paused at 4 s, limit 1 s, probes every 250 ms: benched by 5.5 s, not before 5 s.
        let benched = rs.benched_at_ms[1][0];
        assert!((5000.0..=5500.0).contains(&benched), "{benched}");
        // Stale reads only between crossing the limit and the bench.
        assert!(rs.stale_reads > 0);
        let last = rs.last_stale_read_ms.unwrap();
        assert!(last <= benched + 200.0, "{last} vs {benched}");
        assert!(*rs.restored_at_ms[1].last().unwrap() >= 8000.0);
        assert_eq!(rs.reads_failed + rs.writes_failed, 0);
        assert!(rs.reads_after_faults[1] > 100);
        assert_eq!(
            rs.benched_at_ms[2],
            Vec::<f64>::new(),
            "replica-2 never benched"
        );
    }
}
