//! Driving one pool: after every input the checks run, the pool's actions are carried out,
//! and its next timeout becomes a timer event. A host is one process holding one pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pool_core::{Action, ConnId, Instant, Pool, Status};

use crate::db::ConnectStart;
use crate::vtime::ns;

use super::books::Books;
use super::event::Ev;
use super::Sim;

/// The simulated pool: the database side keeps the connections (`conns`), so the pool's
/// connection type is `()`; each waiter's token is its request.
pub(super) type SimPool = Pool<(), usize>;

pub(super) struct Host {
    pub(super) pool: SimPool,
    /// Which database its connections go to (`Sim::dbs`): 0 unless it is a replica's.
    pub(super) db: usize,
    /// Pool connection -> database backend, once connected.
    pub(super) conns: BTreeMap<ConnId, u64>,
    /// Connections whose open is in flight, with what the server decided at the start.
    pub(super) opening: BTreeMap<ConnId, ConnectStart>,
    /// Opens the pool abandoned while the handshake was in flight.
    pub(super) aborted: BTreeSet<ConnId>,
    /// Connections whose slow close is under way (the server still has them).
    pub(super) closing: BTreeSet<ConnId>,
    /// Leased connection -> request holding it.
    pub(super) leased: BTreeMap<ConnId, usize>,
    pub(super) timer_at: Option<u64>,
    /// A retired serverless instance: no timers run, no new requests.
    pub(super) frozen: bool,
    /// Its connections were killed by the server; it is gone.
    pub(super) dead: bool,
    pub(super) busy_timer_t: u64,
    pub(super) busy_timer_n: u32,
    /// The simulator's own account of the pool, for the policy oracles.
    pub(super) books: Books,
}

impl Host {
    /// A retired serverless instance finishes its in-flight requests, then is frozen:
    /// no timers run (idle timeout, min idle, lifetime) and its connections stay open.
    pub(super) fn runs_timers(&self) -> bool {
        !self.dead && (!self.frozen || self.pool.status().waiters != 0 || !self.leased.is_empty())
    }
}

impl Sim {
    pub(super) fn new_host(&mut self) -> usize {
        self.new_host_on(0)
    }

    /// A host whose pool connects to database `db`.
    pub(super) fn new_host_on(&mut self, db: usize) -> usize {
        let seed = self.pool_seed.wrapping_add(self.hosts.len() as u64);
        let pool = Pool::new(
            self.setup.config.clone(),
            Instant::from_nanos(self.now),
            seed,
        )
        .expect("config validated in Sim::new");
        self.hosts.push(Host {
            pool,
            db,
            conns: BTreeMap::new(),
            opening: BTreeMap::new(),
            aborted: BTreeSet::new(),
            closing: BTreeSet::new(),
            leased: BTreeMap::new(),
            timer_at: None,
            frozen: false,
            dead: false,
            busy_timer_t: u64::MAX,
            busy_timer_n: 0,
            books: Books::default(),
        });
        let h = self.hosts.len() - 1;
        self.input_done(h, "new");
        h
    }

    /// After every input: check the invariants, drain the actions, re-arm the timer.
    pub(super) fn input_done(&mut self, h: usize, what: &str) {
        self.m.pool_inputs += 1;
        if !self.invariants_hold(h, what) {
            return;
        }
        while let Some(a) = self.hosts[h].pool.poll_action() {
            self.m.pool_actions += 1;
            self.on_action(h, a);
        }
        if !self.policies_hold(h, what) {
            return;
        }
        if !self.hosts[h].runs_timers() || self.stalled(h, what) {
            return;
        }
        let host = &self.hosts[h];
        if let Some(t) = host.pool.poll_timeout() {
            let t = t.as_nanos().max(self.now);
            if host.timer_at.is_none_or(|a| t < a) {
                self.hosts[h].timer_at = Some(t);
                self.queue.push(t, Ev::Timer(h));
            }
        }
    }

    fn on_action(&mut self, h: usize, a: Action<(), usize>) {
        match a {
            Action::Open { conn } => self.open(h, conn),
            Action::Check { conn, .. } => self.check_or_reset(h, conn, false),
            Action::Reset { conn, .. } => self.check_or_reset(h, conn, true),
            Action::Close { conn, reason, .. } => self.conn_closed(h, conn, reason),
            Action::Grant {
                waiter,
                token,
                grant,
                ..
            } => {
                self.conn_lent(h, grant.conn());
                self.waiter_granted(waiter, token, grant)
            }
            Action::Reject {
                waiter,
                token,
                rejection,
            } => self.waiter_rejected(waiter, token, &rejection),
            Action::LeakSuspected { lease, held } => {
                self.m.leaks_suspected += 1;
                self.leak_reported(h, lease, held);
            }
            Action::Drained { forced } => {
                self.m.drained.push((self.now, forced));
            }
        }
    }

    /// `Ev::Timer`: only the latest-armed timer counts; earlier ones were superseded.
    pub(super) fn timer_fired(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        if host.timer_at != Some(self.now) {
            return; // superseded by an earlier timer
        }
        host.timer_at = None;
        if !host.runs_timers() || self.setup.drop_timers || self.busy_loop(h) {
            return;
        }
        let now = Instant::from_nanos(self.now);
        self.hosts[h].pool.handle_timeout(now);
        self.hosts[h].books.abandon_due(self.now);
        self.input_done(h, "handle_timeout");
        self.leaks_reported(h);
    }

    /// `Ev::Close`: every live pool closes with the setup's drain window.
    pub(super) fn close_pools(&mut self) {
        let drain = self.setup.close_at.map_or(Duration::ZERO, |c| c.1);
        for h in 0..self.hosts.len() {
            if self.hosts[h].dead {
                continue;
            }
            let deadline = Instant::from_nanos(self.now + ns(drain));
            let r = self.hosts[h]
                .pool
                .close(Instant::from_nanos(self.now), deadline);
            self.input_done(h, "close");
            if let Err(e) = r {
                self.fail(format!("close refused: {e}"));
            }
        }
    }

    /// The live hosts' pools, summed: what the clients see as one pool.
    pub(super) fn live_status(&self) -> Status {
        let mut status = Status::default();
        for h in self.hosts.iter().filter(|h| !h.dead) {
            let s = h.pool.status();
            status.max_size += s.max_size;
            status.total += s.total;
            status.idle += s.idle;
            status.leased += s.leased;
            status.opening += s.opening;
            status.checking += s.checking;
            status.closing += s.closing;
            status.waiters += s.waiters;
        }
        status
    }
}
