//! The routing policy: every decision about which member serves what, in one place.
//!
//! `&mut self` methods, no clock, no I/O, no randomness: the embedder passes `now` (the
//! same opaque tick as pool-core's) and the member pools' [`Load`]s, and carries out the
//! [`Route`]s. The same inputs always give the same routes, so pool-sim, the proptest
//! model and the unit tests drive exactly what pool-tokio runs.

use std::time::Duration;

use pool_core::Instant;

use crate::config::{Fallback, RouterConfig, RouterConfigError};
use crate::member::{BenchReason, Member, MemberId, Role, State};
use crate::probe::Probe;
use crate::read::{Hop, HopEnd, Load, PrimaryWhy, Read, Route};
use crate::report::{ReadReport, WriteRefused};

/// The routing state of one primary and its replicas.
#[derive(Clone, Debug)]
pub struct Router {
    config: RouterConfig,
    /// `members[0]` is the primary; replicas follow.
    members: Vec<Member>,
    /// The replica (index into `members`) the next read's tie-break starts at, so reads
    /// spread over equally good replicas in turn.
    cursor: usize,
    /// The latest `now` seen: time never runs backwards inside the router.
    now: Instant,
}

impl Router {
    /// A router for a primary at `primary` and replicas at `replicas` (addresses, for
    /// messages; never credentials). Members are named `primary`, `replica-1`, ...
    pub fn new(
        config: RouterConfig,
        primary: &str,
        replicas: &[String],
    ) -> Result<Router, RouterConfigError> {
        config.validate()?;
        let mut members = vec![Member::new(
            MemberId::PRIMARY,
            "primary",
            primary,
            Role::Primary,
        )];
        for (i, address) in replicas.iter().enumerate() {
            members.push(Member::new(
                MemberId(i + 1),
                &format!("replica-{}", i + 1),
                address,
                Role::Replica,
            ));
        }
        Ok(Router {
            config,
            members,
            cursor: 1,
            now: Instant::ZERO,
        })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Every member, the primary first.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// One member; `None` for an id the router does not have.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(id.0)
    }

    fn tick(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    /// Where `read` goes now. `load(m)` is asked only for replicas in service that this
    /// read has not tried in its current round. A replica whose load shows it failing
    /// (connect errors, no connection) is benched here, and this same decision picks
    /// another. Any hop still open on `read` is closed as abandoned.
    pub fn route_read(
        &mut self,
        now: Instant,
        read: &mut Read,
        mut load: impl FnMut(MemberId) -> Load,
    ) -> Route {
        let now = self.tick(now);
        if let Some(hop) = read.open_hop() {
            hop.ended = Some((now, HopEnd::Abandoned));
        }
        let route = self.decide(now, read, &mut load);
        let member = match &route {
            Route::Replica { member, .. } => Some(*member),
            Route::Primary { .. } => Some(MemberId::PRIMARY),
            Route::Refused => None,
        };
        if let Some(member) = member {
            read.hops.push(Hop {
                member,
                started: now,
                ended: None,
            });
        }
        route
    }

    fn decide(
        &mut self,
        now: Instant,
        read: &mut Read,
        load: &mut impl FnMut(MemberId) -> Load,
    ) -> Route {
        if now >= read.deadline {
            return Route::Refused;
        }
        let primary = |why| Route::Primary {
            why,
            until: read.deadline,
        };
        if let (Some(window), Some(wrote)) = (self.config.read_your_writes, read.last_write) {
            if now < wrote + window {
                return primary(PrimaryWhy::ReadYourWrites);
            }
        }
        if self.members.len() == 1 {
            return primary(PrimaryWhy::NoReplicas);
        }
        let fallback_at = match self.config.fallback {
            Fallback::After(d) => Some(read.started + d),
            Fallback::Never => None,
        };
        if fallback_at.is_some_and(|at| now >= at) {
            return primary(PrimaryWhy::WaitedForReplicas);
        }
        let mut pick = self.pick(now, read, load);
        if pick.is_none() && read.round_start < read.hops.len() {
            // Every replica in service was tried: go round again.
            read.round_start = read.hops.len();
            pick = self.pick(now, read, load);
        }
        match (pick, self.config.fallback) {
            (Some(member), _) => {
                let until = (now + self.config.replica_wait)
                    .min(read.deadline)
                    .min(fallback_at.unwrap_or(Instant::NEVER));
                Route::Replica { member, until }
            }
            (None, Fallback::After(_)) => primary(PrimaryWhy::NoReplicaInService),
            (None, Fallback::Never) => Route::Refused,
        }
    }

    /// The replica in service, untried this round, that can serve soonest (a connection
    /// idle now, then the shortest queue, then the fewest busy), ties broken in turn from
    /// the cursor. Benches the ones whose load shows them failing.
    fn pick(
        &mut self,
        now: Instant,
        read: &Read,
        load: &mut impl FnMut(MemberId) -> Load,
    ) -> Option<MemberId> {
        let replicas = self.members.len() - 1;
        let mut best: Option<(MemberId, (bool, usize, usize))> = None;
        for k in 0..replicas {
            let id = MemberId(1 + (self.cursor - 1 + k) % replicas);
            if !self.members[id.0].state.in_service() || read.tried_this_round(id) {
                continue;
            }
            let l = load(id);
            if l.failing() {
                let error = l.connect_error.unwrap_or_default();
                self.bench_unreachable(now, id, error);
                continue;
            }
            let rank = l.rank();
            if best.as_ref().is_none_or(|(_, r)| rank < *r) {
                best = Some((id, rank));
            }
        }
        let (id, _) = best?;
        self.cursor = 1 + id.0 % replicas;
        Some(id)
    }

    fn bench_unreachable(&mut self, now: Instant, id: MemberId, error: std::sync::Arc<str>) {
        let m = &mut self.members[id.0];
        let strikes = m.strikes() + 1;
        m.bench(now, BenchReason::Unreachable { error, strikes });
        m.retry_at = Some(now + self.config.bench_for(strikes));
    }

    /// How the open hop on `read` ended. A replica that timed out with a connect error
    /// and no connection, or refused with a fatal connect error, is benched as
    /// unreachable. Returns false (and changes nothing) if `read` had no open hop.
    pub fn hop_ended(&mut self, now: Instant, read: &mut Read, end: HopEnd) -> bool {
        let now = self.tick(now);
        let Some(hop) = read.open_hop() else {
            return false;
        };
        hop.ended = Some((now, end.clone()));
        let id = hop.member;
        let Some(m) = self.members.get_mut(id.0) else {
            return true;
        };
        let replica_in_service = m.role == Role::Replica && m.state.in_service();
        let unreachable = match end {
            HopEnd::Served => {
                m.counters.reads += 1;
                if id.is_primary() {
                    m.counters.fallback_reads += 1;
                }
                None
            }
            HopEnd::TimedOut { status, error } => {
                m.counters.hops_timed_out += 1;
                error.filter(|_| status.idle + status.leased + status.checking == 0)
            }
            HopEnd::Failed { error, unreachable } => {
                m.counters.hops_failed += 1;
                unreachable.then_some(error)
            }
            HopEnd::Abandoned => None,
        };
        if let (Some(error), true) = (unreachable, replica_in_service) {
            self.bench_unreachable(now, id, error);
        }
        true
    }

    /// A write: the primary, unless a probe found it in recovery (then refused at once,
    /// saying so, instead of sending the write to a server that cannot take it).
    pub fn route_write(&mut self, now: Instant) -> Result<MemberId, Box<WriteRefused>> {
        let now = self.tick(now);
        let p = &mut self.members[0];
        if let State::Benched { since, .. } = p.state {
            p.counters.writes_refused += 1;
            return Err(Box::new(WriteRefused {
                primary: p.clone(),
                for_: now.saturating_since(since),
            }));
        }
        p.counters.writes += 1;
        Ok(MemberId::PRIMARY)
    }

    /// The next member whose probe is due by `now`, marked as being probed (until
    /// [`Router::probe_finished`]).
    pub fn poll_probe(&mut self, now: Instant) -> Option<MemberId> {
        let now = self.tick(now);
        let interval = self.config.probe_interval;
        let m = self
            .members
            .iter_mut()
            .find(|m| m.next_probe(interval).is_some_and(|at| at <= now))?;
        m.probing = true;
        m.last_probe = Some(now);
        Some(m.id)
    }

    /// When the next probe is due (`None` while every member is being probed).
    pub fn next_probe_at(&self) -> Option<Instant> {
        let interval = self.config.probe_interval;
        self.members
            .iter()
            .filter_map(|m| m.next_probe(interval))
            .min()
    }

    /// What a probe of `member` found. A replica in recovery is measured against
    /// `max_replica_lag` (its lag counted at most from the first probe that saw it
    /// behind, so a standby that has just received WAL after a quiet spell is not taken
    /// for one that stopped); one not in recovery is benched; an unreachable one is
    /// benched with backoff. A primary in recovery is benched (writes refused). A probe
    /// that succeeds returns a benched member to service. Returns false for an unknown
    /// member.
    pub fn probe_finished(&mut self, now: Instant, member: MemberId, probe: Probe) -> bool {
        let now = self.tick(now);
        let max_lag = self.config.max_replica_lag;
        let Some(m) = self.members.get_mut(member.0) else {
            return false;
        };
        m.probing = false;
        match (m.role, probe) {
            (_, Probe::Inconclusive) => {}
            (Role::Primary, Probe::Primary) => {
                m.counters.probes_ok += 1;
                m.restore();
            }
            (Role::Primary, Probe::Standby { .. }) => {
                m.counters.probes_ok += 1;
                m.bench(now, BenchReason::InRecovery);
            }
            // The primary's pool names its own connect errors; writes wait for it.
            (Role::Primary, Probe::Unreachable { .. }) => m.counters.probes_failed += 1,
            (Role::Replica, Probe::Primary) => {
                m.counters.probes_ok += 1;
                m.lag = None;
                m.behind_since = None;
                m.retry_at = None;
                m.bench(now, BenchReason::NotStandby);
            }
            (Role::Replica, Probe::Standby { behind }) => {
                m.counters.probes_ok += 1;
                let lag = match behind {
                    None => {
                        m.behind_since = None;
                        Duration::ZERO
                    }
                    Some(age) => {
                        let since = *m.behind_since.get_or_insert(now);
                        age.min(now.saturating_since(since))
                    }
                };
                m.lag = Some(lag);
                match max_lag {
                    Some(max) if lag > max => {
                        m.retry_at = None;
                        m.bench(now, BenchReason::Lagging { lag });
                    }
                    _ => m.restore(),
                }
            }
            (Role::Replica, Probe::Unreachable { error }) => {
                m.counters.probes_failed += 1;
                self.bench_unreachable(now, member, error);
            }
        }
        true
    }

    /// Why `read` got no connection: each replica's state and how this read fared on
    /// it, for the error.
    pub fn explain(&self, now: Instant, read: &Read) -> ReadReport {
        let now = self.now.max(now);
        let members = self.members[1..]
            .iter()
            .map(|m| (m.clone(), read.last_hop_on(m.id).cloned()))
            .collect();
        ReadReport {
            waited: read.waited(now),
            fallback: self.config.fallback,
            probe_in: self
                .members
                .iter()
                .map(|m| {
                    m.next_probe(self.config.probe_interval)
                        .map(|at| at.saturating_since(now))
                })
                .collect(),
            members,
        }
    }

    /// The router's own rules, for tests: roles in place, each bench reason on the role
    /// it belongs to, a retry time exactly for unreachable replicas, strikes counted,
    /// a lag bench only past `max_replica_lag`.
    pub fn check_invariants(&self) -> Result<(), String> {
        let replicas = self.members.len().saturating_sub(1);
        if replicas > 0 && !(1..=replicas).contains(&self.cursor) {
            return Err(format!("cursor {} outside 1..={replicas}", self.cursor));
        }
        for (i, m) in self.members.iter().enumerate() {
            let want = if i == 0 { Role::Primary } else { Role::Replica };
            if m.role != want || m.id != MemberId(i) {
                return Err(format!("member {i} is {:?} {:?}", m.id, m.role));
            }
            let unreachable = matches!(
                m.state,
                State::Benched {
                    reason: BenchReason::Unreachable { .. },
                    ..
                }
            );
            if unreachable != m.retry_at.is_some() {
                return Err(format!(
                    "{m}: state {:?}, retry at {:?}",
                    m.state, m.retry_at
                ));
            }
            if let State::Benched { reason, since } = &m.state {
                if *since > self.now {
                    return Err(format!("{m}: benched in the future ({since:?})"));
                }
                let ok = match reason {
                    BenchReason::Unreachable { strikes, .. } => {
                        m.role == Role::Replica && *strikes >= 1
                    }
                    BenchReason::Lagging { lag } => {
                        m.role == Role::Replica
                            && self.config.max_replica_lag.is_some_and(|max| *lag > max)
                    }
                    BenchReason::NotStandby => m.role == Role::Replica,
                    BenchReason::InRecovery => m.role == Role::Primary,
                };
                if !ok {
                    return Err(format!("{m}: {reason:?} on a {:?}", m.role));
                }
            }
        }
        Ok(())
    }
}
