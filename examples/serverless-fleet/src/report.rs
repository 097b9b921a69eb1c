//! The two runs side by side, as the example prints them.

use std::fmt::Write as _;
use std::time::Duration;

use crate::{Demo, Run};

/// The fleet straight at PostgreSQL and through pool-proxy.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub demo: Demo,
    /// Connections the fleet's user may hold (`max_connections` less the superusers').
    pub user_limit: u32,
    pub direct: Run,
    pub proxied: Run,
}

impl Comparison {
    /// A header saying what ran, then one row per figure, one column per run.
    pub fn table(&self) -> String {
        let d = &self.demo;
        let f = &d.fleet;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "serverless-fleet: {} instances x {} requests, a new connection per request \
             (connection_limit=1), {} ms of database work each;\nPostgreSQL max_connections = {} \
             ({} for the fleet's user), pool-proxy default_pool_size = {}\n",
            f.instances,
            f.requests_per_instance,
            f.work.as_millis(),
            d.max_connections,
            self.user_limit,
            d.pool_size
        );
        let proxied_title = format!("through pool-proxy (pool {})", d.pool_size);
        let rows: [(&str, String, String); 5] = [
            (
                "requests ok / failed",
                format!("{} / {}", self.direct.fleet.ok, self.direct.fleet.failed),
                format!("{} / {}", self.proxied.fleet.ok, self.proxied.fleet.failed),
            ),
            (
                "errors by SQLSTATE",
                errors(&self.direct),
                errors(&self.proxied),
            ),
            (
                "peak server connections",
                self.direct.server.peak.to_string(),
                self.proxied.server.peak.to_string(),
            ),
            (
                "latency p50 / p99 (ok requests)",
                latencies(&self.direct),
                latencies(&self.proxied),
            ),
            (
                "wall time",
                ms(self.direct.fleet.wall),
                ms(self.proxied.fleet.wall),
            ),
        ];
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows
            .iter()
            .map(|r| r.1.chars().count())
            .chain(["direct to PostgreSQL".len()])
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {proxied_title}",
            "", "direct to PostgreSQL"
        );
        for (name, direct, proxied) in rows {
            let _ = writeln!(out, "{name:w0$}  {direct:w1$}  {proxied}");
        }
        out.push('\n');
        // What each kind of error said, per run.
        for (run, label) in [
            (&self.direct, "direct"),
            (&self.proxied, "through pool-proxy"),
        ] {
            for (kind, messages) in &run.fleet.messages {
                for message in messages {
                    let _ = writeln!(out, "{label}, {kind}: {message}");
                }
            }
        }
        out
    }
}

fn errors(run: &Run) -> String {
    if run.fleet.errors.is_empty() {
        return "none".into();
    }
    run.fleet
        .errors
        .iter()
        .map(|(kind, n)| format!("{kind} x {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn latencies(run: &Run) -> String {
    match (run.fleet.latency(0.50), run.fleet.latency(0.99)) {
        (Some(p50), Some(p99)) => format!("{} / {}", ms(p50), ms(p99)),
        _ => "-".into(),
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}
