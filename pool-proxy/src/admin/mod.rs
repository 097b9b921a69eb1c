//! The admin console: a client that logs in to the database `pgbouncer` (as an
//! `admin_users` or `stats_users` user) gets no server but the proxy itself: the `SHOW`
//! commands ([`show`]: POOLS, STATS, CLIENTS, SERVERS, DATABASES, CONFIG, VERSION, HELP)
//! with PgBouncer's column names where they mean the same, so existing dashboards and
//! scripts work; and for `admin_users` the commands that change the proxy ([`control`]:
//! PAUSE, RESUME, RELOAD, SHUTDOWN). Simple queries only, as PgBouncer's console.

mod control;
mod show;
mod table;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{ClientContext, ClientStream};
use crate::protocol::backend::{error_response, ready_for_query, TransactionStatus};
use crate::protocol::frame::Framer;
use crate::protocol::frontend::ClientMessage;
use crate::protocol::take_cstr;
use crate::proxy::SHUTTING_DOWN;

/// How long the console's goodbye may take to write to a client that does not read.
const CLOSE_WRITE: Duration = Duration::from_secs(1);

/// The ParameterStatus the console reports: what psql and drivers look for.
pub fn parameters() -> Vec<(String, String)> {
    [
        (
            "server_version",
            concat!("15.0 (pool-proxy ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

pub(crate) async fn serve(
    mut stream: ClientStream,
    hello: Vec<u8>,
    early: Vec<u8>,
    ctx: &ClientContext,
    may_change: bool,
) {
    let mut out = hello;
    let mut framer = Framer::new(ctx.shared.config().max_packet_size);
    framer.push(&early);
    let mut buf = vec![0u8; 8192];
    let mut failed_batch = false;
    let mut shutdown = ctx.shared.shutdown.subscribe();
    loop {
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let frame = match framer.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // A console client holds no server: a shutdown lets it go at once.
                let read = tokio::select! {
                    biased;
                    () = async { drop(shutdown.wait_for(|down| *down).await) } => {
                        let bytes = error_response("FATAL", "57P01", SHUTTING_DOWN);
                        let _ = tokio::time::timeout(CLOSE_WRITE, stream.write_all(&bytes)).await;
                        return;
                    }
                    read = stream.read(&mut buf) => read,
                };
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        framer.push(&buf[..n]);
                        continue;
                    }
                }
            }
            Err(e) => {
                let text = format!("pool-proxy: protocol violation: {e}");
                out.extend(error_response("FATAL", "08P01", &text));
                let _ = stream.write_all(&out).await;
                return;
            }
        };
        match ClientMessage::classify(&frame) {
            Ok(ClientMessage::Query) => {
                let sql = take_cstr(frame.body()).map_or("", |(sql, _)| sql);
                match answer(sql, ctx, may_change).await {
                    Ok(reply) => out.extend(reply),
                    Err((sqlstate, text)) => out.extend(error_response("ERROR", sqlstate, &text)),
                }
                ready_for_query(&mut out, TransactionStatus::Idle);
            }
            Ok(ClientMessage::Terminate) => return,
            Ok(ClientMessage::Sync) => {
                failed_batch = false;
                ready_for_query(&mut out, TransactionStatus::Idle);
            }
            Ok(ClientMessage::Flush) => {}
            Ok(_) => {
                if !failed_batch {
                    failed_batch = true;
                    out.extend(error_response(
                        "ERROR",
                        "0A000",
                        "pool-proxy: the admin console accepts simple queries only",
                    ));
                }
            }
            Err(e) => {
                let text = format!("pool-proxy: protocol violation: {e}");
                out.extend(error_response("FATAL", "08P01", &text));
                let _ = stream.write_all(&out).await;
                return;
            }
        }
    }
}

/// The reply to one query string: result sets or a command's completion, or an error's
/// SQLSTATE and text. Keywords in any case; a database name as written.
async fn answer(
    sql: &str,
    ctx: &ClientContext,
    may_change: bool,
) -> Result<Vec<u8>, (&'static str, String)> {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    let keyword = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    let (first, second) = (keyword(0), keyword(1));
    let syntax = |text: String| ("42601", text);
    let unknown = || {
        syntax(format!(
            "pool-proxy: unknown admin command {:?}; SHOW HELP lists them",
            sql.trim()
        ))
    };
    let table = |table: table::Table| {
        let mut out = Vec::new();
        table.write(&mut out);
        Ok(out)
    };
    if first.as_deref() == Some("SHOW") || words.is_empty() {
        if words.len() > 2 {
            return Err(unknown());
        }
        return match second.as_deref() {
            Some("HELP") | None => table(show::help()),
            Some("VERSION") => table(show::version()),
            Some("POOLS") => table(show::pools(ctx)),
            Some("STATS") => table(show::stats(ctx)),
            Some("CLIENTS") => table(show::clients(ctx)),
            Some("SERVERS") => table(show::servers(ctx)),
            Some("DATABASES") => table(show::databases(ctx)),
            Some("CONFIG") => table(show::config(ctx)),
            Some(_) => Err(unknown()),
        };
    }
    let command = first.unwrap_or_default();
    if !["PAUSE", "RESUME", "RELOAD", "SHUTDOWN"].contains(&command.as_str()) {
        return Err(unknown());
    }
    if !may_change {
        return Err((
            "42501",
            format!("pool-proxy: {command} is for admin_users; stats_users may only SHOW"),
        ));
    }
    let database = words.get(1).copied();
    let internal = |text: String| ("55000", text);
    match (command.as_str(), words.len()) {
        ("PAUSE", 1 | 2) => control::pause(ctx, database).await.map_err(internal),
        ("RESUME", 1 | 2) => control::resume(ctx, database).map_err(internal),
        ("RELOAD", 1) => control::reload(ctx).map_err(|text| ("F0000", text)),
        ("SHUTDOWN", 1) => Ok(control::shutdown(ctx)),
        _ => Err(unknown()),
    }
}
