//! pool-proxy: a PostgreSQL transaction pooler on the same core as the pool.
//!
//! This is its foundation, sans IO: [`protocol`] frames the wire protocol into whole
//! messages and looks inside the few that change state; [`session`] is one client
//! connection as a state machine (bytes and events in, sends and pool requests out) that
//! decides when the server it holds can go back to the pool; [`auth`] holds the users'
//! secrets and authenticates a client as a PostgreSQL server would (SCRAM-SHA-256, MD5,
//! trust), again as a state machine. No sockets, no clock, no randomness: a driver (not
//! built yet) feeds them. [`server`] is the upstream side, with I/O: logged-in server
//! connections, lent by a pool-tokio pool. [`tls`] builds the rustls configuration the
//! driver will accept clients' TLS with. See `docs/proxy.md`.

pub mod auth;
pub mod config;
pub mod protocol;
pub mod server;
pub mod session;
pub mod tls;

pub use session::{
    AbandonedTransactionPolicy, Action, ClientSession, Counters, Input, Instant, Misuse, PinReason,
    PoolMode, Release, ServerId, SessionConfig, StatePolicy,
};
