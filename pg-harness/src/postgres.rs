//! Throwaway PostgreSQL clusters for integration tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh directory (under `/dev/shm`, else `/tmp`;
//! `$POOL_SUITE_TMPDIR` overrides), configures the
//! cluster for tests (127.0.0.1 only, a free port, a low `max_connections`, `fsync=off`,
//! scram-sha-256 password authentication, a known user/password/database) and starts it with
//! `pg_ctl`. Dropping the [`PgCluster`] stops the server (`pg_ctl stop -m immediate`) and
//! deletes the directory, also while unwinding from a panic. Each cluster has its own
//! directory and port, so tests using clusters may run in parallel.
//!
//! When the tests run as root, the server programs run as the `postgres` OS account (the
//! server refuses to run as root): the harness uses std's `CommandExt::uid`/`gid`, so it needs
//! neither `su` nor `runuser`.
//!
//! Besides clean stops and restarts, the harness has the hard faults a server can suffer:
//! [`PgCluster::kill_hard`] (`kill -9` of the postmaster; [`PgCluster::start_again`] then
//! clears what the dead server left behind) and [`PgCluster::freeze`] /
//! [`PgCluster::thaw`] (SIGSTOP / SIGCONT of every server process).
//!
//! Lifecycle methods are blocking (they wait for `pg_ctl`); each has an `_async` twin that
//! runs it on tokio's blocking pool, so a pool under test keeps running on the same runtime
//! while the server restarts. Admin SQL (as the superuser, over the cluster's Unix socket)
//! goes through [`PgAdmin`], which is async.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pg_harness::HarnessError> {
//! use pg_harness::{Backends, PgCluster, PgOptions};
//! let cluster = PgCluster::start(PgOptions::default().max_connections(10))?;
//! let (client, conn) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls).await?;
//! tokio::spawn(conn);
//! client.simple_query("SELECT 1").await?;
//! assert_eq!(cluster.admin().count(&Backends::user("pool_test")).await?, 1);
//! cluster.restart_fast_async().await?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use rustix::process::Signal;

use crate::util::{self, RunAs, ScratchDir};
use crate::{process, HarnessError};

/// The superuser created by `initdb`.
pub const ADMIN_USER: &str = "postgres";
/// The superuser's password (for TCP connections; the harness itself uses the Unix socket).
pub const ADMIN_PASSWORD: &str = "pool_suite_admin_pw";
/// The `application_name` of the harness's own admin connections (excluded from counts).
pub const ADMIN_APPLICATION_NAME: &str = "pool-suite-admin";

const INSTALL_POSTGRES: &str = "apt-get install -y postgresql";
const START_ATTEMPTS: usize = 8;

/// How to set up a [`PgCluster`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `max_connections` (default 20): low, so that exhaustion can be tested.
    pub max_connections: u32,
    /// `superuser_reserved_connections` (default 3). The test user (not a superuser) can open
    /// `max_connections - superuser_reserved_connections` connections; the rest stay
    /// available to the harness's admin connections even while the test user is exhausted.
    pub superuser_reserved_connections: u32,
    /// The test login role (default `pool_test`), not a superuser.
    pub user: String,
    /// Its password (default `pool_test_pw`), checked with scram-sha-256.
    pub password: String,
    /// The test database (default `pool_test`), owned by `user`.
    pub database: String,
    /// Extra `postgresql.conf` settings, e.g. `("idle_session_timeout", "'1s'")`; values
    /// are written verbatim.
    pub extra_conf: Vec<(String, String)>,
    /// TLS for the server (`ssl = on` with these files); none by default.
    pub tls: Option<PgTls>,
    /// The `pg_hba.conf` lines for TCP connections (default
    /// `host all all 127.0.0.1/32 scram-sha-256`); the harness's own `local all all trust`
    /// line always comes first. E.g. `hostssl all all 127.0.0.1/32 scram-sha-256` for a
    /// TLS-only server, `hostssl all some_user 127.0.0.1/32 cert` for client certificates.
    pub hba: Vec<String>,
    /// Ready to be a streaming-replication primary (default off): `wal_level = replica`,
    /// WAL senders, and `local replication all trust` so standbys
    /// ([`PgCluster::start_standby`]) copy and follow it over its Unix socket.
    pub replication: bool,
}

/// A server certificate and key (PEM text), and optionally the CA whose client
/// certificates the server trusts (`ssl_ca_file`, for `cert` authentication).
#[derive(Clone)]
pub struct PgTls {
    /// `ssl_cert_file`'s contents: the server certificate (and any intermediates).
    pub cert_pem: String,
    /// `ssl_key_file`'s contents: the unencrypted private key.
    pub key_pem: String,
    /// `ssl_ca_file`'s contents, if any.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("ca", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 20,
            superuser_reserved_connections: 3,
            user: "pool_test".into(),
            password: "pool_test_pw".into(),
            database: "pool_test".into(),
            extra_conf: Vec::new(),
            tls: None,
            hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
            replication: false,
        }
    }
}

impl PgOptions {
    /// Sets `max_connections`.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets `superuser_reserved_connections`.
    pub fn superuser_reserved_connections(mut self, n: u32) -> Self {
        self.superuser_reserved_connections = n;
        self
    }

    /// Adds a `postgresql.conf` line `name = value` (value verbatim, quote strings yourself).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_conf.push((name.into(), value.into()));
        self
    }

    /// Turns TLS on with this certificate and key (and client CA).
    pub fn tls(mut self, tls: PgTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Makes the cluster a streaming-replication primary (see [`PgOptions::replication`]).
    pub fn replication(mut self) -> Self {
        self.replication = true;
        self
    }

    /// Replaces the `pg_hba.conf` lines for TCP connections.
    pub fn hba<S: Into<String>>(mut self, lines: impl IntoIterator<Item = S>) -> Self {
        self.hba = lines.into_iter().map(Into::into).collect();
        self
    }
}

/// Directory holding `initdb`, `pg_ctl`, `postgres` and `psql`: `$POOL_SUITE_PG_BIN`, else
/// the newest `/usr/lib/postgresql/<version>/bin`, else wherever `initdb` on `PATH` really
/// lives (Debian's `/usr/local/bin/initdb` here is a symlink into
/// `/usr/lib/postgresql/15/bin`; Debian's `/usr/bin` has no initdb at all, only wrappers).
pub fn pg_bin_dir() -> Result<PathBuf, HarnessError> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|p| util::is_executable(&dir.join(p)))
    };
    if let Some(dir) = std::env::var_os("POOL_SUITE_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }
    if let Some(initdb) = util::find_program("initdb", &[]) {
        if let Some(dir) = initdb
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if has_all(&dir) {
                return Ok(dir);
            }
        }
    }
    Err(HarnessError::NotInstalled {
        what: "PostgreSQL server programs (initdb, pg_ctl, postgres, psql) on PATH or under \
               /usr/lib/postgresql/*/bin"
            .into(),
        install: INSTALL_POSTGRES,
    })
}

struct Inner {
    bin: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    opts: PgOptions,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    // Declared last: dropped after `Inner::drop` has stopped the server.
    dir: ScratchDir,
}

impl Inner {
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = util::command(&self.bin.join("pg_ctl"), self.run_as, self.dir.path());
        cmd.args(args).arg("-D").arg(&self.data);
        cmd
    }

    fn run_pg_ctl(&self, args: &[&str]) -> Result<(), HarnessError> {
        util::run(self.pg_ctl(args), || util::tail(&self.log, 30)).map(drop)
    }

    fn start(&self) -> Result<(), HarnessError> {
        clear_dead_server(&self.data, &self.sock)?;
        let log = self.log.to_string_lossy().into_owned();
        self.run_pg_ctl(&["start", "-w", "-t", "60", "-l", &log])
    }

    fn restart_fast(&self) -> Result<(), HarnessError> {
        // After `unwedge`, pg_ctl finds the server running or no server at all; it starts
        // one either way.
        self.unwedge()?;
        let log = self.log.to_string_lossy().into_owned();
        self.run_pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l", &log])
    }

    fn stop(&self, mode: &str) -> Result<(), HarnessError> {
        if self.unwedge()? {
            return Ok(()); // it was dead; what it left is gone now
        }
        self.run_pg_ctl(&["stop", "-m", mode, "-w", "-t", "60"])
    }

    /// Pick a free port, write the harness's settings for it, and start; another process
    /// may grab the port between the probe and the server's bind, so retry with a new one
    /// when the log says so.
    fn start_on_free_port(&mut self) -> Result<(), HarnessError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = util::free_port()?;
            let settings = harness_conf(self);
            self.dir.write_file(
                &self.data.join("pool_suite.conf"),
                &settings,
                0o600,
                self.run_as,
            )?;
            let _ = std::fs::remove_file(&self.log);
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = util::tail(&self.log, 50);
                    let port_taken = log.contains("Address already in use")
                        || log.contains("could not bind")
                        || log.contains("could not create any TCP/IP sockets");
                    if port_taken && attempt < START_ATTEMPTS {
                        // pg_ctl may have left a half-started server behind; make sure not.
                        let _ = self.stop("immediate");
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn is_running(&self) -> bool {
        let mut cmd = self.pg_ctl(&["status"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // pg_ctl takes a killed postmaster's zombie for a running server.
        cmd.status().map(|s| s.success()).unwrap_or(false) && self.postmaster().is_some()
    }

    /// The live postmaster's pid: the one in `postmaster.pid`, if that process is alive
    /// and works in this data directory (not a stranger that reused a dead server's pid).
    fn postmaster(&self) -> Option<u32> {
        let pid = process::lock_file_pid(&self.data.join("postmaster.pid"))?;
        process::working_in(&self.data)
            .contains(&pid)
            .then_some(pid)
    }

    fn live_postmaster(&self, what: &str) -> Result<u32, HarnessError> {
        self.postmaster().ok_or_else(|| {
            HarnessError::Other(format!(
                "{what}: the server is not running (no live postmaster in {})",
                self.data.join("postmaster.pid").display()
            ))
        })
    }

    /// SIGKILL to the postmaster alone, as an OOM killer or an operator's `kill -9` would
    /// do; returns once it is dead (a zombie counts: it holds nothing but its pid). Its
    /// backends are left to notice on their own, as they would be.
    fn kill_hard(&self) -> Result<(), HarnessError> {
        let pm = self.live_postmaster("kill_hard")?;
        process::signal(pm, Signal::KILL, "kill_hard")?;
        process::wait_dead(&[pm], process::SETTLE, "kill_hard: the postmaster")
    }

    /// SIGSTOP to the postmaster, then to each of its children; returns once every one is
    /// really stopped (state `T`), so nothing of the server runs any more.
    fn freeze(&self) -> Result<(), HarnessError> {
        let pm = self.live_postmaster("freeze")?;
        process::signal(pm, Signal::STOP, "freeze")?;
        process::wait_stopped(&[pm], process::SETTLE, "freeze: the postmaster")?;
        // A stopped postmaster forks no more: from here its children are a fixed set.
        let children = process::children(pm);
        for &child in &children {
            process::signal(child, Signal::STOP, "freeze")?;
        }
        process::wait_stopped(&children, process::SETTLE, "freeze: the server's processes")
    }

    /// SIGCONT to the postmaster's children, then to the postmaster; returns once none is
    /// stopped. A server that is not frozen is left as it is.
    fn thaw(&self) -> Result<(), HarnessError> {
        let pm = self.live_postmaster("thaw")?;
        let mut all = process::children(pm);
        all.push(pm);
        for &p in &all {
            process::signal(p, Signal::CONT, "thaw")?;
        }
        process::wait_running(&all, process::SETTLE, "thaw")
    }

    /// Makes a server that cannot take `pg_ctl`'s signals able to again: a frozen one is
    /// thawed, a dead one's leftovers are cleared away. Returns whether the server was dead.
    fn unwedge(&self) -> Result<bool, HarnessError> {
        if self.postmaster().is_some() {
            self.thaw()?;
            return Ok(false);
        }
        clear_dead_server(&self.data, &self.sock)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.stop("immediate");
        }
    }
}

/// After a postmaster died without shutting down (`kill -9`, a crash): the start of a new
/// one would fail on what the dead one left, so this clears it away. Returns whether there
/// was such a dead server.
///
/// * Backends still running: one busy in a query notices its postmaster's death only when
///   the query ends, and while any process holds the old shared memory PostgreSQL refuses
///   to start ("pre-existing shared memory block is still in use"). They are killed.
/// * `postmaster.pid` and the socket's `.s.PGSQL.<port>.lock`, naming the dead pid.
///   PostgreSQL removes such files itself once that pid is gone, but a zombie still has
///   it (here init reaps orphans only every second or two; in a container with no real
///   init, never), and the start fails with "lock file already exists".
fn clear_dead_server(data: &Path, sock: &Path) -> Result<bool, HarnessError> {
    let pid_file = data.join("postmaster.pid");
    let Some(pm) = process::lock_file_pid(&pid_file) else {
        return Ok(false);
    };
    if process::working_in(data).contains(&pm) {
        return Ok(false); // alive: not ours to clear
    }
    let left = process::working_in(data);
    for &p in &left {
        process::signal(p, Signal::KILL, "clearing a dead server's processes")?;
    }
    process::wait_dead(&left, process::SETTLE, "clearing a dead server's processes")?;
    let mut locks = vec![pid_file];
    locks.extend(
        std::fs::read_dir(sock)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
            }),
    );
    for lock in locks {
        if process::lock_file_pid(&lock).is_some_and(|p| p == pm || process::is_dead(p)) {
            std::fs::remove_file(&lock)
                .map_err(|e| HarnessError::io(format!("removing {}", lock.display()), e))?;
        }
    }
    Ok(true)
}

/// A running throwaway PostgreSQL cluster; stopped and deleted on drop.
pub struct PgCluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.inner.port)
            .field("dir", &self.inner.dir.path())
            .finish()
    }
}

impl PgCluster {
    /// initdb + configure + start a new cluster on a free 127.0.0.1 port, then create the
    /// test role and database. Blocking (≈1–2 s); fine to call from `#[tokio::test]`.
    /// Errors with [`HarnessError::NotInstalled`] (naming `apt-get install -y postgresql`)
    /// when PostgreSQL is missing.
    pub fn start(opts: PgOptions) -> Result<PgCluster, HarnessError> {
        if opts.superuser_reserved_connections >= opts.max_connections {
            return Err(HarnessError::Other(format!(
                "superuser_reserved_connections ({}) must be < max_connections ({})",
                opts.superuser_reserved_connections, opts.max_connections
            )));
        }
        let bin = pg_bin_dir()?;
        let run_as = util::service_user()?;
        sweep_stale_clusters(&bin, run_as);

        let dir = ScratchDir::new("pg", run_as)?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let log = dir.path().join("postgres.log");
        dir.prepare(&sock, run_as)?;

        // initdb with the superuser's password; local (socket) connections are trusted,
        // host connections need scram-sha-256.
        let pwfile = dir.path().join("pwfile");
        dir.write_file(&pwfile, &format!("{ADMIN_PASSWORD}\n"), 0o600, run_as)?;
        let mut initdb = util::command(&bin.join("initdb"), run_as, dir.path());
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", ADMIN_USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        util::run(initdb, String::new)?;
        let _ = std::fs::remove_file(&pwfile);

        let mut hba = String::from("# written by pg-harness\nlocal all all trust\n");
        if opts.replication {
            hba.push_str("local replication all trust\n");
        }
        for line in &opts.hba {
            hba.push_str(line);
            hba.push('\n');
        }
        dir.write_file(&data.join("pg_hba.conf"), &hba, 0o600, run_as)?;
        if let Some(tls) = &opts.tls {
            // The server refuses a key readable by others; the files live in the data
            // directory, owned by the server's account.
            dir.write_file(&data.join("server.crt"), &tls.cert_pem, 0o600, run_as)?;
            dir.write_file(&data.join("server.key"), &tls.key_pem, 0o600, run_as)?;
            if let Some(ca) = &tls.ca_pem {
                dir.write_file(&data.join("client_ca.crt"), ca, 0o600, run_as)?;
            }
        }
        let conf = data.join("postgresql.conf");
        let mut main_conf = std::fs::read_to_string(&conf)
            .map_err(|e| HarnessError::io(format!("reading {}", conf.display()), e))?;
        main_conf.push_str("\ninclude 'pool_suite.conf'\n");
        dir.write_file(&conf, &main_conf, 0o600, run_as)?;

        let mut inner = Inner {
            bin,
            run_as,
            port: 0,
            opts,
            data,
            sock,
            log,
            dir,
        };

        inner.start_on_free_port()?;

        let cluster = PgCluster {
            inner: Arc::new(inner),
        };
        cluster.create_test_role_and_db()?;
        Ok(cluster)
    }

    /// [`PgCluster::start`] on tokio's blocking pool.
    pub async fn start_async(opts: PgOptions) -> Result<PgCluster, HarnessError> {
        tokio::task::spawn_blocking(move || PgCluster::start(opts))
            .await
            .map_err(|e| HarnessError::Other(format!("cluster start task failed: {e}")))?
    }

    /// A hot standby of this cluster (which must have been started with
    /// [`PgOptions::replication`]): `pg_basebackup -R` (streaming WAL, fast checkpoint)
    /// into a fresh directory, the same options on its own free 127.0.0.1 port, started
    /// and following this cluster over its Unix socket. It answers read-only queries as
    /// the same user, password and database; `pg_is_in_recovery()` is true there.
    /// Blocking (≈1 s); stopped and deleted on drop like any cluster.
    pub fn start_standby(&self) -> Result<PgCluster, HarnessError> {
        let primary = &self.inner;
        if !primary.opts.replication {
            return Err(HarnessError::Other(
                "start_standby needs a primary started with PgOptions::replication()".into(),
            ));
        }
        let dir = ScratchDir::new("pg", primary.run_as)?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        let log = dir.path().join("postgres.log");
        dir.prepare(&sock, primary.run_as)?;
        let mut backup = util::command(
            &primary.bin.join("pg_basebackup"),
            primary.run_as,
            dir.path(),
        );
        backup
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-h"])
            .arg(&primary.sock)
            .args(["-p", &primary.port.to_string(), "-U", ADMIN_USER]);
        util::run(backup, || util::tail(&primary.log, 20))?;
        let mut inner = Inner {
            bin: primary.bin.clone(),
            run_as: primary.run_as,
            port: 0,
            opts: primary.opts.clone(),
            data,
            sock,
            log,
            dir,
        };
        // The copied pool_suite.conf names the primary's port and socket: replaced here.
        inner.start_on_free_port()?;
        Ok(PgCluster {
            inner: Arc::new(inner),
        })
    }

    /// [`PgCluster::start_standby`] on tokio's blocking pool.
    pub async fn start_standby_async(&self) -> Result<PgCluster, HarnessError> {
        let this = PgCluster {
            inner: Arc::clone(&self.inner),
        };
        tokio::task::spawn_blocking(move || this.start_standby())
            .await
            .map_err(|e| HarnessError::Other(format!("standby start task failed: {e}")))?
    }

    /// `pg_ctl promote`: a standby stops following and takes writes. Blocking.
    pub fn promote(&self) -> Result<(), HarnessError> {
        self.inner.run_pg_ctl(&["promote", "-w", "-t", "60"])
    }

    /// If `DATABASE_URL` is set (and non-empty), a [`PgTarget::Shared`] pointing at it;
    /// otherwise a fresh cluster started with `opts`. For tests that only need *a* database
    /// (no restarts, no `max_connections` assumptions, no wrong-password tricks).
    pub fn shared_or_start(opts: PgOptions) -> Result<PgTarget, HarnessError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let config = url.parse::<Config>().map_err(|e| {
                    HarnessError::Other(format!("DATABASE_URL is not a valid URL: {e}"))
                })?;
                Ok(PgTarget::Shared {
                    url,
                    config: Box::new(config),
                })
            }
            _ => PgCluster::start(opts).map(PgTarget::Owned),
        }
    }

    fn create_test_role_and_db(&self) -> Result<(), HarnessError> {
        let o = &self.inner.opts;
        let mut psql = self.psql();
        psql.arg("-c")
            .arg(format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                quote_ident(&o.user),
                quote_literal(&o.password)
            ))
            .arg("-c")
            .arg(format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&o.database),
                quote_ident(&o.user)
            ));
        util::run(psql, || util::tail(&self.inner.log, 20)).map(drop)
    }

    /// A `psql` command connected as the superuser over the Unix socket (`-X`, stop on
    /// error); add `-c SQL` arguments and run it.
    pub fn psql(&self) -> Command {
        let i = &self.inner;
        let mut cmd = util::command(&i.bin.join("psql"), i.run_as, i.dir.path());
        cmd.arg("-X")
            .args(["-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&i.sock)
            .args([
                "-p",
                &i.port.to_string(),
                "-U",
                ADMIN_USER,
                "-d",
                "postgres",
            ]);
        cmd
    }

    /// `postgresql://user:password@127.0.0.1:port/database` for the test user.
    pub fn url(&self) -> String {
        self.url_on_port(self.inner.port)
    }

    /// The test user's URL, but on another port of 127.0.0.1 (e.g. a [`crate::FaultProxy`]
    /// in front of this cluster).
    pub fn url_on_port(&self, port: u16) -> String {
        let o = &self.inner.opts;
        format!(
            "postgresql://{}:{}@127.0.0.1:{port}/{}",
            util::percent_encode(&o.user),
            util::percent_encode(&o.password),
            util::percent_encode(&o.database)
        )
    }

    /// A tokio-postgres `Config` for the test user (set `application_name` etc. on it).
    pub fn config(&self) -> Config {
        let o = &self.inner.opts;
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.inner.port)
            .user(&o.user)
            .password(&o.password)
            .dbname(&o.database);
        c
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.inner.port))
    }

    /// The options the cluster was started with (user, password, database, limits).
    pub fn options(&self) -> &PgOptions {
        &self.inner.opts
    }

    /// How many connections the (non-superuser) test user can hold at once.
    pub fn user_connection_limit(&self) -> u32 {
        let o = &self.inner.opts;
        o.max_connections - o.superuser_reserved_connections
    }

    /// The directory with the Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.inner.sock
    }

    /// Writes `contents` to a file `name` in the cluster's scratch directory (deleted with
    /// the cluster), readable by the test process: e.g. a client certificate or a root
    /// certificate for a connection URL's `sslcert` / `sslrootcert`. Returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf, HarnessError> {
        let path = self.inner.dir.path().join("client").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| HarnessError::io(format!("creating {}", parent.display()), e))?;
        }
        self.inner.dir.write_file(&path, contents, 0o600, None)?;
        Ok(path)
    }

    /// The postmaster's process id (the first line of `postmaster.pid`): its children are
    /// the backends, and its reaped children's CPU time is in its own `/proc` counters.
    pub fn postmaster_pid(&self) -> Result<u32, HarnessError> {
        let file = self.inner.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| HarnessError::io(format!("reading {}", file.display()), e))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| HarnessError::Other(format!("{} names no pid", file.display())))
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    /// The last `lines` lines of the server log (for assertion messages).
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.inner.log, lines)
    }

    /// Superuser access for admin SQL (over the Unix socket, trusted).
    pub fn admin(&self) -> PgAdmin {
        let mut c = Config::new();
        c.host_path(&self.inner.sock)
            .port(self.inner.port)
            .user(ADMIN_USER)
            .dbname("postgres")
            .application_name(ADMIN_APPLICATION_NAME)
            .connect_timeout(Duration::from_secs(10));
        PgAdmin { config: c }
    }

    /// `pg_ctl restart -m fast`: disconnects every client, then starts again on the same
    /// port. Blocking; see [`PgCluster::restart_fast_async`]. A frozen server is thawed
    /// first; after [`PgCluster::kill_hard`] this is [`PgCluster::start_again`].
    pub fn restart_fast(&self) -> Result<(), HarnessError> {
        self.inner.restart_fast()
    }

    /// `pg_ctl stop -m fast` (clients are disconnected; the cluster stays on disk).
    pub fn stop(&self) -> Result<(), HarnessError> {
        self.inner.stop("fast")
    }

    /// `pg_ctl stop -m immediate`: like a crash (no shutdown checkpoint).
    pub fn stop_immediate(&self) -> Result<(), HarnessError> {
        self.inner.stop("immediate")
    }

    /// `pg_ctl start` again after [`PgCluster::stop`] or [`PgCluster::kill_hard`], on the
    /// same port. After a hard kill it first clears what the dead server left (backends
    /// still busy in a query, lock files naming its pid), as an operator would have to;
    /// the server then runs crash recovery before it accepts connections.
    pub fn start_again(&self) -> Result<(), HarnessError> {
        let _ = std::fs::remove_file(&self.inner.log);
        self.inner.start()
    }

    /// Whether the server is running (`pg_ctl status`, and its postmaster is alive).
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// `kill -9` of the postmaster: the server dies with no shutdown at all, as under the
    /// OOM killer. Returns once the postmaster is dead. Its backends are not signalled:
    /// idle ones, and ones waiting (e.g. in `pg_sleep`), notice and exit within
    /// milliseconds, closing their clients' connections; one busy computing runs on until
    /// its query ends. Connects are refused until [`PgCluster::start_again`] (or
    /// [`PgCluster::restart_fast`]). Errors if the server is not running.
    pub fn kill_hard(&self) -> Result<(), HarnessError> {
        self.inner.kill_hard()
    }

    /// SIGSTOP to the postmaster and every backend and auxiliary process: the server
    /// stops answering without closing anything, like a host that hangs or a VM that is
    /// paused. Connections stay open and queries sent wait; new TCP connects complete in
    /// the kernel's listen backlog but get no answer to their startup message. Returns once
    /// every process is really stopped (state `T` in `/proc/<pid>/stat`). Undo with
    /// [`PgCluster::thaw`]; stopping, restarting or dropping the cluster thaws it first.
    pub fn freeze(&self) -> Result<(), HarnessError> {
        self.inner.freeze()
    }

    /// SIGCONT to every process of a frozen server; returns once none is stopped. What
    /// clients sent meanwhile is then processed.
    pub fn thaw(&self) -> Result<(), HarnessError> {
        self.inner.thaw()
    }

    /// The server's processes: the postmaster's pid, then its children's (backends and
    /// auxiliary processes). Empty when no live postmaster runs.
    pub fn server_pids(&self) -> Vec<u32> {
        let Some(pm) = self.inner.postmaster() else {
            return Vec::new();
        };
        let mut pids = vec![pm];
        pids.extend(process::children(pm));
        pids
    }

    async fn blocking(
        &self,
        f: impl FnOnce(&Inner) -> Result<(), HarnessError> + Send + 'static,
    ) -> Result<(), HarnessError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| HarnessError::Other(format!("pg_ctl task failed: {e}")))?
    }

    /// [`PgCluster::restart_fast`] on tokio's blocking pool.
    pub async fn restart_fast_async(&self) -> Result<(), HarnessError> {
        self.blocking(Inner::restart_fast).await
    }

    /// [`PgCluster::promote`] on tokio's blocking pool.
    pub async fn promote_async(&self) -> Result<(), HarnessError> {
        self.blocking(|i| i.run_pg_ctl(&["promote", "-w", "-t", "60"]))
            .await
    }

    /// [`PgCluster::stop`] on tokio's blocking pool.
    pub async fn stop_async(&self) -> Result<(), HarnessError> {
        self.blocking(|i| i.stop("fast")).await
    }

    /// [`PgCluster::stop_immediate`] on tokio's blocking pool.
    pub async fn stop_immediate_async(&self) -> Result<(), HarnessError> {
        self.blocking(|i| i.stop("immediate")).await
    }

    /// [`PgCluster::kill_hard`] on tokio's blocking pool.
    pub async fn kill_hard_async(&self) -> Result<(), HarnessError> {
        self.blocking(Inner::kill_hard).await
    }

    /// [`PgCluster::freeze`] on tokio's blocking pool.
    pub async fn freeze_async(&self) -> Result<(), HarnessError> {
        self.blocking(Inner::freeze).await
    }

    /// [`PgCluster::thaw`] on tokio's blocking pool.
    pub async fn thaw_async(&self) -> Result<(), HarnessError> {
        self.blocking(Inner::thaw).await
    }

    /// [`PgCluster::start_again`] on tokio's blocking pool.
    pub async fn start_again_async(&self) -> Result<(), HarnessError> {
        self.blocking(|i| {
            let _ = std::fs::remove_file(&i.log);
            i.start()
        })
        .await
    }
}

fn harness_conf(i: &Inner) -> String {
    let o = &i.opts;
    let mut s = String::from("# written by pg-harness\n");
    let mut set = |k: &str, v: String| {
        let _ = writeln!(s, "{k} = {v}");
    };
    set("listen_addresses", "'127.0.0.1'".into());
    set("port", i.port.to_string());
    set("unix_socket_directories", util::conf_quote(&i.sock));
    set("max_connections", o.max_connections.to_string());
    set(
        "superuser_reserved_connections",
        o.superuser_reserved_connections.to_string(),
    );
    set("password_encryption", "'scram-sha-256'".into());
    // Speed over durability: the cluster is thrown away.
    set("fsync", "off".into());
    set("synchronous_commit", "off".into());
    if o.replication {
        // Standbys copy and follow this cluster: WAL for replicas, senders for them, and
        // full-page writes (a base backup's replay needs them).
        set("full_page_writes", "on".into());
        set("wal_level", "replica".into());
        set("max_wal_senders", "10".into());
        // Standbys answer the primary quickly, so its lag figures are current.
        set("wal_receiver_status_interval", "'1s'".into());
    } else {
        set("full_page_writes", "off".into());
        set("wal_level", "minimal".into());
        set("max_wal_senders", "0".into());
    }
    set("shared_buffers", "16MB".into());
    set("autovacuum", "off".into());
    set("jit", "off".into());
    set("logging_collector", "off".into());
    set("log_connections", "on".into());
    set("log_disconnections", "on".into());
    set("log_line_prefix", "'%m [%p] %u@%d/%a '".into());
    if let Some(tls) = &o.tls {
        set("ssl", "on".into());
        set("ssl_cert_file", "'server.crt'".into());
        set("ssl_key_file", "'server.key'".into());
        if tls.ca_pem.is_some() {
            set("ssl_ca_file", "'client_ca.crt'".into());
        }
    }
    for (k, v) in &o.extra_conf {
        set(k, v.clone());
    }
    s
}

/// Stops and removes clusters left by test processes that were killed outright.
fn sweep_stale_clusters(bin: &Path, run_as: Option<RunAs>) {
    util::sweep_stale("pg", |dir| {
        let data = dir.join("data");
        // A server left frozen cannot take pg_ctl's signal; one left dead has leftovers.
        for p in process::working_in(&data) {
            let _ = process::signal(p, Signal::CONT, "sweeping a stale cluster");
        }
        let _ = clear_dead_server(&data, &dir.join("sock"));
        if data.join("postmaster.pid").exists() {
            let mut cmd = util::command(&bin.join("pg_ctl"), run_as, dir);
            cmd.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(&data);
            let _ = util::run(cmd, String::new);
        }
    });
}

/// Either a cluster this test owns or the database named by `DATABASE_URL`.
#[derive(Debug)]
pub enum PgTarget {
    /// A throwaway cluster started by the harness.
    Owned(PgCluster),
    /// `DATABASE_URL`; the harness does not manage it.
    Shared {
        /// The URL as given.
        url: String,
        /// The parsed URL.
        config: Box<Config>,
    },
}

impl PgTarget {
    /// The test user's connection URL.
    pub fn url(&self) -> String {
        match self {
            PgTarget::Owned(c) => c.url(),
            PgTarget::Shared { url, .. } => url.clone(),
        }
    }

    /// A tokio-postgres `Config` for the test user.
    pub fn config(&self) -> Config {
        match self {
            PgTarget::Owned(c) => c.config(),
            PgTarget::Shared { config, .. } => (**config).clone(),
        }
    }

    /// Admin access: the cluster's superuser, or for `DATABASE_URL` that URL's own user
    /// (counting works for any user; terminating others' backends needs privileges).
    pub fn admin(&self) -> PgAdmin {
        match self {
            PgTarget::Owned(c) => c.admin(),
            PgTarget::Shared { config, .. } => {
                let mut config = (**config).clone();
                config.application_name(ADMIN_APPLICATION_NAME);
                PgAdmin { config }
            }
        }
    }

    /// The owned cluster, if any (restarts etc. need one).
    pub fn cluster(&self) -> Option<&PgCluster> {
        match self {
            PgTarget::Owned(c) => Some(c),
            PgTarget::Shared { .. } => None,
        }
    }
}

/// Which client backends an admin query is about (`pg_stat_activity` rows with
/// `backend_type = 'client backend'`, never the admin connection itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// Those with this `application_name`.
    Application(String),
    /// Those logged in as this role.
    User(String),
    /// All client backends except the harness's own admin connections.
    AllClients,
}

impl Backends {
    /// `Backends::Application(name)`.
    pub fn app(name: impl Into<String>) -> Self {
        Backends::Application(name.into())
    }

    /// `Backends::User(name)`.
    pub fn user(name: impl Into<String>) -> Self {
        Backends::User(name.into())
    }

    fn filter(&self) -> (&'static str, String) {
        match self {
            Backends::Application(a) => ("application_name = $1", a.clone()),
            Backends::User(u) => ("usename = $1", u.clone()),
            Backends::AllClients => (
                "application_name IS DISTINCT FROM $1",
                ADMIN_APPLICATION_NAME.to_owned(),
            ),
        }
    }
}

/// Runs SQL as the superuser. Each call opens a short-lived connection (the driver task is
/// spawned with `tokio::spawn`, so call it from inside a tokio runtime). Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgAdmin {
    config: Config,
}

impl PgAdmin {
    /// A new superuser connection (its driver spawned on the current runtime).
    ///
    /// Retries for up to 5 s on "too many clients": a backend that was just refused or
    /// terminated holds its slot until its process exits, which may race with us.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (client, conn) = loop {
            match self.config.connect(NoTls).await {
                Ok(pair) => break pair,
                Err(e)
                    if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub async fn execute(&self, sql: &str) -> Result<(), HarnessError> {
        self.client().await?.batch_execute(sql).await?;
        Ok(())
    }

    /// Runs a query returning one `bigint` (e.g. `SELECT count(*) ...`).
    pub async fn query_i64(&self, sql: &str) -> Result<i64, HarnessError> {
        let row = self.client().await?.query_one(sql, &[]).await?;
        Ok(row.try_get(0)?)
    }

    /// Runs a query returning one `boolean` (e.g. `SELECT pg_is_in_recovery()`).
    pub async fn query_bool(&self, sql: &str) -> Result<bool, HarnessError> {
        let row = self.client().await?.query_one(sql, &[]).await?;
        Ok(row.try_get(0)?)
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    pub async fn in_recovery(&self) -> Result<bool, HarnessError> {
        self.query_bool("SELECT pg_is_in_recovery()").await
    }

    /// On a standby: stop replaying WAL (`pg_wal_replay_pause()`); it keeps receiving it,
    /// so it falls behind while its primary writes.
    pub async fn pause_replay(&self) -> Result<(), HarnessError> {
        self.execute("SELECT pg_wal_replay_pause()").await
    }

    /// On a standby: replay again (`pg_wal_replay_resume()`).
    pub async fn resume_replay(&self) -> Result<(), HarnessError> {
        self.execute("SELECT pg_wal_replay_resume()").await
    }

    /// On a standby: wait until it has replayed everything `primary` had written when
    /// this was called (`pg_last_wal_replay_lsn() >= ` the primary's
    /// `pg_current_wal_insert_lsn()`: its commits too, which `synchronous_commit = off`
    /// leaves unflushed for up to `wal_writer_delay`); error after `timeout`.
    pub async fn wait_for_replay(
        &self,
        primary: &PgAdmin,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let lsn = primary
            .client()
            .await?
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .try_get::<_, String>(0)?;
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
            let caught_up: bool = client
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&lsn],
                )
                .await?
                .try_get(0)?;
            if caught_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "the standby had not replayed up to {lsn} after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `user`'s stored password (`pg_authid.rolpassword`): with the harness's
    /// `password_encryption = scram-sha-256`, the SCRAM verifier a pooler's users file can
    /// hold instead of the password.
    pub async fn scram_verifier(&self, user: &str) -> Result<String, HarnessError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&user],
            )
            .await?;
        row.and_then(|r| r.get::<_, Option<String>>(0))
            .ok_or_else(|| HarnessError::Other(format!("role {user:?} has no stored password")))
    }

    /// How many matching client backends exist now.
    pub async fn count(&self, who: &Backends) -> Result<i64, HarnessError> {
        let (cond, arg) = who.filter();
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND {cond}"
        );
        let row = self.client().await?.query_one(&sql, &[&arg]).await?;
        Ok(row.try_get(0)?)
    }

    /// `pg_terminate_backend` on every matching backend; returns how many were signalled.
    /// They disappear from `pg_stat_activity` shortly after (see [`PgAdmin::wait_for_count`]).
    pub async fn terminate(&self, who: &Backends) -> Result<i64, HarnessError> {
        let (cond, arg) = who.filter();
        let sql = format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND {cond}"
        );
        let row = self.client().await?.query_one(&sql, &[&arg]).await?;
        Ok(row.try_get(0)?)
    }

    /// The backend pids of matching connections.
    pub async fn pids(&self, who: &Backends) -> Result<Vec<i32>, HarnessError> {
        let (cond, arg) = who.filter();
        let sql = format!(
            "SELECT pid FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND {cond} \
             ORDER BY pid"
        );
        let rows = self.client().await?.query(&sql, &[&arg]).await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(HarnessError::from))
            .collect()
    }

    /// Polls [`PgAdmin::count`] until it equals `expected` (error after `timeout`, with the
    /// last count in the message).
    pub async fn wait_for_count(
        &self,
        who: &Backends,
        expected: i64,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(who).await?;
            if n == expected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{who:?}: expected {expected} backends, still {n} after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
