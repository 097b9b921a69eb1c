//! `DATABASE_URL=postgresql://user:pw@host/db?connection_limit=10 users-service`
//!
//! Listens on `LISTEN_ADDR` (default `127.0.0.1:3000`). Ctrl-C stops accepting requests,
//! lets in-flight ones finish, then closes the pool (waiting up to 5 s for borrowed
//! connections).

use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "users-service: set DATABASE_URL, e.g. postgresql://user:password@localhost:5432/db"
        );
        return ExitCode::FAILURE;
    };
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let pool = match users_service::pool_from_url(&url) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("users-service: bad DATABASE_URL: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("users-service: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("users-service: listening on http://{addr}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("users-service: shutting down");
    };
    let served = users_service::serve_until(listener, pool.clone(), shutdown).await;
    let forced = pool.close(Duration::from_secs(5)).await;
    if forced > 0 {
        eprintln!("users-service: {forced} connection(s) still borrowed at shutdown were closed");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("users-service: {e}");
            ExitCode::FAILURE
        }
    }
}
