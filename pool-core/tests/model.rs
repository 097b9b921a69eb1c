//! Model-based test of the pool state machine (proptest-state-machine).
//!
//! A deliberately plain reference model of a FIFO pool (`Model`, below) is the
//! specification. Random operation sequences are applied to the model and to the real
//! [`Pool`]; after every step the test asserts that:
//!
//! - the answers to waiters (grants and rejections) are the same, in the same order: the
//!   same waiter gets a connection, from the same connection, after the same wait; the same
//!   waiter is rejected with the same kind of rejection (and, for timeouts, the same class
//!   of last connect error);
//! - the other effects (open, check, reset, close with its reason and whether it hands
//!   the connection back, leak report, drained) are the same set;
//! - the connections move as the model says: the pool runs over `C = ConnId` (each
//!   connection is its own id), and every action, return value and refusal that carries
//!   a connection carries the right one; each waiter's token (its own `WaiterId`) comes
//!   back exactly with its answer or cancel, and `waiter_tokens()` is the model's queue;
//! - the judge: some connections are marked dead (`Kill`); the pool's judge calls them
//!   dead, and the model predicts which lends it prevents and which closes follow;
//! - `resize` and `evict_all`: the model predicts which idle connections a shrink sheds,
//!   which returning or finishing connections are closed `Resized` or `Evicted` instead of
//!   lent, and which opens start (none while over `max_size`; evicted connections in
//!   flight are no supply); a refused `resize` names the same field and changes nothing;
//! - the direct return values agree (ready / queued / rejected, input errors);
//! - `status()` agrees with the model's counts and `check_invariants()` holds;
//! - liveness: `poll_timeout()` is exactly the model's next deadline (so never later than
//!   the earliest waiter deadline, and never spurious), and `next_timeout()` names one of
//!   the things due then; the timer kept as `poll_timer()` says (moved only earlier, and
//!   cleared by `handle_timeout`) is never later than `poll_timeout()`, and a second
//!   `poll_timer()` never moves it; after `handle_timeout(now)` nothing
//!   is due at `now` any more, and a second `handle_timeout(now)` produces no action;
//!   at the end of every case, advancing time past every deadline leaves no waiter, and a
//!   close whose drain deadline has passed ends in `Drained`.
//!
//! Operations name their target by index into the live handles of the right kind ("the
//! i-th lease, mod the number of live leases"), so every generated and every shrunk
//! sequence is meaningful; an operation on an empty set is a no-op on both sides.
//!
//! What the model abstracts away (and how the strategy keeps that exact):
//! - **Backoff.** Configs use `backoff_base = backoff_max = 2 ns`, and time moves in whole
//!   milliseconds. The core then pauses opens for 1–2 ns after a failed connect (its
//!   jitter), which the model states as: "no open starts at the instant of a failed
//!   connect; from the next instant on, opens resume". A fatal error is "in force" (an
//!   acquire that would wait is rejected with it) at that same instant only. The shape of
//!   the backoff curve (doubling, cap, jitter) is left to unit tests and the simulator.
//!   The only place the 1–2 ns shows is `poll_timeout`, where the model accepts either.
//! - **Lifetime jitter.** `lifetime_jitter_permille = 0`, so a connection expires exactly
//!   `max_lifetime` after its connect finished (`max_lifetime: None` in some configs).
//! - **The seed** therefore does not influence anything the model observes.
//! - **Clock units.** The model counts milliseconds from 1 s; the core gets nanoseconds.
//! - **Statistics and the timeout report's status snapshot** are not modelled (the
//!   invariant check cross-checks the counters against the connection table).
//! - `acquire_timeout` is unused by the core (adapters turn it into deadlines), so every
//!   acquire gets an explicit deadline.
//!
//! Run longer: `PROPTEST_CASES=100000 cargo test -p pool-core --test model --release`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::{
    Acquired, Action, CloseReason, Config, ConnId, ConnectError, ErrorClass, IdleOrder, InputError,
    Instant, LeaseId, Pool, Refused, Rejection, Timer, Verdict, WaiterId,
};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

/// Model time starts here (milliseconds), so "zero" is never special.
const T0: u64 = 1_000;
const NEVER: u64 = u64::MAX;
/// Backoff of the tractable configs: see the module docs.
const BACKOFF: Duration = Duration::from_nanos(2);

fn instant(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

// ---- configuration ----------------------------------------------------------------------

/// The knobs the model understands, in milliseconds.
#[derive(Clone, Debug)]
struct MConfig {
    max_size: usize,
    min_idle: usize,
    max_connecting: usize,
    max_waiters: usize,
    connect_timeout: u64,
    check_timeout: u64,
    close_timeout: u64,
    check_after_idle: Option<u64>,
    idle_timeout: Option<u64>,
    max_lifetime: Option<u64>,
    leak_threshold: Option<u64>,
    idle_order: IdleOrder,
    seed: u64,
}

impl MConfig {
    fn to_core(&self) -> Config {
        Config {
            max_size: self.max_size,
            min_idle: self.min_idle,
            max_connecting: self.max_connecting,
            max_waiters: self.max_waiters,
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: ms(self.connect_timeout),
            check_timeout: ms(self.check_timeout),
            close_timeout: ms(self.close_timeout),
            check_after_idle: self.check_after_idle.map(ms),
            idle_timeout: self.idle_timeout.map(ms),
            max_lifetime: self.max_lifetime.map(ms),
            lifetime_jitter_permille: 0,
            leak_threshold: self.leak_threshold.map(ms),
            backoff_base: BACKOFF,
            backoff_max: BACKOFF,
            idle_order: self.idle_order,
        }
    }
}

fn config_strategy() -> impl Strategy<Value = MConfig> {
    (
        (1..=4usize, prop_oneof![3 => Just(0usize), 1 => 1..=3usize]),
        (1..=3usize, 1..=6usize),
        (1..=20u64, 1..=10u64, 1..=20u64),
        proptest::option::weighted(0.5, 0..=10u64),
        proptest::option::weighted(0.5, 1..=40u64),
        proptest::option::weighted(0.5, 5..=60u64),
        proptest::option::weighted(0.3, 1..=40u64),
        prop_oneof![Just(IdleOrder::Lifo), Just(IdleOrder::Fifo)],
        any::<u64>(),
    )
        .prop_map(
            |(
                (max_size, min_idle),
                (max_connecting, max_waiters),
                (connect_timeout, check_timeout, close_timeout),
                check_after_idle,
                idle_timeout,
                max_lifetime,
                leak_threshold,
                idle_order,
                seed,
            )| MConfig {
                max_size,
                min_idle: min_idle.min(max_size),
                max_connecting,
                max_waiters,
                connect_timeout,
                check_timeout,
                close_timeout,
                check_after_idle,
                idle_timeout,
                max_lifetime,
                leak_threshold,
                idle_order,
                seed,
            },
        )
}

// ---- what a step produces, in a form both sides can build --------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum RejKind {
    /// With the class of the last connect error, if any.
    Timeout {
        waited: Duration,
        last_error: Option<ErrorClass>,
    },
    QueueFull,
    Closed,
    ConnectFailed,
}

impl RejKind {
    fn of(r: &Rejection) -> RejKind {
        match r {
            Rejection::Timeout(t) => RejKind::Timeout {
                waited: t.waited,
                last_error: t.last_connect_error.as_ref().map(|e| e.class),
            },
            Rejection::QueueFull { .. } => RejKind::QueueFull,
            Rejection::Closed => RejKind::Closed,
            Rejection::ConnectFailed(_) => RejKind::ConnectFailed,
        }
    }
}

/// An answer to a waiter. Their order is part of the specification (FIFO).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Grant {
        waiter: u64,
        conn: u64,
        waited: Duration,
    },
    Reject {
        waiter: u64,
        kind: RejKind,
    },
}

/// Any other action. Compared as a set per step: their order inside one input is an
/// implementation detail.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    Open(u64),
    Check(u64),
    Reset(u64),
    /// `true` when the close hands the connection back (the pool held it, or it came
    /// with the input).
    Close(u64, CloseReason, bool),
    Leak(u64, Duration),
    Drained(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ret {
    /// Nothing to compare (a no-op, or an input without a return value).
    Unit,
    Ready {
        conn: u64,
    },
    Queued {
        waiter: u64,
    },
    Rejected(RejKind),
    Try(Option<u64>),
    Input(Result<(), ErrKind>),
    /// `resize`: the field a refusal names.
    Resize(Result<(), &'static str>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrKind {
    UnknownWaiter,
    UnknownLease,
    UnexpectedConnection,
    AlreadyClosed,
}

impl ErrKind {
    fn of(e: InputError) -> ErrKind {
        match e {
            InputError::UnknownWaiter(_) => ErrKind::UnknownWaiter,
            InputError::UnknownLease(_) => ErrKind::UnknownLease,
            InputError::UnexpectedConnection(_) => ErrKind::UnexpectedConnection,
            InputError::AlreadyClosed => ErrKind::AlreadyClosed,
        }
    }
}

/// What the model resolved an index to, so the test applies the same input to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    None,
    Waiter(u64),
    /// Index into every lease ever granted, in grant order.
    Lease(usize),
    Conn(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StepOut {
    ret: Ret,
    answers: Vec<Answer>,
    effects: Vec<Effect>,
}

impl Default for StepOut {
    fn default() -> Self {
        StepOut {
            ret: Ret::Unit,
            answers: Vec::new(),
            effects: Vec::new(),
        }
    }
}

// ---- operations --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectResult {
    Ok,
    Transient,
    Fatal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misuse {
    /// Release a lease that is no longer live (released, detached or revoked).
    StaleRelease,
    /// Cancel a waiter that already got its answer (or was cancelled).
    StaleCancel,
    /// Report a connect result for a connection that is not opening.
    ConnectNotOpening,
    /// Report a check result for a connection that is not being checked.
    CheckNotChecking,
    /// Report a reset result for a connection that is not being reset.
    ResetNotResetting,
    /// Report a close finished for a connection that is not closing.
    CloseNotClosing,
}

#[derive(Clone, Debug)]
enum Op {
    /// Acquire with deadline `now + wait` ms (0: already due).
    Acquire {
        wait: u64,
    },
    TryAcquire,
    Cancel {
        i: usize,
    },
    Release {
        i: usize,
        verdict: Verdict,
    },
    Detach {
        i: usize,
    },
    Connect {
        i: usize,
        result: ConnectResult,
    },
    Check {
        i: usize,
        healthy: bool,
    },
    Reset {
        i: usize,
        ok: bool,
    },
    /// Move the clock and call `handle_timeout` (twice: the second must do nothing).
    Advance {
        by: u64,
    },
    /// Move the clock without calling `handle_timeout`: an input may arrive before the
    /// timer fires.
    Tick {
        by: u64,
    },
    /// `handle_timeout` at the current time.
    Timer,
    /// Move the clock exactly to the model's next deadline (ties are where `<` and `<=`
    /// differ) and call `handle_timeout`.
    AdvanceToNext,
    Close {
        drain: u64,
    },
    Misuse {
        what: Misuse,
        i: usize,
    },
    /// The connection dies where it is: from now on the judge calls it dead. Not an input.
    Kill {
        i: usize,
    },
    /// `resize(now, max_size)`; 0 and sizes below `min_idle` are refused.
    Resize {
        max_size: usize,
    },
    /// `evict_all(now)`.
    EvictAll,
    /// `close_finished` for the i-th closing connection: it is gone from the server.
    CloseDone {
        i: usize,
    },
}

// ---- the reference model -----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Opening {
        deadline: u64,
    },
    Idle {
        since: u64,
    },
    Checking {
        deadline: u64,
    },
    Resetting {
        deadline: u64,
    },
    Leased {
        since: u64,
        lease: usize,
        leak_reported: bool,
    },
    /// Closed, still counted until `close_finished` or `deadline`. `owed`: the work whose
    /// answer still holds the connection (closed while opening, checking or resetting);
    /// `None` once the embedder has it to close.
    Closing {
        deadline: u64,
        reason: CloseReason,
        owed: Option<MWork>,
    },
}

/// Work whose answer hands a connection back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MWork {
    Open,
    Check,
    Reset,
}

#[derive(Clone, Debug)]
struct MConn {
    state: CState,
    /// `NEVER` without `max_lifetime`.
    expires_at: u64,
    last_used: u64,
    /// The eviction generation it was opened in; below the model's `generation`:
    /// evicted.
    generation: u64,
}

/// What a deadline is for, in the model's terms (`pool_core::Timer` without the backoff).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Waiter(u64),
    Connect(u64),
    Check(u64),
    Reset(u64),
    /// By lease index.
    Leak(usize),
    Lifetime(u64),
    IdleTimeout(u64),
    Close(u64),
    Drain,
}

#[derive(Clone, Debug)]
struct MWaiter {
    id: u64,
    arrived: u64,
    deadline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Draining { deadline: u64, forced: usize },
    Closed,
}

/// The specification: a FIFO pool, written for clarity, not speed.
#[derive(Clone, Debug)]
struct Model {
    cfg: MConfig,
    /// The test's clock.
    clock: u64,
    /// The time of the last input (what the core calls `now`).
    now: u64,
    phase: Phase,
    conns: BTreeMap<u64, MConn>,
    /// Idle connections in the order they became idle (front: idle longest).
    idle: Vec<u64>,
    /// Waiters in arrival order.
    waiters: Vec<MWaiter>,
    next_conn: u64,
    next_waiter: u64,
    /// Connection of every lease ever granted, in grant order.
    leases: Vec<u64>,
    /// Connections the judge calls dead.
    killed: BTreeSet<u64>,
    /// Bumped by every `evict_all`.
    generation: u64,
    /// The instant of the last failed connect since the last successful one.
    failed_at: Option<u64>,
    last_error: Option<ErrorClass>,
    /// What the last step produced, and what it applied to.
    out: StepOut,
    target: Target,
}

impl Model {
    fn new(cfg: MConfig) -> Model {
        let mut m = Model {
            cfg,
            clock: T0,
            now: T0,
            phase: Phase::Running,
            conns: BTreeMap::new(),
            idle: Vec::new(),
            waiters: Vec::new(),
            next_conn: 0,
            next_waiter: 0,
            leases: Vec::new(),
            killed: BTreeSet::new(),
            generation: 0,
            failed_at: None,
            last_error: None,
            out: StepOut::default(),
            target: Target::None,
        };
        // A new pool opens `min_idle` connections at once.
        m.dispatch();
        m.out.effects.sort();
        m
    }

    fn count(&self, f: impl Fn(&CState) -> bool) -> usize {
        self.conns.values().filter(|c| f(&c.state)).count()
    }

    fn ids_where(&self, f: impl Fn(&CState) -> bool) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| f(&c.state))
            .map(|(id, _)| *id)
            .collect()
    }

    fn opening(&self) -> usize {
        self.count(|s| matches!(s, CState::Opening { .. }))
    }

    fn live_leases(&self) -> Vec<(u64, usize)> {
        self.conns
            .iter()
            .filter_map(|(id, c)| match c.state {
                CState::Leased { lease, .. } => Some((*id, lease)),
                _ => None,
            })
            .collect()
    }

    /// Opens are paused at the instant of a failed connect (see the module docs).
    fn blocked(&self) -> bool {
        self.failed_at == Some(self.now)
    }

    fn fatal_in_force(&self) -> bool {
        self.blocked() && self.last_error == Some(ErrorClass::Fatal)
    }

    fn expired(&self, id: u64) -> bool {
        self.conns[&id].expires_at <= self.now
    }

    /// Sat idle longer than `check_after_idle`: health-check before lending.
    fn stale(&self, id: u64) -> bool {
        match self.cfg.check_after_idle {
            Some(window) => self.now - self.conns[&id].last_used > window,
            None => false,
        }
    }

    fn next_idle(&self) -> Option<u64> {
        match self.cfg.idle_order {
            IdleOrder::Lifo => self.idle.last().copied(),
            IdleOrder::Fifo => self.idle.first().copied(),
        }
    }

    fn take_idle(&mut self, id: u64) {
        self.idle.retain(|&i| i != id);
    }

    /// `handed`: the input handed the connection in. An idle one the pool holds itself.
    /// The connection stays, closing, until `close_finished` or its close deadline; one
    /// closed while its open, check or reset runs comes back with that answer. A revoked
    /// lease is forgotten at once.
    fn close_conn(&mut self, id: u64, reason: CloseReason, handed: bool) {
        let Some(c) = self.conns.get(&id) else { return };
        let held = handed || matches!(c.state, CState::Idle { .. });
        let owed = match c.state {
            CState::Closing { .. } => return,
            _ if held => None,
            CState::Opening { .. } => Some(MWork::Open),
            CState::Checking { .. } => Some(MWork::Check),
            CState::Resetting { .. } => Some(MWork::Reset),
            CState::Leased { .. } | CState::Idle { .. } => {
                self.conns.remove(&id);
                self.out.effects.push(Effect::Close(id, reason, false));
                return;
            }
        };
        self.take_idle(id);
        self.out.effects.push(Effect::Close(id, reason, held));
        self.conns.get_mut(&id).unwrap().state = CState::Closing {
            deadline: self.now + self.cfg.close_timeout,
            reason,
            owed,
        };
    }

    /// The answer owed for a closing connection: what it hands back is closed now.
    fn closing_answered(&mut self, id: u64, handed: bool) {
        let CState::Closing {
            deadline, reason, ..
        } = self.conns[&id].state
        else {
            unreachable!()
        };
        if handed {
            self.conns.get_mut(&id).unwrap().state = CState::Closing {
                deadline,
                reason,
                owed: None,
            };
            self.out.effects.push(Effect::Close(id, reason, true));
        } else {
            self.conns.remove(&id);
        }
    }

    /// Connections in `state`, or closing while that work's answer is still owed.
    fn awaiting(&self, state: fn(&CState) -> bool, work: MWork) -> Vec<u64> {
        self.ids_where(|s| {
            state(s) || matches!(s, CState::Closing { owed: Some(w), .. } if *w == work)
        })
    }

    fn is_closing(&self, id: u64) -> bool {
        matches!(self.conns[&id].state, CState::Closing { .. })
    }

    fn lend(&mut self, id: u64) {
        let lease = self.leases.len();
        self.leases.push(id);
        self.conns.get_mut(&id).unwrap().state = CState::Leased {
            since: self.now,
            lease,
            leak_reported: false,
        };
    }

    /// Why a connection becoming ready is closed instead: opened before the last
    /// `evict_all`, or the pool is over a `max_size` that `resize` shrank.
    fn retire_reason(&self, id: u64) -> Option<CloseReason> {
        if self.conns[&id].generation < self.generation {
            Some(CloseReason::Evicted)
        } else if self.conns.len() > self.cfg.max_size {
            Some(CloseReason::Resized)
        } else {
            None
        }
    }

    /// A connection is ready: closed if evicted or the pool is over its size; else the
    /// first waiter gets it, else it goes idle.
    fn make_available(&mut self, id: u64) {
        if let Some(reason) = self.retire_reason(id) {
            self.close_conn(id, reason, true);
            return;
        }
        self.conns.get_mut(&id).unwrap().last_used = self.now;
        if self.waiters.is_empty() {
            self.conns.get_mut(&id).unwrap().state = CState::Idle { since: self.now };
            self.idle.push(id);
        } else {
            let w = self.waiters.remove(0);
            self.lend(id);
            self.out.answers.push(Answer::Grant {
                waiter: w.id,
                conn: id,
                waited: ms(self.now - w.arrived),
            });
        }
    }

    /// Opens wanted: unmet demand (waiters plus the `min_idle` deficit) minus what is on
    /// its way (opening, checking, resetting, and not evicted), within `max_size` (none
    /// while over it) and `max_connecting`.
    fn opens_wanted(&self) -> usize {
        if self.phase != Phase::Running {
            return 0;
        }
        let demand = self.waiters.len() + self.cfg.min_idle.saturating_sub(self.idle.len());
        let under_way = self
            .conns
            .values()
            .filter(|c| {
                c.generation == self.generation
                    && matches!(
                        c.state,
                        CState::Opening { .. } | CState::Checking { .. } | CState::Resetting { .. }
                    )
            })
            .count();
        let room = self.cfg.max_size.saturating_sub(self.conns.len());
        let slots = self.cfg.max_connecting - self.opening();
        demand.saturating_sub(under_way).min(room).min(slots)
    }

    /// After every input: no idle connection while anyone waits, and open for unmet
    /// demand.
    fn dispatch(&mut self) {
        if self.phase != Phase::Running {
            self.finish_drain();
            return;
        }
        // Over a shrunk max_size: idle connections go, idle longest first.
        while self.conns.len() > self.cfg.max_size && !self.idle.is_empty() {
            self.close_conn(self.idle[0], CloseReason::Resized, false);
        }
        while !self.waiters.is_empty() {
            let Some(id) = self.next_idle() else { break };
            self.take_idle(id);
            if self.expired(id) {
                self.close_conn(id, CloseReason::MaxLifetime, false);
            } else if self.stale(id) {
                self.start_check(id);
            } else if self.killed.contains(&id) {
                // The judge's verdict: closed, and the waiter stays at the front.
                self.close_conn(id, CloseReason::CheckFailed, false);
            } else {
                self.make_available(id);
            }
        }
        if !self.blocked() {
            for _ in 0..self.opens_wanted() {
                let id = self.next_conn;
                self.next_conn += 1;
                let deadline = self.now + self.cfg.connect_timeout;
                self.conns.insert(
                    id,
                    MConn {
                        state: CState::Opening { deadline },
                        expires_at: NEVER,
                        last_used: self.now,
                        generation: self.generation,
                    },
                );
                self.out.effects.push(Effect::Open(id));
            }
        }
    }

    fn start_check(&mut self, id: u64) {
        let deadline = self.now + self.cfg.check_timeout;
        self.conns.get_mut(&id).unwrap().state = CState::Checking { deadline };
        self.out.effects.push(Effect::Check(id));
    }

    fn finish_drain(&mut self) {
        if let Phase::Draining { forced, .. } = self.phase {
            if self.conns.is_empty() {
                self.phase = Phase::Closed;
                self.out.effects.push(Effect::Drained(forced));
            }
        }
    }

    fn revoke_leases(&mut self) {
        let leased = self.ids_where(|s| matches!(s, CState::Leased { .. }));
        if let Phase::Draining { forced, .. } = &mut self.phase {
            *forced += leased.len();
        }
        for id in leased {
            self.close_conn(id, CloseReason::DrainTimeout, false);
        }
    }

    fn connect_failed(&mut self, class: ErrorClass) {
        self.failed_at = Some(self.now);
        self.last_error = Some(class);
        if class == ErrorClass::Fatal {
            for w in std::mem::take(&mut self.waiters) {
                self.out.answers.push(Answer::Reject {
                    waiter: w.id,
                    kind: RejKind::ConnectFailed,
                });
            }
        }
    }

    fn timeout(&self, arrived: u64) -> RejKind {
        RejKind::Timeout {
            waited: ms(self.now - arrived),
            last_error: self.last_error,
        }
    }

    // ---- inputs ----

    fn acquire(&mut self, wait: u64) {
        let ret = self.acquire_inner(self.now + wait);
        self.out.ret = ret;
    }

    fn acquire_inner(&mut self, deadline: u64) -> Ret {
        if self.phase != Phase::Running {
            return Ret::Rejected(RejKind::Closed);
        }
        if self.waiters.is_empty() {
            if let Some(ready) = self.take_fresh_idle() {
                return Ret::Ready { conn: ready };
            }
        }
        if self.fatal_in_force() {
            return Ret::Rejected(RejKind::ConnectFailed);
        }
        if self.waiters.len() >= self.cfg.max_waiters {
            return Ret::Rejected(RejKind::QueueFull);
        }
        if deadline <= self.now {
            return Ret::Rejected(self.timeout(self.now));
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push(MWaiter {
            id,
            arrived: self.now,
            deadline,
        });
        self.dispatch();
        Ret::Queued { waiter: id }
    }

    /// The fast path: the idle connection next in line, if it can be lent as it is. A
    /// dead one is closed here and the next looked at; an expired or stale one is left
    /// for the slow path (queue, then dispatch).
    fn take_fresh_idle(&mut self) -> Option<u64> {
        let mut closed = false;
        let id = loop {
            let Some(id) = self.next_idle() else {
                break None;
            };
            if self.expired(id) || self.stale(id) {
                break None;
            }
            if !self.killed.contains(&id) {
                break Some(id);
            }
            self.close_conn(id, CloseReason::CheckFailed, false);
            closed = true;
        };
        let Some(id) = id else {
            if closed {
                self.dispatch();
            }
            return None;
        };
        self.take_idle(id);
        self.lend(id);
        self.dispatch();
        Some(id)
    }

    fn try_acquire(&mut self) {
        let got = if self.phase == Phase::Running && self.waiters.is_empty() {
            self.take_fresh_idle()
        } else {
            None
        };
        self.out.ret = Ret::Try(got);
    }

    fn cancel(&mut self, i: usize) {
        if self.waiters.is_empty() {
            return;
        }
        let w = self.waiters.remove(i % self.waiters.len());
        self.target = Target::Waiter(w.id);
        self.out.ret = Ret::Input(Ok(()));
    }

    fn release(&mut self, i: usize, verdict: Verdict) {
        let live = self.live_leases();
        if live.is_empty() {
            return;
        }
        let (id, lease) = live[i % live.len()];
        self.target = Target::Lease(lease);
        self.out.ret = Ret::Input(Ok(()));
        if self.phase != Phase::Running {
            self.close_conn(id, CloseReason::PoolClosed, true);
        } else if verdict == Verdict::Broken {
            self.close_conn(id, CloseReason::Broken, true);
        } else if let Some(reason) = self.retire_reason(id) {
            self.close_conn(id, reason, true);
        } else if self.expired(id) {
            self.close_conn(id, CloseReason::MaxLifetime, true);
        } else if verdict == Verdict::NeedsReset {
            let deadline = self.now + self.cfg.check_timeout;
            self.conns.get_mut(&id).unwrap().state = CState::Resetting { deadline };
            self.out.effects.push(Effect::Reset(id));
        } else {
            self.make_available(id);
        }
        self.dispatch();
    }

    fn detach(&mut self, i: usize) {
        let live = self.live_leases();
        if live.is_empty() {
            return;
        }
        let (id, lease) = live[i % live.len()];
        self.target = Target::Lease(lease);
        self.out.ret = Ret::Input(Ok(()));
        self.conns.remove(&id);
        self.dispatch();
    }

    fn connect(&mut self, i: usize, result: ConnectResult) {
        let opening = self.awaiting(|s| matches!(s, CState::Opening { .. }), MWork::Open);
        if opening.is_empty() {
            return;
        }
        let id = opening[i % opening.len()];
        self.target = Target::Conn(id);
        self.out.ret = Ret::Input(Ok(()));
        if self.is_closing(id) {
            self.closing_answered(id, result == ConnectResult::Ok);
            self.dispatch();
            return;
        }
        match result {
            ConnectResult::Ok => {
                self.failed_at = None;
                self.last_error = None;
                let c = self.conns.get_mut(&id).unwrap();
                c.expires_at = self.cfg.max_lifetime.map_or(NEVER, |l| self.now + l);
                if self.phase == Phase::Running {
                    self.make_available(id);
                } else {
                    self.close_conn(id, CloseReason::PoolClosed, true);
                }
            }
            ConnectResult::Transient | ConnectResult::Fatal => {
                // A failed connect never existed: no `Close`.
                self.conns.remove(&id);
                self.connect_failed(if result == ConnectResult::Fatal {
                    ErrorClass::Fatal
                } else {
                    ErrorClass::Transient
                });
            }
        }
        self.dispatch();
    }

    fn check(&mut self, i: usize, healthy: bool) {
        let checking = self.awaiting(|s| matches!(s, CState::Checking { .. }), MWork::Check);
        if checking.is_empty() {
            return;
        }
        let id = checking[i % checking.len()];
        self.target = Target::Conn(id);
        self.out.ret = Ret::Input(Ok(()));
        if self.is_closing(id) {
            self.closing_answered(id, true);
        } else if healthy {
            self.make_available(id);
        } else {
            self.close_conn(id, CloseReason::CheckFailed, true);
        }
        self.dispatch();
    }

    fn reset(&mut self, i: usize, ok: bool) {
        let resetting = self.awaiting(|s| matches!(s, CState::Resetting { .. }), MWork::Reset);
        if resetting.is_empty() {
            return;
        }
        let id = resetting[i % resetting.len()];
        self.target = Target::Conn(id);
        self.out.ret = Ret::Input(Ok(()));
        if self.is_closing(id) {
            self.closing_answered(id, true);
        } else if ok {
            self.make_available(id);
        } else {
            self.close_conn(id, CloseReason::ResetFailed, true);
        }
        self.dispatch();
    }

    fn close(&mut self, drain: u64) {
        if self.phase != Phase::Running {
            self.out.ret = Ret::Input(Err(ErrKind::AlreadyClosed));
            return;
        }
        self.out.ret = Ret::Input(Ok(()));
        let deadline = self.now + drain;
        self.phase = Phase::Draining {
            deadline,
            forced: 0,
        };
        for w in std::mem::take(&mut self.waiters) {
            self.out.answers.push(Answer::Reject {
                waiter: w.id,
                kind: RejKind::Closed,
            });
        }
        for id in self.ids_where(|s| !matches!(s, CState::Leased { .. })) {
            self.close_conn(id, CloseReason::PoolClosed, false);
        }
        if self.now >= deadline {
            self.revoke_leases();
        }
        self.finish_drain();
    }

    fn resize(&mut self, max_size: usize) {
        if max_size == 0 {
            self.out.ret = Ret::Resize(Err("max_size"));
            return;
        }
        if max_size < self.cfg.min_idle {
            self.out.ret = Ret::Resize(Err("min_idle"));
            return;
        }
        self.out.ret = Ret::Resize(Ok(()));
        self.cfg.max_size = max_size;
        self.dispatch();
    }

    fn evict_all(&mut self) {
        if self.phase != Phase::Running {
            self.out.ret = Ret::Input(Err(ErrKind::AlreadyClosed));
            return;
        }
        self.out.ret = Ret::Input(Ok(()));
        self.generation += 1;
        for id in self.idle.clone() {
            self.close_conn(id, CloseReason::Evicted, false);
        }
        self.dispatch();
    }

    fn close_done(&mut self, i: usize) {
        let closing = self.ids_where(|s| matches!(s, CState::Closing { .. }));
        if closing.is_empty() {
            return;
        }
        let id = closing[i % closing.len()];
        self.target = Target::Conn(id);
        self.out.ret = Ret::Input(Ok(()));
        self.conns.remove(&id);
        self.dispatch();
    }

    fn handle_timeout(&mut self) {
        // 1. Waiters past their deadline, earliest deadline first.
        let mut due: Vec<(u64, u64)> = self
            .waiters
            .iter()
            .filter(|w| w.deadline <= self.now)
            .map(|w| (w.deadline, w.id))
            .collect();
        due.sort();
        for (_, id) in due {
            let pos = self.waiters.iter().position(|w| w.id == id).unwrap();
            let w = self.waiters.remove(pos);
            let kind = self.timeout(w.arrived);
            self.out.answers.push(Answer::Reject { waiter: id, kind });
        }
        // 2. Each connection's own deadline.
        let now = self.now;
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            let c = &self.conns[&id];
            match c.state {
                CState::Opening { deadline } if deadline <= now => {
                    self.close_conn(id, CloseReason::ConnectTimeout, false);
                    self.connect_failed(ErrorClass::Transient);
                }
                CState::Checking { deadline } if deadline <= now => {
                    self.close_conn(id, CloseReason::CheckTimeout, false)
                }
                CState::Resetting { deadline } if deadline <= now => {
                    self.close_conn(id, CloseReason::ResetFailed, false)
                }
                CState::Idle { .. } if c.expires_at <= now => {
                    self.close_conn(id, CloseReason::MaxLifetime, false)
                }
                // Abandoned: counted as gone, no action.
                CState::Closing { deadline, .. } if deadline <= now => {
                    self.conns.remove(&id);
                }
                CState::Leased {
                    since,
                    lease,
                    leak_reported: false,
                } => {
                    if let Some(t) = self.cfg.leak_threshold {
                        if since + t <= now {
                            self.conns.get_mut(&id).unwrap().state = CState::Leased {
                                since,
                                lease,
                                leak_reported: true,
                            };
                            self.out.effects.push(Effect::Leak(id, ms(now - since)));
                        }
                    }
                }
                _ => {}
            }
        }
        // 3. Idle timeout, longest idle first, never below `min_idle`.
        if let Some(t) = self.cfg.idle_timeout {
            while self.idle.len() > self.cfg.min_idle {
                let oldest = self.idle[0];
                let CState::Idle { since } = self.conns[&oldest].state else {
                    unreachable!()
                };
                if since + t > now {
                    break;
                }
                self.close_conn(oldest, CloseReason::IdleTimeout, false);
            }
        }
        // 4. The drain deadline.
        if let Phase::Draining { deadline, .. } = self.phase {
            if deadline <= now {
                self.revoke_leases();
            }
        }
        self.dispatch();
    }

    fn misuse(&mut self, what: Misuse, i: usize) {
        let pick = |v: Vec<u64>| (!v.is_empty()).then(|| v[i % v.len()]);
        let conns_not = |m: &Model, f: fn(&CState) -> bool| -> Vec<u64> {
            (0..m.next_conn)
                .filter(|id| !m.conns.get(id).is_some_and(|c| f(&c.state)))
                .collect()
        };
        let (target, err) = match what {
            Misuse::StaleRelease => {
                let live: BTreeSet<usize> = self.live_leases().iter().map(|l| l.1).collect();
                let stale: Vec<u64> = (0..self.leases.len() as u64)
                    .filter(|l| !live.contains(&(*l as usize)))
                    .collect();
                (
                    pick(stale).map(|l| Target::Lease(l as usize)),
                    ErrKind::UnknownLease,
                )
            }
            Misuse::StaleCancel => {
                let pending: BTreeSet<u64> = self.waiters.iter().map(|w| w.id).collect();
                let stale = (0..self.next_waiter)
                    .filter(|w| !pending.contains(w))
                    .collect();
                (pick(stale).map(Target::Waiter), ErrKind::UnknownWaiter)
            }
            Misuse::ConnectNotOpening => (
                pick(conns_not(self, |s| {
                    matches!(
                        s,
                        CState::Opening { .. }
                            | CState::Closing {
                                owed: Some(MWork::Open),
                                ..
                            }
                    )
                }))
                .map(Target::Conn),
                ErrKind::UnexpectedConnection,
            ),
            Misuse::CheckNotChecking => (
                pick(conns_not(self, |s| {
                    matches!(
                        s,
                        CState::Checking { .. }
                            | CState::Closing {
                                owed: Some(MWork::Check),
                                ..
                            }
                    )
                }))
                .map(Target::Conn),
                ErrKind::UnexpectedConnection,
            ),
            Misuse::ResetNotResetting => (
                pick(conns_not(self, |s| {
                    matches!(
                        s,
                        CState::Resetting { .. }
                            | CState::Closing {
                                owed: Some(MWork::Reset),
                                ..
                            }
                    )
                }))
                .map(Target::Conn),
                ErrKind::UnexpectedConnection,
            ),
            Misuse::CloseNotClosing => (
                pick(conns_not(self, |s| matches!(s, CState::Closing { .. }))).map(Target::Conn),
                ErrKind::UnexpectedConnection,
            ),
        };
        if let Some(t) = target {
            self.target = t;
            self.out.ret = Ret::Input(Err(err));
        }
    }

    /// Every pending deadline and what it is for, without the backoff retry (see
    /// `retry_pending`).
    fn deadlines(&self) -> Vec<(u64, Due)> {
        let mut all: Vec<(u64, Due)> = self
            .waiters
            .iter()
            .map(|w| (w.deadline, Due::Waiter(w.id)))
            .collect();
        for (&id, c) in &self.conns {
            match c.state {
                CState::Opening { deadline } => all.push((deadline, Due::Connect(id))),
                CState::Checking { deadline } => all.push((deadline, Due::Check(id))),
                CState::Resetting { deadline } => all.push((deadline, Due::Reset(id))),
                CState::Closing { deadline, .. } => all.push((deadline, Due::Close(id))),
                CState::Idle { .. } if c.expires_at != NEVER => {
                    all.push((c.expires_at, Due::Lifetime(id)))
                }
                CState::Idle { .. } => {}
                CState::Leased {
                    since,
                    lease,
                    leak_reported: false,
                } => all.extend(
                    self.cfg
                        .leak_threshold
                        .map(|t| (since + t, Due::Leak(lease))),
                ),
                CState::Leased { .. } => {}
            }
        }
        if let Some(t) = self.cfg.idle_timeout {
            if self.idle.len() > self.cfg.min_idle {
                let oldest = self.idle[0];
                let CState::Idle { since } = self.conns[&oldest].state else {
                    unreachable!()
                };
                all.push((since + t, Due::IdleTimeout(oldest)));
            }
        }
        // Spent once no lease is left to revoke.
        if let Phase::Draining { deadline, .. } = self.phase {
            if self
                .conns
                .values()
                .any(|c| matches!(c.state, CState::Leased { .. }))
            {
                all.push((deadline, Due::Drain));
            }
        }
        all
    }

    /// The earliest instant at which `handle_timeout` has work, without the backoff retry
    /// (see `retry_pending`).
    fn next_deadline(&self) -> Option<u64> {
        self.deadlines().into_iter().map(|(t, _)| t).min()
    }

    /// Opens are wanted but paused by the backoff: the core's timer names the retry
    /// instant, 1 or 2 ns after `now`.
    fn retry_pending(&self) -> bool {
        self.blocked() && self.opens_wanted() > 0
    }

    fn apply(&mut self, op: &Op) {
        self.out = StepOut::default();
        self.target = Target::None;
        match *op {
            Op::Tick { by } => {
                self.clock += by;
                return;
            }
            Op::Kill { i } => {
                // Any live connection: the judge is asked only about idle ones.
                let ids: Vec<u64> = self.conns.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[i % ids.len()];
                    self.killed.insert(id);
                    self.target = Target::Conn(id);
                }
                return;
            }
            Op::Advance { by } => self.clock += by,
            Op::AdvanceToNext => {
                if let Some(t) = self.next_deadline() {
                    self.clock = self.clock.max(t);
                }
            }
            _ => {}
        }
        // Every input carries the clock; the core's `now` never goes backwards.
        let before = self.now;
        self.now = self.clock;
        match *op {
            Op::Acquire { wait } => self.acquire(wait),
            Op::TryAcquire => self.try_acquire(),
            Op::Cancel { i } => self.cancel(i),
            Op::Release { i, verdict } => self.release(i, verdict),
            Op::Detach { i } => self.detach(i),
            Op::Connect { i, result } => self.connect(i, result),
            Op::Check { i, healthy } => self.check(i, healthy),
            Op::Reset { i, ok } => self.reset(i, ok),
            Op::Advance { .. } | Op::AdvanceToNext | Op::Timer => self.handle_timeout(),
            Op::Close { drain } => self.close(drain),
            Op::Misuse { what, i } => self.misuse(what, i),
            Op::Resize { max_size } => self.resize(max_size),
            Op::EvictAll => self.evict_all(),
            Op::CloseDone { i } => self.close_done(i),
            Op::Tick { .. } | Op::Kill { .. } => unreachable!(),
        }
        let indexed = !matches!(
            op,
            Op::Acquire { .. }
                | Op::TryAcquire
                | Op::Advance { .. }
                | Op::AdvanceToNext
                | Op::Timer
                | Op::Close { .. }
                | Op::Resize { .. }
                | Op::EvictAll
        );
        if indexed && self.target == Target::None {
            // An index into an empty set: no input reached the core, so its `now` stays.
            self.now = before;
        }
        self.out.effects.sort();
    }
}

// ---- strategies --------------------------------------------------------------------------

struct PoolModel;

impl ReferenceStateMachine for PoolModel {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        config_strategy().prop_map(Model::new).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let idx = || 0..16usize;
        let count = |f: fn(&CState) -> bool| state.conns.values().filter(|c| f(&c.state)).count();
        let leased = count(|s| matches!(s, CState::Leased { .. }));
        let opening = count(|s| matches!(s, CState::Opening { .. }));
        let checking = count(|s| matches!(s, CState::Checking { .. }));
        let resetting = count(|s| matches!(s, CState::Resetting { .. }));
        let closing = count(|s| matches!(s, CState::Closing { .. }));
        let late = |w: MWork| count_owed(state, w);
        let running = state.phase == Phase::Running;

        let mut ops: Vec<(u32, BoxedStrategy<Op>)> = vec![
            (
                8,
                prop_oneof![1 => Just(0u64), 6 => 1..=30u64, 1 => 31..=200u64]
                    .prop_map(|wait| Op::Acquire { wait })
                    .boxed(),
            ),
            (1, Just(Op::TryAcquire).boxed()),
            (
                5,
                prop_oneof![3 => 1..=5u64, 2 => 6..=40u64, 1 => Just(0u64)]
                    .prop_map(|by| Op::Advance { by })
                    .boxed(),
            ),
            (1, (1..=10u64).prop_map(|by| Op::Tick { by }).boxed()),
            (1, Just(Op::Timer).boxed()),
            (3, Just(Op::AdvanceToNext).boxed()),
            (
                1,
                (
                    prop_oneof![
                        Just(Misuse::StaleRelease),
                        Just(Misuse::StaleCancel),
                        Just(Misuse::ConnectNotOpening),
                        Just(Misuse::CheckNotChecking),
                        Just(Misuse::ResetNotResetting),
                        Just(Misuse::CloseNotClosing),
                    ],
                    idx(),
                )
                    .prop_map(|(what, i)| Op::Misuse { what, i })
                    .boxed(),
            ),
            (
                if running { 1 } else { 0 },
                prop_oneof![Just(0u64), 1..=30u64]
                    .prop_map(|drain| Op::Close { drain })
                    .boxed(),
            ),
        ];
        ops.push((
            1,
            prop_oneof![1 => Just(0usize), 8 => 1..=5usize]
                .prop_map(|max_size| Op::Resize { max_size })
                .boxed(),
        ));
        ops.push((1, Just(Op::EvictAll).boxed()));
        if !state.waiters.is_empty() {
            ops.push((2, idx().prop_map(|i| Op::Cancel { i }).boxed()));
        }
        if !state.conns.is_empty() {
            ops.push((2, idx().prop_map(|i| Op::Kill { i }).boxed()));
        }
        if leased > 0 {
            let verdict = prop_oneof![
                4 => Just(Verdict::Reusable),
                1 => Just(Verdict::Broken),
                2 => Just(Verdict::NeedsReset),
            ];
            ops.push((
                8,
                (idx(), verdict)
                    .prop_map(|(i, verdict)| Op::Release { i, verdict })
                    .boxed(),
            ));
            ops.push((1, idx().prop_map(|i| Op::Detach { i }).boxed()));
        }
        if closing > 0 {
            ops.push((6, idx().prop_map(|i| Op::CloseDone { i }).boxed()));
        }
        if opening + late(MWork::Open) > 0 {
            let result = prop_oneof![
                6 => Just(ConnectResult::Ok),
                2 => Just(ConnectResult::Transient),
                1 => Just(ConnectResult::Fatal),
            ];
            ops.push((
                8,
                (idx(), result)
                    .prop_map(|(i, result)| Op::Connect { i, result })
                    .boxed(),
            ));
        }
        if checking + late(MWork::Check) > 0 {
            ops.push((
                4,
                (idx(), prop::bool::weighted(0.8))
                    .prop_map(|(i, healthy)| Op::Check { i, healthy })
                    .boxed(),
            ));
        }
        if resetting + late(MWork::Reset) > 0 {
            ops.push((
                4,
                (idx(), prop::bool::weighted(0.8))
                    .prop_map(|(i, ok)| Op::Reset { i, ok })
                    .boxed(),
            ));
        }
        ops.retain(|(w, _)| *w > 0);
        Union::new_weighted(ops).boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(op);
        state
    }
}

/// Closing connections whose `work` answer is still owed.
fn count_owed(state: &Model, work: MWork) -> usize {
    state
        .conns
        .values()
        .filter(|c| matches!(c.state, CState::Closing { owed: Some(w), .. } if w == work))
        .count()
}

// ---- the system under test ---------------------------------------------------------------

/// Each connection is its own id, and each waiter's token its own id: every action that
/// moves one shows which.
type CorePool = Pool<ConnId, WaiterId>;

struct Sut {
    pool: CorePool,
    clock: u64,
    /// Handles the core gave out, by their number (every one, live or not: a stale cancel
    /// needs an old one; a live waiter is found by its token in `waiter_tokens()`).
    conns: BTreeMap<u64, ConnId>,
    waiters: BTreeMap<u64, WaiterId>,
    /// Every lease granted, in grant order (the model's lease index).
    leases: Vec<LeaseId>,
    /// The connections the judge calls dead (the model's `killed`).
    killed: Arc<Mutex<BTreeSet<u64>>>,
    /// The embedder's one timer, kept as `poll_timer` says (None after a timeout).
    armed: Option<Instant>,
}

/// The answer to an input that hands in a connection: a refusal must hand back the very
/// connection that came in.
fn handed_back<C: PartialEq + std::fmt::Debug>(
    r: Result<(), Refused<C>>,
    handed: C,
) -> Result<(), InputError> {
    r.map_err(|Refused { error, connection }| {
        assert_eq!(connection, handed, "{error} handed back another connection");
        error
    })
}

impl Sut {
    fn now(&self) -> Instant {
        instant(self.clock)
    }

    fn record_lease(&mut self, lease: LeaseId) {
        self.leases.push(lease);
    }

    /// Drain the actions into the comparable form, checking each carries the right
    /// connection and token.
    fn drain(&mut self, out: &mut StepOut) {
        while let Some(action) = self.pool.poll_action() {
            match action {
                Action::Open { conn } => {
                    self.conns.insert(conn.get(), conn);
                    out.effects.push(Effect::Open(conn.get()));
                }
                Action::Check { conn, connection } => {
                    assert_eq!(connection, conn, "check of {conn:?} carries another");
                    out.effects.push(Effect::Check(conn.get()))
                }
                Action::Reset { conn, connection } => {
                    assert_eq!(connection, conn, "reset of {conn:?} carries another");
                    out.effects.push(Effect::Reset(conn.get()))
                }
                Action::Close {
                    conn,
                    reason,
                    connection,
                } => {
                    if let Some(c) = connection {
                        assert_eq!(c, conn, "close of {conn:?} carries another");
                    }
                    out.effects
                        .push(Effect::Close(conn.get(), reason, connection.is_some()))
                }
                Action::Grant {
                    waiter,
                    token,
                    grant,
                    connection,
                } => {
                    assert_eq!(token, waiter, "grant to {waiter:?} with another's token");
                    assert_eq!(connection, grant.conn(), "grant of another connection");
                    self.record_lease(grant.lease);
                    out.answers.push(Answer::Grant {
                        waiter: waiter.get(),
                        conn: grant.conn().get(),
                        waited: grant.waited,
                    });
                }
                Action::Reject {
                    waiter,
                    token,
                    rejection,
                } => {
                    assert_eq!(token, waiter, "reject of {waiter:?} with another's token");
                    out.answers.push(Answer::Reject {
                        waiter: waiter.get(),
                        kind: RejKind::of(&rejection),
                    })
                }
                Action::LeakSuspected { lease, held } => {
                    out.effects.push(Effect::Leak(lease.conn().get(), held))
                }
                Action::Drained { forced } => out.effects.push(Effect::Drained(forced)),
            }
        }
        out.effects.sort();
    }

    fn conn(&self, target: Target) -> ConnId {
        match target {
            Target::Conn(c) => self.conns[&c],
            t => panic!("model resolved {t:?}, expected a connection"),
        }
    }

    fn lease(&self, target: Target) -> LeaseId {
        match target {
            Target::Lease(l) => self.leases[l],
            t => panic!("model resolved {t:?}, expected a lease"),
        }
    }

    /// A waiter still queued: found by its token.
    fn queued_waiter(&self, target: Target) -> WaiterId {
        match target {
            Target::Waiter(w) => *self
                .pool
                .waiter_tokens()
                .find(|t| t.get() == w)
                .unwrap_or_else(|| panic!("waiter {w} is not in waiter_tokens()")),
            t => panic!("model resolved {t:?}, expected a waiter"),
        }
    }

    /// Any waiter ever queued.
    fn waiter(&self, target: Target) -> WaiterId {
        match target {
            Target::Waiter(w) => self.waiters[&w],
            t => panic!("model resolved {t:?}, expected a waiter"),
        }
    }

    /// What the shell does after every input: keep its one timer where `poll_timer` says.
    /// That timer must never be later than the earliest deadline.
    fn track_timer(&mut self) {
        if let Some(at) = self.pool.poll_timer() {
            assert!(
                self.armed.is_none_or(|armed| at < armed),
                "poll_timer moved the timer from {:?} to {at:?}, not earlier",
                self.armed
            );
            self.armed = Some(at);
        }
        assert_eq!(
            self.pool.poll_timer(),
            None,
            "poll_timer moved the timer again with no input between"
        );
        if let Some(t) = self.pool.poll_timeout() {
            assert!(
                self.armed.is_some_and(|armed| armed <= t),
                "the timer kept per poll_timer ({:?}) is later than poll_timeout ({t:?})",
                self.armed
            );
        }
    }

    fn handle_timeout_checked(&mut self, out: &mut StepOut) {
        let now = self.now();
        // The timer fired.
        self.armed = None;
        self.pool.handle_timeout(now);
        self.drain(out);
        // Idempotent: a second call at the same instant has nothing to do.
        self.pool.handle_timeout(now);
        let again = self.pool.poll_action();
        assert_eq!(
            again, None,
            "second handle_timeout({now:?}) produced an action"
        );
        // And nothing is left due at `now`.
        if let Some(t) = self.pool.poll_timeout() {
            assert!(
                t > now,
                "after handle_timeout({now:?}), poll_timeout is {t:?}"
            );
        }
    }

    fn apply(&mut self, model: &Model, op: &Op) {
        let mut out = StepOut::default();
        let target = model.target;
        match *op {
            Op::Tick { by } | Op::Advance { by } => self.clock += by,
            // The model chose the instant (its next deadline).
            Op::AdvanceToNext => self.clock = model.clock,
            _ => {}
        }
        let now = self.now();
        let input = |r: Result<(), InputError>| Ret::Input(r.map_err(ErrKind::of));
        match *op {
            Op::Tick { .. } => {}
            Op::Acquire { wait } => {
                let deadline = instant(self.clock + wait);
                let mut made = None;
                out.ret = match self.pool.acquire(now, deadline, |w| {
                    made = Some(w);
                    w
                }) {
                    Ok(Acquired::Ready(grant, connection)) => {
                        assert_eq!(grant.waited, Duration::ZERO);
                        assert_eq!(connection, grant.conn(), "ready with another connection");
                        self.record_lease(grant.lease);
                        Ret::Ready {
                            conn: grant.conn().get(),
                        }
                    }
                    Ok(Acquired::Queued(w)) => {
                        assert_eq!(made, Some(w), "the token is made with the waiter's id");
                        self.waiters.insert(w.get(), w);
                        Ret::Queued { waiter: w.get() }
                    }
                    Err(r) => Ret::Rejected(RejKind::of(&r)),
                };
                if !matches!(out.ret, Ret::Queued { .. }) {
                    assert_eq!(made, None, "a token made for a caller that does not wait");
                }
            }
            Op::TryAcquire => {
                let got = self.pool.try_acquire(now);
                if let Some((g, connection)) = got {
                    assert_eq!(connection, g.conn(), "try_acquire with another connection");
                    self.record_lease(g.lease);
                }
                out.ret = Ret::Try(got.map(|(g, _)| g.conn().get()));
            }
            Op::Kill { .. } => {
                if let Target::Conn(id) = target {
                    self.killed.lock().unwrap().insert(id);
                }
            }
            _ if target == Target::None
                && !matches!(
                    op,
                    Op::Advance { .. }
                        | Op::AdvanceToNext
                        | Op::Timer
                        | Op::Close { .. }
                        | Op::Resize { .. }
                        | Op::EvictAll
                ) =>
            {
                // An index into an empty set: a no-op on both sides.
            }
            Op::Cancel { .. } => {
                let w = self.queued_waiter(target);
                let r = self.pool.cancel(now, w).map(|token| {
                    assert_eq!(token, w, "cancel of {w:?} handed back another's token")
                });
                out.ret = input(r)
            }
            Op::Release { verdict, .. } => {
                let lease = self.lease(target);
                let r = self.pool.release(now, lease, lease.conn(), verdict);
                out.ret = input(handed_back(r, lease.conn()))
            }
            Op::Detach { .. } => out.ret = input(self.pool.detach(now, self.lease(target))),
            Op::Connect { result, .. } => {
                let conn = self.conn(target);
                let (r, handed) = match result {
                    ConnectResult::Ok => (Ok(conn), Some(conn)),
                    ConnectResult::Transient => (Err(ConnectError::transient("refused")), None),
                    ConnectResult::Fatal => (Err(ConnectError::fatal("bad password")), None),
                };
                let r = self.pool.connect_finished(now, conn, r);
                out.ret = input(handed_back(r, handed));
            }
            Op::Check { healthy, .. } => {
                let conn = self.conn(target);
                let r = self.pool.check_finished(now, conn, conn, healthy);
                out.ret = input(handed_back(r, conn))
            }
            Op::Reset { ok, .. } => {
                let conn = self.conn(target);
                let r = self.pool.reset_finished(now, conn, conn, ok);
                out.ret = input(handed_back(r, conn))
            }
            Op::CloseDone { .. } => {
                out.ret = input(self.pool.close_finished(now, self.conn(target)))
            }
            Op::Advance { .. } | Op::AdvanceToNext | Op::Timer => {
                self.handle_timeout_checked(&mut out)
            }
            Op::Close { drain } => {
                out.ret = input(self.pool.close(now, instant(self.clock + drain)))
            }
            Op::Resize { max_size } => {
                let before = self.pool.status();
                let r = self.pool.resize(now, max_size).map_err(|e| e.field);
                if r.is_err() {
                    assert_eq!(
                        self.pool.status(),
                        before,
                        "a refused resize changed the pool"
                    );
                }
                out.ret = Ret::Resize(r);
            }
            Op::EvictAll => {
                let before = self.pool.status();
                let r = self.pool.evict_all(now);
                if r.is_err() {
                    assert_eq!(
                        self.pool.status(),
                        before,
                        "a refused evict_all changed the pool"
                    );
                }
                out.ret = input(r);
            }
            Op::Misuse { what, .. } => {
                let before = self.pool.status();
                let r = match what {
                    Misuse::StaleRelease => {
                        let lease = self.lease(target);
                        let r = self
                            .pool
                            .release(now, lease, lease.conn(), Verdict::Reusable);
                        handed_back(r, lease.conn())
                    }
                    Misuse::StaleCancel => self.pool.cancel(now, self.waiter(target)).map(|_| ()),
                    Misuse::ConnectNotOpening => {
                        let conn = self.conn(target);
                        handed_back(self.pool.connect_finished(now, conn, Ok(conn)), Some(conn))
                    }
                    Misuse::CheckNotChecking => {
                        let conn = self.conn(target);
                        handed_back(self.pool.check_finished(now, conn, conn, true), conn)
                    }
                    Misuse::ResetNotResetting => {
                        let conn = self.conn(target);
                        handed_back(self.pool.reset_finished(now, conn, conn, true), conn)
                    }
                    Misuse::CloseNotClosing => self.pool.close_finished(now, self.conn(target)),
                };
                assert!(r.is_err(), "{what:?} on {target:?} was accepted");
                assert_eq!(
                    self.pool.status(),
                    before,
                    "a refused input changed the pool"
                );
                out.ret = input(r);
            }
        }
        if !matches!(op, Op::Advance { .. } | Op::AdvanceToNext | Op::Timer) {
            self.drain(&mut out);
        }
        self.track_timer();
        assert_eq!(
            out, model.out,
            "core (left) and model (right) disagree on {op:?} at t={}ms",
            self.clock
        );
    }

    /// The core's `Timer` in the model's terms (`None` for the backoff retry).
    fn due_of(&self, timer: Timer) -> Option<Due> {
        Some(match timer {
            Timer::Waiter(w) => Due::Waiter(w.get()),
            Timer::Connect(c) => Due::Connect(c.get()),
            Timer::Check(c) => Due::Check(c.get()),
            Timer::Reset(c) => Due::Reset(c.get()),
            Timer::Leak(lease) => Due::Leak(
                self.leases
                    .iter()
                    .position(|l| *l == lease)
                    .unwrap_or_else(|| panic!("{lease:?} was never granted")),
            ),
            Timer::Lifetime(c) => Due::Lifetime(c.get()),
            Timer::IdleTimeout(c) => Due::IdleTimeout(c.get()),
            Timer::Close(c) => Due::Close(c.get()),
            Timer::Drain => Due::Drain,
            Timer::Backoff => return None,
        })
    }

    /// The core's observable state agrees with the model, and its own invariants hold.
    fn check(&self, m: &Model) {
        if let Err(e) = self.pool.check_invariants() {
            panic!("{e}");
        }
        let s = self.pool.status();
        let count = |f: fn(&CState) -> bool| m.conns.values().filter(|c| f(&c.state)).count();
        assert_eq!(s.total, m.conns.len(), "total");
        assert_eq!(s.max_size, m.cfg.max_size, "max_size");
        assert_eq!(s.idle, m.idle.len(), "idle");
        assert_eq!(
            s.leased,
            count(|s| matches!(s, CState::Leased { .. })),
            "leased"
        );
        assert_eq!(s.opening, m.opening(), "opening");
        assert_eq!(
            s.checking,
            count(|s| matches!(s, CState::Checking { .. } | CState::Resetting { .. })),
            "checking + resetting"
        );
        assert_eq!(
            s.closing,
            count(|s| matches!(s, CState::Closing { .. })),
            "closing"
        );
        assert_eq!(s.waiters, m.waiters.len(), "waiters");
        let tokens: Vec<u64> = self.pool.waiter_tokens().map(|w| w.get()).collect();
        let queue: Vec<u64> = m.waiters.iter().map(|w| w.id).collect();
        assert_eq!(tokens, queue, "waiter_tokens (left) vs the model's queue");
        assert_eq!(self.pool.is_closed(), m.phase == Phase::Closed, "closed");
        assert_eq!(self.pool.is_closing(), m.phase != Phase::Running, "closing");

        // Liveness: the timer is never later than the earliest waiter deadline...
        let timer = self.pool.poll_timeout();
        if let Some(first) = m.waiters.iter().map(|w| w.deadline).min() {
            assert!(
                timer.is_some_and(|t| t <= instant(first)),
                "poll_timeout {timer:?} is later than a waiter's deadline {:?}",
                instant(first)
            );
        }
        // ...and is exactly the model's next deadline (or the backoff retry, 1-2 ns after
        // the failure).
        let expected = m.next_deadline().map(instant);
        let next = self.pool.next_timeout();
        assert_eq!(next.map(|(t, _)| t), timer, "next_timeout vs poll_timeout");
        if m.retry_pending() {
            let lo = Instant::from_nanos(instant(m.now).as_nanos() + 1);
            let hi = Instant::from_nanos(instant(m.now).as_nanos() + 2);
            let ok = timer.is_some_and(|t| t >= lo && t <= hi) || timer == expected;
            assert!(
                ok,
                "poll_timeout {timer:?}, model: retry at {lo:?}..={hi:?} or {expected:?}"
            );
        } else {
            assert_eq!(
                timer, expected,
                "poll_timeout (left) vs model's next deadline"
            );
        }
        // ...and `next_timeout` names one of the things due at that instant.
        if let Some((t, why)) = next {
            match self.due_of(why) {
                None => assert!(
                    m.retry_pending() && t != expected.unwrap_or(Instant::NEVER),
                    "next_timeout names the backoff at {t:?}, model: {:?}",
                    m.deadlines()
                ),
                Some(due) => {
                    let at = instant_ms(t);
                    assert!(
                        m.deadlines().contains(&(at, due)),
                        "next_timeout {next:?} is none of the model's deadlines {:?}",
                        m.deadlines()
                    );
                }
            }
        }
    }
}

/// A model instant back from the core's (whole milliseconds).
fn instant_ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

struct PoolTest;

impl StateMachineTest for PoolTest {
    type SystemUnderTest = Sut;
    type Reference = PoolModel;

    fn init_test(m: &Model) -> Sut {
        let mut pool: CorePool =
            Pool::new(m.cfg.to_core(), instant(T0), m.cfg.seed).expect("valid config");
        let killed = Arc::new(Mutex::new(BTreeSet::new()));
        let dead = Arc::clone(&killed);
        pool.set_judge(move |c: &mut ConnId| !dead.lock().unwrap().contains(&c.get()));
        let mut sut = Sut {
            pool,
            clock: T0,
            conns: BTreeMap::new(),
            waiters: BTreeMap::new(),
            leases: Vec::new(),
            killed,
            armed: None,
        };
        let mut out = StepOut::default();
        sut.drain(&mut out);
        sut.track_timer();
        assert_eq!(out, m.out, "Pool::new");
        sut
    }

    fn apply(mut sut: Sut, m: &Model, op: Op) -> Sut {
        sut.apply(m, &op);
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        sut.check(m);
    }

    /// End of a case: liveness. Past every waiter's deadline no waiter remains; a close
    /// whose drain deadline has passed ends with every connection gone and `Drained`.
    fn teardown(mut sut: Sut, mut m: Model) {
        let last = m
            .waiters
            .iter()
            .map(|w| w.deadline)
            .max()
            .unwrap_or(m.clock);
        let by = last.saturating_sub(m.clock);
        let op = Op::Advance { by };
        m.apply(&op);
        sut.apply(&m, &op);
        sut.check(&m);
        assert_eq!(
            sut.pool.status().waiters,
            0,
            "waiters remain past their deadlines"
        );

        let op = Op::Close { drain: 0 };
        m.apply(&op);
        sut.apply(&m, &op);
        sut.check(&m);
        // A close from the case itself may have a later drain deadline.
        let by = match m.phase {
            Phase::Draining { deadline, .. } => deadline.saturating_sub(m.clock),
            _ => 0,
        };
        let op = Op::Advance { by };
        m.apply(&op);
        sut.apply(&m, &op);
        sut.check(&m);
        // Closes never answered are abandoned at their close timeout.
        let by = m
            .conns
            .values()
            .filter_map(|c| match c.state {
                CState::Closing { deadline, .. } => Some(deadline.saturating_sub(m.clock)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let op = Op::Advance { by };
        m.apply(&op);
        sut.apply(&m, &op);
        sut.check(&m);
        assert!(
            sut.pool.is_closed(),
            "pool not closed after its drain deadline"
        );
        assert_eq!(
            sut.pool.poll_timeout(),
            None,
            "a closed pool still wants a timer"
        );
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// The pool and the reference model agree on every step of random sessions.
    #[test]
    fn pool_matches_model(sequential 1..80 => PoolTest);
}
