//! Fuzz target `ops`: arbitrary bytes become a pool configuration and a sequence of
//! inputs, applied to `pool_core::Pool`. Operations name their target by index into the
//! live handles of the right kind, so every input is a meaningful session.
//!
//! Checked after every step:
//! - no panic (overflow checks are on in fuzz builds), and `check_invariants()` holds;
//! - every waiter ends with exactly one answer: a grant or a rejection only for a waiter
//!   that is queued and unanswered (never granted twice, never both granted and rejected,
//!   nothing for a cancelled waiter), carrying that waiter's token; a connection is never
//!   lent twice at once;
//! - every connection is in exactly one place, the pool or the harness: each action and
//!   refusal that carries one carries the right one, a `Close` hands it back exactly when
//!   the pool held it, and none is ever dropped unclosed (connections and tokens are
//!   linear: dropping one the harness has not closed panics);
//! - the judge: connections marked dead (`Kill`) are never lent from idle;
//! - `evict_all`: a connection live at an eviction is never lent again; `resize`: refused
//!   exactly for 0, sizes above `MAX_SIZE_LIMIT` and below `min_idle` (unchanged pool),
//!   and no step that opens leaves the pool above `max_size`;
//! - inputs that must succeed do (release of a live lease, result for an opening
//!   connection, ...) and misuse is refused without changing the pool;
//! - closing: a closed connection stays counted (`status().closing`) until the harness
//!   answers `close_finished` or its close timeout passes (never sooner); one closed while
//!   its open, check or reset was under way comes back with that work's late answer, and
//!   then a second `Close` carries it;
//! - `waiter_tokens()` lists exactly the waiters still owed an answer, in arrival order,
//!   and `poll_timeout()` is never later than the earliest of their deadlines (read from
//!   their tokens); the timer kept as `poll_timer()` says is never later than
//!   `poll_timeout()`, and `next_timeout()` agrees with `poll_timeout()`;
//! - after `handle_timeout(now)`: no waiter past its deadline remains, nothing is due at
//!   `now`, and a second call produces no action.
//!
//! At the end: past every deadline no waiter remains, and a close whose drain deadline
//! has passed ends with `Drained` and an empty pool.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pool_core::{
    Acquired, Action, Config, ConnId, ConnectError, Instant, LeaseId, Pool, Refused, Verdict,
    WaiterId,
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
        close_timeout: nonzero(config.close_timeout),
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
    /// A connection dies wherever it is: from now on the judge calls it dead.
    Kill(u8),
    /// `resize` to `n % 12`, or above `MAX_SIZE_LIMIT` for 255.
    Resize(u8),
    /// `reconfigure` with these `min_idle`, `max_connecting`, idle timeout (ms, 0 =
    /// none), connect and check timeouts (ms) and `max_size`; refused when invalid.
    Reconfigure {
        min_idle: u8,
        max_connecting: u8,
        idle_ms: u16,
        connect_ms: u16,
        check_ms: u16,
        max_size: u8,
    },
    EvictAll,
    /// `close_finished` for a closing connection: it is gone.
    CloseDone(u8),
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

/// A connection as the pool holds it: which one, and which object (a stand-in the
/// harness makes for a misuse is another object for the same id). Linear: it must be
/// closed by the harness before it is dropped, so a connection the pool loses panics.
#[derive(Debug)]
struct FConn {
    id: ConnId,
    serial: u64,
    closed: bool,
}

impl FConn {
    fn close(mut self) {
        self.closed = true;
    }
}

impl Drop for FConn {
    fn drop(&mut self) {
        if !self.closed && !std::thread::panicking() {
            panic!(
                "{} (object {}) dropped without a close",
                self.id, self.serial
            );
        }
    }
}

/// A waiter's token: its id and deadline (the harness keeps no queue of its own).
/// Linear like `FConn`: a token the pool drops instead of handing back panics.
#[derive(Debug)]
struct Ticket {
    id: WaiterId,
    deadline: Instant,
    done: bool,
}

impl Ticket {
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            panic!("the token of {:?} dropped by the pool", self.id);
        }
    }
}

type FPool = Pool<FConn, Ticket>;

/// Work whose answer the harness still owes for a connection the pool closed while the
/// work ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Open,
    Check,
    Reset,
}

/// A connection the pool is closing, as the harness sees it.
#[derive(Debug)]
enum Closing {
    /// The harness was handed it to close.
    Held(FConn),
    /// The pool closed it while the harness still ran `Work` on it (the object, except
    /// for an open).
    Owed(Work, Option<FConn>),
}

impl Closing {
    fn close(self) {
        match self {
            Closing::Held(c) | Closing::Owed(_, Some(c)) => c.close(),
            Closing::Owed(_, None) => {}
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Granted,
    Rejected,
    Cancelled,
}

/// The pool plus everything the harness knows from the actions it drained.
struct Harness {
    pool: FPool,
    now: Instant,
    /// How each waiter's acquire ended. (Those still owed an answer are the pool's
    /// `waiter_tokens()`.)
    ended: BTreeMap<WaiterId, Outcome>,
    /// Leased connections, with the borrower's object.
    live: BTreeMap<ConnId, (LeaseId, FConn)>,
    all_leases: Vec<LeaseId>,
    all_conns: Vec<ConnId>,
    opening: BTreeSet<ConnId>,
    checking: BTreeMap<ConnId, FConn>,
    resetting: BTreeMap<ConnId, FConn>,
    /// Connections the judge calls dead.
    killed: Arc<Mutex<BTreeSet<ConnId>>>,
    next_serial: u64,
    /// The embedder's one timer, kept as `poll_timer` says (None once it fired).
    armed: Option<Instant>,
    /// Draining the actions of an acquire: a grant then is of an idle connection.
    in_acquire: bool,
    drained: bool,
    /// Connections live at an `evict_all`: never lent again.
    evicted: BTreeSet<ConnId>,
    /// `Open`s drained in the current step.
    opened: usize,
    /// Connections the pool is closing, with their close deadline.
    closing: BTreeMap<ConnId, (Instant, Closing)>,
}

fn pick<T: Copy>(items: impl Iterator<Item = T>, i: u8) -> Option<T> {
    let v: Vec<T> = items.collect();
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()])
}

impl Harness {
    fn conn(&mut self, id: ConnId) -> FConn {
        self.next_serial += 1;
        FConn {
            id,
            serial: self.next_serial,
            closed: false,
        }
    }

    /// The harness holds this connection's object (leased, checking or resetting).
    fn holds(&self, conn: ConnId) -> bool {
        self.live.contains_key(&conn)
            || self.checking.contains_key(&conn)
            || self.resetting.contains_key(&conn)
            || self.closing.contains_key(&conn)
    }

    /// Closing connections whose `work` answer is still owed.
    fn owed(&self, work: Work) -> impl Iterator<Item = ConnId> + '_ {
        self.closing
            .iter()
            .filter(move |(_, (_, c))| matches!(c, Closing::Owed(w, _) if *w == work))
            .map(|(id, _)| *id)
    }

    /// `from_idle`: lent from the idle list, so the judge was asked (the fast path of
    /// acquire and try_acquire, and grants made in an acquire's own dispatch).
    fn lend(&mut self, lease: LeaseId, connection: FConn, from_idle: bool) {
        let conn = lease.conn();
        assert_eq!(connection.id, conn, "{lease:?} lends another connection");
        assert!(
            !self.opening.contains(&conn)
                && !self.checking.contains_key(&conn)
                && !self.resetting.contains_key(&conn)
                && !self.closing.contains_key(&conn),
            "{conn} lent while opening, checking, resetting or closing"
        );
        assert!(
            !(from_idle && self.killed.lock().unwrap().contains(&conn)),
            "{conn} lent from idle while dead"
        );
        assert!(!self.evicted.contains(&conn), "{conn} lent after evict_all");
        assert!(
            self.live.insert(conn, (lease, connection)).is_none(),
            "{conn} lent while already leased"
        );
        self.all_leases.push(lease);
    }

    fn answer(&mut self, waiter: WaiterId, token: Ticket, outcome: Outcome) {
        assert_eq!(
            token.id, waiter,
            "{outcome:?} for {waiter:?} with another's token"
        );
        assert!(
            !self.pool.waiter_tokens().any(|t| t.id == waiter),
            "{outcome:?} for {waiter:?}, which is still queued"
        );
        let earlier = self.ended.insert(waiter, outcome);
        assert!(
            earlier.is_none(),
            "{outcome:?} for {waiter:?}, which is not waiting (earlier: {earlier:?})"
        );
        token.done();
    }

    /// A refused input hands back the very object that came in: the harness closes it.
    fn refused<C>(
        r: Result<(), Refused<C>>,
        serial: Option<u64>,
        back: impl FnOnce(C) -> Option<FConn>,
    ) {
        let Err(Refused { connection, .. }) = r else {
            panic!("a misuse was accepted")
        };
        let back = back(connection);
        assert_eq!(
            back.as_ref().map(|c| c.serial),
            serial,
            "refusal handed back another object"
        );
        if let Some(c) = back {
            c.close();
        }
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
                    self.opened += 1;
                }
                Action::Check { conn, connection } => {
                    assert_eq!(connection.id, conn, "check of {conn} carries another");
                    assert!(
                        !self.holds(conn),
                        "checking {conn}, which the harness holds"
                    );
                    self.checking.insert(conn, connection);
                }
                Action::Reset { conn, connection } => {
                    assert_eq!(connection.id, conn, "reset of {conn} carries another");
                    assert!(
                        !self.holds(conn),
                        "resetting {conn}, which the harness holds"
                    );
                    self.resetting.insert(conn, connection);
                }
                Action::Close {
                    conn, connection, ..
                } => {
                    assert!(self.all_conns.contains(&conn), "closing unknown {conn}");
                    let deadline = self.pool.now() + self.pool.config().close_timeout;
                    match connection {
                        // The pool held it (idle, or handed in with this input, or the
                        // late answer of work it gave up on): the harness closes it and
                        // answers `close_finished` later (`CloseDone`).
                        Some(c) => {
                            assert_eq!(c.id, conn, "close of {conn} carries another");
                            assert!(
                                !self.live.contains_key(&conn)
                                    && !self.checking.contains_key(&conn)
                                    && !self.resetting.contains_key(&conn)
                                    && !self.opening.contains(&conn),
                                "close of {conn} hands back a second copy"
                            );
                            let deadline = match self.closing.remove(&conn) {
                                Some((d, Closing::Owed(_, None))) => d,
                                Some((_, other)) => {
                                    panic!("second close of {conn}, closing as {other:?}")
                                }
                                None => deadline,
                            };
                            self.closing.insert(conn, (deadline, Closing::Held(c)));
                        }
                        // A lease revoked: the pool forgot it, its borrower closes it.
                        None if self.live.contains_key(&conn) => {
                            let (_, c) = self.live.remove(&conn).expect("live");
                            c.close();
                        }
                        // Work given up on: still counted, its answer still owed.
                        None => {
                            let owed = if let Some(c) = self.checking.remove(&conn) {
                                Closing::Owed(Work::Check, Some(c))
                            } else if let Some(c) = self.resetting.remove(&conn) {
                                Closing::Owed(Work::Reset, Some(c))
                            } else if self.opening.remove(&conn) {
                                Closing::Owed(Work::Open, None)
                            } else {
                                panic!("close of {conn} without the connection the pool held")
                            };
                            let earlier = self.closing.insert(conn, (deadline, owed));
                            assert!(earlier.is_none(), "{conn} closed twice");
                        }
                    }
                }
                Action::Grant {
                    waiter,
                    token,
                    grant,
                    connection,
                } => {
                    self.answer(waiter, token, Outcome::Granted);
                    let from_idle = self.in_acquire;
                    self.lend(grant.lease, connection, from_idle);
                }
                Action::Reject { waiter, token, .. } => {
                    self.answer(waiter, token, Outcome::Rejected)
                }
                Action::LeakSuspected { lease, .. } => {
                    assert_eq!(
                        self.live.get(&lease.conn()).map(|l| l.0),
                        Some(lease),
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

    /// What an embedder does after each input: keep its one timer where `poll_timer`
    /// says. It must never be later than the earliest deadline.
    fn track_timer(&mut self) {
        if let Some(at) = self.pool.poll_timer() {
            assert!(
                self.armed.is_none_or(|armed| at < armed),
                "poll_timer moved the timer from {:?} to {at:?}, not earlier",
                self.armed
            );
            self.armed = Some(at);
        }
        assert_eq!(self.pool.poll_timer(), None, "poll_timer moved twice");
        let t = self.pool.poll_timeout();
        assert_eq!(self.pool.next_timeout().map(|(t, _)| t), t, "next_timeout");
        if let Some(t) = t {
            assert!(
                self.armed.is_some_and(|armed| armed <= t),
                "the timer kept per poll_timer ({:?}) is later than poll_timeout ({t:?})",
                self.armed
            );
        }
    }

    fn check(&self) {
        if let Err(e) = self.pool.check_invariants() {
            panic!("{e}");
        }
        let status = self.pool.status();
        let queued: Vec<WaiterId> = self.pool.waiter_tokens().map(|t| t.id).collect();
        assert_eq!(status.waiters, queued.len(), "waiters owed an answer");
        assert!(
            queued.windows(2).all(|w| w[0] < w[1]),
            "waiter_tokens not in arrival order: {queued:?}"
        );
        assert!(
            queued.iter().all(|w| !self.ended.contains_key(w)),
            "an answered waiter is still queued"
        );
        assert_eq!(status.leased, self.live.len(), "live leases");
        assert_eq!(status.opening, self.opening.len(), "opening");
        assert_eq!(status.closing, self.closing.len(), "closing");
        // A waiter's `NEVER` deadline needs no timer.
        let finite = self
            .pool
            .waiter_tokens()
            .map(|t| t.deadline)
            .filter(|d| *d != Instant::NEVER);
        if let Some(first) = finite.min() {
            let t = self.pool.poll_timeout();
            assert!(
                t.is_some_and(|t| t <= first),
                "poll_timeout {t:?} later than a waiter's deadline {first:?}"
            );
        }
    }

    fn handle_timeout(&mut self) {
        // The timer fired.
        self.armed = None;
        self.pool.handle_timeout(self.now);
        self.drain();
        let now = self.pool.now();
        // Closes past their close timeout are abandoned: the pool stops counting them.
        let abandoned: Vec<ConnId> = self
            .closing
            .iter()
            .filter(|(_, (d, _))| due(*d, now))
            .map(|(id, _)| *id)
            .collect();
        for conn in abandoned {
            let (_, c) = self.closing.remove(&conn).expect("listed");
            c.close();
        }
        assert!(
            self.pool.waiter_tokens().all(|t| !due(t.deadline, now)),
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
        self.track_timer();
    }

    /// A check or reset answer: for one under way, or late, for one the pool closed.
    fn upkeep_answer(&mut self, work: Work, i: u8, ok: bool) {
        let now = self.now;
        let running: Vec<ConnId> = match work {
            Work::Check => self.checking.keys().copied().collect(),
            _ => self.resetting.keys().copied().collect(),
        };
        let late: Vec<ConnId> = self.owed(work).collect();
        let Some(conn) = pick(running.iter().chain(late.iter()).copied(), i) else {
            return;
        };
        let (c, is_late) = match work {
            Work::Check => self.checking.remove(&conn),
            _ => self.resetting.remove(&conn),
        }
        .map(|c| (c, false))
        .unwrap_or_else(|| match self.closing.remove(&conn) {
            Some((d, Closing::Owed(_, Some(c)))) => {
                // Put the entry back while the pool decides: its Close moves it to Held.
                self.closing.insert(conn, (d, Closing::Owed(work, None)));
                (c, true)
            }
            other => panic!("picked {conn}: {other:?}"),
        });
        let r = match work {
            Work::Check => self.pool.check_finished(now, conn, c, ok),
            _ => self.pool.reset_finished(now, conn, c, ok),
        };
        if let Err(e) = r {
            panic!("{work:?} result for {conn} (late: {is_late}) refused: {e:?}");
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Acquire(wait) => {
                let deadline = now + wait.get();
                let mut made = None;
                let r = self.pool.acquire(now, deadline, |id| {
                    made = Some(id);
                    Ticket {
                        id,
                        deadline,
                        done: false,
                    }
                });
                let queued = matches!(r, Ok(Acquired::Queued(_)));
                match r {
                    Ok(Acquired::Ready(g, c)) => self.lend(g.lease, c, true),
                    Ok(Acquired::Queued(w)) => {
                        assert_eq!(made, Some(w), "the token is made with the waiter's id");
                        assert!(!self.ended.contains_key(&w), "{w:?} reused");
                        assert!(!due(deadline, now), "queued with a past deadline");
                    }
                    Err(_) => {}
                }
                if !queued {
                    assert_eq!(made, None, "a token made for a caller that does not wait");
                }
            }
            Op::TryAcquire => {
                if let Some((g, c)) = self.pool.try_acquire(now) {
                    self.lend(g.lease, c, true);
                }
            }
            Op::Cancel(i) => {
                if let Some(w) = pick(self.pool.waiter_tokens().map(|t| t.id), i) {
                    let token = self
                        .pool
                        .cancel(now, w)
                        .expect("cancel of a pending waiter");
                    self.answer(w, token, Outcome::Cancelled);
                }
            }
            Op::Release(i, verdict) => {
                if let Some(conn) = pick(self.live.keys().copied(), i) {
                    let verdict = match verdict {
                        FVerdict::Reusable => Verdict::Reusable,
                        FVerdict::Broken => Verdict::Broken,
                        FVerdict::NeedsReset => Verdict::NeedsReset,
                    };
                    let (lease, c) = self.live.remove(&conn).expect("picked");
                    self.pool
                        .release(now, lease, c, verdict)
                        .expect("release of a live lease");
                }
            }
            Op::Detach(i) => {
                if let Some(conn) = pick(self.live.keys().copied(), i) {
                    let (lease, c) = self.live.remove(&conn).expect("picked");
                    self.pool
                        .detach(now, lease)
                        .expect("detach of a live lease");
                    // Detached: the harness keeps it, and closes it in the end.
                    c.close();
                }
            }
            Op::Connect(i, result) => {
                let late = self.owed(Work::Open);
                if let Some(conn) = pick(self.opening.iter().copied().chain(late), i) {
                    let is_late = !self.opening.remove(&conn);
                    let r = match result {
                        ConnectResult::Ok => Ok(self.conn(conn)),
                        ConnectResult::Transient => Err(ConnectError::transient("refused")),
                        ConnectResult::Fatal => Err(ConnectError::fatal("auth failed")),
                    };
                    let failed = r.is_err();
                    // Late or not, the pool still counts it (an abandoned close is
                    // forgotten by `handle_timeout` here too), so it must accept.
                    self.pool
                        .connect_finished(now, conn, r)
                        .expect("result for an opening or closing connection");
                    if is_late && failed {
                        // A failed open leaves nothing to close.
                        self.closing.remove(&conn);
                    }
                }
            }
            Op::Check(i, healthy) => self.upkeep_answer(Work::Check, i, healthy),
            Op::Reset(i, ok) => self.upkeep_answer(Work::Reset, i, ok),
            Op::CloseDone(i) => {
                if let Some(conn) = pick(self.closing.keys().copied(), i) {
                    let (_, c) = self.closing.remove(&conn).expect("picked");
                    c.close();
                    // Abandoned closes are forgotten in `handle_timeout`, so this one
                    // still counts.
                    self.pool
                        .close_finished(now, conn)
                        .expect("close_finished for a closing connection");
                    assert!(
                        self.pool.close_finished(now, conn).is_err(),
                        "a close finished twice"
                    );
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
                    .filter(|l| self.live.get(&l.conn()).map(|x| x.0) != Some(*l));
                if let Some(lease) = pick(stale, i) {
                    let before = self.pool.status();
                    let c = self.conn(lease.conn());
                    let serial = c.serial;
                    let r = self.pool.release(now, lease, c, Verdict::Reusable);
                    Self::refused(r, Some(serial), Some);
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
                let not = |set: &dyn Fn(&ConnId) -> bool| {
                    pick(self.all_conns.iter().copied().filter(|c| !set(c)), i)
                };
                let owed = |w: Work| -> BTreeSet<ConnId> { self.owed(w).collect() };
                let (open, check, reset) = (owed(Work::Open), owed(Work::Check), owed(Work::Reset));
                let target = match kind % 4 {
                    0 => not(&|c| self.opening.contains(c) || open.contains(c)),
                    1 => not(&|c| self.checking.contains_key(c) || check.contains(c)),
                    2 => not(&|c| self.resetting.contains_key(c) || reset.contains(c)),
                    _ => not(&|c| self.closing.contains_key(c)),
                };
                if let Some(target) = target {
                    let c = self.conn(target);
                    let serial = Some(c.serial);
                    match kind % 4 {
                        3 => {
                            c.close();
                            assert!(
                                self.pool.close_finished(now, target).is_err(),
                                "close_finished for {target}, which is not closing"
                            );
                        }
                        0 => Self::refused(
                            self.pool.connect_finished(now, target, Ok(c)),
                            serial,
                            |c| c,
                        ),
                        1 => Self::refused(
                            self.pool.check_finished(now, target, c, true),
                            serial,
                            Some,
                        ),
                        _ => Self::refused(
                            self.pool.reset_finished(now, target, c, true),
                            serial,
                            Some,
                        ),
                    }
                    assert_eq!(self.pool.status(), before, "refused input changed the pool");
                }
            }
            Op::Kill(i) => {
                if let Some(conn) = pick(self.all_conns.iter().copied(), i) {
                    self.killed.lock().unwrap().insert(conn);
                }
            }
            Op::Resize(n) => {
                let size = if n == 255 {
                    pool_core::MAX_SIZE_LIMIT + 1
                } else {
                    usize::from(n % 12)
                };
                let before = self.pool.status();
                let invalid = size == 0
                    || size > pool_core::MAX_SIZE_LIMIT
                    || size < self.pool.config().min_idle;
                let r = self.pool.resize(now, size);
                assert_eq!(r.is_err(), invalid, "resize({size}): {r:?}");
                if invalid {
                    assert_eq!(
                        self.pool.status(),
                        before,
                        "refused resize changed the pool"
                    );
                } else {
                    assert_eq!(self.pool.config().max_size, size);
                }
            }
            Op::Reconfigure {
                min_idle,
                max_connecting,
                idle_ms,
                connect_ms,
                check_ms,
                max_size,
            } => {
                let config = pool_core::Config {
                    min_idle: usize::from(min_idle % 6),
                    max_connecting: usize::from(max_connecting % 4),
                    idle_timeout: (idle_ms > 0).then(|| Duration::from_millis(idle_ms.into())),
                    connect_timeout: Duration::from_millis(connect_ms.into()),
                    check_timeout: Duration::from_millis(check_ms.into()),
                    max_size: usize::from(max_size % 12),
                    ..self.pool.config().clone()
                };
                let before = self.pool.status();
                let valid = config.validate().is_ok();
                let r = self.pool.reconfigure(now, config.clone());
                assert_eq!(r.is_ok(), valid, "reconfigure: {r:?}");
                if valid {
                    assert_eq!(self.pool.config(), &config);
                } else {
                    assert_eq!(self.pool.status(), before, "a refused reconfigure changed the pool");
                }
            }
            Op::EvictAll => {
                let closing = self.pool.is_closing();
                let before = self.pool.status();
                let r = self.pool.evict_all(now);
                assert_eq!(r.is_err(), closing, "evict_all: {r:?}");
                if closing {
                    assert_eq!(
                        self.pool.status(),
                        before,
                        "refused evict_all changed the pool"
                    );
                } else {
                    // Every connection opened so far is closed or evicted (the opens
                    // this input makes are drained after).
                    self.evicted.extend(self.all_conns.iter().copied());
                }
            }
        }
        self.in_acquire = matches!(op, Op::Acquire(_));
        self.opened = 0;
        self.drain();
        self.in_acquire = false;
        if self.opened > 0 {
            let s = self.pool.status();
            assert!(
                s.total <= s.max_size,
                "opened {} and holds {} over max_size {}",
                self.opened,
                s.total,
                s.max_size
            );
        }
        self.track_timer();
        self.check();
    }
}

fuzz_target!(|input: Input| {
    let config = usable(input.config);
    let start = Instant::from_nanos(u64::from(input.start) * 1_000);
    let mut pool: FPool =
        Pool::new(config, start, input.seed).expect("the harness builds valid configs");
    let killed = Arc::new(Mutex::new(BTreeSet::new()));
    let dead = Arc::clone(&killed);
    pool.set_judge(move |c: &mut FConn| !dead.lock().unwrap().contains(&c.id));
    let mut h = Harness {
        pool,
        now: start,
        ended: BTreeMap::new(),
        live: BTreeMap::new(),
        all_leases: Vec::new(),
        all_conns: Vec::new(),
        opening: BTreeSet::new(),
        checking: BTreeMap::new(),
        resetting: BTreeMap::new(),
        killed,
        next_serial: 0,
        armed: None,
        in_acquire: false,
        drained: false,
        evicted: BTreeSet::new(),
        opened: 0,
        closing: BTreeMap::new(),
    };
    h.drain();
    h.track_timer();
    h.check();
    for op in input.ops.into_iter().take(256) {
        h.step(op);
    }

    // Liveness: past every waiter's deadline, nobody waits. (A deadline of `NEVER` means
    // waiting forever: those waiters give up by cancelling.)
    let forever: Vec<WaiterId> = h
        .pool
        .waiter_tokens()
        .filter(|t| t.deadline == Instant::NEVER)
        .map(|t| t.id)
        .collect();
    for w in forever {
        let token = h.pool.cancel(h.now, w).expect("cancel of a pending waiter");
        h.answer(w, token, Outcome::Cancelled);
    }
    if let Some(last) = h.pool.waiter_tokens().map(|t| t.deadline).max() {
        h.now = h.now.max(last);
        h.handle_timeout();
        h.check();
    }
    assert_eq!(
        h.pool.status().waiters,
        0,
        "waiters remain past their deadlines"
    );

    // Shutdown: once every lease is back, a close leaves nothing behind.
    let leases: Vec<ConnId> = h.live.keys().copied().collect();
    for conn in leases {
        let (lease, c) = h.live.remove(&conn).expect("live");
        h.pool
            .release(h.now, lease, c, Verdict::Reusable)
            .expect("release of a live lease");
        h.drain();
        h.track_timer();
    }
    if !h.pool.is_closing() {
        h.pool.close(h.now, h.now).expect("first close");
        h.drain();
        h.track_timer();
    }
    h.handle_timeout();
    // Every close under way finishes; `Drained` waits for them. (A late answer owed is
    // given up: the connection is known gone.)
    while let Some((&conn, _)) = h.closing.iter().next() {
        let (_, c) = h.closing.remove(&conn).expect("listed");
        c.close();
        h.pool
            .close_finished(h.now, conn)
            .expect("close_finished for a closing connection");
        h.drain();
        h.track_timer();
    }
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
    // Every connection is closed; the harness holds none (the checks and resets under way
    // were given up on by the close, and closed).
    assert!(h.checking.is_empty() && h.resetting.is_empty() && h.live.is_empty());
});
