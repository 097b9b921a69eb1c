//! # pool-tokio
//!
//! The tokio adapter for [`pool_core`]: it adds nothing but runtime glue over the core's
//! concurrent shell. The pool's decisions (who gets which connection, when to open, check,
//! reset or close one, every timeout) are the core's; this crate
//!
//! - spawns the open, check, reset and close work the core asks for as tokio tasks and
//!   reports the results back (an open, check or reset the core abandons is aborted);
//! - runs **one** timer task per pool that sleeps until the core's next deadline, woken
//!   early when an earlier one is armed; it holds the pool weakly and ends with it;
//! - maps tokio's clock to core time (nanoseconds since the pool was built), so
//!   `tokio::time::pause()` drives the pool in tests;
//! - runs the [`Builder`]'s hooks (`after_connect`, `before_acquire`, `after_release`,
//!   `on_create`, `on_close`) and keeps each connection's [`Extensions`];
//! - puts a primary and its read replicas, each a [`Pool`], behind one [`ReplicaSet`]
//!   (`write()`, `read()`, sessions with read-your-writes), routed by `pool-router`'s
//!   sans-IO policy and probed in the background (docs/guides/read-replicas.md);
//! - reports: [`Pool::health`] for readiness probes, OpenTelemetry's fields on its
//!   `pool.get`/`pool.connect` spans, and with the `metrics` feature OpenTelemetry's
//!   `db.client.connection.*` series through the `metrics` facade (see the crate's
//!   README).
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pool_tokio::{PgManager, Pool};
//! let (manager, options) =
//!     PgManager::from_url("postgresql://app:secret@localhost:5432/app?connection_limit=10")?;
//! let pool = Pool::builder(manager).options(options).build()?;
//! let client = pool.get().await?;
//! client.simple_query("SELECT 1").await?;
//! # Ok(()) }
//! ```

mod builder;
mod error;
mod hooks;
mod manager;
mod metrics;
mod pool;
#[cfg(feature = "postgres")]
pub mod postgres;
mod replicas;
mod runtime;

pub use builder::{Builder, DEFAULT_NAME};
pub use error::{BuildError, PoolError};
pub use hooks::{BoxFuture, Extensions};
pub use manager::{Manager, Target};
pub use metrics::Metrics;
pub use pool::{Health, Pool, PooledConnection};
pub use pool_core::{
    CloseReason, Config, ConfigError, ConfigOverrides, ConnId, ConnectError, ErrorClass, Histogram,
    HumanDuration, IdleOrder, Stats, Status, Verdict,
};
pub use pool_router::{
    BenchReason, Counters as ReplicaCounters, Fallback, Member, MemberId, Probe, ReadReport, Role,
    RouterConfig, State as MemberState,
};
#[cfg(feature = "postgres")]
pub use replicas::ReplicaUrlError;
pub use replicas::{
    MemberStatus, ReplicaError, ReplicaProbe, ReplicaSet, ReplicaSetBuilder, Session, SetBuildError,
};
pub use runtime::LeakReport;

#[cfg(feature = "postgres")]
pub use postgres::{
    PgConnection, PgManager, ResetMode, SslMode, TlsSettings, TransactionStatus, UrlError,
};
