//! # A serverless fleet you can run
//!
//! The connection explosion, live: a PostgreSQL with a low `max_connections` (a throwaway
//! cluster from pg-harness) and a fleet of short-lived instances (tokio tasks started
//! together), each serving a few requests on a new connection per request, as a function
//! instance with `connection_limit=1` does. First the fleet goes straight to PostgreSQL and
//! meets "sorry, too many clients already" (SQLSTATE 53300); then the same fleet goes
//! through the `pool-proxy` binary in transaction mode, whose server connections stay at
//! the pool size however many instances connect. [`Comparison::table`] prints the two side
//! by side.
//!
//! `cargo run --release -p serverless-fleet` (see `--help`); docs/guides/serverless-and-pgbouncer.md
//! shows a run. pool-proxy's tests run a small fleet (`tests/serverless_fleet.rs`).

mod fleet;
mod report;
mod sampler;

use std::path::Path;
use std::time::Duration;

use pg_harness::{Backends, PgCluster, PgOptions, PoolProxy, PoolProxyOptions};

pub use fleet::{FleetOptions, FleetResult, MESSAGES_KEPT};
pub use report::Comparison;
pub use sampler::{Sample, Sampler};

/// The whole demonstration's shape: the database's limit, the proxy's pool, the fleet.
#[derive(Clone, Debug)]
pub struct Demo {
    /// PostgreSQL's `max_connections` (3 of them are reserved for superusers, so the
    /// fleet's user gets 3 fewer).
    pub max_connections: u32,
    /// pool-proxy's `default_pool_size`.
    pub pool_size: u32,
    pub fleet: FleetOptions,
}

impl Default for Demo {
    fn default() -> Self {
        Demo {
            max_connections: 20,
            pool_size: 10,
            fleet: FleetOptions::default(),
        }
    }
}

/// One fleet run against one target, and the server connections it caused.
#[derive(Clone, Debug)]
pub struct Run {
    pub fleet: FleetResult,
    /// PostgreSQL's client connections (pg_stat_activity) during the run.
    pub server: Sample,
}

/// Starts the cluster, runs the fleet straight at it, then through `proxy_binary`
/// (started with `demo.pool_size`), and returns both runs. Every failure to set up names
/// what could not start.
pub async fn run(proxy_binary: &Path, demo: &Demo) -> Result<Comparison, String> {
    if demo.pool_size == 0 || demo.fleet.instances == 0 || demo.fleet.requests_per_instance == 0 {
        return Err("the pool size, instances and requests must each be at least 1".into());
    }
    let cluster =
        PgCluster::start_async(PgOptions::default().max_connections(demo.max_connections))
            .await
            .map_err(|e| format!("could not start PostgreSQL: {e}"))?;
    let direct = run_against(&cluster, &cluster.config(), &demo.fleet).await?;
    // The backends of the closed connections exit before the proxied run is counted.
    cluster
        .admin()
        .wait_for_count(&Backends::AllClients, 0, Duration::from_secs(10))
        .await
        .map_err(|e| format!("after the direct run: {e}"))?;

    // Every instance must get in as a client, then wait for a server as long as a function
    // would wait for its database (query_wait_timeout). max_client_conn is twice the
    // fleet: a client that has just closed keeps its slot until the proxy has seen it go,
    // and its instance's next connection can arrive first (with 10 slots of headroom, a
    // 200-instance run saw 2 to 15 of 600 requests refused with 53300).
    let instances = u32::try_from(demo.fleet.instances).unwrap_or(u32::MAX / 2);
    // The users file holds the SCRAM verifier PostgreSQL stores, as an operator would
    // copy it from pg_authid: the proxy checks each login against it without deriving
    // one from a password first (4096 rounds of HMAC per login).
    let verifier = cluster
        .admin()
        .scram_verifier(&cluster.options().user)
        .await
        .map_err(|e| format!("reading the fleet user's verifier: {e}"))?;
    let options = PoolProxyOptions::default()
        .secret(verifier)
        .pool_size(demo.pool_size)
        .max_client_conn(instances.saturating_mul(2).max(100))
        .setting("query_wait_timeout = \"30s\"");
    let (binary, started_cluster) = (proxy_binary.to_path_buf(), cluster);
    let (proxy, cluster) = tokio::task::spawn_blocking(move || {
        let proxy = PoolProxy::start(&binary, &started_cluster, options);
        (proxy, started_cluster)
    })
    .await
    .map_err(|e| format!("starting pool-proxy: {e}"))?;
    let proxy = proxy.map_err(|e| format!("could not start pool-proxy: {e}"))?;
    let proxied = run_against(&cluster, &proxy.config(), &demo.fleet).await?;
    drop(proxy);
    Ok(Comparison {
        demo: demo.clone(),
        user_limit: cluster.user_connection_limit(),
        direct,
        proxied,
    })
}

async fn run_against(
    cluster: &PgCluster,
    target: &tokio_postgres::Config,
    fleet: &FleetOptions,
) -> Result<Run, String> {
    let admin = cluster.admin();
    let sampler = Sampler::start(&admin).await?;
    let result = fleet::run(target, fleet).await;
    let server = sampler.stop().await?;
    Ok(Run {
        fleet: result,
        server,
    })
}
