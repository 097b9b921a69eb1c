//! The simulator's own account of one pool: each connection's state as the inputs it was
//! given and the actions it emitted tell it, and the connect outcomes since the last
//! success. The policy oracles (`oracles`) judge the pool against these books, never
//! against the pool's own bookkeeping; after every input the books must agree with the
//! pool's `status()`, or the oracles would be judging a different pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use pool_core::{ConnId, Status};

/// Where a connection is, in the simulator's terms. Times are virtual nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// An open is under way.
    Opening,
    /// Ready to lend since `ready_at` (connected, returned, checked or reset); `vetted_at`
    /// is when the pool last judged it not expired: when it became ready, or for a
    /// connection a check or reset made ready, when that check or reset began.
    Idle { ready_at: u64, vetted_at: u64 },
    /// A checkout check or a reset started at `since`.
    Upkeep { since: u64, reset: bool },
    /// Lent at `since`; `reported` once the pool suspected it of leaking.
    Leased { since: u64, reported: bool },
    /// Closed; the pool counts it until its close is answered (`close_finished`) or
    /// `deadline` (its first `Close` plus `close_timeout`) abandons it.
    Closing { deadline: u64 },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Conn {
    /// When its connect finished (`None` while opening).
    pub(super) connected_at: Option<u64>,
    pub(super) held: Held,
}

/// The last failed connect since the last successful one.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) at: u64,
    /// The error the simulated server gave; `None` for an open the pool gave up on at
    /// its `connect_timeout` (the pool words that error itself).
    pub(super) message: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Books {
    pub(super) conns: BTreeMap<ConnId, Conn>,
    /// Failed connects in a row since the last successful one.
    pub(super) failures: u32,
    pub(super) last_failure: Option<Failure>,
}

impl Books {
    pub(super) fn opening(&mut self, conn: ConnId) {
        self.conns.insert(
            conn,
            Conn {
                connected_at: None,
                held: Held::Opening,
            },
        );
    }

    /// A connect succeeded: the connection is ready, and the failures are forgotten.
    pub(super) fn connected(&mut self, conn: ConnId, now: u64) {
        self.failures = 0;
        self.last_failure = None;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.connected_at = Some(now);
            c.held = Held::Idle {
                ready_at: now,
                vetted_at: now,
            };
        }
    }

    /// A connect failed (the open is gone: a failed connect was never a connection).
    pub(super) fn failed(&mut self, conn: ConnId, now: u64, message: Option<Arc<str>>) {
        self.conns.remove(&conn);
        self.connect_failed(now, message);
    }

    /// A connect failed or was given up on: one more failure in a row.
    pub(super) fn connect_failed(&mut self, now: u64, message: Option<Arc<str>>) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(Failure { at: now, message });
    }

    /// The connection is ready again: returned by its borrower (`began: None`), or its
    /// check or reset passed (`began`: when that started).
    pub(super) fn ready(&mut self, conn: ConnId, now: u64, began: Option<u64>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.held = Held::Idle {
                ready_at: now,
                vetted_at: began.unwrap_or(now),
            };
        }
    }

    pub(super) fn set(&mut self, conn: ConnId, held: Held) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.held = held;
        }
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<Conn> {
        self.conns.get(&conn).copied()
    }

    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        self.conns.remove(&conn)
    }

    /// Closes past their deadline at a timer step: abandoned, gone.
    pub(super) fn abandon_due(&mut self, now: u64) {
        self.conns
            .retain(|_, c| !matches!(c.held, Held::Closing { deadline } if deadline <= now));
    }

    pub(super) fn idle(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.held, Held::Idle { .. }))
            .count()
    }

    /// Where the books and the pool's counts disagree, if they do.
    pub(super) fn out_of_step(&self, s: &Status) -> Option<String> {
        let (mut opening, mut idle, mut upkeep, mut leased, mut closing) = (0, 0, 0, 0, 0);
        for c in self.conns.values() {
            match c.held {
                Held::Opening => opening += 1,
                Held::Idle { .. } => idle += 1,
                Held::Upkeep { .. } => upkeep += 1,
                Held::Leased { .. } => leased += 1,
                Held::Closing { .. } => closing += 1,
            }
        }
        let books = (self.conns.len(), opening, idle, upkeep, leased, closing);
        let pool = (s.total, s.opening, s.idle, s.checking, s.leased, s.closing);
        (books != pool).then(|| {
            format!(
                "the simulator's books (total, opening, idle, checking, leased, closing) \
                 {books:?} disagree with the pool's status {pool:?}"
            )
        })
    }
}
