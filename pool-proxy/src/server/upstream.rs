//! `Upstream`: where server connections go and as whom they log in.

use std::fmt;

use pool_tokio::postgres::{SslMode, TlsSettings};
use pool_tokio::{ConfigOverrides, PgManager};
use tokio_postgres::config::{ChannelBinding, TargetSessionAttrs};
use tokio_postgres::Config;

use super::error::ServerError;

/// Where and as whom the proxy connects to PostgreSQL: the hosts, ports and socket
/// settings of a tokio-postgres [`Config`] (as pool-tokio's URL parser builds it), the
/// login (the config's user and password, or the client's user with a password from the
/// proxy's users file), and the queries that check and clean a server. Its `Debug` never
/// shows the password.
#[derive(Clone)]
pub struct Upstream {
    config: Config,
    user: String,
    password: Option<Vec<u8>>,
    reset_query: String,
    check_query: String,
}

impl Upstream {
    /// Run when a server comes back with session state (PgBouncer's `server_reset_query`).
    pub const DEFAULT_RESET_QUERY: &'static str = "DISCARD ALL";
    /// Run to check an idle server before it is lent (PgBouncer's `server_check_query`).
    pub const DEFAULT_CHECK_QUERY: &'static str = "SELECT 1";

    /// Connect as `config` says: its hosts, ports, `hostaddr`, `connect_timeout`,
    /// keepalives and `load_balance_hosts`; its user, password, database, `options` and
    /// `application_name` for the login.
    ///
    /// Refused (a [`ServerError::Config`]): no user; an `sslmode` that needs TLS
    /// (`require`, `verify-ca`, `verify-full`: upstream TLS is not supported yet, so
    /// `disable`, `allow` and `prefer` connect in plaintext); `channel_binding=require`
    /// (it needs TLS); `target_session_attrs` other than `any` (not checked upstream yet).
    pub fn new(config: Config) -> Result<Self, ServerError> {
        use tokio_postgres::config::SslMode as Mode;
        if config.get_ssl_mode() == Mode::Require {
            return Err(tls_unsupported("require, verify-ca or verify-full"));
        }
        Self::checked(config)
    }

    /// [`Upstream::new`] for the manager pool-tokio's URL parser built
    /// ([`PgManager::from_url`]): its config, with its `sslmode` named exactly in errors.
    pub fn from_manager(manager: &PgManager) -> Result<Self, ServerError> {
        let TlsSettings { mode, .. } = manager.tls();
        match mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => {
                Self::checked(manager.config().clone())
            }
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                Err(tls_unsupported(mode.as_str()))
            }
        }
    }

    /// Parse a connection URL with pool-tokio's parser ([`PgManager::from_url`]): the
    /// upstream, and the pool options the URL set (`connection_limit`, `pool_timeout`,
    /// ...). URL errors name the key at fault and never the password.
    pub fn from_url(url: &str) -> Result<(Self, ConfigOverrides), ServerError> {
        let (manager, options) =
            PgManager::from_url(url).map_err(|e| ServerError::Config(e.to_string()))?;
        Ok((Self::from_manager(&manager)?, options))
    }

    fn checked(config: Config) -> Result<Self, ServerError> {
        let user = config
            .get_user()
            .ok_or_else(|| ServerError::Config("no user to log in to the server as".into()))?
            .to_owned();
        if config.get_channel_binding() == ChannelBinding::Require {
            return Err(ServerError::Config(
                "channel_binding=require needs TLS, which upstream connections do not support yet"
                    .into(),
            ));
        }
        if config.get_target_session_attrs() != TargetSessionAttrs::Any {
            return Err(ServerError::Config(
                "target_session_attrs is not supported for upstream connections yet; use any"
                    .into(),
            ));
        }
        let password = config.get_password().map(<[u8]>::to_vec);
        Ok(Upstream {
            config,
            user,
            password,
            reset_query: Self::DEFAULT_RESET_QUERY.into(),
            check_query: Self::DEFAULT_CHECK_QUERY.into(),
        })
    }

    /// Log in as `user` with `password` (e.g. the client's user, with the password the
    /// users file holds) instead of the config's user and password; `None` for a server
    /// that asks for none (`trust`).
    pub fn with_login(mut self, user: impl Into<String>, password: Option<Vec<u8>>) -> Self {
        self.user = user.into();
        self.password = password;
        self
    }

    /// The query that cleans a server returned with session state (default `DISCARD
    /// ALL`); empty: none.
    pub fn with_reset_query(mut self, query: impl Into<String>) -> Self {
        self.reset_query = query.into();
        self
    }

    /// The query that checks an idle server before it is lent (default `SELECT 1`);
    /// empty: none.
    pub fn with_check_query(mut self, query: impl Into<String>) -> Self {
        self.check_query = query.into();
        self
    }

    /// The socket settings and login parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The role servers are logged in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }

    pub fn reset_query(&self) -> &str {
        &self.reset_query
    }

    pub fn check_query(&self) -> &str {
        &self.check_query
    }

    /// The StartupMessage's parameters: user, database, `options`, `application_name`.
    pub(crate) fn startup_parameters(&self) -> Vec<(&str, &str)> {
        let c = &self.config;
        let mut params = vec![("user", self.user.as_str())];
        if let Some(db) = c.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = c.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = c.get_application_name() {
            params.push(("application_name", name));
        }
        params
    }
}

fn tls_unsupported(mode: &str) -> ServerError {
    ServerError::Config(format!(
        "sslmode={mode}: upstream TLS is not supported yet; use sslmode=disable, allow or prefer \
         (which connect in plaintext)"
    ))
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("Upstream")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hosts", &c.get_hosts())
            .field("ports", &c.get_ports())
            .field("dbname", &c.get_dbname())
            .field("application_name", &c.get_application_name())
            // Whether set only: `-c` settings may carry a secret.
            .field("options", &c.get_options().is_some())
            .field("reset_query", &self.reset_query)
            .field("check_query", &self.check_query)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let (u, _) = Upstream::from_url("postgresql://app:e@db:5433/shop?sslmode=disable").unwrap();
        let debug = format!("{u:?}");
        assert!(debug.contains("password: Some(\"<redacted>\")"), "{debug}");
        assert!(debug.contains("user: \"app\""), "{debug}");
        assert!(!debug.contains("\"e\""), "{debug}");
        let u = u.with_login("client", Some(b"hunter2".to_vec()));
        let debug = format!("{u:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("user: \"client\""), "{debug}");
        assert_eq!(u.password(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn tls_modes_that_need_tls_are_refused_by_name() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgresql://app:pw@db/shop?sslmode={mode}");
            let e = Upstream::from_url(&url).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(&format!("sslmode={mode}"))
                    && text.contains("upstream TLS is not supported yet"),
                "{text}"
            );
            assert_eq!(e.class(), pool_core::ErrorClass::Fatal);
        }
        for mode in ["disable", "allow", "prefer"] {
            let url = format!("postgresql://app:pw@db/shop?sslmode={mode}");
            assert!(Upstream::from_url(&url).is_ok(), "{mode}");
        }
        let mut config = Config::new();
        config
            .user("app")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let text = Upstream::new(config).unwrap_err().to_string();
        assert!(text.contains("upstream TLS is not supported yet"), "{text}");
    }

    #[test]
    fn defaults_and_startup_parameters() {
        let (u, _) = Upstream::from_url(
            "postgresql://app@db/shop?sslmode=disable&application_name=checkout&options=-c%20work_mem%3D8MB",
        )
        .unwrap();
        assert_eq!(u.reset_query(), "DISCARD ALL");
        assert_eq!(u.check_query(), "SELECT 1");
        assert_eq!(u.password(), None);
        assert_eq!(
            u.startup_parameters(),
            vec![
                ("user", "app"),
                ("database", "shop"),
                ("options", "-c work_mem=8MB"),
                ("application_name", "checkout"),
            ]
        );
        let mut config = Config::new();
        config.host("db");
        assert!(Upstream::new(config)
            .unwrap_err()
            .to_string()
            .contains("no user"));
    }
}
