//! pool-proxy: a PostgreSQL transaction pooler on the same core as the pool.
//!
//! The protocol logic is sans IO: [`protocol`] frames the wire protocol into whole
//! messages and looks inside the few that change state; [`session`] is one client
//! connection as a state machine (bytes and events in, sends and pool requests out) that
//! decides when the server it holds can go back to the pool; [`auth`] holds the users'
//! secrets and authenticates a client as a PostgreSQL server would (SCRAM-SHA-256, MD5,
//! trust), again as a state machine. No sockets, no clock, no randomness there.
//!
//! The rest does the I/O: [`server`] opens logged-in server connections, lent by one
//! pool-tokio pool per (database, user) route ([`routes`]); `client` logs clients in and
//! relays them, feeding their sessions; [`proxy`] listens, limits and shuts down;
//! [`admin`] is the `pgbouncer` console. [`config`] reads the settings, [`tls`] the
//! certificate. See `docs/proxy.md`.

pub mod admin;
pub mod auth;
pub mod cancel;
mod client;
pub mod clock;
pub mod config;
mod metrics;
pub mod pause;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod routes;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;

pub use proxy::{Proxy, ProxyHandle, StartError};
pub use session::{
    AbandonedTransactionPolicy, Action, ClientSession, Counters, Input, Instant, Misuse, PinReason,
    PoolMode, Release, ServerId, ServerStatements, SessionConfig, StatePolicy, Statement,
    FOLLOWED_PARAMETERS, SERVER_NAME_PREFIX,
};
