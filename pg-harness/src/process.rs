//! A server's processes as the kernel sees them (`/proc`), and signals to them: what the
//! hard faults ([`crate::PgCluster::kill_hard`], [`crate::PgCluster::freeze`]) and the
//! clean-up after them need. Linux only, like the rest of the harness.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::HarnessError;

/// How long a signalled process may take to reach the state the harness waits for.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// A process's scheduler state, the third field of `/proc/<pid>/stat` (`R`, `S`, `D`, `T`,
/// `Z`, ...); `None` once the process is gone.
pub(crate) fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the state
    // is read after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether the process is gone or a zombie: it holds no memory, sockets or files any more
/// (a zombie only waits for its parent, or init, to reap it).
pub(crate) fn is_dead(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z' | 'X' | 'x'))
}

/// Whether the process is stopped by a signal (`T`); a process under a debugger (`t`)
/// counts too.
fn is_stopped(pid: u32) -> bool {
    matches!(state(pid), Some('T' | 't'))
}

fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The live children of `pid` (for a postmaster: its backends and auxiliary processes).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    pids()
        .filter(|&p| parent(p) == Some(pid) && !is_dead(p))
        .collect()
}

/// The live processes whose working directory is `dir`. PostgreSQL's processes all work in
/// their data directory, so once the postmaster is dead (its children are then
/// re-parented and no longer found by [`children`]) this finds the backends it left.
pub(crate) fn working_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let me = std::process::id();
    pids()
        .filter(|&p| p != me)
        .filter(|&p| fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| cwd == dir))
        .filter(|&p| !is_dead(p))
        .collect()
}

/// The pid recorded on the first line of a PostgreSQL lock file (`postmaster.pid`,
/// `.s.PGSQL.<port>.lock`), if the file exists and has one.
pub(crate) fn lock_file_pid(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    // A negative pid marks a lock taken by a single-user backend; either way the process.
    text.lines()
        .next()?
        .trim()
        .trim_start_matches('-')
        .parse()
        .ok()
}

/// Sends `signal`; a process that is already gone is not an error (it is what a
/// kill wants, and a freeze or thaw has nothing left to do for it).
pub(crate) fn signal(pid: u32, signal: Signal, what: &str) -> Result<(), HarnessError> {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(HarnessError::Other(format!(
            "{what}: {pid} is not a process id"
        )));
    };
    match kill_process(target, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(HarnessError::io(
            format!("{what}: signalling process {pid}"),
            e.into(),
        )),
    }
}

/// Polls until every process in `pids` is dead (gone or a zombie), or errors after
/// `timeout` naming those still alive and their states.
pub(crate) fn wait_dead(pids: &[u32], timeout: Duration, what: &str) -> Result<(), HarnessError> {
    wait_all(pids, timeout, what, "to exit", is_dead)
}

/// Polls until every process in `pids` is stopped or dead, or errors after `timeout`.
pub(crate) fn wait_stopped(
    pids: &[u32],
    timeout: Duration,
    what: &str,
) -> Result<(), HarnessError> {
    wait_all(pids, timeout, what, "to stop", |p| {
        is_stopped(p) || is_dead(p)
    })
}

/// Polls until no process in `pids` is stopped (each runs, sleeps, or is gone).
pub(crate) fn wait_running(
    pids: &[u32],
    timeout: Duration,
    what: &str,
) -> Result<(), HarnessError> {
    wait_all(pids, timeout, what, "to continue", |p| !is_stopped(p))
}

fn wait_all(
    pids: &[u32],
    timeout: Duration,
    what: &str,
    goal: &str,
    done: impl Fn(u32) -> bool,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: Vec<u32> = pids.iter().copied().filter(|&p| !done(p)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = pending
                .iter()
                .map(|&p| format!("{p} ({})", state(p).unwrap_or('?')))
                .collect();
            return Err(HarnessError::Timeout(format!(
                "{what}: processes still waiting {goal} after {timeout:?}: {}",
                states.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
