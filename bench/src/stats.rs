//! Wait histograms, run results and table formatting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A histogram of nanoseconds, 1 ns to 100 s, 3 significant figures.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(nanos);
}

/// One contender's result in one round.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    /// Operations per second (acquisitions, or queries).
    pub per_sec: f64,
    /// Time inside `get()`, nanoseconds.
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Run {
    pub fn new(ops: u64, elapsed: Duration, waits: &Histogram<u64>) -> Run {
        Run {
            per_sec: ops as f64 / elapsed.as_secs_f64(),
            p50: waits.value_at_quantile(0.50),
            p99: waits.value_at_quantile(0.99),
            max: waits.max(),
        }
    }
}

fn median_by<T: Copy + PartialOrd>(runs: &[Run], key: impl Fn(&Run) -> T) -> T {
    let mut v: Vec<T> = runs.iter().map(key).collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// The median of each figure across rounds (each figure on its own).
pub(crate) fn median(runs: &[Run]) -> Run {
    Run {
        per_sec: median_by(runs, |r| r.per_sec),
        p50: median_by(runs, |r| r.p50),
        p99: median_by(runs, |r| r.p99),
        max: median_by(runs, |r| r.max),
    }
}

/// The (min, max) of a figure across rounds.
pub(crate) fn spread(runs: &[Run], key: impl Fn(&Run) -> f64) -> (f64, f64) {
    runs.iter()
        .map(key)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// One table row for a contender's rounds: the median round's rate and waits, the rate's
/// spread, then `vs` (the ratio columns, computed from the median round).
pub(crate) fn print_row(name: &str, runs: &[Run], vs: impl FnOnce(&Run) -> [String; 2]) {
    let m = median(runs);
    let (lo, hi) = spread(runs, |r| r.per_sec);
    let [a, b] = vs(&m);
    println!(
        "| {name} | {} | {}–{} | {} | {} | {} | {a} | {b} |",
        fmt_rate(m.per_sec),
        fmt_rate(lo),
        fmt_rate(hi),
        fmt_ns(m.p50),
        fmt_ns(m.p99),
        fmt_ns(m.max),
    );
}

pub(crate) fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} /s")
    }
}

pub(crate) fn fmt_ns(nanos: u64) -> String {
    let n = nanos as f64;
    if n >= 1e9 {
        format!("{:.2} s", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} ms", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} µs", n / 1e3)
    } else {
        format!("{nanos} ns")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".to_owned()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// CPU model, cores and kernel: what the figures were measured on.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

/// The measurement protocol shared by every load row: let the tasks warm up, open the
/// window (`measuring`), close it after `measure` (`stop`), then add up each task's
/// operations and wait histogram.
pub(crate) async fn measure_window(
    warmup: Duration,
    measure: Duration,
    measuring: &AtomicBool,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<(u64, Histogram<u64>)>>,
) -> Run {
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(measure).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut waits = histogram();
    let mut ops = 0;
    for task in tasks {
        let (n, w) = task.await.expect("bench task");
        ops += n;
        waits.add(&w).expect("same bounds");
    }
    Run::new(ops, elapsed, &waits)
}
