//! Pool overhead with a no-op connection, on a multi-thread runtime with 2 workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contenders::{Bb8, Contender, Deadpool, Floor, Kind, Ours};
use crate::stats::{self, ratio, Run};
use crate::Opts;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

const WARMUP: Duration = Duration::from_millis(300);

/// 1 task: nanoseconds per `get` + drop, in a tight loop (no yield, no per-op timing).
async fn uncontended<C: Contender>(pool: C, measure: Duration) -> f64 {
    let task = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < WARMUP {
            for _ in 0..1000 {
                drop(pool.get().await);
            }
        }
        let mut ops = 0u64;
        let start = Instant::now();
        while start.elapsed() < measure {
            for _ in 0..1000 {
                drop(pool.get().await);
            }
            ops += 1000;
        }
        start.elapsed().as_nanos() as f64 / ops as f64
    });
    task.await.expect("uncontended task")
}

/// `tasks` tasks looping get, yield, drop; the time inside `get()` goes to a histogram.
pub(crate) async fn contended<C: Contender>(pool: C, tasks: usize, measure: Duration) -> Run {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let pool = pool.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut waits = stats::histogram();
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let guard = pool.get().await;
                let waited = t0.elapsed();
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    stats::record(&mut waits, waited);
                    ops += 1;
                }
                tokio::task::yield_now().await;
                drop(guard);
            }
            (ops, waits)
        }));
    }
    stats::measure_window(WARMUP, measure, &measuring, &stop, handles).await
}

fn one_uncontended(kind: Kind, opts: Opts) -> f64 {
    let rt = runtime();
    let d = opts.duration();
    rt.block_on(async move {
        match kind {
            Kind::Ours => uncontended(Ours::new(16, 10_000), d).await,
            Kind::Deadpool => uncontended(Deadpool::new(16), d).await,
            Kind::Bb8 => uncontended(Bb8::new(16).await, d).await,
            Kind::Floor => uncontended(Floor::new(16), d).await,
        }
    })
}

fn one_contended(kind: Kind, tasks: usize, size: usize, opts: Opts) -> Run {
    let rt = runtime();
    let d = opts.duration();
    rt.block_on(async move {
        match kind {
            Kind::Ours => contended(Ours::new(size, 10_000), tasks, d).await,
            Kind::Deadpool => contended(Deadpool::new(size), tasks, d).await,
            Kind::Bb8 => contended(Bb8::new(size as u32).await, tasks, d).await,
            Kind::Floor => contended(Floor::new(size), tasks, d).await,
        }
    })
}

pub(crate) fn run(opts: Opts) {
    println!("## No-op connection, multi-thread runtime, 2 workers\n");

    // 1 task, pool 16.
    let mut ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..opts.rounds {
        for kind in Kind::selected(opts.only) {
            ns.entry(kind.name())
                .or_default()
                .push(one_uncontended(kind, opts));
        }
    }
    let med = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v[v.len() / 2]
    };
    let dp = ns.get(Kind::Deadpool.name()).map_or(0.0, med);
    let floor = ns.get(Kind::Floor.name()).map_or(0.0, med);
    println!("### 1 task, pool 16: get + drop\n");
    println!(
        "| contender | ns per get+drop (median) | rounds (min–max) | vs deadpool | vs floor |"
    );
    println!("|---|---|---|---|---|");
    for kind in Kind::selected(opts.only) {
        let v = &ns[kind.name()];
        let m = med(v);
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "| {} | {m:.0} | {lo:.0}–{hi:.0} | {} | {} |",
            kind.name(),
            ratio(m, dp),
            ratio(m, floor)
        );
    }
    println!();

    for (tasks, size) in [(64, 8), (1024, 16)] {
        let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
        for _ in 0..opts.rounds {
            for kind in Kind::selected(opts.only) {
                runs.entry(kind.name())
                    .or_default()
                    .push(one_contended(kind, tasks, size, opts));
            }
        }
        let none = Run {
            per_sec: 0.0,
            p50: 0,
            p99: 0,
            max: 0,
        };
        let dp = runs
            .get(Kind::Deadpool.name())
            .map_or(none.clone(), |r| stats::median(r));
        let floor = runs
            .get(Kind::Floor.name())
            .map_or(none, |r| stats::median(r));
        println!("### {tasks} tasks, pool {size}: get, yield, drop\n");
        println!(
            "| contender | acquisitions/s | rounds (min–max) | p50 wait | p99 wait | max wait | throughput vs deadpool | max wait vs floor |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for kind in Kind::selected(opts.only) {
            stats::print_row(kind.name(), &runs[kind.name()], |m| {
                [
                    ratio(m.per_sec, dp.per_sec),
                    ratio(m.max as f64, floor.max as f64),
                ]
            });
        }
        println!();
    }
}
