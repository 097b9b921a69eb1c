//! The HTTP endpoint at `metrics_addr`: `/metrics` in the Prometheus text format, and
//! `/health`.
//!
//! Every family is named `pool_proxy_*` and labelled by `database` and `user` (a route)
//! where it belongs to one. Read at scrape time from what the proxy keeps anyway (the
//! registry, each route's statistics and its pool's counts): a scrape costs a walk over
//! the routes and the clients, nothing is recorded for it on the hot path.
//!
//! `/health` answers 200 `ok` while the proxy accepts clients, including while paused (a
//! PAUSE is an operator's deliberate hold, usually on every replica at once: failing the
//! probe would take them all out of the load balancer, and new clients could not even
//! queue for the RESUME), and 503 `shutting down` once a shutdown has begun (a load
//! balancer then stops sending new clients while the running transactions finish).

mod text;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::proxy::Shared;
use crate::stats::WAIT_BUCKETS;
use text::Exposition;

/// Serves `/metrics` and `/health` on `listener` until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "the metrics endpoint stopped");
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if *shared.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&shared),
    )
}

/// A counter family read from a route's totals: its name, its help, its value.
type Counter = (&'static str, &'static str, fn(&crate::stats::Totals) -> f64);

/// The whole scrape.
pub(crate) fn render(shared: &Shared) -> String {
    let mut text = Exposition::default();
    let routes = shared.routes.all();
    let route_labels = |route: &crate::routes::Route| {
        [
            ("database", route.database.clone()),
            ("user", route.user.clone()),
        ]
    };

    text.family(
        "pool_proxy_clients",
        "gauge",
        "Clients logged in, by state: active (holding a server), waiting (for one), idle.",
    );
    let mut clients: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for client in shared.registry.clients() {
        for state in ["active", "waiting", "idle"] {
            clients
                .entry((
                    client.database.clone(),
                    client.user.clone(),
                    state.to_owned(),
                ))
                .or_default();
        }
        let key = (
            client.database.clone(),
            client.user.clone(),
            client.state().to_string(),
        );
        *clients.entry(key).or_default() += 1;
    }
    for ((database, user, state), count) in &clients {
        text.sample(
            "pool_proxy_clients",
            &[("database", database), ("user", user), ("state", state)],
            count,
        );
    }

    text.family(
        "pool_proxy_servers",
        "gauge",
        "Server connections of each pool, by state: active (lent), idle, login (opening), \
         tested (being checked or reset), closing.",
    );
    for route in &routes {
        let status = route.pool.status();
        let [(_, database), (_, user)] = route_labels(route);
        for (state, count) in [
            ("active", status.leased),
            ("idle", status.idle),
            ("login", status.opening),
            ("tested", status.checking),
            ("closing", status.closing),
        ] {
            text.sample(
                "pool_proxy_servers",
                &[("database", &database), ("user", &user), ("state", state)],
                count,
            );
        }
    }

    text.family(
        "pool_proxy_pool_size",
        "gauge",
        "Most server connections each pool may open (pool_size).",
    );
    for route in &routes {
        let [(_, database), (_, user)] = route_labels(route);
        text.sample(
            "pool_proxy_pool_size",
            &[("database", &database), ("user", &user)],
            route.pool.status().max_size,
        );
    }

    text.family(
        "pool_proxy_wait_seconds",
        "histogram",
        "How long each request for a server waited for it (0 when one was idle).",
    );
    for route in &routes {
        let [(_, database), (_, user)] = route_labels(route);
        let labels = [("database", database.as_str()), ("user", user.as_str())];
        let (buckets, sum) = route.stats.wait_histogram.snapshot();
        let bounds = WAIT_BUCKETS
            .iter()
            .map(|bound| bound.to_string())
            .chain(["+Inf".to_owned()]);
        for (bound, count) in bounds.zip(&buckets) {
            text.sample(
                "pool_proxy_wait_seconds_bucket",
                &[labels[0], labels[1], ("le", &bound)],
                count,
            );
        }
        text.sample("pool_proxy_wait_seconds_sum", &labels, sum.as_secs_f64());
        text.sample(
            "pool_proxy_wait_seconds_count",
            &labels,
            buckets.last().copied().unwrap_or(0),
        );
    }

    let totals: Vec<_> = routes.iter().map(|r| (r, r.stats.totals())).collect();
    let counters: [Counter; 7] = [
        (
            "pool_proxy_transactions_total",
            "Transactions finished (SHOW STATS' total_xact_count).",
            |t| t.sessions.transactions as f64,
        ),
        (
            "pool_proxy_queries_total",
            "Queries answered (SHOW STATS' total_query_count).",
            |t| t.sessions.queries as f64,
        ),
        (
            "pool_proxy_received_bytes_total",
            "Bytes received from clients.",
            |t| t.sessions.received as f64,
        ),
        (
            "pool_proxy_sent_bytes_total",
            "Bytes sent to clients.",
            |t| t.sessions.sent as f64,
        ),
        (
            "pool_proxy_transaction_seconds_total",
            "Time spent in transactions.",
            |t| t.sessions.transaction_time.as_secs_f64(),
        ),
        (
            "pool_proxy_query_seconds_total",
            "Time spent in queries.",
            |t| t.sessions.query_time.as_secs_f64(),
        ),
        (
            "pool_proxy_statements_prepared_total",
            "Client statements prepared on a server by the proxy (max_prepared_statements); \
             far above the statements in use means the per-server bound is too small.",
            |t| t.sessions.prepares as f64,
        ),
    ];
    for (name, help, value) in counters {
        text.family(name, "counter", help);
        for (route, totals) in &totals {
            let [(_, database), (_, user)] = route_labels(route);
            text.sample(
                name,
                &[("database", &database), ("user", &user)],
                value(totals),
            );
        }
    }

    // Session state, per route: (pins, refusals) from one counter pair.
    type Pick = fn((u64, u64)) -> u64;
    let session_state: [(&str, &str, Pick); 2] = [
        (
            "pool_proxy_pins_total",
            "Clients pinned to their server for session state (session_state = pin).",
            |(pins, _)| pins,
        ),
        (
            "pool_proxy_refusals_total",
            "Clients refused for session state (session_state = refuse).",
            |(_, refusals)| refusals,
        ),
    ];
    for (name, help, pick) in session_state {
        text.family(name, "counter", help);
        for route in &routes {
            let [(_, database), (_, user)] = route_labels(route);
            text.sample(
                name,
                &[("database", &database), ("user", &user)],
                pick(route.stats.pins()),
            );
        }
    }

    text.family(
        "pool_proxy_errors_total",
        "counter",
        "Clients told the pool could not serve them, by SQLSTATE (57P03 query_wait_timeout, \
         08006 cannot connect, 53300 too many waiters, ...).",
    );
    for route in &routes {
        let [(_, database), (_, user)] = route_labels(route);
        for (sqlstate, count) in route.stats.errors() {
            text.sample(
                "pool_proxy_errors_total",
                &[
                    ("database", &database),
                    ("user", &user),
                    ("sqlstate", &sqlstate),
                ],
                count,
            );
        }
    }

    text.family(
        "pool_proxy_paused",
        "gauge",
        "1 while the database is paused (PAUSE), else 0.",
    );
    let paused = shared.pauses.paused();
    for name in shared.config().databases.keys() {
        text.sample(
            "pool_proxy_paused",
            &[("database", name)],
            u8::from(paused.covers(name)),
        );
    }

    text.family(
        "pool_proxy_shutting_down",
        "gauge",
        "1 once a shutdown (SIGTERM, SHUTDOWN) has begun.",
    );
    text.sample(
        "pool_proxy_shutting_down",
        &[],
        u8::from(*shared.shutdown.borrow()),
    );
    text.finish()
}
