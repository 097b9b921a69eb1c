//! Side-by-side benchmark: pool-tokio against deadpool 0.13, bb8 0.9 and the floor (a
//! bare `tokio::sync::Semaphore` guarding the same objects), all in one process, so every
//! figure that matters is a ratio measured in the same run.
//!
//! ```text
//! cargo run --release -p pool-bench -- [noop|postgres|queue|core|proxy|all] [--seconds N] [--rounds R]
//!     [--extra-seconds N] [--idle-clients N]
//! ```
//!
//! See docs/performance.md for what each part measures and the latest results.

mod contenders;
mod core_bench;
mod cpu;
mod idle_clients;
mod nofile;
mod noop;
mod pg;
mod proxy;
mod queue;
mod stats;

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts every allocation, for the memory per queued waiter (`queue`).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

pub(crate) fn allocator() -> &'static StatsAlloc<System> {
    GLOBAL
}

/// Options shared by every part.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opts {
    /// Measured time per row and contender, when given (`--seconds`); each part has its
    /// own default.
    pub seconds: Option<f64>,
    /// Rounds per row: contenders run interleaved, and the median round is reported.
    pub rounds: usize,
    /// Run only this no-op contender (for profiling): ours, deadpool, bb8 or floor.
    pub only: Option<contenders::Kind>,
    /// `proxy`: seconds per cell of issue 13's rows (`-c 500`, `-M prepared`, `-C -c 50`,
    /// the login cap), when given (`--extra-seconds`).
    pub extra_seconds: Option<f64>,
    /// `proxy`: idle clients held open against each pooler (`--idle-clients`).
    pub idle_clients: Option<usize>,
}

impl Opts {
    /// `--seconds`, else 2 s (every part but `proxy`, whose cells default to 15 s).
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.unwrap_or(2.0))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: pool-bench [noop|postgres|queue|core|proxy|all] [--seconds N] [--rounds R] [--only ours|deadpool|bb8|floor]\n\
         \x20                 [--extra-seconds N] [--idle-clients N]\n\
         \n  noop      pool-tokio vs deadpool, bb8 and a bare semaphore, no-op connection\n  \
         postgres  SELECT 1 from 64 tasks through 10 connections (starts a PostgreSQL cluster)\n  \
         queue     acquire + release with 10, 1,000 and 100,000 queued waiters; bytes per waiter\n  \
         core      events per second through the pool-core state machine alone\n  \
         proxy     pgbench -S direct, through PgBouncer and through pool-proxy (builds pool-proxy\n            \
         in release mode unless POOL_PROXY_BIN is set); 15 s per cell unless --seconds or\n            \
         POOL_BENCH_PROXY_SECONDS says otherwise; one round; issue 13's rows (-c 500,\n            \
         -M prepared, -C -c 50, login cap) --extra-seconds each (default 10); memory per\n            \
         idle client with --idle-clients idle logins per pooler (default 5000)\n  \
         all       every part (default)\n\
         \n  --seconds N   measured time per row and contender (default 2; proxy: 15)"
    );
    std::process::exit(2)
}

fn main() {
    let mut what = "all".to_owned();
    let mut opts = Opts {
        seconds: None,
        rounds: 3,
        only: None,
        extra_seconds: None,
        idle_clients: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                opts.seconds = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .filter(|s: &f64| *s > 0.0)
                        .unwrap_or_else(|| usage()),
                )
            }
            "--rounds" => {
                opts.rounds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|r: &usize| *r > 0)
                    .unwrap_or_else(|| usage())
            }
            "--extra-seconds" => {
                opts.extra_seconds = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .filter(|s: &f64| *s > 0.0)
                        .unwrap_or_else(|| usage()),
                )
            }
            "--idle-clients" => {
                opts.idle_clients = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--only" => {
                opts.only = Some(
                    args.next()
                        .and_then(|s| contenders::Kind::parse(&s))
                        .unwrap_or_else(|| usage()),
                )
            }
            "noop" | "postgres" | "queue" | "core" | "proxy" | "all" => what = arg,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if what == "proxy" {
        // Its own timing and a single round: said in its own heading.
        println!("# pool-bench: proxy\n");
    } else {
        println!(
            "# pool-bench: {what}, {} s per measurement, {} round(s), median round reported\n",
            opts.duration().as_secs_f64(),
            opts.rounds
        );
    }
    println!("machine: {}\n", stats::machine());
    let all = what == "all";
    if all || what == "noop" {
        noop::run(opts);
    }
    if all || what == "queue" {
        queue::run(opts);
    }
    if all || what == "core" {
        core_bench::run(opts);
    }
    if all || what == "postgres" {
        pg::run(opts);
    }
    if all || what == "proxy" {
        proxy::run(opts);
    }
}
