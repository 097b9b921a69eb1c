//! Process, user, port and scratch-directory helpers shared by the PostgreSQL and PgBouncer
//! harnesses.

use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::HarnessError;

/// The OS account servers run as: `postgres` when we are root (postgres and pgbouncer refuse
/// to run as root), otherwise ourselves (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Environment variables that would silently redirect libpq-based tools (psql, pg_ctl's
/// readiness probe) away from the cluster we mean.
const PG_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGDATA",
    "PGAPPNAME",
];

fn effective_uid() -> Result<u32, HarnessError> {
    // /proc/self belongs to the process's effective uid; this avoids `unsafe { geteuid() }`.
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| HarnessError::io("reading /proc/self to find our uid", e))
}

/// Whom to run servers as. Root → the `postgres` account (created by the Debian package).
pub(crate) fn service_user() -> Result<Option<RunAs>, HarnessError> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| HarnessError::io("reading /etc/passwd", e))?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            let uid = fields[2].parse().ok();
            let gid = fields[3].parse().ok();
            if let (Some(uid), Some(gid)) = (uid, gid) {
                return Ok(Some(RunAs { uid, gid }));
            }
        }
    }
    Err(HarnessError::NotInstalled {
        what: "the `postgres` OS user (needed because the tests run as root and PostgreSQL \
               refuses to run as root)"
            .into(),
        install: "apt-get install -y postgresql",
    })
}

/// A `Command` that runs `program` as `run_as` (std's `CommandExt::uid/gid`, which also
/// drops supplementary groups), in `cwd`, with a clean libpq environment.
pub(crate) fn command(program: &Path, run_as: Option<RunAs>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.env("HOME", cwd).env("LC_ALL", "C");
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
        cmd.env("USER", "postgres").env("LOGNAME", "postgres");
    }
    cmd
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Commands slower than this are reported on stderr.
const SLOW_COMMAND: Duration = Duration::from_secs(5);

/// Runs `cmd` to completion; a non-zero exit becomes `HarnessError::Command` with its output
/// and `extra` (e.g. the server log tail) appended.
pub(crate) fn run(
    mut cmd: Command,
    extra: impl FnOnce() -> String,
) -> Result<Output, HarnessError> {
    let described = describe(&cmd);
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| HarnessError::io(format!("running `{described}`"), e))?;
    let took = started.elapsed();
    if took > SLOW_COMMAND {
        // Shown with the output of a failing test: explains a slow or timed-out run.
        eprintln!("pg-harness: `{described}` took {took:?}");
    }
    if out.status.success() {
        return Ok(out);
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    let extra = extra();
    if !extra.is_empty() {
        output.push_str("\n--- log tail ---\n");
        output.push_str(&extra);
    }
    Err(HarnessError::Command {
        command: described,
        status: out.status.code(),
        output,
    })
}

/// The last `n` lines of a file, or "" if unreadable.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let Ok(s) = fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A currently free port on 127.0.0.1 (bind port 0, read it, release it). Racy by nature:
/// callers retry when the server then reports the address in use.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to pick a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("reading the picked port", e))
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`, `alive()` turns
/// false, or `timeout` passes. Returns whether it is accepting.
pub(crate) fn wait_for_tcp(port: u16, timeout: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// First existing executable among `candidates`, else `name` found on `PATH`.
pub(crate) fn find_program(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    for c in candidates {
        if is_executable(c) {
            return Some(c.clone());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

const SCRATCH_PREFIX: &str = "pool-suite-";

/// Where scratch directories go: `$POOL_SUITE_TMPDIR`, else `/dev/shm` (tmpfs: initdb takes
/// ~0.3 s there against ~1.3 s on this machine's disk), else `/tmp`. Both are world-writable
/// with the sticky bit, so the `postgres` user can reach its directory, unlike e.g. a
/// root-only `$TMPDIR`.
fn scratch_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("POOL_SUITE_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let usable = fs::metadata(shm)
        .map(|m| m.is_dir() && m.permissions().mode() & 0o1777 == 0o1777)
        .unwrap_or(false);
    if usable {
        shm.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    }
}

/// A fresh directory owned by `run_as` (mode 0700), removed on drop. Its name carries our
/// pid so that [`sweep_stale`] can clean up after processes that were killed outright.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(kind: &str, run_as: Option<RunAs>) -> Result<ScratchDir, HarnessError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{SCRATCH_PREFIX}{kind}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = scratch_root().join(name);
        fs::create_dir(&path)
            .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
        let dir = ScratchDir { path };
        dir.prepare(&dir.path, run_as)?;
        Ok(dir)
    }

    /// Makes `path` (inside this dir) owned by `run_as` with mode 0700.
    pub(crate) fn prepare(&self, path: &Path, run_as: Option<RunAs>) -> Result<(), HarnessError> {
        if !path.exists() {
            fs::create_dir_all(path)
                .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io(format!("chmod {}", path.display()), e))?;
        if let Some(u) = run_as {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Writes a file owned by `run_as` with `mode`.
    pub(crate) fn write_file(
        &self,
        path: &Path,
        contents: &str,
        mode: u32,
        run_as: Option<RunAs>,
    ) -> Result<(), HarnessError> {
        fs::write(path, contents)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| HarnessError::io(format!("chmod {}", path.display()), e))?;
        if let Some(u) = run_as {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Cleans up scratch directories of `kind` left by processes that no longer exist (a test
/// binary killed with SIGKILL never runs its destructors): `stop` is called on each (to stop
/// a server still running from it), then the directory is removed.
pub(crate) fn sweep_stale(kind: &str, stop: impl Fn(&Path)) {
    let prefix = format!("{SCRATCH_PREFIX}{kind}-");
    let Ok(entries) = fs::read_dir(scratch_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue; // owner alive (or pid reused): leave it alone
        }
        let path = entry.path();
        stop(&path);
        let _ = fs::remove_dir_all(&path);
    }
}

/// Quotes a value for postgresql.conf / pgbouncer.ini.
pub(crate) fn conf_quote(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', "''"))
}

/// Percent-encodes a URL component (userinfo, path).
pub(crate) fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
