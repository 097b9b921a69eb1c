//! `pgbench -S` straight to PostgreSQL, through PgBouncer and through pool-proxy: the same
//! cluster, the same pool size (10) and mode (transaction), the same client
//! authentication (SCRAM-SHA-256 with the password in a userlist), one cell after another
//! with the three targets back to back in each, so that drift on a shared machine hits
//! them alike.
//!
//! TPS is pgbench's own figure (with `-C` it includes the connects); latencies are the
//! per-transaction times of pgbench's `--log` (the connect is not in them: see "avg
//! connect"). CPU per transaction is read from `/proc` for pgbench, the pooler and the
//! PostgreSQL process tree; "other load" is what the rest of the machine used meanwhile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pg_harness::{pool_proxy_binary, PgBouncer, PgCluster, PgOptions, PoolProxy, PoolProxyOptions};

use crate::cpu;
use crate::stats::{self, ratio};
use crate::Opts;

const POOL: u32 = 10;
const DEFAULT_SECONDS: f64 = 15.0;
/// Seconds per cell, overriding `--seconds` and the default of 15.
const SECONDS_VAR: &str = "POOL_BENCH_PROXY_SECONDS";

/// One pgbench invocation's shape.
#[derive(Clone, Copy, Debug)]
struct Cell {
    clients: u32,
    extended: bool,
    /// `-C`: a new connection per transaction.
    connect_each: bool,
}

const CELLS: [Cell; 5] = [
    Cell {
        clients: 10,
        extended: false,
        connect_each: false,
    },
    Cell {
        clients: 10,
        extended: true,
        connect_each: false,
    },
    Cell {
        clients: 100,
        extended: false,
        connect_each: false,
    },
    Cell {
        clients: 100,
        extended: true,
        connect_each: false,
    },
    Cell {
        clients: 10,
        extended: false,
        connect_each: true,
    },
];

impl Cell {
    fn name(self) -> String {
        format!(
            "-c {} -M {}{}",
            self.clients,
            if self.extended { "extended" } else { "simple" },
            if self.connect_each { " -C" } else { "" }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Direct,
    PgBouncer,
    PoolProxy,
}

impl Target {
    const ALL: [Target; 3] = [Target::Direct, Target::PgBouncer, Target::PoolProxy];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "PostgreSQL direct",
            Target::PgBouncer => "PgBouncer 1.18",
            Target::PoolProxy => "pool-proxy",
        }
    }
}

/// What one pgbench run measured.
#[derive(Debug, Default)]
struct Outcome {
    tps: f64,
    transactions: u64,
    failed: u64,
    p50_ns: u64,
    p99_ns: u64,
    /// pgbench's "average connection time", ms.
    connect_ms: Option<f64>,
    /// CPU seconds during the run: pgbench, the pooler, PostgreSQL, everything else.
    cpu_pgbench: Option<f64>,
    cpu_pooler: Option<f64>,
    cpu_postgres: Option<f64>,
    cpu_other: Option<f64>,
    /// Wall time of the pgbench process.
    elapsed: Duration,
    /// Why the run failed (pgbench's exit status and last lines), if it did.
    error: Option<String>,
}

/// Everything the runs share: where to send pgbench, whose CPU to count.
struct Bench {
    pgbench: PathBuf,
    cluster: PgCluster,
    postmaster: Option<u32>,
    bouncer: PgBouncer,
    proxy: PoolProxy,
    scratch: PathBuf,
}

impl Bench {
    fn port(&self, target: Target) -> u16 {
        match target {
            Target::Direct => self.cluster.port(),
            Target::PgBouncer => self.bouncer.port(),
            Target::PoolProxy => self.proxy.port(),
        }
    }

    fn pooler_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::PgBouncer => Some(self.bouncer.pid()),
            Target::PoolProxy => Some(self.proxy.pid()),
        }
    }

    fn pgbench(&self, port: u16, args: &[&str]) -> Command {
        let o = self.cluster.options();
        let mut cmd = Command::new(&self.pgbench);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", &o.user])
            .args(args)
            .arg(&o.database)
            .env("PGPASSWORD", &o.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSSLMODE");
        cmd
    }

    /// One pgbench run of `cell` against `target` for `seconds`.
    fn run(&self, cell: Cell, target: Target, seconds: u64) -> Outcome {
        let logs = self.scratch.join(format!(
            "{}-{}-{}",
            target.name().replace(' ', "_"),
            cell.clients,
            u8::from(cell.extended) + 2 * u8::from(cell.connect_each)
        ));
        let _ = std::fs::remove_dir_all(&logs);
        if let Err(e) = std::fs::create_dir_all(&logs) {
            return Outcome {
                error: Some(format!("creating {}: {e}", logs.display())),
                ..Outcome::default()
            };
        }
        let prefix = logs.join("tx");
        let clients = cell.clients.to_string();
        let secs = seconds.to_string();
        let mut args = vec![
            "-n",
            "-S",
            "-M",
            if cell.extended { "extended" } else { "simple" },
            "-c",
            &clients,
            "-j",
            "2",
            "-T",
            &secs,
            "--log",
        ];
        let prefix_arg = format!("--log-prefix={}", prefix.display());
        args.push(&prefix_arg);
        if cell.connect_each {
            args.push("-C");
        }
        let mut cmd = self.pgbench(self.port(target), &args);

        let pooler = self.pooler_pid(target);
        let before = Sample::take(pooler, self.postmaster);
        let started = Instant::now();
        let output = cmd.output();
        let elapsed = started.elapsed();
        let after = Sample::take(pooler, self.postmaster);
        let mut outcome = match output {
            Err(e) => Outcome {
                error: Some(format!("running pgbench: {e}")),
                ..Outcome::default()
            },
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let mut o = parse_summary(&stdout);
                if !out.status.success() || o.transactions == 0 {
                    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                    o.error = Some(format!(
                        "pgbench exited with {}: {}",
                        out.status,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    ));
                }
                o
            }
        };
        let mut latencies = stats::histogram();
        read_latencies(&logs, &mut latencies);
        let _ = std::fs::remove_dir_all(&logs);
        if !latencies.is_empty() {
            outcome.p50_ns = latencies.value_at_quantile(0.50);
            outcome.p99_ns = latencies.value_at_quantile(0.99);
        }
        before.diff(&after, &mut outcome);
        outcome.elapsed = elapsed;
        outcome
    }
}

/// CPU counters at one instant.
struct Sample {
    pgbench: Option<u64>,
    pooler: Option<u64>,
    postgres: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl Sample {
    fn take(pooler: Option<u32>, postmaster: Option<u32>) -> Sample {
        Sample {
            pgbench: cpu::waited_children(),
            pooler: pooler.and_then(cpu::process),
            postgres: postmaster.and_then(cpu::tree),
            machine: cpu::machine(),
        }
    }

    fn diff(&self, after: &Sample, o: &mut Outcome) {
        let d = |a: Option<u64>, b: Option<u64>| Some(cpu::seconds(b?.checked_sub(a?)?));
        o.cpu_pgbench = d(self.pgbench, after.pgbench);
        o.cpu_pooler = d(self.pooler, after.pooler);
        o.cpu_postgres = d(self.postgres, after.postgres);
        if let (Some((b0, _)), Some((b1, _))) = (self.machine, after.machine) {
            let busy = cpu::seconds(b1.saturating_sub(b0));
            let ours = o.cpu_pgbench.unwrap_or(0.0)
                + o.cpu_pooler.unwrap_or(0.0)
                + o.cpu_postgres.unwrap_or(0.0);
            o.cpu_other = Some((busy - ours).max(0.0));
        }
    }
}

/// pgbench's summary: tps, transactions, failures, average connection time.
fn parse_summary(stdout: &str) -> Outcome {
    let mut o = Outcome::default();
    let number = |s: &str| {
        s.split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
    };
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("tps = ") {
            o.tps = number(rest).unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ")
        {
            o.transactions = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            o.failed = number(rest).map_or(0, |n| n as u64);
        } else if let Some(rest) = line.strip_prefix("average connection time = ") {
            o.connect_ms = number(rest);
        }
    }
    o
}

/// Every per-transaction latency (µs, the log's third field) of every log file in `dir`.
fn read_latencies(dir: &Path, into: &mut hdrhistogram::Histogram<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<u64>().ok())
            {
                stats::record(into, Duration::from_micros(us));
            }
        }
    }
}

fn seconds_per_cell(opts: Opts) -> u64 {
    let secs = std::env::var(SECONDS_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s >= 1.0)
        .or(opts.seconds)
        .unwrap_or(DEFAULT_SECONDS);
    // pgbench's -T takes whole seconds.
    secs.round().max(1.0) as u64
}

fn setup() -> Result<Bench, String> {
    let pgbench = pg_harness::pg_bin_dir()
        .map_err(|e| e.to_string())?
        .join("pgbench");
    let binary = pool_proxy_binary().map_err(|e| format!("pool-proxy: {e}"))?;
    // Direct -c 100 and both pools' servers at once, plus the harness's admin slots.
    let cluster = PgCluster::start(PgOptions::default().max_connections(150))
        .map_err(|e| format!("could not start PostgreSQL: {e}"))?;
    let o = cluster.options();
    let init = Command::new(&pgbench)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port().to_string(),
            "-U",
            &o.user,
        ])
        .args(["-i", "-q", "-s", "1", &o.database])
        .env("PGPASSWORD", &o.password)
        .output()
        .map_err(|e| format!("running pgbench -i: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let bouncer = PgBouncer::start(&cluster, "transaction", POOL)
        .map_err(|e| format!("could not start PgBouncer: {e}"))?;
    let proxy = PoolProxy::start(
        &binary,
        &cluster,
        PoolProxyOptions::default().pool_size(POOL),
    )
    .map_err(|e| format!("could not start pool-proxy ({}): {e}", binary.display()))?;
    let postmaster = cluster.postmaster_pid().ok();
    let scratch = std::env::temp_dir().join(format!("pool-bench-proxy-{}", std::process::id()));
    Ok(Bench {
        pgbench,
        cluster,
        postmaster,
        bouncer,
        proxy,
        scratch,
    })
}

/// CPU seconds per transaction, in µs.
fn per_tx(cpu: Option<f64>, o: &Outcome) -> String {
    match cpu {
        Some(s) if o.transactions > 0 => format!("{:.0}", s * 1e6 / o.transactions as f64),
        _ => "–".into(),
    }
}

pub(crate) fn run(opts: Opts) {
    let seconds = seconds_per_cell(opts);
    println!(
        "## pgbench -S: PostgreSQL direct, PgBouncer and pool-proxy (pool {POOL}, transaction mode), {seconds} s per cell\n"
    );
    let bench = match setup() {
        Ok(b) => b,
        Err(e) => {
            println!("skipped: {e}\n");
            return;
        }
    };
    // Open both pools' servers (and warm the caches) before measuring.
    for target in Target::ALL {
        let _ = bench
            .pgbench(
                bench.port(target),
                &["-n", "-S", "-c", "20", "-j", "2", "-T", "1"],
            )
            .output();
    }
    let mut rows = Vec::new();
    for cell in CELLS {
        for target in Target::ALL {
            eprintln!("proxy: {} {} ...", cell.name(), target.name());
            rows.push((cell, target, bench.run(cell, target, seconds)));
        }
    }
    let _ = std::fs::remove_dir_all(&bench.scratch);

    println!("| pgbench | target | TPS | vs direct | vs PgBouncer | latency p50 | latency p99 | avg connect | pooler CPU µs/tx | PostgreSQL CPU µs/tx | pgbench CPU µs/tx | other load (cores) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for chunk in rows.chunks(Target::ALL.len()) {
        let tps_of = |t: Target| {
            chunk
                .iter()
                .find(|(_, target, _)| *target == t)
                .map_or(0.0, |(_, _, o)| o.tps)
        };
        for (cell, target, o) in chunk {
            if let Some(e) = &o.error {
                println!(
                    "| {} | {} | failed: {e} |||||||||||",
                    cell.name(),
                    target.name()
                );
                continue;
            }
            let failed = if o.failed > 0 {
                format!(" ({} failed)", o.failed)
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {:.0}{failed} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell.name(),
                target.name(),
                o.tps,
                ratio(o.tps, tps_of(Target::Direct)),
                ratio(o.tps, tps_of(Target::PgBouncer)),
                stats::fmt_ns(o.p50_ns),
                stats::fmt_ns(o.p99_ns),
                o.connect_ms.map_or("–".into(), |ms| format!("{ms:.2} ms")),
                per_tx(o.cpu_pooler, o),
                per_tx(o.cpu_postgres, o),
                per_tx(o.cpu_pgbench, o),
                o.cpu_other.map_or("–".into(), |s| format!(
                    "{:.2}",
                    s / o.elapsed.as_secs_f64()
                )),
            );
        }
    }
    println!();
}
