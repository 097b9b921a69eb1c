//! The admin console: a client that logs in to the database `pgbouncer` (as an
//! `admin_users` or `stats_users` user) gets no server but the proxy itself, answering
//! `SHOW POOLS`, `SHOW STATS`, `SHOW VERSION` and `SHOW HELP` with PgBouncer's column names
//! where they mean the same, so existing dashboards and scripts work. Simple queries
//! only, as PgBouncer's console.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{ClientContext, ClientStream};
use crate::protocol::backend::{error_response, write_message};
use crate::protocol::frame::Framer;
use crate::protocol::frontend::ClientMessage;
use crate::protocol::take_cstr;
use crate::proxy::SHUTTING_DOWN;
use crate::routes::Route;

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

/// A column's type: text or int8, as PgBouncer's.
#[derive(Clone, Copy)]
enum Column {
    Text(&'static str),
    Int(&'static str),
}

/// A result set being written.
struct Table {
    columns: &'static [Column],
    rows: Vec<Vec<String>>,
}

pub(crate) async fn serve(
    mut stream: ClientStream,
    hello: Vec<u8>,
    early: Vec<u8>,
    ctx: &ClientContext,
    _may_change: bool,
) {
    let mut out = hello;
    let mut framer = Framer::new(ctx.shared.config.max_packet_size);
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
                match answer(sql, ctx) {
                    Ok(tables) => {
                        for table in tables {
                            table.write(&mut out);
                        }
                    }
                    Err(text) => out.extend(error_response("ERROR", "42601", &text)),
                }
                out.extend_from_slice(b"Z\0\0\0\x05I");
            }
            Ok(ClientMessage::Terminate) => return,
            Ok(ClientMessage::Sync) => {
                failed_batch = false;
                out.extend_from_slice(b"Z\0\0\0\x05I");
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

/// The result sets for one query string.
fn answer(sql: &str, ctx: &ClientContext) -> Result<Vec<Table>, String> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", "POOLS"] => Ok(vec![pools(ctx)]),
        ["SHOW", "STATS"] => Ok(vec![stats(ctx)]),
        ["SHOW", "VERSION"] => Ok(vec![Table {
            columns: &[Column::Text("version")],
            rows: vec![vec![
                concat!("pool-proxy ", env!("CARGO_PKG_VERSION")).to_owned()
            ]],
        }]),
        ["SHOW", "HELP"] | [] => Ok(vec![Table {
            columns: &[Column::Text("command")],
            rows: ["SHOW POOLS", "SHOW STATS", "SHOW VERSION", "SHOW HELP"]
                .iter()
                .map(|c| vec![(*c).to_owned()])
                .collect(),
        }]),
        _ => Err(format!(
            "pool-proxy: unknown admin command {:?}; SHOW HELP lists them",
            sql.trim()
        )),
    }
}

/// `SHOW POOLS`: one row per route.
fn pools(ctx: &ClientContext) -> Table {
    const COLUMNS: &[Column] = &[
        Column::Text("database"),
        Column::Text("user"),
        Column::Int("cl_active"),
        Column::Int("cl_waiting"),
        Column::Int("cl_active_cancel_req"),
        Column::Int("cl_waiting_cancel_req"),
        Column::Int("sv_active"),
        Column::Int("sv_active_cancel"),
        Column::Int("sv_being_canceled"),
        Column::Int("sv_idle"),
        Column::Int("sv_used"),
        Column::Int("sv_tested"),
        Column::Int("sv_login"),
        Column::Int("maxwait"),
        Column::Int("maxwait_us"),
        Column::Text("pool_mode"),
    ];
    let now = ctx.shared.clock.now();
    let rows = ctx
        .shared
        .routes
        .all()
        .iter()
        .map(|route: &std::sync::Arc<Route>| {
            let status = route.pool.status();
            let clients = route
                .stats
                .clients
                .load(std::sync::atomic::Ordering::Relaxed);
            let (waiting, longest) = route.stats.waiting(now);
            let n = |v: usize| v.to_string();
            vec![
                route.database.clone(),
                route.user.clone(),
                n(clients.saturating_sub(waiting)),
                n(waiting),
                n(0),
                n(0),
                n(status.leased),
                n(0),
                n(0),
                n(status.idle),
                n(0),
                n(status.checking),
                n(status.opening),
                longest.as_secs().to_string(),
                longest.subsec_micros().to_string(),
                route.mode.to_string(),
            ]
        })
        .collect();
    Table {
        columns: COLUMNS,
        rows,
    }
}

/// `SHOW STATS`: one row per database, summed over its routes. Times in microseconds;
/// the averages are since the proxy started (PgBouncer's are over its `stats_period`).
fn stats(ctx: &ClientContext) -> Table {
    const COLUMNS: &[Column] = &[
        Column::Text("database"),
        Column::Int("total_xact_count"),
        Column::Int("total_query_count"),
        Column::Int("total_received"),
        Column::Int("total_sent"),
        Column::Int("total_xact_time"),
        Column::Int("total_query_time"),
        Column::Int("total_wait_time"),
        Column::Int("avg_xact_count"),
        Column::Int("avg_query_count"),
        Column::Int("avg_recv"),
        Column::Int("avg_sent"),
        Column::Int("avg_xact_time"),
        Column::Int("avg_query_time"),
        Column::Int("avg_wait_time"),
    ];
    let uptime = ctx
        .shared
        .clock
        .now()
        .saturating_since(pool_core::Instant::ZERO)
        .as_secs()
        .max(1);
    let mut by_database: std::collections::BTreeMap<String, crate::stats::Totals> =
        Default::default();
    for route in ctx.shared.routes.all() {
        let totals = route.stats.totals();
        let sum = by_database.entry(route.database.clone()).or_default();
        let (s, t) = (&mut sum.sessions, &totals.sessions);
        s.queries += t.queries;
        s.transactions += t.transactions;
        s.received += t.received;
        s.sent += t.sent;
        s.query_time += t.query_time;
        s.transaction_time += t.transaction_time;
        sum.waits += totals.waits;
        sum.wait_time += totals.wait_time;
    }
    let micros = |d: Duration| d.as_micros().to_string();
    let mean = |total: Duration, count: u64| {
        micros(total.checked_div(count.max(1) as u32).unwrap_or_default())
    };
    let rows = by_database
        .into_iter()
        .map(|(database, t)| {
            let s = t.sessions;
            vec![
                database,
                s.transactions.to_string(),
                s.queries.to_string(),
                s.received.to_string(),
                s.sent.to_string(),
                micros(s.transaction_time),
                micros(s.query_time),
                micros(t.wait_time),
                (s.transactions / uptime).to_string(),
                (s.queries / uptime).to_string(),
                (s.received / uptime).to_string(),
                (s.sent / uptime).to_string(),
                mean(s.transaction_time, s.transactions),
                mean(s.query_time, s.queries),
                mean(t.wait_time, t.waits),
            ]
        })
        .collect();
    Table {
        columns: COLUMNS,
        rows,
    }
}

impl Table {
    /// RowDescription, a DataRow per row, CommandComplete `SHOW`.
    fn write(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.columns.len() as u16).to_be_bytes());
        for column in self.columns {
            let (name, type_oid, type_len): (&str, u32, i16) = match column {
                Column::Text(name) => (name, 25, -1),
                Column::Int(name) => (name, 20, 8),
            };
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&0u32.to_be_bytes()); // table
            body.extend_from_slice(&0i16.to_be_bytes()); // column
            body.extend_from_slice(&type_oid.to_be_bytes());
            body.extend_from_slice(&type_len.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
            body.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
        write_message(out, b'T', &body);
        for row in &self.rows {
            let mut body = Vec::new();
            body.extend_from_slice(&(row.len() as u16).to_be_bytes());
            for value in row {
                body.extend_from_slice(&(value.len() as u32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            write_message(out, b'D', &body);
        }
        write_message(out, b'C', b"SHOW\0");
    }
}
