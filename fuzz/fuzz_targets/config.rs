//! Fuzz target `config`: arbitrary `Config` values (any size, any duration, including
//! zero and `Duration::MAX`) go to `Pool::new`. It must never panic: it returns either a
//! pool whose invariants hold, or a `ConfigError` naming one of `Config`'s fields.
//! A pool that was built is also driven through its first timer and a close, since a
//! config is only really valid if the pool can run with it.
//!
//! (A connection-URL parser will be fuzzed here too once it exists.)
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pool_core::{Config, Instant, Pool};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Drawn by pool-core's `arbitrary` feature: small sizes and every duration scale
    /// come up quickly, and any value stays reachable.
    config: Config,
    now: u64,
    seed: u64,
}

fuzz_target!(|input: Input| {
    let config = input.config;
    let now = Instant::from_nanos(input.now);
    match Pool::<(), ()>::new(config.clone(), now, input.seed) {
        Err(e) => {
            assert!(Config::FIELDS.contains(&e.field), "unknown field in {e:?}");
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
            // Nothing is leased, but the initial opens are still in flight: a closing
            // connection holds its slot until answered or until its connect and close
            // timeouts pass, and only then is the pool closed. Nobody answers here, so
            // the timers must get it there, unless a timeout is too long to ever come.
            for _ in 0..16 {
                let Some(t) = pool.poll_timeout().filter(|_| !pool.is_closed()) else {
                    break;
                };
                pool.handle_timeout(t);
                while pool.poll_action().is_some() {}
                pool.check_invariants().unwrap();
            }
            let status = pool.status();
            assert!(
                pool.is_closed() || status.opening + status.closing > 0,
                "nothing leased or in flight, yet close did not finish: {status}"
            );
        }
    }
});
