//! The sans-IO state machine alone: inputs per second, no lock, no runtime.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use pool_core::{Acquired, Action, Config, Instant as Tick, LeaseId, Pool, Verdict};

use crate::stats::fmt_rate;
use crate::Opts;

/// Core time advances 100 ns per input.
const STEP: Duration = Duration::from_nanos(100);

/// What to ask about timers after every input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timers {
    /// Nothing.
    Ignore,
    /// `poll_timeout()`: a full scan of every deadline.
    Full,
    /// `poll_timer()`, keeping the timer where it says, as the shell does.
    AsTheShell,
}

struct Driver {
    /// No connection object or waiter token: the core's own bookkeeping alone.
    pool: Pool<()>,
    now: Tick,
    leases: VecDeque<LeaseId>,
    timers: Timers,
    armed: Option<Tick>,
    events: u64,
}

impl Driver {
    fn new(timers: Timers) -> Driver {
        let config = Config {
            max_size: 16,
            max_waiters: 1_000_000,
            ..Config::default()
        };
        Driver {
            pool: Pool::new(config, Tick::ZERO, 7).expect("valid config"),
            now: Tick::ZERO,
            leases: VecDeque::new(),
            timers,
            armed: None,
            events: 0,
        }
    }

    fn tick(&mut self) -> Tick {
        self.now = self.now + STEP;
        self.events += 1;
        self.now
    }

    /// Route the actions of the last input: opens succeed at once, grants are held.
    fn drain(&mut self) {
        while let Some(action) = self.pool.poll_action() {
            match action {
                Action::Open { conn } => {
                    let now = self.tick();
                    self.pool
                        .connect_finished(now, conn, Ok(()))
                        .expect("open answered");
                }
                Action::Grant { grant, .. } => self.leases.push_back(grant.lease),
                other => panic!("unexpected action {other:?}"),
            }
        }
        match self.timers {
            Timers::Ignore => {}
            Timers::Full => {
                std::hint::black_box(self.pool.poll_timeout());
            }
            Timers::AsTheShell => {
                if let Some(at) = self.pool.poll_timer() {
                    self.armed = Some(at);
                }
            }
        }
    }

    fn acquire(&mut self) {
        let now = self.tick();
        let deadline = now + Duration::from_secs(3600);
        match self
            .pool
            .acquire(now, deadline, |_| ())
            .expect("not rejected")
        {
            Acquired::Ready(grant, ()) => self.leases.push_back(grant.lease),
            Acquired::Queued(_) => {}
        }
        self.drain();
    }

    fn release(&mut self) {
        let lease = self.leases.pop_front().expect("a lease to release");
        let now = self.tick();
        self.pool
            .release(now, lease, (), Verdict::Reusable)
            .expect("valid lease");
        self.drain();
    }
}

/// Inputs per second over `d`: `setup`, then `cycle` repeatedly.
fn rate(d: Duration, timers: Timers, setup: fn(&mut Driver), cycle: fn(&mut Driver)) -> f64 {
    let mut driver = Driver::new(timers);
    setup(&mut driver);
    let start = Instant::now();
    let before = driver.events;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            cycle(&mut driver);
        }
    }
    let rate = (driver.events - before) as f64 / start.elapsed().as_secs_f64();
    driver.pool.check_invariants().expect("invariants hold");
    rate
}

fn uncontended_setup(d: &mut Driver) {
    d.acquire();
    d.release();
}

fn uncontended_cycle(d: &mut Driver) {
    d.acquire();
    d.release();
}

/// 16 connections leased, 64 waiters queued.
fn saturated_setup(d: &mut Driver) {
    for _ in 0..16 + 64 {
        d.acquire();
    }
    // Opens were answered at once, so 16 are leased and 64 wait.
    assert_eq!(d.leases.len(), 16);
    assert_eq!(d.pool.status().waiters, 64);
}

fn saturated_cycle(d: &mut Driver) {
    d.release(); // goes to the front waiter
    d.acquire(); // queues at the back
}

pub(crate) fn run(opts: Opts) {
    println!("## pool-core state machine alone (inputs per second, one thread)\n");
    println!(
        "| scenario | inputs/s (actions drained) | + poll_timeout() after each (full scan) | + poll_timer() after each (what the shell does) |"
    );
    println!("|---|---|---|---|");
    let d = opts.duration();
    for (name, setup, cycle) in [
        (
            "acquire + release, pool 16, idle connection",
            uncontended_setup as fn(&mut Driver),
            uncontended_cycle as fn(&mut Driver),
        ),
        (
            "release (→ grant) + acquire (→ queued), 16 leased, 64 waiting",
            saturated_setup,
            saturated_cycle,
        ),
    ] {
        let median = |timers: Timers| {
            let mut v: Vec<f64> = (0..opts.rounds)
                .map(|_| rate(d, timers, setup, cycle))
                .collect();
            v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            fmt_rate(v[v.len() / 2])
        };
        println!(
            "| {name} | {} | {} | {} |",
            median(Timers::Ignore),
            median(Timers::Full),
            median(Timers::AsTheShell)
        );
    }
    println!();
}
