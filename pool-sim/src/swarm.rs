//! Swarm testing: per seed, a random pool configuration, database, workload and set of
//! faults. A safety phase with faults (the pool's invariants checked after every input),
//! then a liveness phase without: clients behave, faults are over, and by the end every
//! request must have exactly one outcome and a fresh acquire must be served (or, for a
//! closed pool, the drain must have finished by its deadline).

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use pool_core::{Config, IdleOrder};

use crate::client::{ClientSpec, Spike, Workload};
use crate::db::{DbSpec, Latency};
use crate::faults::{Fault, FaultKind};
use crate::rng::Rng;
use crate::world::{RunResult, Setup, Sim};

/// End of the safety phase: faults and client misbehaviour happen before it.
pub const SAFETY_END: Duration = Duration::from_secs(3);
/// Requests keep arriving (well-behaved) until here.
const WORKLOAD_END: Duration = Duration::from_secs(5);
/// The health probe: by now every fault's after-effects must be over (acquire timeout
/// <= 3 s, leak hold <= 3 s, backoff cap <= 2 s, connect timeout <= 2 s).
const PROBE_AT: Duration = Duration::from_secs(14);
const END: Duration = Duration::from_secs(18);

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// With probability `p`, a duration of `lo..=hi` ms.
fn maybe(rng: &mut Rng, p: f64, lo: u64, hi: u64) -> Option<Duration> {
    let on = rng.chance(p);
    let d = ms(rng.range(lo, hi));
    on.then_some(d)
}

/// The random world of one seed.
pub fn setup_for(seed: u64) -> Setup {
    let mut r = Rng::new(seed);
    // One seed in 25 is big: a larger pool and database, and heavier load.
    let big = r.chance(0.04);
    let scale = if big { 4 } else { 1 };
    let max_size = r.range(1, 16 * scale) as usize;
    let backoff_base = ms(r.range(1, 50));
    let config = Config {
        max_size,
        min_idle: if r.chance(0.5) {
            0
        } else {
            r.range(0, max_size as u64) as usize
        },
        max_connecting: r.range(1, 4) as usize,
        max_waiters: [1, 5, 50, 10_000][r.below(4) as usize],
        acquire_timeout: Duration::from_secs(30),
        connect_timeout: ms(r.range(600, 2000)),
        check_timeout: ms(r.range(20, 1000)),
        // Fixed, not drawn: the draws after it (and so every seed's world) stay as they
        // were. The swarm's closes take no time.
        close_timeout: Duration::from_secs(5),
        check_after_idle: maybe(&mut r, 0.7, 0, 500),
        idle_timeout: maybe(&mut r, 0.5, 100, 5000),
        max_lifetime: maybe(&mut r, 0.5, 500, 10_000),
        lifetime_jitter_permille: r.range(0, 500) as u16,
        leak_threshold: maybe(&mut r, 0.5, 100, 5000),
        backoff_base,
        backoff_max: backoff_base.max(ms(r.range(1, 2000))),
        idle_order: if r.chance(0.5) {
            IdleOrder::Lifo
        } else {
            IdleOrder::Fifo
        },
    };
    let db = DbSpec {
        max_connections: r.range(2, 30 * scale) as usize,
        connect: Latency::ms(r.range(1, 50), r.range(0, 50)).with_tail(r.range(0, 50) as u16, 5),
        query: Latency {
            base: Duration::from_micros(r.range(500, 20_000)),
            jitter: Duration::from_micros(r.range(0, 20_000)),
            tail_permille: r.range(0, 20) as u16,
            tail_factor: 10,
        },
        rtt: Duration::from_micros(r.range(100, 2000)),
        mem_per_conn_mb: 10,
    };
    let workload = if r.chance(0.5) {
        Workload::Closed {
            tasks: r.range(1, 24 * scale) as usize,
            think: ms(r.range(0, 20)),
        }
    } else {
        let spikes = (0..r.below(3))
            .map(|_| Spike {
                at: ms(r.range(0, 3000)),
                n: r.range(1, 50 * scale) as usize,
            })
            .collect();
        Workload::Open {
            rate: r.range(10, 500 * scale) as f64,
            spikes,
        }
    };
    let client = ClientSpec {
        // Now and then zero: the deadline has passed on arrival.
        acquire_timeout: if r.chance(0.03) {
            Duration::ZERO
        } else {
            ms(r.range(10, 3000))
        },
        query_timeout: ms(r.range(100, 2000)),
        hop: Duration::ZERO,
        cancel_prob: [0.0, 0.05, 0.3][r.below(3) as usize],
        leak_prob: [0.0, 0.0, 0.01][r.below(3) as usize],
        leak_hold: ms(r.range(100, 3000)),
        slow_release_prob: [0.0, 0.1][r.below(2) as usize],
        slow_release: ms(r.range(10, 500)),
        dirty_prob: [0.0, 0.1][r.below(2) as usize],
        try_first_prob: [0.0, 0.5][r.below(2) as usize],
        detach_prob: [0.0, 0.0, 0.02][r.below(3) as usize],
    };
    let safety = SAFETY_END.as_millis() as u64;
    let faults = (0..r.below(4))
        .map(|_| {
            let start = r.range(0, safety - 1);
            let end = r.range(start + 1, safety);
            let kind = match r.below(6) {
                0 => FaultKind::Down,
                1 => FaultKind::Restart,
                2 => FaultKind::HalfOpen {
                    count: r.range(1, 4) as usize,
                },
                3 => FaultKind::AuthFail,
                // Up to past the 5 s close_timeout: some closes are abandoned.
                4 => FaultKind::SlowClose {
                    delay_ms: r.range(10, 8000),
                },
                _ => FaultKind::SlowConnect {
                    factor: r.range(2, 30) as u32,
                },
            };
            Fault::new(kind, ms(start), ms(end))
        })
        .collect();
    let close_at = r
        .chance(0.1)
        .then(|| (ms(r.range(0, safety)), ms(r.range(0, 1000))));
    Setup {
        label: format!("swarm seed {seed}"),
        config,
        db,
        workload,
        topology: crate::client::Topology::Shared,
        client,
        faults,
        warmup: Duration::ZERO,
        workload_end: WORKLOAD_END,
        end: END,
        close_at,
        well_behaved_after: Some(SAFETY_END),
        probe_at: Some(PROBE_AT),
        timeline: false,
        max_events: 2_000_000,
        drop_timers: false,
        replicas: None,
        early_close_answer: false,
        abandoned: None,
    }
}

/// One seed's verdict.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    pub seed: u64,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    pub events: u64,
    pub pool_inputs: u64,
    pub invariant_checks: u64,
}

/// The liveness rules, checked on a finished run.
pub fn liveness_failures(setup: &Setup, r: &RunResult) -> Vec<String> {
    let mut f = r.liveness.clone();
    if r.unresolved_waiting + r.unresolved_holding > 0 {
        f.push(format!(
            "{} requests still waiting and {} still holding a connection at the end",
            r.unresolved_waiting, r.unresolved_holding
        ));
    }
    if let Some((at, drain)) = setup.close_at {
        // `Drained` waits for the closes too: a slow close may take until its
        // `close_timeout` abandons it.
        let slow_close = setup
            .faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::SlowClose { .. }));
        let closes = if slow_close {
            setup.config.close_timeout
        } else {
            Duration::ZERO
        };
        let deadline = crate::vtime::ms((at + drain + closes).as_nanos() as u64);
        match &r.drained {
            Some(d) if d.at_ms <= deadline => {}
            Some(d) => f.push(format!(
                "drained at {} ms, after its deadline {deadline} ms",
                d.at_ms
            )),
            None => f.push("closed pool never reported Drained".into()),
        }
        if r.final_db_connections != 0 {
            f.push(format!(
                "closed pool left {} database connections open",
                r.final_db_connections
            ));
        }
        if r.probe_rejection.as_deref() != Some("pool is closed") {
            f.push(format!(
                "probe on a closed pool: expected \"pool is closed\", got {:?} / {:?}",
                r.probe_wait_ms, r.probe_rejection
            ));
        }
    } else {
        match (&r.probe_wait_ms, &r.probe_rejection) {
            (Some(_), _) => {}
            (None, Some(e)) => f.push(format!(
                "pool not healthy in the liveness phase: the probe acquire was rejected: {e}"
            )),
            (None, None) => f.push("the probe acquire never got an answer".into()),
        }
        if r.final_pool_leased != 0 || r.final_pool_waiters != 0 {
            f.push(format!(
                "at the end {} leased and {} waiting, expected none",
                r.final_pool_leased, r.final_pool_waiters
            ));
        }
    }
    f
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Run `f` for `seed`, turning a panic into a failed outcome that names the seed.
pub fn guarded(seed: u64, f: impl FnOnce() -> SeedOutcome) -> SeedOutcome {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(o) => o,
        Err(p) => SeedOutcome {
            seed,
            failure: Some(format!("panic: {}", panic_message(&*p))),
            events: 0,
            pool_inputs: 0,
            invariant_checks: 0,
        },
    }
}

/// Run one seed; a panic inside the core (or the simulator) is caught and reported.
pub fn run_seed(seed: u64) -> SeedOutcome {
    guarded(seed, || {
        let setup = setup_for(seed);
        let r = match Sim::new(setup.clone(), seed) {
            Ok(sim) => sim.run(),
            Err(e) => {
                return SeedOutcome {
                    seed,
                    failure: Some(format!("invalid generated setup: {e}")),
                    events: 0,
                    pool_inputs: 0,
                    invariant_checks: 0,
                }
            }
        };
        let mut failure = r.error.clone().map(|e| format!("safety: {e}"));
        if failure.is_none() {
            let l = liveness_failures(&setup, &r);
            if !l.is_empty() {
                failure = Some(format!("liveness: {}", l.join("; ")));
            }
        }
        SeedOutcome {
            seed,
            failure,
            events: r.events,
            pool_inputs: r.pool_inputs,
            invariant_checks: r.invariant_checks,
        }
    })
}

/// The command that replays one seed.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p pool-sim -- swarm --from {seed} --seeds 1 --verbose")
}

/// What a swarm found.
#[derive(Clone, Debug, Default)]
pub struct SwarmSummary {
    pub from: u64,
    pub seeds: u64,
    pub events: u64,
    pub pool_inputs: u64,
    pub invariant_checks: u64,
    pub failures: Vec<SeedOutcome>,
    pub verbose_lines: Vec<String>,
}

impl SwarmSummary {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.verbose_lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!(
            "swarm: seeds {}..{} ({} seeds): {} failed; {} events, {} pool inputs, {} invariant checks\n",
            self.from,
            self.from + self.seeds,
            self.seeds,
            self.failures.len(),
            self.events,
            self.pool_inputs,
            self.invariant_checks
        ));
        for f in &self.failures {
            s.push_str(&format!(
                "FAILED seed {}: {}\n  replay: {}\n",
                f.seed,
                f.failure.as_deref().unwrap_or(""),
                replay_command(f.seed)
            ));
        }
        s
    }
}

/// Run seeds `from..from + seeds`, on up to two threads; the output does not depend on
/// the thread count or timing.
pub fn run_range(from: u64, seeds: u64, progress: bool, verbose: bool) -> SwarmSummary {
    let bar = if progress {
        let b = indicatif::ProgressBar::new(seeds);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2) as u64;
    // Silence the default panic message: a caught panic is reported with its seed.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut outcomes: Vec<SeedOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let bar = bar.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = t;
                    while i < seeds {
                        let o = run_seed(from + i);
                        if o.failure.is_some() {
                            bar.set_message(format!("seed {} FAILED", o.seed));
                        }
                        out.push(o);
                        bar.inc(1);
                        i += threads;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    panic::set_hook(hook);
    bar.finish_and_clear();
    outcomes.sort_by_key(|o| o.seed);
    let mut sum = SwarmSummary {
        from,
        seeds,
        ..SwarmSummary::default()
    };
    for o in outcomes {
        sum.events += o.events;
        sum.pool_inputs += o.pool_inputs;
        sum.invariant_checks += o.invariant_checks;
        if verbose {
            sum.verbose_lines.push(format!(
                "seed {}: {} ({} events, {} pool inputs)\n  setup: {:?}",
                o.seed,
                o.failure.as_deref().unwrap_or("ok"),
                o.events,
                o.pool_inputs,
                setup_for(o.seed)
            ));
        }
        if o.failure.is_some() {
            sum.failures.push(o);
        }
    }
    sum
}
