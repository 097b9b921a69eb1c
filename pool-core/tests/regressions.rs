//! Replays of core bugs found by the model test and the fuzzers, minimised. A new one is
//! added `#[ignore = "core bug: ..."]` (so the suite stays green) until pool-core is
//! fixed, then the `ignore` goes and it stays as a regression test.
//!
//! Run the ignored ones too: `cargo test -p pool-core --test regressions -- --include-ignored`.
//!
//! The first three below were fixed in ef50875, the fourth in 0988dc0.

use std::time::Duration;

use pool_core::{Acquired, Action, Config, ConnectError, Instant, Pool};

/// The pool of these replays: no connection or token needs to be told apart.
type P = Pool<()>;

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

/// Found by `cargo fuzz run ops` within seconds. `backoff_max` above `u64::MAX` ns (~584
/// years, e.g. `Duration::MAX` meant as "no cap") passes `validate`, but the first failed
/// connect computes the retry delay as `half + rng.up_to(half)` with `half` saturated to
/// `u64::MAX` (pool/backoff.rs `on_failure`): an overflow panic with overflow checks on,
/// a wrapped (far too short) delay without them.
#[test]
fn huge_backoff_does_not_overflow() {
    let config = Config {
        backoff_base: Duration::MAX,
        backoff_max: Duration::MAX,
        ..Config::default()
    };
    let mut pool = P::new(config, at(0), 1).unwrap();
    let Ok(Acquired::Queued(_)) = pool.acquire(at(0), at(1_000), |_| ()) else {
        panic!("expected to wait")
    };
    let Some(Action::Open { conn }) = pool.poll_action() else {
        panic!("expected an open")
    };
    // Panicked here before the fix: attempt to add with overflow (pool/backoff.rs).
    pool.connect_finished(at(1), conn, Err(ConnectError::transient("refused")))
        .unwrap();
    pool.check_invariants().unwrap();
    // No new connect before the (very long) backoff.
    assert_eq!(pool.poll_action(), None);
}

/// Found by `cargo fuzz run config` (out of memory). `validate` puts no upper bound on
/// `max_size`, `min_idle` or `max_connecting`, and `Pool::new` queues
/// `min(min_idle, max_connecting)` `Open` actions at once: a config with sizes near
/// `usize::MAX` makes `Pool::new` allocate until the process dies instead of returning a
/// `ConfigError`. The fuzz input was `max_size = 18446744073709488650`,
/// `min_idle = 18446744069498535935`, `max_connecting = usize::MAX`. Fixed by bounding
/// `max_size` (`MAX_SIZE_LIMIT`).
#[test]
fn absurd_sizes_are_rejected() {
    let config = Config {
        max_size: usize::MAX,
        min_idle: usize::MAX,
        max_connecting: usize::MAX,
        ..Config::default()
    };
    let e = config.validate().expect_err("absurd sizes must be refused");
    assert!(["max_size", "min_idle", "max_connecting"].contains(&e.field));
    assert_eq!(P::new(config, at(0), 1).err(), Some(e));
}

/// Found by `cargo fuzz run ops`. At `now == Instant::NEVER` (the end of the clock, where
/// saturating deadlines land), `handle_timeout` treats deadlines equal to `NEVER` as due,
/// while `poll_timeout` skips them as "never". A connection whose connect deadline
/// saturated to `NEVER` is timed out, the failed connect's retry time saturates to
/// `NEVER` too (so backoff does not block), and dispatch opens a replacement whose deadline
/// is again `NEVER`, already due: every further `handle_timeout(NEVER)` closes and reopens
/// connections, so the call is not idempotent and `poll_timeout` does not announce the
/// work. Unrealistic clock value, but the core promises that extra `handle_timeout` calls
/// are harmless; the fix is to never treat a `NEVER` deadline as due.
#[test]
fn handle_timeout_at_the_end_of_time_is_idempotent() {
    let config = Config {
        min_idle: 1,
        connect_timeout: Duration::MAX,
        ..Config::default()
    };
    let mut pool = P::new(config, at(0), 1).unwrap();
    assert!(matches!(pool.poll_action(), Some(Action::Open { .. })));
    assert_eq!(pool.poll_timeout(), None, "the connect deadline is never");
    pool.handle_timeout(Instant::NEVER);
    while pool.poll_action().is_some() {}
    pool.check_invariants().unwrap();
    pool.handle_timeout(Instant::NEVER);
    // Before the fix: Close { reason: ConnectTimeout } and a new Open, on every call.
    assert_eq!(
        pool.poll_action(),
        None,
        "second handle_timeout(NEVER) acted"
    );
}

/// Found by `cargo fuzz run ops` after the fix above. `poll_timeout` skips every deadline
/// equal to `NEVER` except a waiter's: a waiter that waits forever (deadline `NEVER`)
/// makes it return `Some(NEVER)`. At `now == NEVER` that instant is "due" by
/// `poll_timeout` but not by `handle_timeout` (which never treats `NEVER` as due), so an
/// embedder that loops `while poll_timeout() <= now { handle_timeout(now) }` spins. Only
/// reachable at the end of the clock; the fix is to skip `NEVER` for waiters too.
#[test]
fn poll_timeout_does_not_report_a_never_deadline() {
    let config = Config {
        max_size: 1,
        connect_timeout: Duration::MAX,
        leak_threshold: None,
        ..Config::default()
    };
    let mut pool = P::new(config, at(0), 1).unwrap();
    let Ok(Acquired::Queued(_)) = pool.acquire(at(0), Instant::NEVER, |_| ()) else {
        panic!("expected to wait")
    };
    assert!(matches!(pool.poll_action(), Some(Action::Open { .. })));
    pool.handle_timeout(Instant::NEVER);
    assert_eq!(pool.poll_action(), None);
    pool.check_invariants().unwrap();
    let t = pool.poll_timeout();
    // Before the fix: Some(never), although handle_timeout(never) had nothing to do.
    assert!(
        !matches!(t, Some(t) if t <= pool.now()),
        "after handle_timeout({:?}), poll_timeout is {t:?}",
        pool.now()
    );
}
