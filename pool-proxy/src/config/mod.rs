//! The proxy's configuration: `pool-proxy --config proxy.toml`, every setting also a flag
//! and an environment variable. A flag wins over a variable, a variable over the file,
//! the file over the default.
//!
//! The settings are one list ([`settings`]): each one's name (the TOML key; the flag
//! `--name-with-dashes`; the variable `POOL_PROXY_NAME`), type, default and doc (shown
//! by `--help`). Databases come from the file's `[databases]` table, `--database
//! name=url` and `POOL_PROXY_DATABASES`; users from `auth_file` ([`users`]).
//! docs/proxy-settings.md is the table of settings for people.
//!
//! ```toml
//! listen_port = 6432
//! default_pool_size = 10
//! query_wait_timeout = "30s"
//! auth_file = "users.txt"
//!
//! [databases]
//! app = "postgres://app:secret@db.internal:5432/app"
//! reports = { url = "postgres://reports@db.internal/app", pool_size = 2, pool_mode = "session" }
//! ```

mod cli;
mod databases;
mod error;
mod file;
pub mod settings;
mod users;
mod validate;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

pub use databases::{DatabaseConfig, DatabaseUrl};
pub use error::{ConfigError, Origin};
pub use settings::{ClientTlsMode, ProxyConfig, SettingInfo, NEEDS_RESTART, SETTINGS};
pub use validate::{MAX_PACKET_SIZE, MIN_PACKET_SIZE};

use crate::session::SessionConfig;

/// What the command line asked for: the configuration, and whether only to check it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub config: ProxyConfig,
    /// `--check-config`: validate, report and exit.
    pub check_only: bool,
}

/// Loads the configuration from the command line `args` (the program's name first, as
/// `std::env::args_os()` gives it), the environment as `env` reads it, and the file named
/// by `--config` or `POOL_PROXY_CONFIG`. Checks everything it can without connecting:
/// ranges, the database URLs (pool-tokio's parser), the users file, the TLS files.
pub fn load(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyConfig, ConfigError> {
    load_invocation(args, env).map(|invocation| invocation.config)
}

/// Where a configuration was loaded from: the command line and the environment variables
/// it read (names and values), so that RELOAD reads the file (and the users file) again
/// with the same flags and variables. `Debug` shows the variables' names only: a value may
/// be a password (`${VAR}` in a URL or the users file).
#[derive(Clone, Default)]
pub struct ConfigSource {
    args: Vec<OsString>,
    env: BTreeMap<String, Option<String>>,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("args", &self.args.len())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConfigSource {
    /// Loads the configuration again, as it was loaded: the same flags, the variables as
    /// they were read then (a variable not read then, e.g. a new `${VAR}` in the file,
    /// from the process's environment now), the files as they are now.
    pub fn reload(&self) -> Result<ProxyConfig, ConfigError> {
        load(self.args.clone(), &|name| match self.env.get(name) {
            Some(value) => value.clone(),
            None => std::env::var(name).ok(),
        })
    }
}

/// [`load`], also saying whether `--check-config` was given.
pub fn load_invocation(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let read = std::cell::RefCell::new(BTreeMap::new());
    let recording = |name: &str| {
        let value = env(name);
        read.borrow_mut().insert(name.to_owned(), value.clone());
        value
    };
    let mut invocation = load_recorded(args.clone(), &recording)?;
    invocation.config.source = ConfigSource {
        args,
        env: read.into_inner(),
    };
    Ok(invocation)
}

fn load_recorded(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let command_line = cli::parse(args)?;
    let config_path = command_line.cli.config.clone().or_else(|| {
        env(cli::CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let file = match &config_path {
        Some(path) => file::load(path)?,
        None => file::FileSettings::default(),
    };
    let (env_layer, env_databases) = cli::from_env(env)?;

    let layers = [&command_line.layer, &env_layer, &file.layer];
    let (mut config, origins) = ProxyConfig::from_layers(&layers);
    // Unset, TLS is offered when a certificate and key are given (see the setting's doc).
    let tls_mode_set = layers.iter().any(|layer| layer.has("client_tls_sslmode"));
    if !tls_mode_set
        && config.client_tls_cert_file.is_some()
        && config.client_tls_key_file.is_some()
    {
        config.client_tls_sslmode = ClientTlsMode::Prefer;
    }
    // A database named in several places is the one from the highest precedence.
    let mut entries = BTreeMap::new();
    for (name, entry) in file
        .databases
        .into_iter()
        .chain(env_databases)
        .chain(command_line.databases)
    {
        entries.insert(name, entry);
    }
    if entries.is_empty() {
        return Err(ConfigError::invalid(
            &Origin::Default,
            "databases",
            "no database is configured: add a [databases] table to the file (--config), \
             --database name=postgres://..., or POOL_PROXY_DATABASES",
        ));
    }
    validate::settings(&config, &origins)?;
    for (name, entry) in entries {
        let at = entry.at.clone();
        let database = entry.resolve(&name, &config, env)?;
        // The settings were checked one by one; this is the pool's own word on the whole.
        config
            .pool_config(&database)
            .validate()
            .map_err(|e| ConfigError::invalid(&at, format!("databases.{name}"), e.to_string()))?;
        config.databases.insert(name, database);
    }
    if let Some(path) = &config.auth_file {
        config.users = users::load(path, env)?;
    }
    Ok(Invocation {
        config,
        check_only: command_line.cli.check_config,
    })
}

/// The `--help` text (what `pool-proxy --help` prints).
pub fn help() -> String {
    cli::command().render_long_help().to_string()
}

impl ProxyConfig {
    /// The client session's settings: `max_packet_size` bounds messages both ways (as
    /// PgBouncer's does), and the session-state, abandoned-transaction and
    /// idle-in-transaction settings map one to one. The relay stops reading a client
    /// while it waits for a server, so its queue holds at most one read (16 KiB) past a
    /// whole message: the queue limit is one largest message and that.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_queued_bytes: self.max_packet_size as usize + 64 * 1024,
            max_client_message_len: self.max_packet_size,
            max_server_message_len: self.max_packet_size,
            on_session_state: self.session_state,
            on_abandoned_transaction: self.abandoned_transaction,
            idle_transaction_timeout: self.idle_transaction_timeout,
            max_prepared_statements: self.max_prepared_statements,
            ..SessionConfig::default()
        }
    }

    /// The pool-core settings of a database's pool: its size, and PgBouncer's timeouts
    /// in the pool's terms. A client waits for at most one server at a time, so
    /// `max_client_conn` bounds the waiters; `query_wait_timeout` 0 (wait for ever) is
    /// pool-tokio's `NO_TIMEOUT`; an empty `server_check_query` checks nothing.
    pub fn pool_config(&self, database: &DatabaseConfig) -> pool_core::Config {
        pool_core::Config {
            max_size: database.pool_size,
            min_idle: database.min_pool_size,
            max_waiters: self.max_client_conn,
            acquire_timeout: self
                .query_wait_timeout
                .unwrap_or(pool_tokio::postgres::NO_TIMEOUT),
            connect_timeout: self.server_connect_timeout,
            check_after_idle: (!self.server_check_query.trim().is_empty())
                .then_some(self.server_check_delay),
            idle_timeout: self.server_idle_timeout,
            max_lifetime: Some(self.server_lifetime),
            ..pool_core::Config::default()
        }
    }
}
