//! # users-service
//!
//! A small HTTP service that embeds the pool: users stored in PostgreSQL, read back by id,
//! the pool's metrics for Prometheus, and a readiness probe. With read replicas
//! ([`Database::Replicas`], a `pool_tokio::ReplicaSet`) the write route borrows from the
//! primary and the read route from a replica.
//!
//! | route | answer |
//! |---|---|
//! | `POST /users` with `{"name": .., "email": ..}` | the **write route** (the primary): `201` and the stored user (with its `id`); `400` with a reason for bad JSON or a missing/invalid field; `409` if the email is taken |
//! | `GET /users/{id}` | the **read route** (a replica, when there are replicas): `200` and the user; `404` if there is none (on a replica: none *yet*, within its replication lag); `400` for a non-numeric id |
//! | `GET /metrics` | `200` and Prometheus text: the pool's OpenTelemetry-named series (`db_client_connection_count{db_client_connection_pool_name="users-service",db_client_connection_state="idle"}`, `..._wait_time_bucket`, ...), recorded by pool-tokio's `metrics` feature and rendered by `metrics-exporter-prometheus` |
//! | `GET /metrics.json` | `200` and the pool's [`pool_tokio::Metrics`] snapshot as JSON |
//! | `GET /healthz` | `200` `{"status": "ready", ..}` when the pool can serve (with replicas: when writes and reads can be served); `503` `{"error": ..}` naming the last connect error and how long ago it was (with replicas: each member's state) otherwise |
//!
//! Every error body is `{"error": "<reason>"}`. A pool that cannot hand out a connection
//! in time answers `503` (the pool's message says why: its status and the last connect
//! error), so callers back off instead of piling up.
//!
//! Tests start it on `127.0.0.1:0`: build a pool with [`pool_from_url`], bind a
//! `TcpListener`, and run [`serve`] (which creates the table first) on a task.

use std::error::Error as StdError;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pool_tokio::{PgManager, Pool, PoolError, PooledConnection, ReplicaError, ReplicaSet};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// The pool type this service runs on.
pub type PgPool = Pool<PgManager>;

/// A primary and its read replicas.
pub type PgReplicaSet = ReplicaSet<PgManager>;

/// Where the service's queries go: one pool, or a primary and read replicas.
#[derive(Clone, Debug)]
pub enum Database {
    Pool(PgPool),
    Replicas(PgReplicaSet),
}

impl From<PgPool> for Database {
    fn from(pool: PgPool) -> Self {
        Database::Pool(pool)
    }
}

impl From<PgReplicaSet> for Database {
    fn from(set: PgReplicaSet) -> Self {
        Database::Replicas(set)
    }
}

impl Database {
    /// A connection for a write: the primary.
    pub async fn write(&self) -> Result<PooledConnection<PgManager>, ApiError> {
        match self {
            Database::Pool(pool) => Ok(pool.get().await?),
            Database::Replicas(set) => Ok(set.write().await?),
        }
    }

    /// A connection for a read: a replica (or the primary, as the set routes it).
    pub async fn read(&self) -> Result<PooledConnection<PgManager>, ApiError> {
        match self {
            Database::Pool(pool) => Ok(pool.get().await?),
            Database::Replicas(set) => Ok(set.read().await?),
        }
    }

    /// The primary's pool (the only one without replicas).
    pub fn primary(&self) -> &PgPool {
        match self {
            Database::Pool(pool) => pool,
            Database::Replicas(set) => set.primary(),
        }
    }

    /// Record every pool's series (and, with replicas, the set's per member) now.
    pub fn record_metrics(&self) {
        match self {
            Database::Pool(pool) => pool.record_metrics(),
            Database::Replicas(set) => set.record_metrics(),
        }
    }

    /// Close every pool.
    pub async fn close(&self, drain: Duration) -> usize {
        match self {
            Database::Pool(pool) => pool.close(drain).await,
            Database::Replicas(set) => set.close(drain).await,
        }
    }
}

/// A primary URL (`DATABASE_URL`) and replica URLs (`DATABASE_REPLICA_URLS`), or one
/// multi-host URL, as a replica set: the primary's pool is named `users-service.primary`,
/// the replicas' `users-service.replica-1`, ...; each URL's own options set its pool.
/// Must be called inside a tokio runtime.
pub fn replicas_from_urls(
    primary: &str,
    replicas: &[&str],
) -> Result<PgReplicaSet, Box<dyn StdError + Send + Sync>> {
    let timeout = |b: pool_tokio::Builder<PgManager>, _| b.acquire_timeout(Duration::from_secs(5));
    let builder = if replicas.is_empty() {
        ReplicaSet::from_url(POOL_NAME, primary, timeout)?
    } else {
        ReplicaSet::from_urls(POOL_NAME, primary, replicas, timeout)?
    };
    Ok(builder.build()?)
}

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted email address, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// The table, created on startup if missing.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS users (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL,
    email text NOT NULL UNIQUE
)";

/// The pool's name in metrics, spans and logs.
pub const POOL_NAME: &str = "users-service";

/// A pool configured from a connection URL (`DATABASE_URL`), whose query parameters
/// (`connection_limit`, `pool_timeout`, `application_name`, ...) set the pool options.
/// Must be called inside a tokio runtime.
pub fn pool_from_url(url: &str) -> Result<PgPool, Box<dyn StdError + Send + Sync>> {
    pool_named(url, POOL_NAME)
}

/// [`pool_from_url`] with another pool name (two pools in one process, e.g. tests).
pub fn pool_named(url: &str, name: &str) -> Result<PgPool, Box<dyn StdError + Send + Sync>> {
    let (manager, options) = PgManager::from_url(url)?;
    let pool = Pool::builder(manager)
        .name(name)
        // A web request should not wait 30 s for a connection: fail fast with 503.
        .acquire_timeout(Duration::from_secs(5))
        .options(options)
        .build()?;
    Ok(pool)
}

/// Create the `users` table if it does not exist.
pub async fn init_schema(pool: &PgPool) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let client = pool.get().await?;
    client.batch_execute(SCHEMA).await?;
    Ok(())
}

/// The process's Prometheus recorder, installed as the `metrics` facade's global
/// recorder on first use (the pool records through that facade). The `*_time` series
/// (seconds) are exported as histograms with these buckets.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_time".into()),
                    &[
                        0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
                    ],
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    db: Database,
    prometheus: PrometheusHandle,
}

/// The service's routes over `db` (a pool, or a replica set).
pub fn app(db: impl Into<Database>) -> Router {
    let prometheus = prometheus();
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/metrics", get(metrics))
        .route("/metrics.json", get(metrics_json))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            db: db.into(),
            prometheus,
        })
}

/// At startup: wait for the database, at most `bound`, retrying a first `get()` (each
/// failure is logged). A fatal error (wrong password, unknown database) ends the wait
/// at once. The error names why the database could not be reached.
pub async fn wait_for_database(pool: &PgPool, bound: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let error = match pool.get_timeout(left.min(Duration::from_secs(5))).await {
            Ok(_) => return Ok(()),
            Err(e @ PoolError::Connect { .. }) => {
                return Err(format!("the database refuses this service: {e}"))
            }
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the database was not reachable within {}: {error}",
                pool_tokio::HumanDuration(bound)
            ));
        }
        tracing::warn!(error = %error, "waiting for the database");
        tokio::time::sleep(Duration::from_millis(250).min(left)).await;
    }
}

/// Create the table, then serve [`app`] on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: impl Into<Database>,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    serve_until(listener, db, std::future::pending()).await
}

/// [`serve`], stopping gracefully (in-flight requests finish) once `shutdown` resolves.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    db: impl Into<Database>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let db = db.into();
    // The schema is written on the primary; replicas receive it by replication.
    init_schema(db.primary()).await?;
    axum::serve(listener, app(db))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// What a request body must hold, once validated.
#[derive(Debug, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

impl NewUser {
    /// Parse and validate a `POST /users` body; the error is the reason, for a 400.
    pub fn parse(body: &[u8]) -> Result<NewUser, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("expected a JSON object with fields `name` and `email`".into());
        };
        let text = |field: &str| -> Result<String, String> {
            match fields.get(field) {
                None | Some(Value::Null) => Err(format!("missing field `{field}`")),
                Some(Value::String(s)) => Ok(s.trim().to_owned()),
                Some(_) => Err(format!("field `{field}` must be a string")),
            }
        };
        let name = text("name")?;
        let email = text("email")?;
        if name.is_empty() {
            return Err("field `name` must not be empty".into());
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(format!(
                "field `name` is longer than {MAX_NAME_CHARS} characters"
            ));
        }
        if name.chars().any(char::is_control) {
            return Err("field `name` must not contain control characters".into());
        }
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err(format!(
                "field `email` is longer than {MAX_EMAIL_CHARS} characters"
            ));
        }
        if !is_plausible_email(&email) {
            return Err(format!(
                "field `email` is not a valid email address: {email:?}"
            ));
        }
        if let Some(extra) = fields.keys().find(|k| *k != "name" && *k != "email") {
            return Err(format!("unknown field `{extra}`"));
        }
        Ok(NewUser { name, email })
    }
}

/// `local@domain.tld`: one `@`, both sides non-empty, no whitespace, a dot inside the
/// domain. Deliberately loose: the only real check is sending a message.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .split_once('.')
            .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
        && !domain.ends_with('.')
}

/// An error answer: a status and `{"error": reason}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

impl From<PoolError<tokio_postgres::Error>> for ApiError {
    fn from(e: PoolError<tokio_postgres::Error>) -> Self {
        // Timeout, queue full, closed, cannot connect: all "try again later".
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}"),
        )
    }
}

impl From<ReplicaError<tokio_postgres::Error>> for ApiError {
    fn from(e: ReplicaError<tokio_postgres::Error>) -> Self {
        // No replica or primary in time, or the primary is in recovery: "try again later",
        // naming each member and why.
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}"),
        )
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message; tokio-postgres' Display says only "db error".
        let reason = match e.as_db_error() {
            Some(db) => format!("database error: {}", db.message()),
            None => format!("database error: {e}"),
        };
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason)
    }
}

fn user_from_row(row: &tokio_postgres::Row) -> Result<User, tokio_postgres::Error> {
    Ok(User {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        email: row.try_get(2)?,
    })
}

/// `POST /users`, the write route: on the primary. The body is parsed by hand (not with
/// `Json<T>`) so every rejection, whatever the content type, is a 400 with a reason in
/// the same JSON shape.
async fn create_user(
    State(AppState { db, .. }): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new = NewUser::parse(&body).map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r))?;
    let client = db.write().await?;
    // `query_typed`: one round trip with an unnamed statement, so this also works behind
    // PgBouncer in transaction mode.
    let rows = client
        .query_typed(
            "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email",
            &[(&new.name, Type::TEXT), (&new.email, Type::TEXT)],
        )
        .await;
    let rows = match rows {
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a user with email {:?} already exists", new.email),
            ))
        }
        r => r?,
    };
    let row = rows.first().ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "insert returned no row")
    })?;
    let user = user_from_row(row)?;
    let location = format!("/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response())
}

/// `GET /users/{id}`, the read route: on a replica when there are replicas.
async fn get_user(
    State(AppState { db, .. }): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("user id must be an integer, got {id:?}"),
        )
    })?;
    let client = db.read().await?;
    let rows = client
        .query_typed(
            "SELECT id, name, email FROM users WHERE id = $1",
            &[(&id, Type::INT8)],
        )
        .await?;
    match rows.first() {
        Some(row) => Ok(Json(user_from_row(row)?)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no user with id {id}"),
        )),
    }
}

/// `GET /metrics`: the pool records its series now, then the exporter renders them.
async fn metrics(State(state): State<AppState>) -> Response {
    state.db.record_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
        .into_response()
}

/// `GET /metrics.json`: the pool's metrics; with replicas, the primary's.
async fn metrics_json(State(state): State<AppState>) -> Json<pool_tokio::Metrics> {
    Json(state.db.primary().metrics())
}

/// `GET /healthz`: a readiness probe.
async fn healthz(State(state): State<AppState>) -> Response {
    match &state.db {
        Database::Pool(pool) => {
            let health = pool.health();
            if health.can_serve() {
                Json(json!({ "status": "ready", "pool": health.status.to_string() }))
                    .into_response()
            } else {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, health.to_string()).into_response()
            }
        }
        Database::Replicas(set) => {
            let members: Vec<String> = set.members().iter().map(ToString::to_string).collect();
            if set.can_write() && set.can_read() {
                Json(json!({ "status": "ready", "members": members })).into_response()
            } else {
                let reason = format!("not ready: {}", members.join("; "));
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bodies_parse_and_trim() {
        assert_eq!(
            NewUser::parse(br#"{"name": " Ada ", "email": "ada@example.org"}"#),
            Ok(NewUser {
                name: "Ada".into(),
                email: "ada@example.org".into()
            })
        );
    }

    #[test]
    fn bad_bodies_name_the_reason() {
        let reason = |body: &str| NewUser::parse(body.as_bytes()).unwrap_err();
        assert!(reason("{not json").starts_with("invalid JSON body"));
        assert!(reason("[1, 2]").contains("JSON object"));
        assert_eq!(reason(r#"{"email": "a@b.c"}"#), "missing field `name`");
        assert_eq!(reason(r#"{"name": "A"}"#), "missing field `email`");
        assert_eq!(
            reason(r#"{"name": 5, "email": "a@b.c"}"#),
            "field `name` must be a string"
        );
        assert!(reason(r#"{"name": "  ", "email": "a@b.c"}"#).contains("must not be empty"));
        for bad in [
            "nobody", "a@b", "@b.c", "a@.c", "a@b.", "a b@c.d", "a@b@c.d",
        ] {
            let body = format!(r#"{{"name": "A", "email": "{bad}"}}"#);
            assert!(reason(&body).contains("not a valid email"), "{bad}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert!(
            reason(&format!(r#"{{"name": "{long}", "email": "a@b.c"}}"#)).contains("longer than")
        );
        assert_eq!(
            reason(r#"{"name": "A", "email": "a@b.c", "admin": true}"#),
            "unknown field `admin`"
        );
    }
}
