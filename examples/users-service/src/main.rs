//! `DATABASE_URL=postgresql://user:pw@host/db?connection_limit=10 users-service`
//!
//! With read replicas: `DATABASE_REPLICA_URLS` (URLs separated by spaces) beside
//! `DATABASE_URL`, or a multi-host `DATABASE_URL` (`postgresql://user:pw@h1,h2,h3/db`):
//! `POST /users` then writes on the primary and `GET /users/{id}` reads from a replica
//! (see docs/guides/read-replicas.md).
//!
//! Listens on `LISTEN_ADDR` (default `127.0.0.1:3000`). At start it waits for the
//! database for at most `DATABASE_WAIT_SECS` (default 30) and exits non-zero with the
//! reason if it is still unreachable. Ctrl-C or SIGTERM stops accepting requests, lets
//! in-flight ones finish, then closes the pool (waiting up to 5 s for borrowed
//! connections). Logs go to stderr through `tracing` (`RUST_LOG`, default `info`).

use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        tracing::error!("set DATABASE_URL, e.g. postgresql://user:password@localhost:5432/db");
        return ExitCode::FAILURE;
    };
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let wait = match std::env::var("DATABASE_WAIT_SECS").map(|s| s.parse::<u64>()) {
        Err(_) => Duration::from_secs(30),
        Ok(Ok(secs)) => Duration::from_secs(secs),
        Ok(Err(_)) => {
            tracing::error!("DATABASE_WAIT_SECS must be a whole number of seconds");
            return ExitCode::FAILURE;
        }
    };
    // Registered now, so a signal that arrives while the database is awaited or the
    // table created is not lost (nor fatal).
    let mut signal = Box::pin(shutdown_signal());
    let replica_urls = std::env::var("DATABASE_REPLICA_URLS").unwrap_or_default();
    let replica_urls: Vec<&str> = replica_urls.split_whitespace().collect();
    let multi_host = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .is_some_and(|authority| authority.contains(','));
    let db: users_service::Database = if replica_urls.is_empty() && !multi_host {
        match users_service::pool_from_url(&url) {
            Ok(pool) => pool.into(),
            Err(e) => {
                tracing::error!("bad DATABASE_URL: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match users_service::replicas_from_urls(&url, &replica_urls) {
            Ok(set) => set.into(),
            Err(e) => {
                tracing::error!("bad DATABASE_URL or DATABASE_REPLICA_URLS: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let pool = db.primary().clone();
    let waited = tokio::select! {
        waited = users_service::wait_for_database(&pool, wait) => waited,
        signal = &mut signal => Err(format!("{signal} while waiting for the database")),
    };
    if let Err(reason) = waited {
        tracing::error!("giving up: {reason}");
        db.close(Duration::ZERO).await;
        return ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(local) => tracing::info!("listening on http://{local}"),
        Err(_) => tracing::info!("listening on http://{addr}"),
    }
    let shutdown = async move {
        let signal = signal.await;
        tracing::info!("{signal}: shutting down");
    };
    let served = users_service::serve_until(listener, db.clone(), shutdown).await;
    let forced = db.close(Duration::from_secs(5)).await;
    if forced > 0 {
        tracing::warn!("{forced} connection(s) still borrowed at shutdown were closed");
    }
    tracing::info!("pool closed");
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C, or SIGTERM (what an orchestrator sends) on Unix; resolves to the signal's
/// name. The handlers are registered when this is called, not when it is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => "ctrl-c",
                    _ = terminate.recv() => "SIGTERM",
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    "ctrl-c"
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}
