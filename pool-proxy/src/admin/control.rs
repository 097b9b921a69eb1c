//! The commands that change the proxy: `PAUSE [db]`, `RESUME [db]`, `RELOAD` and
//! `SHUTDOWN`, for `admin_users` only.

use std::time::Duration;

use crate::client::ClientContext;
use crate::protocol::backend::{command_complete, notice_response};

/// How often PAUSE looks whether the last server of its databases came back.
const PAUSE_POLL: Duration = Duration::from_millis(10);

/// `PAUSE [db]`: from now on the database's (or every database's) new transactions wait;
/// returns once none of its servers is lent, that is once every client that was inside a
/// transaction has finished it (a pinned client, or one in session mode, holds its server
/// until it leaves, and PAUSE waits for that too, as PgBouncer's does).
pub(super) async fn pause(ctx: &ClientContext, database: Option<&str>) -> Result<Vec<u8>, String> {
    known(ctx, database)?;
    ctx.shared.pauses.pause(database);
    tracing::info!(
        database = database.unwrap_or("*"),
        "PAUSE: waiting for servers to come back"
    );
    let mut shutdown = ctx.shared.shutdown.subscribe();
    loop {
        let lent: usize = ctx
            .shared
            .routes
            .all()
            .iter()
            .filter(|route| database.is_none_or(|db| route.database == db))
            .map(|route| route.pool.status().leased)
            .sum();
        if lent == 0 {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(PAUSE_POLL) => {}
            _ = shutdown.wait_for(|down| *down) => {
                return Err("pool-proxy: PAUSE interrupted: the proxy is shutting down".to_owned());
            }
        }
    }
    tracing::info!(database = database.unwrap_or("*"), "paused");
    let mut out = Vec::new();
    command_complete(&mut out, "PAUSE");
    Ok(out)
}

/// `RESUME [db]`: the waiting transactions go on.
pub(super) fn resume(ctx: &ClientContext, database: Option<&str>) -> Result<Vec<u8>, String> {
    known(ctx, database)?;
    if !ctx.shared.pauses.resume(database) {
        return Err(match database {
            Some(db) => format!("pool-proxy: database \"{db}\" is not paused"),
            None => "pool-proxy: nothing is paused".to_owned(),
        });
    }
    tracing::info!(database = database.unwrap_or("*"), "resumed");
    let mut out = Vec::new();
    command_complete(&mut out, "RESUME");
    Ok(out)
}

/// `SHUTDOWN`: the same drain as SIGTERM (see `proxy.rs`); this console client is let go
/// with the others.
pub(super) fn shutdown(ctx: &ClientContext) -> Vec<u8> {
    tracing::info!(client = ctx.id, "SHUTDOWN from the admin console");
    ctx.shared.shutdown.send_replace(true);
    let mut out = Vec::new();
    command_complete(&mut out, "SHUTDOWN");
    out
}

/// `RELOAD`: the configuration read again (see `reload.rs`); what a reload cannot change
/// is each a NOTICE, and the command fails (the old configuration kept) when the new one
/// is wrong.
pub(super) fn reload(ctx: &ClientContext) -> Result<Vec<u8>, String> {
    let report = crate::reload::reload(&ctx.shared).map_err(|e| {
        format!("pool-proxy: RELOAD failed, the configuration in force is unchanged: {e}")
    })?;
    let mut out = Vec::new();
    for line in report.notices() {
        out.extend(notice_response("01000", &line));
    }
    command_complete(&mut out, "RELOAD");
    Ok(out)
}

/// A database PAUSE or RESUME names must be configured.
fn known(ctx: &ClientContext, database: Option<&str>) -> Result<(), String> {
    match database {
        Some(db) if !ctx.shared.config().databases.contains_key(db) => {
            Err(format!("pool-proxy: no database \"{db}\" is configured"))
        }
        _ => Ok(()),
    }
}
