//! CPU time from `/proc`, to split a run's CPU between the load generator, the pooler and
//! PostgreSQL (they share the machine's cores, so a pooler's throughput alone does not
//! say what it costs). Linux only; a figure that cannot be read is `None`.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on every Linux architecture
/// this runs on; std has no `sysconf`).
const TICKS_PER_SEC: f64 = 100.0;

/// Seconds of CPU, from ticks.
pub(crate) fn seconds(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SEC
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces):
/// index 0 is field 3 (`state`), so field `n` of proc(5) is index `n - 3`.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

const PPID: usize = 4 - 3;
const UTIME: usize = 14 - 3;
const STIME: usize = 15 - 3;
const CUTIME: usize = 16 - 3;
const CSTIME: usize = 17 - 3;

/// User + system ticks of one process (all its threads).
pub(crate) fn process(pid: u32) -> Option<u64> {
    let f = stat_fields(&pid.to_string())?;
    Some(f.get(UTIME)? + f.get(STIME)?)
}

/// Ticks of the children this process has waited for (pgbench runs, once reaped).
pub(crate) fn waited_children() -> Option<u64> {
    let f = stat_fields("self")?;
    Some(f.get(CUTIME)? + f.get(CSTIME)?)
}

/// A process tree one level deep, as PostgreSQL is: the postmaster's own ticks, those of
/// the children it has reaped (backends that exited), and those of its live children.
pub(crate) fn tree(parent: u32) -> Option<u64> {
    let f = stat_fields(&parent.to_string())?;
    let mut ticks = f.get(UTIME)? + f.get(STIME)? + f.get(CUTIME)? + f.get(CSTIME)?;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(c) = stat_fields(pid) {
            if c.get(PPID) == Some(&u64::from(parent)) {
                ticks += c.get(UTIME).unwrap_or(&0) + c.get(STIME).unwrap_or(&0);
            }
        }
    }
    Some(ticks)
}

/// Busy and total ticks of the whole machine (`/proc/stat`'s `cpu` line; busy is all but
/// idle and iowait), summed over cores.
pub(crate) fn machine() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}
