//! The real `pool-proxy` binary in front of a [`PgCluster`], as a child process, the way an
//! operator runs it: for pool-bench's `proxy` part and the serverless fleet example, which
//! measure the binary (its own runtime, its own logging), not the library in-process.
//!
//! [`PoolProxy::start`] writes a `proxy.toml` and a users file (the cluster's test user and
//! password, PgBouncer's userlist format) into a scratch directory, starts the binary with
//! `--config` on a free port (`listen_port = 0`) and `RUST_LOG=warn` unless told otherwise,
//! and waits for the "listening on ADDR" line it prints. Its logs go to a file in the
//! scratch directory ([`PoolProxy::log_tail`]). Drop kills it and deletes the directory.
//!
//! [`pool_proxy_binary`] finds the binary to start: `$POOL_PROXY_BIN`, or else it builds
//! this workspace's `pool-proxy` in release mode with cargo (a no-op when it is up to date)
//! and returns the executable cargo reports. Tests that have the binary already pass
//! `env!("CARGO_BIN_EXE_pool-proxy")`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{self, ScratchDir};
use crate::{HarnessError, PgCluster};

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How to configure a [`PoolProxy`]: the settings that the benchmark and the fleet vary.
/// Everything else is pool-proxy's default (docs/proxy-settings.md).
#[derive(Clone)]
pub struct PoolProxyOptions {
    /// `pool_mode`: `"transaction"` (the default here and in pool-proxy) or `"session"`.
    pub pool_mode: String,
    /// `default_pool_size`: server connections per database (default 10).
    pub default_pool_size: u32,
    /// `max_client_conn` (default 1000, as the PgBouncer harness sets it).
    pub max_client_conn: u32,
    /// More top-level settings, as TOML lines (e.g. `query_wait_timeout = "30s"`).
    pub extra: Vec<String>,
    /// `RUST_LOG` for the proxy (default `warn`: per-connection logs would skew a benchmark).
    pub rust_log: String,
    /// The users file's secret for the test user: `None` (the default) writes its
    /// password, as the PgBouncer harness does; a SCRAM verifier (e.g. `rolpassword` from
    /// `pg_authid`, see [`crate::PgAdmin::scram_verifier`]) spares the proxy deriving one at every login.
    pub secret: Option<String>,
}

impl Default for PoolProxyOptions {
    fn default() -> Self {
        PoolProxyOptions {
            pool_mode: "transaction".into(),
            default_pool_size: 10,
            max_client_conn: 1000,
            extra: Vec::new(),
            rust_log: "warn".into(),
            secret: None,
        }
    }
}

impl std::fmt::Debug for PoolProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolProxyOptions")
            .field("pool_mode", &self.pool_mode)
            .field("default_pool_size", &self.default_pool_size)
            .field("max_client_conn", &self.max_client_conn)
            .field("extra", &self.extra)
            .field("rust_log", &self.rust_log)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PoolProxyOptions {
    /// Sets `default_pool_size`.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.default_pool_size = n;
        self
    }

    /// Sets `max_client_conn`.
    pub fn max_client_conn(mut self, n: u32) -> Self {
        self.max_client_conn = n;
        self
    }

    /// Writes `secret` (a SCRAM verifier) to the users file instead of the password.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Adds a top-level setting (a TOML line such as `query_wait_timeout = "30s"`).
    pub fn setting(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }
}

/// A running `pool-proxy` process; killed and deleted on drop.
pub struct PoolProxy {
    child: Child,
    addr: SocketAddr,
    user: String,
    password: String,
    database: String,
    log: PathBuf,
    // Declared last: removed after `drop` has killed the process.
    dir: ScratchDir,
}

impl PoolProxy {
    /// Starts `binary` in front of `cluster`: one database named like the cluster's test
    /// database, reached as the test user, who is also the proxy's one client user (same
    /// password, SCRAM-SHA-256 towards clients as towards the server). Blocking; returns
    /// once the proxy has printed the address it listens on.
    pub fn start(
        binary: &Path,
        cluster: &PgCluster,
        opts: PoolProxyOptions,
    ) -> Result<PoolProxy, HarnessError> {
        sweep_stale_proxies();
        let dir = ScratchDir::new("pp", None)?;
        let o = cluster.options();
        dir.write_file(
            &dir.path().join("users.txt"),
            &format!(
                "{} {}\n",
                userlist_quote(&o.user),
                userlist_quote(opts.secret.as_deref().unwrap_or(&o.password))
            ),
            0o600,
            None,
        )?;
        let mut toml = String::from(
            "# written by pg-harness\nlisten_addr = \"127.0.0.1\"\nlisten_port = 0\n\
             auth_file = \"users.txt\"\n",
        );
        toml.push_str(&format!(
            "pool_mode = {}\ndefault_pool_size = {}\nmax_client_conn = {}\n",
            toml_string(&opts.pool_mode),
            opts.default_pool_size,
            opts.max_client_conn
        ));
        for line in &opts.extra {
            toml.push_str(line);
            toml.push('\n');
        }
        toml.push_str(&format!(
            "\n[databases]\n{} = {}\n",
            toml_string(&o.database),
            toml_string(&cluster.url())
        ));
        let config = dir.path().join("proxy.toml");
        dir.write_file(&config, &toml, 0o600, None)?;
        let log = dir.path().join("pool-proxy.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;

        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", &opts.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        // The proxy reads `POOL_PROXY_*` variables over its file: none of ours may leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("POOL_PROXY_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning `{}`", util::describe(&cmd)), e))?;
        let _ = std::fs::write(dir.path().join("pool-proxy.pid"), child.id().to_string());
        let addr = match wait_listening(&mut child) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match e {
                    HarnessError::Other(msg) => {
                        HarnessError::Other(format!("{msg}; its log:\n{}", util::tail(&log, 30)))
                    }
                    e => e,
                });
            }
        };
        Ok(PoolProxy {
            child,
            addr,
            user: o.user.clone(),
            password: o.password.clone(),
            database: o.database.clone(),
            log,
            dir,
        })
    }

    /// `postgresql://user:password@127.0.0.1:port/database` through the proxy.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}/{}",
            util::percent_encode(&self.user),
            util::percent_encode(&self.password),
            self.addr,
            util::percent_encode(&self.database)
        )
    }

    /// A tokio-postgres `Config` for the test user through the proxy.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database);
        c
    }

    /// The listening port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it printed.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id (for CPU accounting in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its scratch directory (proxy.toml, users.txt, the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of its log (stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }
}

impl std::fmt::Debug for PoolProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolProxy")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for PoolProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout for "listening on ADDR" (on a thread, so a proxy that prints
/// nothing cannot hang us past the timeout); keeps draining it afterwards.
fn wait_listening(child: &mut Child) -> Result<SocketAddr, HarnessError> {
    let Some(stdout) = child.stdout.take() else {
        return Err(HarnessError::Other(
            "pool-proxy's stdout was not piped".into(),
        ));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    sent = tx.send(addr.to_owned()).is_ok();
                }
            }
        }
    });
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(addr) => {
                return addr.parse().map_err(|_| {
                    HarnessError::Other(format!(
                        "pool-proxy printed an unreadable address {addr:?}"
                    ))
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok().and_then(|s| s.code());
                return Err(HarnessError::Other(format!(
                    "pool-proxy exited (status {status:?}) before printing \"listening on\""
                )));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::Other(format!(
                "pool-proxy exited ({status}) before printing \"listening on\""
            )));
        }
        if std::time::Instant::now() >= deadline {
            return Err(HarnessError::Other(format!(
                "pool-proxy did not print \"listening on\" within {READY_TIMEOUT:?}"
            )));
        }
    }
}

/// The `pool-proxy` binary to start: `$POOL_PROXY_BIN` if set, else this workspace's, built
/// in release mode by `cargo build --release -p pool-proxy` (cargo is `$CARGO` when run
/// under cargo, else `cargo` on `PATH`; the target directory is cargo's usual choice, so
/// `CARGO_TARGET_DIR` is honoured). Blocking: the first build takes minutes.
pub fn pool_proxy_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("POOL_PROXY_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if util::is_executable(&path) {
            return Ok(path);
        }
        return Err(HarnessError::Other(format!(
            "POOL_PROXY_BIN={} is not an executable file",
            path.display()
        )));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-p", "pool-proxy"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    // What `cargo run` sets for the program it runs describes that program, not this build;
    // inherited, it would change build scripts' inputs (ring's reads CARGO_MANIFEST_DIR) and
    // make this build and the caller's rebuild each other's dependencies every time.
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("CARGO_PKG_") || RUN_VARS.contains(&name_str.as_ref()) {
            cmd.env_remove(&name);
        }
    }
    let described = util::describe(&cmd);
    let out = cmd
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| HarnessError::io(format!("running `{described}`"), e))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: described,
            status: out.status.code(),
            output: "(cargo's errors are above)".into(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "pool-proxy")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            HarnessError::Other(format!(
                "`{described}` succeeded but named no pool-proxy executable"
            ))
        })
}

/// Variables `cargo run` and `cargo test` set for the program they run (besides
/// `CARGO_PKG_*`).
const RUN_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_TARGET_TMPDIR",
    "OUT_DIR",
];

/// `"name"` with `"` doubled, as PgBouncer's (and pool-proxy's) users file wants.
fn userlist_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Kills proxies left behind by processes that were killed outright (their directories
/// name the dead pid; the pid file names the proxy, whose command line names the
/// directory's configuration).
fn sweep_stale_proxies() {
    util::sweep_stale("pp", |dir| {
        let Ok(pid) = std::fs::read_to_string(dir.join("pool-proxy.pid")) else {
            return;
        };
        let pid = pid.trim();
        // Only that proxy: its command line names its configuration in this directory.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let config = dir.join("proxy.toml");
        let ours = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == config.as_os_str().as_encoded_bytes());
        if ours {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    });
}
