//! `SELECT 1` against the real PostgreSQL the test harness starts: 64 tasks through a
//! pool of 10, against deadpool-postgres, bb8-postgres, the floor (10 tasks each owning a
//! connection, no pool) and a new connection per query.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_harness::{PgCluster, PgOptions};
use pool_tokio::{PgManager, ResetMode};
use tokio_postgres::{Client, Config, NoTls};

use crate::noop::runtime;
use crate::stats::{self, ratio, Run};
use crate::Opts;

const TASKS: usize = 64;
const SIZE: usize = 10;
const WARMUP: Duration = Duration::from_millis(500);

/// One query the way a contender runs it; returns the time spent waiting for a client.
trait Querier: Clone + Send + Sync + 'static {
    fn query(&self) -> impl Future<Output = Duration> + Send;
}

async fn select_one(client: &Client) {
    client.simple_query("SELECT 1").await.expect("SELECT 1");
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[derive(Clone)]
struct Ours(pool_tokio::Pool<PgManager>, bool);

impl Querier for Ours {
    async fn query(&self) -> Duration {
        let t0 = Instant::now();
        let client = self.0.get().await.expect("pool-tokio get");
        let waited = t0.elapsed();
        if self.1 {
            // Extended protocol with a string: tokio-postgres prepares a statement and
            // queues its Close when it is dropped.
            client.query("SELECT 1", &[]).await.expect("query SELECT 1");
        } else {
            select_one(&client).await;
        }
        waited
    }
}

#[derive(Clone)]
struct Deadpool(deadpool_postgres::Pool);

impl Querier for Deadpool {
    async fn query(&self) -> Duration {
        let t0 = Instant::now();
        let client = self.0.get().await.expect("deadpool get");
        let waited = t0.elapsed();
        select_one(&client).await;
        waited
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>);

impl Querier for Bb8 {
    async fn query(&self) -> Duration {
        let t0 = Instant::now();
        let client = self.0.get().await.expect("bb8 get");
        let waited = t0.elapsed();
        select_one(&client).await;
        waited
    }
}

/// A new connection per query: the wait is the connect.
#[derive(Clone)]
struct Fresh(Arc<Config>);

impl Querier for Fresh {
    async fn query(&self) -> Duration {
        let t0 = Instant::now();
        let client = connect(&self.0).await;
        let waited = t0.elapsed();
        select_one(&client).await;
        waited
    }
}

/// The floor: each task owns its connection.
#[derive(Clone)]
struct Owned(Arc<Client>);

impl Querier for Owned {
    async fn query(&self) -> Duration {
        select_one(&self.0).await;
        Duration::ZERO
    }
}

/// Run one querier per task for `measure` after a warm-up.
async fn drive<Q: Querier>(queriers: Vec<Q>, measure: Duration) -> Run {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = queriers
        .into_iter()
        .map(|q| {
            let measuring = measuring.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut waits = stats::histogram();
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let waited = q.query().await;
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        stats::record(&mut waits, waited);
                        ops += 1;
                    }
                }
                (ops, waits)
            })
        })
        .collect();
    stats::measure_window(WARMUP, measure, &measuring, &stop, handles).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `ResetMode::Skip`: returned as is, like the others.
    Ours,
    /// The default `ResetMode::Auto`: ROLLBACK only when the server said "in a
    /// transaction" (never, for `SELECT 1`).
    OursAuto,
    /// `ResetMode::Rollback` (the old default): a ROLLBACK round trip per return.
    OursRollback,
    /// `Client::query("SELECT 1", &[])` (prepare, execute, queued Close) with Skip...
    OursQuerySkip,
    /// ... and with the default Auto.
    OursQueryAuto,
    Deadpool,
    Bb8,
    Floor,
    Fresh,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Ours,
        Kind::OursAuto,
        Kind::OursRollback,
        Kind::OursQuerySkip,
        Kind::OursQueryAuto,
        Kind::Deadpool,
        Kind::Bb8,
        Kind::Floor,
        Kind::Fresh,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Ours => "pool-tokio (ResetMode::Skip)",
            Kind::OursAuto => "pool-tokio (default ResetMode::Auto)",
            Kind::OursRollback => "pool-tokio (ResetMode::Rollback, the old default)",
            Kind::OursQuerySkip => "pool-tokio (Skip), query(&str) instead",
            Kind::OursQueryAuto => "pool-tokio (default Auto), query(&str) instead",
            Kind::Deadpool => "deadpool-postgres (RecyclingMethod::Fast)",
            Kind::Bb8 => "bb8-postgres (defaults: test_on_check_out)",
            Kind::Floor => "floor: 10 tasks each owning a connection",
            Kind::Fresh => "a new connection per query (64 tasks)",
        }
    }
}

fn one(kind: Kind, config: &Config, measure: Duration) -> Run {
    let rt = runtime();
    let config = config.clone();
    rt.block_on(async move {
        match kind {
            Kind::Ours
            | Kind::OursAuto
            | Kind::OursRollback
            | Kind::OursQuerySkip
            | Kind::OursQueryAuto => {
                let mode = match kind {
                    Kind::Ours | Kind::OursQuerySkip => ResetMode::Skip,
                    Kind::OursAuto | Kind::OursQueryAuto => ResetMode::Auto,
                    _ => ResetMode::Rollback,
                };
                let extended = matches!(kind, Kind::OursQuerySkip | Kind::OursQueryAuto);
                let pool = pool_tokio::Pool::builder(PgManager::new(config).reset_mode(mode))
                    .max_size(SIZE)
                    .build()
                    .expect("build pool-tokio");
                let run = drive(vec![Ours(pool.clone(), extended); TASKS], measure).await;
                pool.close(Duration::from_secs(5)).await;
                let stats = pool.metrics().stats;
                eprintln!(
                    "{}: {} resets over {} returns",
                    kind.name(),
                    stats.resets_started,
                    stats.grants
                );
                run
            }
            Kind::Deadpool => {
                let manager = deadpool_postgres::Manager::from_config(
                    config,
                    NoTls,
                    deadpool_postgres::ManagerConfig {
                        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                    },
                );
                let pool = deadpool_postgres::Pool::builder(manager)
                    .max_size(SIZE)
                    .build()
                    .expect("build deadpool-postgres");
                let run = drive(vec![Deadpool(pool.clone()); TASKS], measure).await;
                pool.close();
                run
            }
            Kind::Bb8 => {
                let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
                let pool = bb8::Pool::builder()
                    .max_size(SIZE as u32)
                    .build(manager)
                    .await
                    .expect("build bb8");
                drive(vec![Bb8(pool); TASKS], measure).await
            }
            Kind::Floor => {
                let mut owned = Vec::with_capacity(SIZE);
                for _ in 0..SIZE {
                    owned.push(Owned(Arc::new(connect(&config).await)));
                }
                drive(owned, measure).await
            }
            Kind::Fresh => drive(vec![Fresh(Arc::new(config)); TASKS], measure).await,
        }
    })
}

pub(crate) fn run(opts: Opts) {
    println!("## PostgreSQL: SELECT 1, {TASKS} tasks, pool of {SIZE}\n");
    let cluster = match PgCluster::start(PgOptions::default().max_connections(100)) {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: could not start PostgreSQL: {e}\n");
            return;
        }
    };
    let config = cluster.config();
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for _ in 0..opts.rounds {
        for kind in Kind::ALL {
            runs.entry(kind.name())
                .or_default()
                .push(one(kind, &config, opts.duration()));
        }
    }
    let floor = stats::median(&runs[Kind::Floor.name()]);
    let dp = stats::median(&runs[Kind::Deadpool.name()]);
    println!("| contender | queries/s | rounds (min–max) | p50 wait | p99 wait | max wait | vs floor | vs deadpool-postgres |");
    println!("|---|---|---|---|---|---|---|---|");
    for kind in Kind::ALL {
        stats::print_row(kind.name(), &runs[kind.name()], |m| {
            [
                ratio(m.per_sec, floor.per_sec),
                ratio(m.per_sec, dp.per_sec),
            ]
        });
    }
    println!();
}
