//! Memory per idle client: a pooler's resident set before and after `n` clients have
//! logged in (startup, SCRAM, ReadyForQuery) and sit idle, divided by `n`. An idle client
//! in transaction mode holds no server connection, so this is what the pooler itself
//! keeps per connected client.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio_postgres::NoTls;

/// Logins in flight at once (both poolers' listen backlogs are larger).
const CONCURRENT_LOGINS: usize = 32;
/// How long the pooler is left to settle after the last login, before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

/// What holding `n` idle clients cost one pooler.
#[derive(Debug)]
pub(crate) struct IdleMemory {
    /// Clients that logged in and were held.
    pub connected: usize,
    /// Clients asked for.
    pub wanted: usize,
    /// VmRSS before the first login and with every client connected, bytes.
    pub rss_before: u64,
    pub rss_after: u64,
    /// Wall time of the logins.
    pub login_time: Duration,
    /// The first failed login's error, if any failed.
    pub first_error: Option<String>,
}

impl IdleMemory {
    /// Bytes of resident memory per connected client.
    pub fn per_client(&self) -> Option<f64> {
        (self.connected > 0)
            .then(|| self.rss_after.saturating_sub(self.rss_before) as f64 / self.connected as f64)
    }
}

/// `VmRSS` of `pid` from `/proc/<pid>/status`, in bytes.
pub(crate) fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Logs `n` clients in to the pooler `pid` listening as `config` says, holds them idle
/// while its RSS is read, then closes them all.
pub(crate) fn measure(
    pid: u32,
    config: &tokio_postgres::Config,
    n: usize,
) -> Result<IdleMemory, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("building a tokio runtime: {e}"))?;
    let rss_before = vm_rss(pid).ok_or_else(|| format!("no VmRSS for pid {pid}"))?;
    let started = Instant::now();
    let results: Vec<Result<tokio_postgres::Client, tokio_postgres::Error>> = rt.block_on(
        stream::iter(0..n)
            .map(|_| {
                let config = config.clone();
                async move {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
            })
            .buffer_unordered(CONCURRENT_LOGINS)
            .collect(),
    );
    let login_time = started.elapsed();
    let mut clients = Vec::with_capacity(n);
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) if first_error.is_none() => first_error = Some(e.to_string()),
            Err(_) => {}
        }
    }
    std::thread::sleep(SETTLE);
    let rss_after = vm_rss(pid).ok_or_else(|| format!("no VmRSS for pid {pid}"))?;
    let connected = clients.len();
    drop(clients);
    // Dropping the runtime ends the connection tasks, closing every socket.
    drop(rt);
    Ok(IdleMemory {
        connected,
        wanted: n,
        rss_before,
        rss_after,
        login_time,
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_rss_is_read_and_grows_with_touched_memory() {
        let before = vm_rss(std::process::id()).expect("VmRSS of this process");
        assert!(before > 0);
        let touched = std::hint::black_box(vec![1u8; 32 << 20]);
        let after = vm_rss(std::process::id()).expect("VmRSS of this process");
        assert!(after >= before + (16 << 20), "{before} -> {after}");
        drop(touched);
        assert_eq!(vm_rss(u32::MAX), None);
    }

    #[test]
    fn memory_per_client_is_the_growth_over_the_clients_held() {
        let m = IdleMemory {
            connected: 4,
            wanted: 5,
            rss_before: 1000,
            rss_after: 9000,
            login_time: Duration::ZERO,
            first_error: Some("refused".into()),
        };
        assert_eq!(m.per_client(), Some(2000.0));
        let none = IdleMemory { connected: 0, ..m };
        assert_eq!(none.per_client(), None);
    }
}
