//! # pool-router
//!
//! The routing policy for a primary and its read replicas, each member served by its own
//! pool-core pool: sans-IO and deterministic like the core, so that pool-tokio runs it
//! (`pool_tokio::ReplicaSet`), pool-sim drives it on a virtual clock (the `replica-down`
//! and `replica-lag` scenarios), and unit and property tests drive it directly.
//!
//! The embedder asks, and reports what came of it:
//!
//! | call | when | answer / effect |
//! |---|---|---|
//! | [`Router::route_read`] | a read wants a connection (and after each hop) | [`Route::Replica`] until a bound, [`Route::Primary`] with why, or [`Route::Refused`] |
//! | [`Router::hop_ended`] | the wait on a member ended | counts; benches a replica whose connects fail |
//! | [`Router::route_write`] | a write wants a connection | the primary, or [`WriteRefused`] if it is in recovery |
//! | [`Router::poll_probe`] / [`Router::next_probe_at`] | the background monitor's timer | the member to probe now / when |
//! | [`Router::probe_finished`] | a probe answered | lag, role and reachability: bench or restore |
//! | [`Router::explain`] | a read is refused or timed out | [`ReadReport`]: each replica's state and how this read fared on it |
//!
//! Reads go to the replica that can serve soonest: one with a connection idle now, then
//! the shortest queue, then the fewest busy, ties taken in turn so reads spread. A read
//! waits at most `replica_wait` on one replica, then is routed again. Within a member the
//! pool's own queue is FIFO. A replica whose pool fails to connect and holds no
//! connection is benched by the very decision that sees it, and that decision picks
//! another; it is probed with backoff and returns when a probe succeeds. A replica
//! lagging past `max_replica_lag` is benched until a probe finds it caught up. Where a
//! read goes when no replica can serve is [`Fallback`]: never, or after a wait. A session
//! that wrote within `read_your_writes` reads from the primary. See
//! `docs/guides/read-replicas.md`.

mod config;
mod member;
mod probe;
mod read;
mod report;
mod router;

#[cfg(test)]
mod tests;

pub use config::{Fallback, RouterConfig, RouterConfigError};
pub use member::{BenchReason, Counters, Member, MemberId, Role, State};
pub use probe::Probe;
pub use read::{Hop, HopEnd, Load, PrimaryWhy, Read, Route};
pub use report::{ReadReport, WriteRefused};
pub use router::Router;
