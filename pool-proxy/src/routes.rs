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
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use pool_tokio::{Pool, PoolError, PooledConnection};

use crate::config::{DatabaseConfig, ProxyConfig};
use crate::pause::Pauses;
use crate::registry::{Registry, ServerRegistration};
use crate::server::{ServerError, ServerManager, Upstream};
use crate::session::{PoolMode, SessionConfig};
use crate::stats::RouteStats;

/// A server lent to a client.
pub type Lease = PooledConnection<ServerManager>;

/// One (database, user) pool.
pub struct Route {
    pub database: String,
    pub user: String,
    pub mode: PoolMode,
    pub pool: Pool<ServerManager>,
    /// What a new client's session runs with; RELOAD may change it (clients connected
    /// keep theirs).
    session_config: RwLock<SessionConfig>,
    /// `query_wait_timeout` in nanoseconds, [`NO_WAIT_LIMIT`] for none: held here, not in
    /// the pool, so RELOAD changes it for every wait that starts afterwards.
    wait_limit: AtomicU64,
    /// What the route's pool was built from: a RELOAD that changes it retires the route.
    pub(crate) recipe: Recipe,
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

/// [`Route`]'s `wait_limit` for "wait for ever".
const NO_WAIT_LIMIT: u64 = u64::MAX;

/// What a route's pool and its server logins were built from, besides the sizes and
/// timeouts a RELOAD changes in place: when this differs, the route is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipe {
    url: String,
    mode: PoolMode,
    reset_query: String,
    check_query: String,
    /// The users file's password for the client's user, when the URL names no user.
    password: Option<String>,
}

/// Every route, by (database, user).
pub struct Routes {
    config: RwLock<Arc<ProxyConfig>>,
    routes: Mutex<HashMap<(String, String), Arc<Route>>>,
    registry: Arc<Registry>,
}

impl Routes {
    pub fn new(config: Arc<ProxyConfig>, registry: Arc<Registry>) -> Self {
        Self {
            config: RwLock::new(config),
            routes: Mutex::new(HashMap::new()),
            registry,
        }
    }

    /// The configuration in force (the last one loaded or reloaded).
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The route for a client of `database` logged in as `user`, created on first use.
    pub fn route(&self, database: &str, user: &str) -> Result<Arc<Route>, RouteError> {
        let key = (database.to_owned(), user.to_owned());
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = routes.get(&key) {
            return Ok(route.clone());
        }
        let route = Arc::new(self.build(&self.config(), database, user)?);
        routes.insert(key, route.clone());
        Ok(route)
    }

    /// Puts `config` in force: each route whose recipe is unchanged gets the new pool
    /// size, wait limit and session settings in place; a route whose database is gone or
    /// whose recipe changed is retired (its clients keep it; its pool closes when the last
    /// one leaves) and the next client builds a new one. Returns the retired routes'
    /// names, for the log.
    pub fn reconfigure(&self, config: Arc<ProxyConfig>) -> Vec<String> {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config.clone();
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut retired = Vec::new();
        routes.retain(|(database, user), route| {
            let keep = config
                .databases
                .get(database)
                .is_some_and(|db| Recipe::of(&config, db, user) == route.recipe);
            match keep {
                true => route.apply(&config, &config.databases[database]),
                false => {
                    retired.push(format!("{database}/{user}"));
                    route.retire();
                }
            }
            keep
        });
        retired
    }

    /// Every route so far, sorted by database then user.
    pub fn all(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = routes.values().cloned().collect();
        all.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        all
    }

    fn build(&self, config: &ProxyConfig, database: &str, user: &str) -> Result<Route, RouteError> {
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
        let registry = self.registry.clone();
        let (db_name, login) = (database.to_owned(), upstream.user().to_owned());
        let pool = Pool::builder(ServerManager::new(upstream))
            .name(format!("{database}/{user}"))
            .config(config.pool_config(db))
            // Each server is listed (SHOW SERVERS) from its login until the pool drops it.
            .after_connect(move |conn, extensions| {
                extensions.insert(registry.register_server(&db_name, &login, conn));
                Box::pin(async { Ok(()) })
            })
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
            session_config: RwLock::new(SessionConfig {
                pool_mode: mode,
                ..config.session_config()
            }),
            wait_limit: AtomicU64::new(wait_limit(config)),
            recipe: Recipe::of(config, db, user),
            stats: RouteStats::default(),
            defaults: tokio::sync::OnceCell::new(),
        })
    }
}

impl Recipe {
    fn of(config: &ProxyConfig, db: &DatabaseConfig, user: &str) -> Recipe {
        Recipe {
            url: db.url.expose().to_owned(),
            mode: db.pool_mode,
            reset_query: config.server_reset_query.clone(),
            check_query: config.server_check_query.clone(),
            password: db
                .manager
                .config()
                .get_user()
                .is_none()
                .then(|| config.users.get(user).and_then(|s| s.password()))
                .flatten()
                .map(str::to_owned),
        }
    }
}

fn wait_limit(config: &ProxyConfig) -> u64 {
    config.query_wait_timeout.map_or(NO_WAIT_LIMIT, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(NO_WAIT_LIMIT)
    })
}

impl Route {
    /// The session settings a client logging in now runs with.
    pub fn session_config(&self) -> SessionConfig {
        self.session_config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A server for a client: once the database is not paused, within
    /// `query_wait_timeout` counted from then (a pause is not a slow pool).
    pub fn acquire(
        &self,
        pauses: Arc<Pauses>,
    ) -> impl Future<Output = Result<Lease, PoolError<ServerError>>> + Send + 'static {
        let (pool, database) = (self.pool.clone(), self.database.clone());
        let limit = self.wait_limit.load(Relaxed);
        async move {
            if pauses.is_paused(&database) {
                pauses.resumed(&database).await;
            }
            match limit {
                NO_WAIT_LIMIT => pool.get_timeout(pool_tokio::postgres::NO_TIMEOUT).await,
                nanos => pool.get_timeout(Duration::from_nanos(nanos)).await,
            }
        }
    }

    /// The new pool options (size, timeouts), wait limit and session settings, for
    /// clients from now on. The pool's `acquire_timeout` is not the proxy's wait limit
    /// (each wait passes its own), so it stays as built.
    fn apply(&self, config: &ProxyConfig, db: &DatabaseConfig) {
        let options = pool_core::Config {
            acquire_timeout: self.pool.config().acquire_timeout,
            ..config.pool_config(db)
        };
        if let Err(e) = self.pool.reconfigure(options) {
            tracing::warn!(route = %self.pool.name(), error = %e, "RELOAD: cannot reconfigure");
        }
        self.wait_limit.store(wait_limit(config), Relaxed);
        *self
            .session_config
            .write()
            .unwrap_or_else(PoisonError::into_inner) = SessionConfig {
            pool_mode: self.mode,
            ..config.session_config()
        };
    }

    /// No new clients: the pool closes once its last client has left.
    fn retire(self: &Arc<Route>) {
        let route = self.clone();
        tokio::spawn(async move {
            while route.stats.clients.load(Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            route.pool.close(Duration::from_secs(5)).await;
        });
    }

    /// The registry entry of a lent server (every server of a route has one).
    pub fn server_entry(lease: &Lease) -> Option<&ServerRegistration> {
        lease.extensions().get::<ServerRegistration>()
    }

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
