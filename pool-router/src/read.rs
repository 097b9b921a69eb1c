//! One read's way through the set: where it was routed, and how each hop ended.

use std::sync::Arc;
use std::time::Duration;

use pool_core::{Instant, Status};

use crate::member::MemberId;

/// A member pool's state at a decision, as the embedder reads it (one lock per member).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub status: Status,
    /// The pool's last connect error since its last successful connect.
    pub connect_error: Option<Arc<str>>,
}

impl Load {
    /// Its connects fail and it holds no connection: nothing it could lend soon.
    pub fn failing(&self) -> bool {
        let s = &self.status;
        self.connect_error.is_some() && s.idle + s.leased + s.checking == 0
    }

    /// How soon it can serve, smaller first: a connection idle now, then the shortest
    /// queue, then the fewest connections busy.
    pub(crate) fn rank(&self) -> (bool, usize, usize) {
        let s = &self.status;
        (s.idle == 0, s.waiters, s.leased + s.checking + s.opening)
    }
}

/// Where the router sends a read now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Wait on this replica's pool until `until` (before the read's deadline), then
    /// report how it ended ([`crate::Router::hop_ended`]) and ask again.
    Replica { member: MemberId, until: Instant },
    /// Wait on the primary's pool until `until` (the read's deadline).
    Primary { why: PrimaryWhy, until: Instant },
    /// No member can serve it: build the error from [`crate::Router::explain`].
    Refused,
}

/// Why a read went to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryWhy {
    /// The set has no replicas.
    NoReplicas,
    /// Its session wrote within the read-your-writes window.
    ReadYourWrites,
    /// No replica is in service (fallback allows the primary).
    NoReplicaInService,
    /// It waited the fallback bound on replicas without a connection.
    WaitedForReplicas,
}

impl PrimaryWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            PrimaryWhy::NoReplicas => "no replicas",
            PrimaryWhy::ReadYourWrites => "read-your-writes",
            PrimaryWhy::NoReplicaInService => "no replica in service",
            PrimaryWhy::WaitedForReplicas => "waited for replicas",
        }
    }
}

/// How a hop (a wait on one member's pool) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HopEnd {
    /// It got a connection.
    Served,
    /// `until` passed without a connection: the pool's counts then, and its last
    /// connect error if its connects were failing.
    TimedOut {
        status: Status,
        error: Option<Arc<str>>,
    },
    /// The pool refused at once: a fatal connect error (`unreachable` true), a full
    /// queue or a closed pool (false).
    Failed { error: Arc<str>, unreachable: bool },
    /// The read was routed again before this hop was reported.
    Abandoned,
}

/// One wait on one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub member: MemberId,
    pub started: Instant,
    /// When and how it ended; `None` while under way.
    pub ended: Option<(Instant, HopEnd)>,
}

/// One read: its deadline, its session's last write, and its hops. The embedder keeps
/// it for the read's life and hands it to every decision about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub started: Instant,
    pub deadline: Instant,
    /// When its session last wrote (read-your-writes), if it has one.
    pub last_write: Option<Instant>,
    pub(crate) hops: Vec<Hop>,
    /// Hops before this index belong to an earlier round over the replicas (a read that
    /// may not fall back goes round again once it has tried them all).
    pub(crate) round_start: usize,
}

impl Read {
    pub fn new(started: Instant, deadline: Instant, last_write: Option<Instant>) -> Self {
        Read {
            started,
            deadline,
            last_write,
            hops: Vec::new(),
            round_start: 0,
        }
    }

    /// Every hop so far, in order.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// How long it has waited by `now`.
    pub fn waited(&self, now: Instant) -> Duration {
        now.saturating_since(self.started)
    }

    /// Whether `member` is out for this read now: tried in this round, or it refused
    /// this read at once (a full queue, a fatal error: waiting there again in the same
    /// instant would only spin).
    pub(crate) fn tried_this_round(&self, member: MemberId) -> bool {
        self.hops[self.round_start..]
            .iter()
            .any(|h| h.member == member)
            || self
                .hops
                .iter()
                .any(|h| h.member == member && matches!(h.ended, Some((_, HopEnd::Failed { .. }))))
    }

    pub(crate) fn open_hop(&mut self) -> Option<&mut Hop> {
        self.hops.last_mut().filter(|h| h.ended.is_none())
    }

    /// The last ended hop on `member`.
    pub fn last_hop_on(&self, member: MemberId) -> Option<&HopEnd> {
        self.hops
            .iter()
            .rev()
            .filter(|h| h.member == member)
            .find_map(|h| h.ended.as_ref().map(|(_, e)| e))
    }
}
