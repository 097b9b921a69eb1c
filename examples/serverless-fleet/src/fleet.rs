//! The fleet: instances that start together, each serving a few requests one after
//! another, each request on a connection of its own (opened, used for one query, closed),
//! as a function instance with `connection_limit=1` and no warm pool does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::{Config, NoTls};

/// The fleet's shape.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Instances started at once.
    pub instances: usize,
    /// Requests each instance serves, one after another.
    pub requests_per_instance: usize,
    /// Database time per request (the query sleeps this long on the server).
    pub work: Duration,
    /// How long an instance waits for its connection before the request fails.
    pub connect_timeout: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            instances: 200,
            requests_per_instance: 3,
            work: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Different messages kept per kind of error (PostgreSQL words 53300 two ways, for
/// instance: "too many clients already" and "remaining connection slots are reserved").
pub const MESSAGES_KEPT: usize = 3;

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    Ok(Duration),
    /// The SQLSTATE (or for an error without one what kind of error it was), and the
    /// message.
    Failed(String, String),
}

/// What the fleet saw, counted over every request.
#[derive(Clone, Debug, Default)]
pub struct FleetResult {
    pub ok: usize,
    pub failed: usize,
    /// Failed requests by SQLSTATE (e.g. `53300`), or by kind for errors without one.
    pub errors: BTreeMap<String, usize>,
    /// The different messages seen for each of those (at most [`MESSAGES_KEPT`] each).
    pub messages: BTreeMap<String, BTreeSet<String>>,
    /// Latency of the successful requests (connect + query), sorted.
    pub latencies: Vec<Duration>,
    /// From the first instance's start to the last request's end.
    pub wall: Duration,
}

impl FleetResult {
    /// The `q` quantile (0..=1) of successful requests' latency.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (q * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies.get(rank).copied()
    }

    /// How many requests failed with this SQLSTATE.
    pub fn errors_with(&self, sqlstate: &str) -> usize {
        self.errors.get(sqlstate).copied().unwrap_or(0)
    }
}

/// Runs the fleet against `target` (PostgreSQL itself or a pooler in front of it) and
/// waits for every instance to finish.
pub async fn run(target: &Config, opts: &FleetOptions) -> FleetResult {
    let mut config = target.clone();
    config
        .connect_timeout(opts.connect_timeout)
        .application_name("serverless-fleet");
    let config = Arc::new(config);
    let started = Instant::now();
    let instances: Vec<_> = (0..opts.instances)
        .map(|instance| {
            let config = Arc::clone(&config);
            let (requests, work) = (opts.requests_per_instance, opts.work);
            tokio::spawn(async move {
                let mut outcomes = Vec::with_capacity(requests);
                for request in 0..requests {
                    let id = i32::try_from(instance * requests + request).unwrap_or(i32::MAX);
                    outcomes.push(request_once(&config, id, work).await);
                }
                outcomes
            })
        })
        .collect();
    let mut result = FleetResult::default();
    for instance in instances {
        let outcomes = instance
            .await
            .unwrap_or_else(|e| vec![Outcome::Failed("instance task".into(), e.to_string())]);
        for outcome in outcomes {
            match outcome {
                Outcome::Ok(latency) => {
                    result.ok += 1;
                    result.latencies.push(latency);
                }
                Outcome::Failed(kind, message) => {
                    result.failed += 1;
                    *result.errors.entry(kind.clone()).or_default() += 1;
                    let seen = result.messages.entry(kind).or_default();
                    if seen.len() < MESSAGES_KEPT {
                        seen.insert(message);
                    }
                }
            }
        }
    }
    result.wall = started.elapsed();
    result.latencies.sort();
    result
}

/// One request: a new connection, one parameterised query (the unnamed statement, as a
/// transaction pooler needs), the connection closed.
async fn request_once(config: &Config, id: i32, work: Duration) -> Outcome {
    let started = Instant::now();
    let (client, connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return failed(&e),
    };
    let driver = tokio::spawn(connection);
    let answer = client
        .query_typed(
            "SELECT $1::int4 + 1 FROM pg_sleep($2)",
            &[(&id, Type::INT4), (&work.as_secs_f64(), Type::FLOAT8)],
        )
        .await;
    let latency = started.elapsed();
    // Closing: dropping the client sends Terminate; wait for the socket to be done so an
    // instance's next request never overlaps its last connection.
    drop(client);
    let _ = driver.await;
    match answer {
        Ok(rows) if rows.first().and_then(|r| r.try_get::<_, i32>(0).ok()) == Some(id + 1) => {
            Outcome::Ok(latency)
        }
        Ok(_) => Outcome::Failed("wrong answer".into(), format!("not {}", id + 1)),
        Err(e) => failed(&e),
    }
}

/// An error's SQLSTATE, or what kind of error it is when the server sent none, and its
/// message.
fn failed(e: &tokio_postgres::Error) -> Outcome {
    if let Some(db) = e.as_db_error() {
        return Outcome::Failed(db.code().code().to_owned(), db.message().to_owned());
    }
    let text = e.to_string();
    let kind = if text.contains("timeout") || text.contains("timed out") {
        "connect timeout"
    } else if e.is_closed() {
        "connection closed"
    } else {
        "I/O error"
    };
    Outcome::Failed(kind.into(), text)
}
