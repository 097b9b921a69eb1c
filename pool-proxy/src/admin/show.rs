//! The `SHOW` commands: PgBouncer's column names and order (1.18's) where the meaning is
//! the same, so its dashboards and scripts read the proxy unchanged.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::table::{Column, Table};
use crate::client::ClientContext;
use crate::config::SETTINGS;
use crate::registry::timestamp;
use crate::routes::Route;

/// The commands `SHOW HELP` lists, in its order.
pub(super) const COMMANDS: [&str; 14] = [
    "SHOW HELP",
    "SHOW VERSION",
    "SHOW CONFIG",
    "SHOW DATABASES",
    "SHOW POOLS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW STATS",
    "PAUSE [<db>]",
    "RESUME [<db>]",
    "RELOAD",
    "SHUTDOWN",
    "(admin_users only: PAUSE, RESUME, RELOAD, SHUTDOWN)",
    "(stats_users: SHOW only)",
];

pub(super) fn help() -> Table {
    Table {
        columns: &[Column::Text("command")],
        rows: COMMANDS.iter().map(|c| vec![(*c).to_owned()]).collect(),
    }
}

pub(super) fn version() -> Table {
    Table {
        columns: &[Column::Text("version")],
        rows: vec![vec![
            concat!("pool-proxy ", env!("CARGO_PKG_VERSION")).to_owned()
        ]],
    }
}

/// The columns of `SHOW CLIENTS` and `SHOW SERVERS` (PgBouncer lists both alike).
const CONNECTION_COLUMNS: &[Column] = &[
    Column::Text("type"),
    Column::Text("user"),
    Column::Text("database"),
    Column::Text("state"),
    Column::Text("addr"),
    Column::Int("port"),
    Column::Text("local_addr"),
    Column::Int("local_port"),
    Column::Text("connect_time"),
    Column::Text("request_time"),
    Column::Int("wait"),
    Column::Int("wait_us"),
    Column::Int("close_needed"),
    Column::Text("ptr"),
    Column::Text("link"),
    Column::Int("remote_pid"),
    Column::Text("tls"),
    Column::Text("application_name"),
];

/// `SHOW CLIENTS`: every logged-in client (console clients too). `state` is `active`
/// (holding a server), `waiting` (for one) or `idle` (between transactions); `ptr` is the
/// proxy's number for the client and `link` the `ptr` of the server it holds.
pub(super) fn clients(ctx: &ClientContext) -> Table {
    let now = ctx.shared.clock.now();
    let rows = ctx
        .shared
        .registry
        .clients()
        .iter()
        .map(|client| {
            let wait = client.wait(now);
            let (local_addr, local_port) = split_addr(client.local);
            vec![
                "C".to_owned(),
                client.user.clone(),
                client.database.clone(),
                client.state().to_string(),
                client.peer.ip().to_string(),
                client.peer.port().to_string(),
                local_addr,
                local_port,
                timestamp(client.connected),
                timestamp(client.requested().unwrap_or(client.connected)),
                wait.as_secs().to_string(),
                wait.subsec_micros().to_string(),
                "0".to_owned(),
                client.id.to_string(),
                client.link().map(|id| id.to_string()).unwrap_or_default(),
                "0".to_owned(),
                if client.tls { "TLS" } else { "" }.to_owned(),
                client.application_name.clone(),
            ]
        })
        .collect();
    Table {
        columns: CONNECTION_COLUMNS,
        rows,
    }
}

/// `SHOW SERVERS`: every open server connection that has logged in. `state` is
/// `active` (lent; `link` is its client's `ptr`) or `idle` (in the pool); `user` is the
/// user it logged in as; `remote_pid` the server process; `local_addr` and `local_port`
/// the proxy's end (the server's `client_addr` and `client_port`).
pub(super) fn servers(ctx: &ClientContext) -> Table {
    let rows = ctx
        .shared
        .registry
        .servers()
        .iter()
        .map(|server| {
            let (local_addr, local_port) = split_addr(server.local);
            vec![
                "S".to_owned(),
                server.user.clone(),
                server.database.clone(),
                server.state().to_string(),
                server.addr.clone(),
                server.port.to_string(),
                local_addr,
                local_port,
                timestamp(server.connected),
                timestamp(server.requested().unwrap_or(server.connected)),
                "0".to_owned(),
                "0".to_owned(),
                "0".to_owned(),
                server.id.to_string(),
                server.link().map(|id| id.to_string()).unwrap_or_default(),
                server.remote_pid.to_string(),
                String::new(),
                String::new(),
            ]
        })
        .collect();
    Table {
        columns: CONNECTION_COLUMNS,
        rows,
    }
}

fn split_addr(addr: Option<SocketAddr>) -> (String, String) {
    match addr {
        Some(addr) => (addr.ip().to_string(), addr.port().to_string()),
        None => (String::new(), "0".to_owned()),
    }
}

/// `SHOW DATABASES`: one row per configured database: where its server is (the URL's
/// first host, port and database, and its user as `force_user`), its pool settings, the
/// server connections its routes hold now, and whether it is paused.
pub(super) fn databases(ctx: &ClientContext) -> Table {
    const COLUMNS: &[Column] = &[
        Column::Text("name"),
        Column::Text("host"),
        Column::Int("port"),
        Column::Text("database"),
        Column::Text("force_user"),
        Column::Int("pool_size"),
        Column::Int("min_pool_size"),
        Column::Int("reserve_pool"),
        Column::Text("pool_mode"),
        Column::Int("max_connections"),
        Column::Int("current_connections"),
        Column::Int("paused"),
        Column::Int("disabled"),
    ];
    let config = ctx.shared.config();
    let routes = ctx.shared.routes.all();
    let paused = ctx.shared.pauses.paused();
    let rows = config
        .databases
        .iter()
        .map(|(name, db)| {
            let upstream = db.manager.config();
            let host = upstream
                .get_hosts()
                .iter()
                .map(|host| match host {
                    tokio_postgres::config::Host::Tcp(host) => host.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let port = upstream.get_ports().first().copied().unwrap_or(5432);
            let current: usize = routes
                .iter()
                .filter(|route| route.database == *name)
                .map(|route| route.pool.status().total)
                .sum();
            vec![
                name.clone(),
                host,
                port.to_string(),
                upstream.get_dbname().unwrap_or(name).to_owned(),
                upstream.get_user().unwrap_or_default().to_owned(),
                db.pool_size.to_string(),
                db.min_pool_size.to_string(),
                "0".to_owned(),
                db.pool_mode.to_string(),
                "0".to_owned(),
                current.to_string(),
                u8::from(paused.covers(name)).to_string(),
                "0".to_owned(),
            ]
        })
        .collect();
    Table {
        columns: COLUMNS,
        rows,
    }
}

/// `SHOW CONFIG`: every setting of the settings list, its value in force, its default,
/// and whether a RELOAD changes it (`yes`) or only a restart does (`no`). No setting is
/// a secret; the databases' URLs and the users' secrets are not settings.
pub(super) fn config(ctx: &ClientContext) -> Table {
    const COLUMNS: &[Column] = &[
        Column::Text("key"),
        Column::Text("value"),
        Column::Text("default"),
        Column::Text("changeable"),
    ];
    let listing = ctx.shared.config().listing();
    let rows = SETTINGS
        .iter()
        .zip(listing)
        .map(|(setting, (name, value))| {
            debug_assert_eq!(setting.name, name);
            vec![
                name,
                value,
                (setting.default)(),
                if setting.reloadable() { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    Table {
        columns: COLUMNS,
        rows,
    }
}

/// `SHOW POOLS`: one row per route.
pub(super) fn pools(ctx: &ClientContext) -> Table {
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
        .map(|route: &Arc<Route>| {
            let status = route.pool.status();
            let clients = route.stats.clients.load(Relaxed);
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
pub(super) fn stats(ctx: &ClientContext) -> Table {
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
