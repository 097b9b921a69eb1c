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
//!
//! Issue 13's rows (shorter, `--extra-seconds`): `-c 500`, `-M prepared` (aborted clients
//! are a row, not a failure: PgBouncer 1.18 loses prepared statements between
//! transactions), `-C -c 50`, the login cap (`-C -c 1` through pool-proxy's warm pool), and
//! the memory per idle client ([`crate::idle_clients`]); then a table of the issue's
//! targets ([`targets`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pg_harness::{pool_proxy_binary, PgBouncer, PgCluster, PgOptions, PoolProxy, PoolProxyOptions};

use crate::idle_clients::{self, IdleMemory};
use crate::stats::{self, ratio};
use crate::{cpu, nofile, Opts};

mod targets;

const POOL: u32 = 10;
const DEFAULT_SECONDS: f64 = 15.0;
/// Seconds per cell, overriding `--seconds` and the default of 15.
const SECONDS_VAR: &str = "POOL_BENCH_PROXY_SECONDS";
/// pool-proxy's `worker_threads` in the benchmark (PgBouncer's one thread).
const PROXY_WORKER_THREADS: usize = 1;

/// Seconds per cell of issue 13's extra rows, unless `--extra-seconds` says otherwise.
const DEFAULT_EXTRA_SECONDS: f64 = 10.0;
/// Idle clients held open against each pooler, unless `--idle-clients` says otherwise.
const DEFAULT_IDLE_CLIENTS: usize = 5_000;
/// The most clients of any cell: direct connections need this many PostgreSQL slots.
const MAX_CELL_CLIENTS: u32 = 500;
/// Descriptors beyond the idle clients': pgbench's, the pools', the harness's.
const SPARE_FILES: u64 = 1_024;

/// pgbench's `-M`: how each statement is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Simple,
    Extended,
    /// Named prepared statements, parsed once per connection: a transaction pooler must
    /// keep them (or pin the client) or the client aborts.
    Prepared,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
            Mode::Prepared => "prepared",
        }
    }
}

/// One pgbench invocation's shape.
#[derive(Clone, Copy, Debug)]
struct Cell {
    clients: u32,
    mode: Mode,
    /// `-C`: a new connection per transaction.
    connect_each: bool,
    /// Issue 13's rows: run for `--extra-seconds`.
    extra: bool,
    /// The login cap: `-C -c 1` through pool-proxy only, whose warm pool answers every
    /// login without a server connect, so the rate is bounded by the client's own side of
    /// the login (its SCRAM proof) and the round trips.
    login_cap: bool,
}

const fn cell(clients: u32, mode: Mode, connect_each: bool, extra: bool) -> Cell {
    Cell {
        clients,
        mode,
        connect_each,
        extra,
        login_cap: false,
    }
}

const CELLS: [Cell; 9] = [
    cell(10, Mode::Simple, false, false),
    cell(10, Mode::Extended, false, false),
    cell(10, Mode::Prepared, false, true),
    cell(100, Mode::Simple, false, false),
    cell(100, Mode::Extended, false, false),
    cell(MAX_CELL_CLIENTS, Mode::Simple, false, true),
    cell(10, Mode::Simple, true, false),
    cell(50, Mode::Simple, true, true),
    Cell {
        login_cap: true,
        ..cell(1, Mode::Simple, true, true)
    },
];

impl Cell {
    fn name(self) -> String {
        format!(
            "-c {} -M {}{}{}",
            self.clients,
            self.mode.arg(),
            if self.connect_each { " -C" } else { "" },
            if self.login_cap { " (login cap)" } else { "" }
        )
    }

    /// Seconds added to `-T` for the clients' logins, which pgbench's duration includes
    /// (without `-C`, every client logs in before its first transaction): at `-c 500`, one
    /// per 25 clients, the login rate of a busy day here (each login is a SCRAM proof of
    /// ~3 ms of pgbench CPU, and a fork or a pooler's verification); smaller cells log in
    /// within a second or two of their 15.
    fn login_allowance(self) -> u64 {
        if self.connect_each || self.clients <= 100 {
            0
        } else {
            u64::from(self.clients / 25)
        }
    }

    fn targets(self) -> &'static [Target] {
        if self.login_cap {
            &[Target::PoolProxy]
        } else {
            &Target::ALL
        }
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
    /// Clients pgbench aborted ("client N script 0 aborted in command ..."): it carries on
    /// with the others and reports their transactions.
    aborted: u32,
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
    /// Why the run failed (pgbench's exit status and last lines), or why it did not run.
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
    /// Why direct connections cannot run the largest cell, if they cannot (PostgreSQL did
    /// not start with enough `max_connections`).
    direct_limit: Option<(u32, String)>,
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

    /// One pgbench run of `cell` (the `index`th) against `target` for `seconds`.
    fn run(&self, index: usize, cell: Cell, target: Target, seconds: u64) -> Outcome {
        if let (Target::Direct, Some((limit, why))) = (target, &self.direct_limit) {
            if cell.clients > *limit {
                return Outcome {
                    error: Some(format!("n/a: {why}")),
                    ..Outcome::default()
                };
            }
        }
        let logs = self
            .scratch
            .join(format!("{}-{index}", target.name().replace(' ', "_")));
        let _ = std::fs::remove_dir_all(&logs);
        if let Err(e) = std::fs::create_dir_all(&logs) {
            return Outcome {
                error: Some(format!("creating {}: {e}", logs.display())),
                ..Outcome::default()
            };
        }
        let prefix = logs.join("tx");
        let clients = cell.clients.to_string();
        let jobs = cell.clients.min(2).to_string();
        let secs = seconds.to_string();
        let mut args = vec![
            "-n",
            "-S",
            "-M",
            cell.mode.arg(),
            "-c",
            &clients,
            "-j",
            &jobs,
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
                o.aborted = count_aborted(&stderr);
                let aborts_explain = o.aborted > 0 && stdout.contains("tps = ");
                if (!out.status.success() || o.transactions == 0) && !aborts_explain {
                    // An empty stderr: the summary says what happened (e.g. no transactions).
                    let said = if stderr.trim().is_empty() {
                        &stdout
                    } else {
                        &stderr
                    };
                    let tail: Vec<&str> = said.lines().rev().take(3).collect();
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

/// Clients pgbench aborted, from its stderr ("pgbench: error: client 4 script 0 aborted in
/// command 1 query 0: ERROR: ...", one line per client).
fn count_aborted(stderr: &str) -> u32 {
    let n = stderr
        .lines()
        .filter(|l| l.contains(" aborted in command "))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
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
    whole_seconds(secs)
}

/// pgbench's -T takes whole seconds.
fn whole_seconds(secs: f64) -> u64 {
    secs.round().max(1.0) as u64
}

/// PostgreSQL slots for direct `-c 500`, both pools' servers and the harness's own
/// connections, on top of the superuser reserve.
fn max_connections() -> u32 {
    MAX_CELL_CLIENTS + 2 * POOL + 20
}

/// Starts PostgreSQL with room for direct `-c 500`, or, if it will not start so, with 150
/// connections and the reason direct `-c 500` cannot run.
fn start_cluster() -> Result<(PgCluster, Option<(u32, String)>), String> {
    let wanted = max_connections();
    match PgCluster::start(PgOptions::default().max_connections(wanted)) {
        Ok(c) => Ok((c, None)),
        Err(e) => {
            let fallback = 150;
            let cluster = PgCluster::start(PgOptions::default().max_connections(fallback))
                .map_err(|e| format!("could not start PostgreSQL: {e}"))?;
            let direct = fallback - 2 * POOL - 20;
            Ok((
                cluster,
                Some((
                    direct,
                    format!(
                        "PostgreSQL did not start with max_connections {wanted} ({e}); \
                         with {fallback}, direct connections stop at -c {direct}"
                    ),
                )),
            ))
        }
    }
}

/// Raises PgBouncer's `max_client_conn` (the harness writes 1000) through its admin
/// console, for the idle clients.
fn raise_bouncer_clients(bouncer: &PgBouncer, n: u32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))?;
    rt.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&bouncer.admin_url(), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("PgBouncer's admin console: {e}"))?;
        tokio::spawn(connection);
        // The admin console's SET takes a word or a quoted string, not a bare number.
        client
            .simple_query(&format!("SET max_client_conn = '{n}'"))
            .await
            .map_err(|e| format!("PgBouncer: SET max_client_conn = {n}: {e}"))?;
        Ok(())
    })
}

fn setup(max_client_conn: u32) -> Result<Bench, String> {
    let pgbench = pg_harness::pg_bin_dir()
        .map_err(|e| e.to_string())?
        .join("pgbench");
    let binary = pool_proxy_binary().map_err(|e| format!("pool-proxy: {e}"))?;
    let (cluster, direct_limit) = start_cluster()?;
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
    raise_bouncer_clients(&bouncer, max_client_conn)?;
    let proxy = PoolProxy::start(
        &binary,
        &cluster,
        PoolProxyOptions::default()
            .pool_size(POOL)
            .max_client_conn(max_client_conn)
            // One thread, as PgBouncer runs: on 2 cores shared with PostgreSQL and pgbench,
            // a second worker only adds cross-thread wake-ups (docs/performance.md).
            .setting(format!("worker_threads = {PROXY_WORKER_THREADS}")),
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
        direct_limit,
    })
}

/// CPU seconds per transaction, in µs.
fn per_tx(cpu: Option<f64>, o: &Outcome) -> String {
    match cpu {
        Some(s) if o.transactions > 0 => format!("{:.0}", s * 1e6 / o.transactions as f64),
        _ => "–".into(),
    }
}

/// One cell's run against one target.
struct Row {
    cell: Cell,
    target: Target,
    outcome: Outcome,
}

/// The figure of `target` in the same cell as `row`, if that target ran.
fn peer<'a>(rows: &'a [Row], row: &Row, target: Target) -> Option<&'a Outcome> {
    rows.iter()
        .find(|r| r.cell.name() == row.cell.name() && r.target == target)
        .map(|r| &r.outcome)
        .filter(|o| o.error.is_none())
}

pub(crate) fn run(opts: Opts) {
    let seconds = seconds_per_cell(opts);
    let extra_seconds = whole_seconds(opts.extra_seconds.unwrap_or(DEFAULT_EXTRA_SECONDS));
    let idle = opts.idle_clients.unwrap_or(DEFAULT_IDLE_CLIENTS);
    println!(
        "## pgbench -S: PostgreSQL direct, PgBouncer and pool-proxy (pool {POOL}, transaction mode), {seconds} s per cell ({extra_seconds} s for issue 13's rows)\n"
    );
    let files = nofile::raise_to(idle as u64 + SPARE_FILES);
    // The idle clients' sockets are ours; the poolers and pgbench inherit the limit.
    let idle = idle.min(usize::try_from(files.saturating_sub(SPARE_FILES)).unwrap_or(usize::MAX));
    let max_client_conn = u32::try_from(idle)
        .unwrap_or(u32::MAX)
        .saturating_add(1_000);
    let bench = match setup(max_client_conn) {
        Ok(b) => b,
        Err(e) => {
            println!("skipped: {e}\n");
            return;
        }
    };
    println!("load before: {}\n", uptime());
    // Open both pools' servers (and warm the caches) before measuring.
    for target in Target::ALL {
        let _ = bench
            .pgbench(
                bench.port(target),
                &["-n", "-S", "-c", "20", "-j", "2", "-T", "1"],
            )
            .output();
    }
    // Idle clients first, while the poolers' heaps hold nothing freed by earlier cells.
    let idle_rows = measure_idle(&bench, idle);
    let mut rows = Vec::new();
    for (index, cell) in CELLS.into_iter().enumerate() {
        let secs = if cell.extra { extra_seconds } else { seconds } + cell.login_allowance();
        for &target in cell.targets() {
            eprintln!("proxy: {} {} ...", cell.name(), target.name());
            rows.push(Row {
                cell,
                target,
                outcome: bench.run(index, cell, target, secs),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&bench.scratch);

    print_rows(&rows);
    print_idle(&idle_rows);
    targets::print(&rows, &idle_rows);
    println!("load after: {}\n", uptime());
}

/// `/proc/loadavg`'s three load averages: how busy the shared machine was.
fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .map_or_else(|| "unknown".into(), |l| format!("load average {l}"))
}

fn print_rows(rows: &[Row]) {
    println!("| pgbench | target | TPS | vs direct | vs PgBouncer | latency p50 | latency p99 | p99 vs PgBouncer | avg connect | pooler CPU µs/tx | pooler CPU vs PgBouncer | PostgreSQL CPU µs/tx | pgbench CPU µs/tx | other load (cores) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (cell, o) = (row.cell, &row.outcome);
        if let Some(e) = &o.error {
            println!(
                "| {} | {} | {e} ||||||||||||",
                cell.name(),
                row.target.name()
            );
            continue;
        }
        let mut notes = Vec::new();
        if o.failed > 0 {
            notes.push(format!("{} failed", o.failed));
        }
        if o.aborted > 0 {
            notes.push(format!("{} of {} clients aborted", o.aborted, cell.clients));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let direct = peer(rows, row, Target::Direct);
        let bouncer = peer(rows, row, Target::PgBouncer);
        let vs = |f: fn(&Outcome) -> f64, peer: Option<&Outcome>| {
            peer.map_or("–".into(), |p| ratio(f(o), f(p)))
        };
        let pooler_cpu = |o: &Outcome| {
            o.cpu_pooler
                .filter(|_| o.transactions > 0)
                .map_or(0.0, |s| s / o.transactions as f64)
        };
        println!(
            "| {} | {} | {:.0}{notes} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.name(),
            row.target.name(),
            o.tps,
            vs(|o| o.tps, direct),
            vs(|o| o.tps, bouncer),
            stats::fmt_ns(o.p50_ns),
            stats::fmt_ns(o.p99_ns),
            vs(|o| o.p99_ns as f64, bouncer),
            o.connect_ms.map_or("–".into(), |ms| format!("{ms:.2} ms")),
            per_tx(o.cpu_pooler, o),
            if row.target == Target::Direct {
                "–".into()
            } else {
                vs(pooler_cpu, bouncer)
            },
            per_tx(o.cpu_postgres, o),
            per_tx(o.cpu_pgbench, o),
            o.cpu_other.map_or("–".into(), |s| format!(
                "{:.2}",
                s / o.elapsed.as_secs_f64()
            )),
        );
    }
    println!();
}

/// The idle-client memory of each pooler, PgBouncer first.
fn measure_idle(bench: &Bench, n: usize) -> Vec<(Target, Result<IdleMemory, String>)> {
    let o = bench.cluster.options();
    [Target::PgBouncer, Target::PoolProxy]
        .into_iter()
        .map(|target| {
            eprintln!("proxy: {n} idle clients, {} ...", target.name());
            let mut config = tokio_postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(bench.port(target))
                .user(&o.user)
                .password(&o.password)
                .dbname(&o.database)
                .connect_timeout(Duration::from_secs(30));
            let pid = bench.pooler_pid(target).unwrap_or_default();
            (target, idle_clients::measure(pid, &config, n))
        })
        .collect()
}

fn print_idle(rows: &[(Target, Result<IdleMemory, String>)]) {
    println!("| idle clients | pooler | RSS before | RSS with the clients | per idle client | vs PgBouncer | login time |");
    println!("|---|---|---|---|---|---|---|");
    let bouncer = rows
        .iter()
        .find(|(t, _)| *t == Target::PgBouncer)
        .and_then(|(_, r)| r.as_ref().ok())
        .and_then(IdleMemory::per_client);
    for (target, r) in rows {
        match r {
            Err(e) => println!("| – | {} | failed: {e} |||||", target.name()),
            Ok(m) => {
                let per = m.per_client();
                let connected = if m.connected == m.wanted {
                    m.connected.to_string()
                } else {
                    format!(
                        "{} of {} ({})",
                        m.connected,
                        m.wanted,
                        m.first_error.as_deref().unwrap_or("no error")
                    )
                };
                println!(
                    "| {connected} | {} | {:.1} MiB | {:.1} MiB | {} | {} | {:.1} s |",
                    target.name(),
                    m.rss_before as f64 / 1048576.0,
                    m.rss_after as f64 / 1048576.0,
                    per.map_or("–".into(), |b| format!("{:.2} KiB", b / 1024.0)),
                    match (per, bouncer) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => "–".into(),
                    },
                    m.login_time.as_secs_f64(),
                );
            }
        }
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench 15's output of `-M prepared -c 10` through PgBouncer 1.18 (transaction
    /// mode), trimmed: four of its clients aborted, the others carried on.
    const PREPARED_STDOUT: &str = "pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
query mode: prepared
number of clients: 10
number of transactions actually processed: 42726
number of failed transactions: 0 (0.000%)
latency average = 0.703 ms
initial connection time = 3.938 ms
tps = 14227.540077 (without initial connection time)
";
    const PREPARED_STDERR: &str = "pgbench: error: ERROR:  prepared statement \"P_0\" already exists
pgbench: error: client 4 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" does not exist
pgbench: error: client 1 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" does not exist
pgbench: error: client 5 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" does not exist
pgbench: error: client 8 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" does not exist
pgbench: error: Run was aborted; the above results are incomplete.
";

    #[test]
    fn aborted_clients_are_counted_once_each() {
        assert_eq!(count_aborted(PREPARED_STDERR), 4);
        assert_eq!(count_aborted("pgbench: error: Run was aborted\n"), 0);
    }

    #[test]
    fn the_summary_gives_tps_transactions_and_failures() {
        let o = parse_summary(PREPARED_STDOUT);
        assert_eq!(o.transactions, 42726);
        assert_eq!(o.failed, 0);
        assert!((o.tps - 14227.54).abs() < 0.01, "{}", o.tps);
        assert_eq!(o.connect_ms, None);
        let with_connects = parse_summary(
            "number of transactions actually processed: 2590\n\
             average connection time = 4.063 ms\n\
             tps = 221.3 (including reconnection times)\n",
        );
        assert_eq!(with_connects.connect_ms, Some(4.063));
        assert_eq!(with_connects.transactions, 2590);
    }

    #[test]
    fn only_the_largest_cell_gets_time_for_its_logins() {
        let allowances: Vec<(String, u64)> = CELLS
            .iter()
            .map(|c| (c.name(), c.login_allowance()))
            .filter(|(_, a)| *a > 0)
            .collect();
        assert_eq!(allowances, vec![("-c 500 -M simple".to_owned(), 20)]);
    }

    #[test]
    fn the_login_cap_runs_through_pool_proxy_alone() {
        let caps: Vec<Cell> = CELLS.into_iter().filter(|c| c.login_cap).collect();
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].targets(), &[Target::PoolProxy]);
        assert!(caps[0].connect_each && caps[0].clients == 1);
        // Cell names key the rows: no two cells may share one.
        let mut names: Vec<String> = CELLS.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CELLS.len());
    }
}
