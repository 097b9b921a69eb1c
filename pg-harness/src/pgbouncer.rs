//! A real PgBouncer in front of a [`PgCluster`], for tests of the "external pooler" story.
//!
//! [`PgBouncer::start`] writes an ini file and a userlist (the cluster's test user with its
//! password, `auth_type = scram-sha-256`, so PgBouncer authenticates clients with SCRAM and
//! logs in to PostgreSQL with SCRAM too), starts `pgbouncer` in the foreground as a child
//! process (as the `postgres` OS user when we are root: PgBouncer refuses to run as root) on
//! a free 127.0.0.1 port, and waits until it listens. Drop kills it and deletes its files.
//!
//! Every database name is forwarded (`* = host=127.0.0.1 port=<cluster port>`). The test
//! user is also a PgBouncer admin, so `SHOW POOLS` works on the `pgbouncer` database.
//!
//! In transaction mode, tokio-postgres' `query`/`execute` (which prepare a *named*
//! statement, then execute it in a later round trip) can land on different server
//! connections; use `simple_query`, `batch_execute` or `query_typed` (unnamed statement, one
//! round trip) through PgBouncer (1.18 here: no `max_prepared_statements`).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, RunAs, ScratchDir};
use crate::{HarnessError, PgCluster};

const INSTALL_PGBOUNCER: &str = "apt-get install -y pgbouncer";
const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where `pgbouncer` is: `$POOL_SUITE_PGBOUNCER`, `/usr/sbin/pgbouncer` (Debian), or `PATH`.
pub fn pgbouncer_path() -> Result<PathBuf, HarnessError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("POOL_SUITE_PGBOUNCER") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/usr/sbin/pgbouncer"));
    candidates.push(PathBuf::from("/usr/bin/pgbouncer"));
    util::find_program("pgbouncer", &candidates).ok_or_else(|| HarnessError::NotInstalled {
        what: "pgbouncer (on PATH or /usr/sbin/pgbouncer)".into(),
        install: INSTALL_PGBOUNCER,
    })
}

/// A running PgBouncer; killed and deleted on drop.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    port: u16,
    user: String,
    password: String,
    database: String,
    log: PathBuf,
    // Declared last: removed after `drop` has killed the process.
    dir: ScratchDir,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `cluster` with `pool_mode` (`"session"`,
    /// `"transaction"` or `"statement"`) and `default_pool_size` server connections per
    /// user/database pair. Blocking (well under a second).
    pub fn start(
        cluster: &PgCluster,
        pool_mode: &str,
        default_pool_size: u32,
    ) -> Result<PgBouncer, HarnessError> {
        if !matches!(pool_mode, "session" | "transaction" | "statement") {
            return Err(HarnessError::Other(format!(
                "unknown pool_mode {pool_mode:?}"
            )));
        }
        let program = pgbouncer_path()?;
        let run_as = util::service_user()?;
        sweep_stale_bouncers();

        let opts = cluster.options();
        let dir = ScratchDir::new("pgb", run_as)?;
        let userlist = dir.path().join("userlist.txt");
        dir.write_file(
            &userlist,
            &format!(
                "{} {}\n",
                userlist_quote(&opts.user),
                userlist_quote(&opts.password)
            ),
            0o600,
            run_as,
        )?;
        let ini = dir.path().join("pgbouncer.ini");
        let log = dir.path().join("pgbouncer.log");

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = util::free_port()?;
            let contents = ini_contents(&IniParams {
                server_port: cluster.port(),
                listen_port: port,
                pool_mode,
                default_pool_size,
                user: &opts.user,
                dir: dir.path(),
                userlist: &userlist,
                log: &log,
            });
            dir.write_file(&ini, &contents, 0o600, run_as)?;
            let _ = std::fs::remove_file(&log);
            let mut child = spawn(&program, &ini, run_as, dir.path())?;
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    return Ok(PgBouncer {
                        child,
                        port,
                        user: opts.user.clone(),
                        password: opts.password.clone(),
                        database: opts.database.clone(),
                        log,
                        dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log_tail = util::tail(&log, 30);
                    let port_taken = log_tail.contains("Address already in use");
                    if port_taken && attempt < START_ATTEMPTS {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `postgresql://user:password@127.0.0.1:port/database` through PgBouncer.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            util::percent_encode(&self.user),
            util::percent_encode(&self.password),
            self.port,
            util::percent_encode(&self.database)
        )
    }

    /// PgBouncer's admin console (`SHOW POOLS`, `SHOW SERVERS`, ...), as the test user.
    pub fn admin_url(&self) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/pgbouncer",
            util::percent_encode(&self.user),
            util::percent_encode(&self.password),
            self.port
        )
    }

    /// The listening port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The process id (for CPU accounting in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its scratch directory (ini, userlist, log, pid file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of PgBouncer's log.
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    program: &Path,
    ini: &Path,
    run_as: Option<RunAs>,
    dir: &Path,
) -> Result<Child, HarnessError> {
    let mut cmd = util::command(program, run_as, dir);
    // Foreground (no -d), so it is our child and Drop can kill it; output goes to its log.
    cmd.arg("-q")
        .arg(ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .map_err(|e| HarnessError::io(format!("spawning `{}`", util::describe(&cmd)), e))
}

/// Waits for "listening on 127.0.0.1:<port>" in the log and a successful TCP connect.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), HarnessError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let needle = format!("listening on 127.0.0.1:{port}");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::Command {
                command: "pgbouncer".into(),
                status: status.code(),
                output: util::tail(log, 30),
            });
        }
        if util::tail(log, 200).contains(&needle)
            && util::wait_for_tcp(port, Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(None))
            })
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout(format!(
                "pgbouncer did not start listening on 127.0.0.1:{port} within \
                 {READY_TIMEOUT:?}; log:\n{}",
                util::tail(log, 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct IniParams<'a> {
    server_port: u16,
    listen_port: u16,
    pool_mode: &'a str,
    default_pool_size: u32,
    user: &'a str,
    dir: &'a Path,
    userlist: &'a Path,
    log: &'a Path,
}

fn ini_contents(p: &IniParams<'_>) -> String {
    format!(
        "; written by pg-harness
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = {user}
pool_mode = {pool_mode}
default_pool_size = {default_pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
server_connect_timeout = 5
log_connections = 1
log_disconnections = 1
logfile = {log}
pidfile = {pidfile}
",
        server_port = p.server_port,
        listen_port = p.listen_port,
        userlist = p.userlist.display(),
        user = p.user,
        pool_mode = p.pool_mode,
        default_pool_size = p.default_pool_size,
        log = p.log.display(),
        pidfile = p.dir.join("pgbouncer.pid").display(),
    )
}

/// `"name"` with `"` doubled, as PgBouncer's auth_file wants.
fn userlist_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Kills PgBouncers left behind by test processes that were killed outright (their
/// directories name the dead pid; the pid file names the bouncer).
fn sweep_stale_bouncers() {
    util::sweep_stale("pgb", |dir| {
        let Ok(pid) = std::fs::read_to_string(dir.join("pgbouncer.pid")) else {
            return;
        };
        let pid = pid.trim();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "pgbouncer" {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    });
}
