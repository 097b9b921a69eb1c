//! # pg-harness
//!
//! Test support for code that talks to PostgreSQL: the real server, started and thrown away
//! per test, no mocks. Used by the real-PostgreSQL tests in the repository's `tests/` and by
//! `pool-bench`; its own tests (`tests/harness.rs`) prove each piece works.
//!
//! * [`PgCluster`] — a throwaway PostgreSQL cluster per test (own directory, own
//!   127.0.0.1 port, low `max_connections`, scram-sha-256 auth), stopped and deleted on drop;
//!   [`PgCluster::shared_or_start`] uses `DATABASE_URL` instead when it is set. Besides
//!   restarts it can be killed hard (`kill -9`) and frozen (SIGSTOP) and thawed.
//! * [`PgAdmin`] — superuser SQL: count / terminate backends in `pg_stat_activity`; pause,
//!   resume and wait for a standby's replay.
//! * Streaming replication: a primary started with [`PgOptions::replication`] and hot
//!   standbys of it ([`PgCluster::start_standby`]: `pg_basebackup -R`, each on its own
//!   port), which [`PgCluster::promote`] turns into primaries.
//! * [`PgBouncer`] — a real PgBouncer in front of a cluster.
//! * [`PoolProxy`] — the real `pool-proxy` binary in front of a cluster, as a child process
//!   (the benchmark and the serverless fleet example).
//! * [`FaultProxy`] — an in-process TCP proxy that can blackhole, reset or refuse
//!   connections.
//!
//! PostgreSQL and PgBouncer must be installed: `scripts/install-deps.sh` (Debian:
//! `apt-get install -y postgresql pgbouncer`). If they are missing, the harness returns
//! [`HarnessError::NotInstalled`] naming the package.

mod error;
pub mod pgbouncer;
pub mod pool_proxy;
pub mod postgres;
mod process;
pub mod proxy;
mod util;

pub use error::HarnessError;
pub use pgbouncer::PgBouncer;
pub use pool_proxy::{pool_proxy_binary, PoolProxy, PoolProxyOptions};
pub use postgres::{pg_bin_dir, Backends, PgAdmin, PgCluster, PgOptions, PgTarget, PgTls};
pub use proxy::FaultProxy;
