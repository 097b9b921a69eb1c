//! Routes: one pool of server connections per (database, user), created when its first
//! client logs in, each a pool-tokio [`Pool`] over [`ServerManager`] on the same core
//! every embedder uses.
//!
//! A route logs in to the server as the `[databases]` URL's user when the URL names one
//! (PgBouncer's forced user: every client of that database shares the pool), otherwise as
//! the client's own user with the password from the users file (a verifier cannot log in
//! to a server, so such a user needs a URL with credentials or a server that trusts the
//! proxy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pool_tokio::{Pool, PoolError};

use crate::config::ProxyConfig;
use crate::server::{ServerError, ServerManager, Upstream};
use crate::session::{PoolMode, SessionConfig};
use crate::stats::RouteStats;

/// One (database, user) pool.
pub struct Route {
    pub database: String,
    pub user: String,
    pub mode: PoolMode,
    pub pool: Pool<ServerManager>,
    pub session_config: SessionConfig,
    pub stats: RouteStats,
    /// The server's parameters as a fresh connection reports them (ParameterStatus at
    /// startup): what every client of the route is told at login.
    defaults: tokio::sync::OnceCell<Vec<(String, String)>>,
}

/// Why a client cannot be routed: a SQLSTATE and a message for its ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub sqlstate: &'static str,
    pub message: String,
}

/// Every route, by (database, user).
pub struct Routes {
    config: Arc<ProxyConfig>,
    routes: Mutex<HashMap<(String, String), Arc<Route>>>,
}

impl Routes {
    pub fn new(config: Arc<ProxyConfig>) -> Self {
        Self {
            config,
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The route for a client of `database` logged in as `user`, created on first use.
    pub fn route(&self, database: &str, user: &str) -> Result<Arc<Route>, RouteError> {
        let key = (database.to_owned(), user.to_owned());
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = routes.get(&key) {
            return Ok(route.clone());
        }
        let route = Arc::new(self.build(database, user)?);
        routes.insert(key, route.clone());
        Ok(route)
    }

    /// Every route so far, sorted by database then user.
    pub fn all(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = routes.values().cloned().collect();
        all.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        all
    }

    fn build(&self, database: &str, user: &str) -> Result<Route, RouteError> {
        let config = &self.config;
        let Some(db) = config.databases.get(database) else {
            return Err(RouteError {
                sqlstate: "3D000",
                message: format!("database \"{database}\" does not exist"),
            });
        };
        let cannot = |why: String| RouteError {
            sqlstate: "28000",
            message: format!(
                "pool-proxy: cannot log in to database \"{database}\" as \"{user}\": {why}"
            ),
        };
        let mut upstream =
            Upstream::from_manager(&db.manager).map_err(|e| cannot(e.to_string()))?;
        if db.manager.config().get_user().is_none() {
            // No user in the URL: the client's own, with its password from the users file.
            let Some(password) = config.users.get(user).and_then(|s| s.password()) else {
                return Err(cannot(
                    "the database's URL names no user, and the users file holds no password \
                     (only a password, not a verifier, can log in to a server)"
                        .to_owned(),
                ));
            };
            upstream = upstream.with_login(user, Some(password.as_bytes().to_vec()));
        }
        let upstream = upstream
            .with_reset_query(config.server_reset_query.clone())
            .with_check_query(config.server_check_query.clone());
        let mode = db.pool_mode;
        let pool = Pool::builder(ServerManager::new(upstream))
            .name(format!("{database}/{user}"))
            .config(config.pool_config(db))
            .build()
            .map_err(|e| RouteError {
                sqlstate: "XX000",
                message: format!("pool-proxy: the pool for \"{database}\" cannot be built: {e}"),
            })?;
        Ok(Route {
            database: database.to_owned(),
            user: user.to_owned(),
            mode,
            pool,
            session_config: SessionConfig {
                pool_mode: mode,
                ..config.session_config()
            },
            stats: RouteStats::default(),
            defaults: tokio::sync::OnceCell::new(),
        })
    }
}

impl Route {
    /// The server's startup parameters, learnt from the route's first server connection
    /// (so a login also proves the route can reach its server: a wrong upstream password
    /// is reported to the first client at once).
    pub async fn defaults(&self) -> Result<&[(String, String)], PoolError<ServerError>> {
        self.defaults
            .get_or_try_init(|| async {
                let lease = self.pool.get().await?;
                Ok(lease.parameters.clone())
            })
            .await
            .map(Vec::as_slice)
    }
}
