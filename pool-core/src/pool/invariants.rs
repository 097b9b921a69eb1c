//! What must hold after every input. Always compiled and cheap (linear in connections and
//! waiters), so every test layer — unit tests, proptest, fuzzing, loom, shuttle and the
//! simulator — calls it after every step. docs/invariants.md maps each rule to the suites
//! that check it.

use std::fmt;

use crate::close_reason::CloseReason;

use super::conns::State;
use super::{Phase, Pool};

/// A broken invariant: a bug in the core. The message names the rule and the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation(pub String);

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool invariant violated: {}", self.0)
    }
}

impl std::error::Error for InvariantViolation {}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(InvariantViolation(format!($($msg)+)));
        }
    };
}

impl<C, W> Pool<C, W> {
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let c = &self.conns;
        let s = &self.stats;
        let cfg = &self.config;

        // Conservation: each connection is in exactly one state, the per-state counts
        // agree with the table, and every id handed out is either live or retired once.
        let (mut opening, mut idle, mut checking, mut resetting, mut leased, mut closing) =
            (0, 0, 0, 0, 0, 0);
        for (_, conn) in c.iter() {
            match conn.state {
                State::Closing { .. } => closing += 1,
                State::Opening { .. } => opening += 1,
                State::Idle { .. } => idle += 1,
                State::Checking { .. } => checking += 1,
                State::Resetting { .. } => resetting += 1,
                State::Leased { seq, .. } => {
                    ensure!(seq < self.next_lease, "lease seq {seq} was never issued");
                    leased += 1
                }
            }
        }
        ensure!(
            (opening, checking, resetting, leased, closing)
                == (c.opening, c.checking, c.resetting, c.leased, c.closing),
            "state counts drifted: table has opening {opening}, checking {checking}, resetting {resetting}, leased {leased}, closing {closing}; counters say {}, {}, {}, {}, {}",
            c.opening, c.checking, c.resetting, c.leased, c.closing
        );
        ensure!(
            idle == c.idle_len(),
            "{idle} idle connections but {} in the idle list",
            c.idle_len()
        );
        let mut seen = std::collections::BTreeSet::new();
        for id in c.idle_ids() {
            ensure!(seen.insert(id), "{id} is in the idle list twice");
            ensure!(
                matches!(c.get(id).map(|x| x.state), Some(State::Idle { .. })),
                "{id} is in the idle list but not idle"
            );
        }
        ensure!(
            c.created - c.retired == c.len() as u64,
            "conservation: {} opened - {} retired != {} live",
            c.created,
            c.retired,
            c.len()
        );
        // A close is counted when it starts; the connection retires when it is gone (or
        // abandoned at its close timeout), so the closing ones are counted, not retired.
        let failed_without_close = s.connects_failed - s.closes(CloseReason::ConnectTimeout);
        ensure!(
            c.retired + c.closing as u64 == s.closes_total() + s.detached + failed_without_close,
            "retired {} + closing {} != closed {} + detached {} + failed connects {}",
            c.retired,
            c.closing,
            s.closes_total(),
            s.detached,
            failed_without_close
        );
        ensure!(
            s.closes_abandoned <= s.closes_total(),
            "{} closes abandoned of {} started",
            s.closes_abandoned,
            s.closes_total()
        );
        ensure!(
            c.created == s.connects_started,
            "{} ids but {} opens",
            c.created,
            s.connects_started
        );

        // Bounds: capacity (closing connections included: the server still has them),
        // connect concurrency, queue length. After a shrink the pool may
        // hold more than `max_size` until the excess drains: `over` (set by `resize`, only
        // falling after) says by how much at most; while over, nothing is idle (shed at
        // once) and so nothing can be lent from idle.
        ensure!(
            c.len() <= cfg.max_size + self.over.size,
            "size {} exceeds max_size {} + over {}",
            c.len(),
            cfg.max_size,
            self.over.size
        );
        ensure!(
            c.len() <= cfg.max_size || c.idle_len() == 0 || self.phase != Phase::Running,
            "{} idle while size {} exceeds max_size {}",
            c.idle_len(),
            c.len(),
            cfg.max_size
        );

        // Eviction: no connection older than the eviction generation is idle; the doomed
        // count is exactly the evicted ones still in flight.
        let mut doomed = 0;
        for (id, conn) in c.iter() {
            if conn.generation < c.generation {
                ensure!(
                    !matches!(conn.state, State::Idle { .. }),
                    "{id} is evicted but idle"
                );
                if super::conns::in_flight(conn.state) {
                    doomed += 1;
                }
            } else {
                ensure!(
                    conn.generation == c.generation,
                    "{id} has generation {} beyond the pool's {}",
                    conn.generation,
                    c.generation
                );
            }
        }
        ensure!(
            doomed == c.doomed,
            "{doomed} evicted connections in flight, but doomed says {}",
            c.doomed
        );
        ensure!(
            c.opening <= cfg.max_connecting + self.over.opening,
            "{} opening exceeds max_connecting {} + over {}",
            c.opening,
            cfg.max_connecting,
            self.over.opening
        );
        ensure!(
            self.waiters.len() <= cfg.max_waiters + self.over.waiters,
            "{} waiters exceed max_waiters {} + over {}",
            self.waiters.len(),
            cfg.max_waiters,
            self.over.waiters
        );

        // Fairness: FIFO order is structural (ids grow with arrival, grants take the
        // front); the queue's indexes must agree. No barging: nothing idle while anyone
        // waits.
        ensure!(self.waiters.consistent(), "waiter queue indexes disagree");
        ensure!(
            self.waiters.is_empty() || c.idle_len() == 0,
            "barging: {} idle while {} wait",
            c.idle_len(),
            self.waiters.len()
        );

        // Shutdown: a closing pool has no waiters and lends nothing new; a closed one
        // holds nothing.
        match self.phase {
            Phase::Running => {}
            Phase::Draining { .. } => {
                ensure!(self.waiters.is_empty(), "waiters remain while draining");
                ensure!(
                    c.len() == c.leased + c.closing,
                    "draining pool holds {} connections that are neither leased nor closing",
                    c.len() - c.leased - c.closing
                );
            }
            Phase::Closed => {
                ensure!(
                    c.len() == 0 && self.waiters.is_empty(),
                    "closed pool still holds state"
                );
            }
        }
        Ok(())
    }
}
