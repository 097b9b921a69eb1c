//! The `users-service` binary as an orchestrator runs it: it waits for the database
//! within a bound and exits non-zero with the reason when the bound passes, and SIGTERM
//! drains and closes the pool before a clean exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the binary; its stderr lines arrive on the channel.
fn start(url: &str, wait_secs: u64) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_users-service"))
        .env("DATABASE_URL", url)
        .env("DATABASE_WAIT_SECS", wait_secs.to_string())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run users-service");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Lines until one contains `needle` (panics after `limit`, showing what came).
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no line containing {needle:?} within {limit:?}: {seen:#?}"),
        }
    }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("users-service still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_database_ends_the_start_with_the_reason() {
    let url = format!(
        "postgresql://app:not-this-one@127.0.0.1:{}/app?sslmode=disable",
        closed_port()
    );
    let started = Instant::now();
    let (mut child, rx) = start(&url, 2);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "gave up early: {elapsed:?}"
    );
    let log: Vec<String> = rx.try_iter().collect();
    let reason = log
        .iter()
        .find(|l| l.contains("giving up"))
        .unwrap_or_else(|| panic!("no reason in {log:#?}"));
    assert!(reason.contains("not reachable within 2s"), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert!(
        log.iter().all(|l| !l.contains("not-this-one")),
        "the password is never logged: {log:#?}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_drains_the_pool_and_exits_cleanly() {
    let cluster =
        pg_harness::PgCluster::start(pg_harness::PgOptions::default()).expect("start PostgreSQL");
    let url = format!(
        "{}?application_name=users-service-bin&sslmode=disable",
        cluster.url()
    );
    let (mut child, rx) = start(&url, 20);
    wait_for_line(&rx, "listening on http://", Duration::from_secs(60));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let log: Vec<String> = rx.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("SIGTERM: shutting down")),
        "{log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("pool closed")), "{log:#?}");
}
