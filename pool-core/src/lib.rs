//! # pool-core
//!
//! A database connection pool as a sans-IO state machine ([`Pool`]), plus the small
//! runtime-agnostic concurrent shell around it ([`shell`]).
//!
//! The state machine never touches a socket, a clock, a thread or a runtime: inputs come
//! in as method calls carrying `now`, effects come out as [`Action`]s, and
//! [`Pool::poll_timeout`] says when to call [`Pool::handle_timeout`]. That is what lets
//! proptest, cargo-fuzz, loom, shuttle and the simulator drive the same code the tokio
//! adapter runs in production. See `docs/architecture.md`.

mod action;
mod close_reason;
mod config;
#[cfg(feature = "arbitrary")]
pub mod fuzz;
mod id;
mod id_map;
mod input;
mod pool;
mod rng;
pub mod shell;
mod status;
mod time;

pub use action::{Action, Grant, Rejection, TimeoutReport};
pub use close_reason::CloseReason;
pub use config::{Config, ConfigError, ConfigOverrides, IdleOrder, MAX_SIZE_LIMIT};
pub use id::{ConnId, LeaseId, WaiterId};
pub use input::{ConnectError, ErrorClass, InputError, Refused, Verdict};
pub use pool::{Acquired, InvariantViolation, Judge, Pool, Timer};
pub use status::{Histogram, Stats, Status};
pub use time::{HumanDuration, Instant};
