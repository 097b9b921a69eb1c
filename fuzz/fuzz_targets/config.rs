//! Fuzz target `config`: arbitrary `Config` values (any size, any duration, including
//! zero and `Duration::MAX`) go to `Pool::new`. It must never panic: it returns either a
//! pool whose invariants hold, or a `ConfigError` naming one of `Config`'s fields.
//! A pool that was built is also driven through its first timer and a close, since a
//! config is only really valid if the pool can run with it.
//!
//! (A connection-URL parser will be fuzzed here too once it exists.)
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pool_core::{Config, IdleOrder, Instant, Pool};

/// Every field of `Config`: a `ConfigError` must name one of these.
const FIELDS: &[&str] = &[
    "max_size",
    "min_idle",
    "max_connecting",
    "max_waiters",
    "acquire_timeout",
    "connect_timeout",
    "check_timeout",
    "check_after_idle",
    "idle_timeout",
    "max_lifetime",
    "lifetime_jitter_permille",
    "leak_threshold",
    "backoff_base",
    "backoff_max",
    "idle_order",
];

#[derive(Arbitrary, Debug)]
struct Input {
    max_size: usize,
    min_idle: usize,
    max_connecting: usize,
    max_waiters: usize,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    check_timeout: Duration,
    check_after_idle: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    lifetime_jitter_permille: u16,
    leak_threshold: Option<Duration>,
    backoff_base: Duration,
    backoff_max: Duration,
    fifo: bool,
    now: u64,
    seed: u64,
    /// Small sizes are the interesting ones; let the fuzzer reach them quickly.
    small_sizes: bool,
}

fuzz_target!(|input: Input| {
    let shrink = |n: usize| if input.small_sizes { n % 16 } else { n };
    let config = Config {
        max_size: shrink(input.max_size),
        min_idle: shrink(input.min_idle),
        max_connecting: shrink(input.max_connecting),
        max_waiters: shrink(input.max_waiters),
        acquire_timeout: input.acquire_timeout,
        connect_timeout: input.connect_timeout,
        check_timeout: input.check_timeout,
        check_after_idle: input.check_after_idle,
        idle_timeout: input.idle_timeout,
        max_lifetime: input.max_lifetime,
        lifetime_jitter_permille: input.lifetime_jitter_permille,
        leak_threshold: input.leak_threshold,
        backoff_base: input.backoff_base,
        backoff_max: input.backoff_max,
        idle_order: if input.fifo {
            IdleOrder::Fifo
        } else {
            IdleOrder::Lifo
        },
    };
    let now = Instant::from_nanos(input.now);
    match Pool::new(config.clone(), now, input.seed) {
        Err(e) => {
            assert!(FIELDS.contains(&e.field), "unknown field in {e:?}");
            assert!(!e.problem.is_empty(), "no reason given: {e:?}");
            assert_eq!(config.validate(), Err(e.clone()), "validate disagrees");
            let _ = e.to_string();
        }
        Ok(mut pool) => {
            assert_eq!(config.validate(), Ok(()), "validate disagrees");
            assert_eq!(pool.config(), &config);
            let mut opens = 0;
            while pool.poll_action().is_some() {
                opens += 1;
            }
            assert_eq!(
                opens,
                config.min_idle.min(config.max_connecting),
                "initial opens"
            );
            pool.check_invariants().unwrap();
            if let Some(t) = pool.poll_timeout() {
                pool.handle_timeout(t);
                while pool.poll_action().is_some() {}
                pool.check_invariants().unwrap();
            }
            pool.close(pool.now(), Instant::NEVER).unwrap();
            while pool.poll_action().is_some() {}
            pool.check_invariants().unwrap();
            assert!(pool.is_closed(), "nothing leased, yet close did not finish");
        }
    }
});
