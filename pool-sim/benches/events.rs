//! Simulator speed, in release mode: `cargo bench -p pool-sim --bench events`.
//!
//! 1. Pool events per second on one core: a closed-loop workload (64 tasks, a pool of 16,
//!    1 ms queries, so waiters queue) with invariants checked after every pool input, as
//!    always. "Pool events" = inputs into the pool plus actions it emits.
//! 2. Swarm throughput: seeds per second on one thread (the `swarm` command uses up to two).
//!
//! Wall-clock time is read here and only here; it never reaches the simulator's output.

use std::time::{Duration, Instant};

use pool_core::Config;
use pool_sim::client::Workload;
use pool_sim::db::{DbSpec, Latency};
use pool_sim::swarm::run_seed;
use pool_sim::world::{RunResult, Setup, Sim};

fn events_run(tasks: usize, virtual_secs: u64) -> (RunResult, Duration) {
    let mut st = Setup::new(
        format!("bench: {tasks} tasks, pool 16"),
        Config {
            max_size: 16,
            min_idle: 16,
            ..Config::default()
        },
        DbSpec {
            connect: Latency::ms(5, 5),
            query: Latency::ms(1, 1),
            ..DbSpec::default()
        },
        Workload::Closed {
            tasks,
            think: Duration::ZERO,
        },
    );
    st.workload_end = Duration::from_secs(virtual_secs);
    st.end = Duration::from_secs(virtual_secs + 1);
    let t = Instant::now();
    let r = Sim::new(st, 1).expect("valid").run();
    (r, t.elapsed())
}

fn best_of_three(tasks: usize) {
    let _ = events_run(tasks, 2);
    let mut best: Option<(RunResult, Duration)> = None;
    for _ in 0..3 {
        let (r, d) = events_run(tasks, 30);
        assert!(r.error.is_none(), "{:?}", r.error);
        if best.as_ref().is_none_or(|b| d < b.1) {
            best = Some((r, d));
        }
    }
    let (r, d) = best.expect("ran");
    let secs = d.as_secs_f64();
    let pool_events = r.pool_inputs + r.pool_actions;
    println!("events: {tasks} tasks, pool 16, 1 ms queries, 30 s of virtual time, one thread (best of 3)");
    println!(
        "  {} pool inputs + {} actions = {} pool events, {} simulator events, {} invariant checks in {:.3} s",
        r.pool_inputs, r.pool_actions, pool_events, r.events, r.invariant_checks, secs
    );
    println!(
        "  {:.2} M pool events/s ({:.2} M pool inputs/s, {:.2} M simulator events/s); {:.0}x faster than real time",
        pool_events as f64 / secs / 1e6,
        r.pool_inputs as f64 / secs / 1e6,
        r.events as f64 / secs / 1e6,
        30.0 / secs
    );
}

fn main() {
    // 64 tasks queue behind 16 connections (about 48 waiters); 16 tasks never wait.
    best_of_three(64);
    best_of_three(16);

    let n = 2000u64;
    let t = Instant::now();
    let mut inputs = 0;
    let mut failed = 0;
    for seed in 0..n {
        let o = run_seed(seed);
        inputs += o.pool_inputs;
        failed += u64::from(o.failure.is_some());
    }
    let secs = t.elapsed().as_secs_f64();
    println!("swarm: seeds 0..{n} on one thread");
    println!(
        "  {:.0} seeds/s, {:.2} M pool inputs/s, {failed} failed; 10,000 seeds would take {:.1} s on one thread",
        n as f64 / secs,
        inputs as f64 / secs / 1e6,
        10_000.0 * secs / n as f64
    );
}
