//! Fuzz target `ops`: arbitrary bytes become a pool configuration and a sequence of
//! inputs, applied to `pool_core::Pool`. Operations name their target by index into the
//! live handles of the right kind, so every input is a meaningful session.
//!
//! Checked after every step:
//! - no panic (overflow checks are on in fuzz builds), and `check_invariants()` holds;
//! - every waiter ends with exactly one answer: a grant or a rejection only for a waiter
//!   that is queued and unanswered (never granted twice, never both granted and rejected,
//!   nothing for a cancelled waiter); a connection is never lent twice at once;
//! - inputs that must succeed do (release of a live lease, result for an opening
//!   connection, ...) and misuse is refused without changing the pool;
//! - `status().waiters` matches the waiters still owed an answer, and `poll_timeout()` is
//!   never later than the earliest of their deadlines;
//! - after `handle_timeout(now)`: no waiter past its deadline remains, nothing is due at
//!   `now`, and a second call produces no action.
//!
//! At the end: past every deadline no waiter remains, and a close whose drain deadline
//! has passed ends with `Drained` and an empty pool.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pool_core::{
    Acquired, Action, Config, ConnId, ConnectError, Instant, LeaseId, Pool, Verdict, WaiterId,
};

/// A duration drawn from the scales that matter: nanoseconds (ties and off-by-ones),
/// milliseconds (ordinary timeouts), seconds, and the extremes (overflow); the same draw
/// as the durations in the configuration (`pool_core::fuzz`).
#[derive(Clone, Copy, Debug)]
struct Dur(Duration);

impl<'a> Arbitrary<'a> for Dur {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        pool_core::fuzz::duration(u).map(Dur)
    }
}

impl Dur {
    fn get(self) -> Duration {
        self.0
    }
}

/// Bound an arbitrary configuration to one the harness can use: valid (the `config`
/// target covers invalid ones) and small, so connections run out and waiters queue.
fn usable(config: Config) -> Config {
    let nonzero = |d: Duration| d.max(Duration::from_nanos(1));
    let max_size = 1 + config.max_size % 8;
    let backoff_base = nonzero(config.backoff_base);
    Config {
        max_size,
        min_idle: config.min_idle % (max_size + 1),
        max_connecting: 1 + config.max_connecting % 4,
        max_waiters: config.max_waiters % 12,
        acquire_timeout: nonzero(config.acquire_timeout),
        connect_timeout: nonzero(config.connect_timeout),
        check_timeout: nonzero(config.check_timeout),
        idle_timeout: config.idle_timeout.map(nonzero),
        max_lifetime: config.max_lifetime.map(nonzero),
        lifetime_jitter_permille: config.lifetime_jitter_permille % 501,
        leak_threshold: config.leak_threshold.map(nonzero),
        backoff_base,
        backoff_max: config.backoff_max.max(backoff_base),
        ..config
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum ConnectResult {
    Ok,
    Transient,
    Fatal,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum FVerdict {
    Reusable,
    Broken,
    NeedsReset,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Op {
    Acquire(Dur),
    TryAcquire,
    Cancel(u8),
    Release(u8, FVerdict),
    Detach(u8),
    Connect(u8, ConnectResult),
    Check(u8, bool),
    Reset(u8, bool),
    /// Move the clock and call `handle_timeout`.
    Advance(Dur),
    /// Move the clock only: the next input arrives before the timer fires.
    Tick(Dur),
    /// Jump to the core's own next deadline and handle it.
    NextTimeout,
    Close(Dur),
    StaleRelease(u8),
    StaleCancel(u8),
    /// A result for a connection that is not waiting for one.
    WrongConn(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    start: u32,
    seed: u64,
    ops: Vec<Op>,
}

/// A deadline has passed. `Instant::NEVER` never does, even at the end of the clock.
fn due(deadline: Instant, now: Instant) -> bool {
    deadline != Instant::NEVER && deadline <= now
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Granted,
    Rejected,
    Cancelled,
}

/// The pool plus everything the harness knows from the actions it drained.
struct Harness {
    pool: Pool,
    now: Instant,
    /// Queued waiters still owed an answer, with their deadlines.
    pending: BTreeMap<WaiterId, Instant>,
    /// How each waiter's acquire ended.
    ended: BTreeMap<WaiterId, Outcome>,
    live: BTreeMap<ConnId, LeaseId>,
    all_leases: Vec<LeaseId>,
    all_conns: Vec<ConnId>,
    opening: BTreeSet<ConnId>,
    checking: BTreeSet<ConnId>,
    resetting: BTreeSet<ConnId>,
    drained: bool,
}

fn pick<T: Copy>(items: impl Iterator<Item = T>, i: u8) -> Option<T> {
    let v: Vec<T> = items.collect();
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()])
}

impl Harness {
    fn lend(&mut self, lease: LeaseId) {
        let conn = lease.conn();
        assert!(
            self.live.insert(conn, lease).is_none(),
            "{conn} lent while already leased"
        );
        assert!(
            !self.opening.contains(&conn)
                && !self.checking.contains(&conn)
                && !self.resetting.contains(&conn),
            "{conn} lent while opening, checking or resetting"
        );
        self.all_leases.push(lease);
    }

    fn answer(&mut self, waiter: WaiterId, outcome: Outcome) {
        assert!(
            self.pending.remove(&waiter).is_some(),
            "{outcome:?} for {waiter:?}, which is not waiting (earlier: {:?})",
            self.ended.get(&waiter)
        );
        self.ended.insert(waiter, outcome);
    }

    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(action) = self.pool.poll_action() {
            n += 1;
            assert!(!self.drained, "{action:?} after Drained");
            match action {
                Action::Open { conn } => {
                    assert!(!self.all_conns.contains(&conn), "{conn} opened twice");
                    self.all_conns.push(conn);
                    self.opening.insert(conn);
                }
                Action::Check { conn } => {
                    assert!(!self.live.contains_key(&conn), "checking leased {conn}");
                    self.checking.insert(conn);
                }
                Action::Reset { conn } => {
                    assert!(self.live.remove(&conn).is_none(), "resetting leased {conn}");
                    self.resetting.insert(conn);
                }
                Action::Close { conn, .. } => {
                    assert!(self.all_conns.contains(&conn), "closing unknown {conn}");
                    self.live.remove(&conn);
                    self.opening.remove(&conn);
                    self.checking.remove(&conn);
                    self.resetting.remove(&conn);
                }
                Action::Grant { waiter, grant } => {
                    self.answer(waiter, Outcome::Granted);
                    self.lend(grant.lease);
                }
                Action::Reject { waiter, .. } => self.answer(waiter, Outcome::Rejected),
                Action::LeakSuspected { lease, .. } => {
                    assert_eq!(
                        self.live.get(&lease.conn()),
                        Some(&lease),
                        "leak of dead lease"
                    )
                }
                Action::Drained { .. } => {
                    assert_eq!(self.pool.status().total, 0, "Drained with connections left");
                    self.drained = true;
                }
            }
        }
        n
    }

    fn check(&self) {
        if let Err(e) = self.pool.check_invariants() {
            panic!("{e}");
        }
        let status = self.pool.status();
        assert_eq!(status.waiters, self.pending.len(), "waiters owed an answer");
        assert_eq!(status.leased, self.live.len(), "live leases");
        assert_eq!(status.opening, self.opening.len(), "opening");
        // A waiter's `NEVER` deadline needs no timer.
        let finite = self.pending.values().filter(|d| **d != Instant::NEVER);
        if let Some(first) = finite.min() {
            let t = self.pool.poll_timeout();
            assert!(
                t.is_some_and(|t| t <= *first),
                "poll_timeout {t:?} later than a waiter's deadline {first:?}"
            );
        }
    }

    fn handle_timeout(&mut self) {
        self.pool.handle_timeout(self.now);
        self.drain();
        let now = self.pool.now();
        assert!(
            self.pending.values().all(|d| !due(*d, now)),
            "a waiter past its deadline remains after handle_timeout({now:?})"
        );
        if let Some(t) = self.pool.poll_timeout() {
            assert!(
                t > now,
                "after handle_timeout({now:?}) poll_timeout is {t:?}"
            );
        }
        self.pool.handle_timeout(self.now);
        assert_eq!(self.drain(), 0, "second handle_timeout produced actions");
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Acquire(wait) => {
                let deadline = now + wait.get();
                match self.pool.acquire(now, deadline) {
                    Ok(Acquired::Ready(g)) => self.lend(g.lease),
                    Ok(Acquired::Queued(w)) => {
                        assert!(!self.ended.contains_key(&w), "{w:?} reused");
                        assert!(!due(deadline, now), "queued with a past deadline");
                        self.pending.insert(w, deadline);
                    }
                    Err(_) => {}
                }
            }
            Op::TryAcquire => {
                if let Some(g) = self.pool.try_acquire(now) {
                    self.lend(g.lease);
                }
            }
            Op::Cancel(i) => {
                if let Some(w) = pick(self.pending.keys().copied(), i) {
                    self.pool
                        .cancel(now, w)
                        .expect("cancel of a pending waiter");
                    self.answer(w, Outcome::Cancelled);
                }
            }
            Op::Release(i, verdict) => {
                if let Some(lease) = pick(self.live.values().copied(), i) {
                    let verdict = match verdict {
                        FVerdict::Reusable => Verdict::Reusable,
                        FVerdict::Broken => Verdict::Broken,
                        FVerdict::NeedsReset => Verdict::NeedsReset,
                    };
                    self.live.remove(&lease.conn());
                    self.pool
                        .release(now, lease, verdict)
                        .expect("release of a live lease");
                }
            }
            Op::Detach(i) => {
                if let Some(lease) = pick(self.live.values().copied(), i) {
                    self.live.remove(&lease.conn());
                    self.pool
                        .detach(now, lease)
                        .expect("detach of a live lease");
                }
            }
            Op::Connect(i, result) => {
                if let Some(conn) = pick(self.opening.iter().copied(), i) {
                    self.opening.remove(&conn);
                    let r = match result {
                        ConnectResult::Ok => Ok(()),
                        ConnectResult::Transient => Err(ConnectError::transient("refused")),
                        ConnectResult::Fatal => Err(ConnectError::fatal("auth failed")),
                    };
                    self.pool
                        .connect_finished(now, conn, r)
                        .expect("result for an opening connection");
                }
            }
            Op::Check(i, healthy) => {
                if let Some(conn) = pick(self.checking.iter().copied(), i) {
                    self.checking.remove(&conn);
                    self.pool
                        .check_finished(now, conn, healthy)
                        .expect("result for a checking connection");
                }
            }
            Op::Reset(i, ok) => {
                if let Some(conn) = pick(self.resetting.iter().copied(), i) {
                    self.resetting.remove(&conn);
                    self.pool
                        .reset_finished(now, conn, ok)
                        .expect("result for a resetting connection");
                }
            }
            Op::Advance(d) => {
                self.now = self.now + d.get();
                self.handle_timeout();
            }
            Op::Tick(d) => self.now = self.now + d.get(),
            Op::NextTimeout => {
                if let Some(t) = self.pool.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.handle_timeout();
            }
            Op::Close(d) => {
                let closing = self.pool.is_closing();
                let r = self.pool.close(now, now + d.get());
                assert_eq!(r.is_err(), closing, "close: {r:?}");
            }
            Op::StaleRelease(i) => {
                let stale = self
                    .all_leases
                    .iter()
                    .copied()
                    .filter(|l| self.live.get(&l.conn()) != Some(l));
                if let Some(lease) = pick(stale, i) {
                    let before = self.pool.status();
                    assert!(self.pool.release(now, lease, Verdict::Reusable).is_err());
                    assert_eq!(
                        self.pool.status(),
                        before,
                        "refused release changed the pool"
                    );
                }
            }
            Op::StaleCancel(i) => {
                if let Some(w) = pick(self.ended.keys().copied(), i) {
                    assert!(self.pool.cancel(now, w).is_err(), "cancel of ended {w:?}");
                }
            }
            Op::WrongConn(kind, i) => {
                let before = self.pool.status();
                let r = match kind % 3 {
                    0 => pick(
                        self.all_conns
                            .iter()
                            .copied()
                            .filter(|c| !self.opening.contains(c)),
                        i,
                    )
                    .map(|c| self.pool.connect_finished(now, c, Ok(()))),
                    1 => pick(
                        self.all_conns
                            .iter()
                            .copied()
                            .filter(|c| !self.checking.contains(c)),
                        i,
                    )
                    .map(|c| self.pool.check_finished(now, c, true)),
                    _ => pick(
                        self.all_conns
                            .iter()
                            .copied()
                            .filter(|c| !self.resetting.contains(c)),
                        i,
                    )
                    .map(|c| self.pool.reset_finished(now, c, true)),
                };
                if let Some(r) = r {
                    assert!(r.is_err(), "result for a connection not waiting for one");
                    assert_eq!(self.pool.status(), before, "refused input changed the pool");
                }
            }
        }
        self.drain();
        self.check();
    }
}

fuzz_target!(|input: Input| {
    let config = usable(input.config);
    let start = Instant::from_nanos(u64::from(input.start) * 1_000);
    let pool = Pool::new(config, start, input.seed).expect("the harness builds valid configs");
    let mut h = Harness {
        pool,
        now: start,
        pending: BTreeMap::new(),
        ended: BTreeMap::new(),
        live: BTreeMap::new(),
        all_leases: Vec::new(),
        all_conns: Vec::new(),
        opening: BTreeSet::new(),
        checking: BTreeSet::new(),
        resetting: BTreeSet::new(),
        drained: false,
    };
    h.drain();
    h.check();
    for op in input.ops.into_iter().take(256) {
        h.step(op);
    }

    // Liveness: past every waiter's deadline, nobody waits. (A deadline of `NEVER` means
    // waiting forever: those waiters give up by cancelling.)
    let forever: Vec<WaiterId> = h
        .pending
        .iter()
        .filter(|(_, d)| **d == Instant::NEVER)
        .map(|(w, _)| *w)
        .collect();
    for w in forever {
        h.pool.cancel(h.now, w).expect("cancel of a pending waiter");
        h.answer(w, Outcome::Cancelled);
    }
    if let Some(last) = h.pending.values().max().copied() {
        h.now = h.now.max(last);
        h.handle_timeout();
        h.check();
    }
    assert!(h.pending.is_empty(), "waiters remain past their deadlines");

    // Shutdown: once every lease is back, a close leaves nothing behind.
    let leases: Vec<LeaseId> = h.live.values().copied().collect();
    for lease in leases {
        h.live.remove(&lease.conn());
        h.pool
            .release(h.now, lease, Verdict::Reusable)
            .expect("release of a live lease");
        h.drain();
    }
    if !h.pool.is_closing() {
        h.pool.close(h.now, h.now).expect("first close");
        h.drain();
    }
    h.handle_timeout();
    h.check();
    assert!(
        h.pool.is_closed(),
        "pool not closed with every lease returned"
    );
    assert!(h.drained, "no Drained action");
    assert_eq!(
        h.pool.poll_timeout(),
        None,
        "a closed pool still wants a timer"
    );
});
