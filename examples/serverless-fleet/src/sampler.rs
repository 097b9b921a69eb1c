//! PostgreSQL's own count of client connections, sampled from `pg_stat_activity` while the
//! fleet runs: the figure `max_connections` limits, whoever opened them.

use std::time::Duration;

use pg_harness::PgAdmin;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const EVERY: Duration = Duration::from_millis(5);

/// Client backends other than the sampler's own and the harness's admin connections.
const COUNT: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
     AND application_name IS DISTINCT FROM $1";

/// A running sampler; [`Sampler::stop`] returns the peak.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<Sample, String>>,
}

/// What the sampler saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// The most client connections seen at once.
    pub peak: i64,
    /// How many times it looked.
    pub samples: u64,
}

impl Sampler {
    /// Starts sampling every 5 ms over one superuser connection (a reserved slot, so it
    /// keeps working while the application's slots are exhausted).
    pub async fn start(admin: &PgAdmin) -> Result<Sampler, String> {
        let client = admin
            .client()
            .await
            .map_err(|e| format!("the sampler cannot connect: {e}"))?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut seen = Sample::default();
            loop {
                let row = client
                    .query_one(COUNT, &[&pg_harness::postgres::ADMIN_APPLICATION_NAME])
                    .await
                    .map_err(|e| format!("sampling pg_stat_activity: {e}"))?;
                let n: i64 = row.get(0);
                seen.peak = seen.peak.max(n);
                seen.samples += 1;
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = stopped.changed() => return Ok(seen),
                }
            }
        });
        Ok(Sampler { stop, task })
    }

    /// Stops sampling and returns what it saw.
    pub async fn stop(self) -> Result<Sample, String> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| format!("the sampler task failed: {e}"))?
    }
}
