//! A [`Manager`] for PostgreSQL over tokio-postgres.
//!
//! # Session state between borrowers
//!
//! A connection that comes back inside a transaction (a `BEGIN` sent with
//! `batch_execute`, a task cancelled between `BEGIN` and `COMMIT`, a failed statement
//! inside a transaction) must never reach the next borrower. PostgreSQL says where a
//! session stands at the end of every request: the status byte of `ReadyForQuery` (`I`
//! idle, `T` in a transaction, `E` in a failed one). tokio-postgres reads it and does not
//! expose it, so [`PgManager`] opens the socket itself (TCP or Unix, honouring the
//! config's hosts, ports, `hostaddr`, `connect_timeout`, keepalives and
//! `tcp_user_timeout` as tokio-postgres's own `connect` does), hands it to
//! `Config::connect_raw` wrapped in a stream that watches the protocol framing, and
//! watches the plaintext above TLS when TLS is negotiated. A [`PgConnection`] (which
//! derefs to the tokio-postgres `Client`) carries that status:
//! [`PgConnection::transaction_status`]. The details, and why a request queued or in
//! flight makes the status unknown, are in the `status` module (and
//! `docs/reset.md`).
//!
//! [`ResetMode`] chooses what happens at return:
//!
//! - [`ResetMode::Auto`] (the default): an idle connection (`I`, nothing in flight) is
//!   returned `Reusable`, with no round trip, no statement and nothing logged. One in a
//!   transaction or a failed transaction, or whose status is not known yet (a
//!   borrower dropped a query future before its answer, or a request was queued and not
//!   written yet: tokio-postgres queues a `Close` when a statement it prepared for
//!   `query("..", ..)` is dropped) is returned `NeedsReset`; the reset (a background
//!   task, bounded by `check_timeout`, the connection closed if it fails) waits, sending
//!   nothing, until the connection task has written what was queued and the server has
//!   answered everything, then sends `ROLLBACK` only if the server says a transaction is
//!   open. A query the borrower abandoned mid-flight (a request timeout dropped the query
//!   future) is cancelled on the server (`CancelRequest`) rather than waited for, so the
//!   connection is back in milliseconds; if it is not back within
//!   [`PgManager::cancel_timeout`] (1 s) the connection is closed and replaced.
//! - [`ResetMode::Rollback`] (the default before `Auto`): `ROLLBACK` on every return.
//!   One round trip per return (about half the throughput of short queries), and on an
//!   idle connection PostgreSQL answers with `WARNING: there is no transaction in
//!   progress`: one line in the server log, and one INFO line from tokio-postgres in the
//!   application's, per request.
//! - [`ResetMode::Discard`]: `DISCARD ALL` on every return (after a `ROLLBACK` when in a
//!   transaction): also clears `SET`s, temporary tables, prepared statements, advisory
//!   locks and `LISTEN`s. Do not use it behind PgBouncer in transaction mode.
//! - [`ResetMode::Skip`] trusts the borrowers: only correct if every transaction goes
//!   through tokio-postgres's `Client::transaction()`, whose guard queues a `ROLLBACK` on
//!   drop before the connection can be returned (so cancellation is covered too), and
//!   nobody sends `BEGIN` by hand.
//!
//! `Auto` restores what a transaction changed, like `Rollback`: session state set
//! outside a transaction (`SET`, temporary tables, prepared statements) survives both;
//! use `Discard` for that.
//!
//! Every mode first settles what the last borrower left in flight that way (`Skip`
//! included: a connection returned with a request in flight is reset, not lent on).
//!
//! Because the manager opens the socket, `Client::cancel_token()` on these clients
//! cannot open a cancel connection (tokio-postgres keeps the socket settings private);
//! `CancelToken::cancel_query_raw` over a stream the caller opens still works, and is
//! what the reset uses, to the address the connection's socket reached.
//!
//! A closed client (`Client::is_closed`) is always returned as `Broken` and closed, and
//! so is one whose byte stream could not be followed (malformed framing from the server:
//! its status would never be known again).

use std::fmt;
use std::time::Duration;

use pool_core::{ConfigOverrides, ErrorClass, Verdict};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use self::socket::{connect_socket, RawSocket, SocketError, NOT_WRITABLE};
pub use self::status::{PgConnection, TransactionStatus};
use crate::manager::{Manager, Target};

mod probe;
pub use self::probe::PROBE_SQL;
mod cancel;
mod socket;
mod status;
pub mod tls;
mod url;

pub use self::tls::{ClientCert, RootCerts, SslMode, TlsError, TlsSettings, Verification};
pub(crate) use self::url::split_hosts;
pub use self::url::{KeyKind, UrlError, KEYS, NO_TIMEOUT};

/// How a returned connection is cleaned before its next borrower; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResetMode {
    /// `ROLLBACK` only when the server's last word was "in a (failed) transaction" or a
    /// request is still in flight; an idle connection goes back with no I/O.
    #[default]
    Auto,
    /// `ROLLBACK` on every return (the default before `Auto`; one round trip and, on an
    /// idle connection, one server `WARNING` per return).
    Rollback,
    /// `DISCARD ALL` on every return, after a `ROLLBACK` when in a transaction.
    Discard,
    /// No reset: only for borrowers that use `Client::transaction()` exclusively. (A
    /// connection returned with a request still in flight is still settled first,
    /// cancelling an abandoned query.)
    Skip,
}

/// Opens tokio-postgres clients ([`PgConnection`]s), over TLS as [`tls`] describes. Its
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct PgManager {
    config: Config,
    reset: ResetMode,
    /// SQL run once on every new connection (`PgManager::init_sql`).
    init_sql: Option<std::sync::Arc<str>>,
    /// What the TLS connector was built from (`Debug`, [`PgManager::tls`]).
    tls_settings: TlsSettings,
    /// `None` for `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// Behind PgBouncer in transaction mode (`pgbouncer=true`).
    pgbouncer: bool,
    /// Connects only to a server that takes writes, and a refusal is fatal
    /// ([`PgManager::expect_primary`]).
    primary: bool,
    /// How long a reset may take to cancel a query the borrower abandoned
    /// (`PgManager::cancel_timeout`).
    cancel_timeout: Duration,
}

/// The default [`PgManager::cancel_timeout`]: a cancel on a healthy server takes a few
/// milliseconds (a connection to the postmaster, a signal, the backend's error answer);
/// a server that needs a second has problems a fresh connection will not have.
pub const DEFAULT_CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

impl PgManager {
    /// A manager for `config` as it is: its keepalive settings are tokio-postgres's
    /// (keepalive on, first probe after 2 hours idle) unless you set them
    /// ([`PgManager::from_url`] defaults the first probe to 60 s). TLS follows the
    /// config's `ssl_mode` without checking the certificate (libpq's `prefer` and
    /// `require`); use [`PgManager::with_tls`] to verify it.
    pub fn new(config: Config) -> Self {
        use tokio_postgres::config::SslMode as D;
        let mode = match config.get_ssl_mode() {
            D::Disable => SslMode::Disable,
            D::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls_settings = TlsSettings::new(mode);
        let tls = tls_settings
            .connector()
            .expect("a TLS mode without certificate files always builds");
        PgManager {
            config,
            reset: ResetMode::default(),
            init_sql: None,
            tls_settings,
            tls,
            pgbouncer: false,
            primary: false,
            cancel_timeout: DEFAULT_CANCEL_TIMEOUT,
        }
    }

    /// Use these TLS settings (mode, roots, client certificate); they also set the
    /// config's `ssl_mode`. Reads the certificate files now.
    pub fn with_tls(mut self, settings: TlsSettings) -> Result<Self, TlsError> {
        self.tls = settings.connector()?;
        self.config.ssl_mode(settings.mode.driver_mode());
        self.tls_settings = settings;
        Ok(self)
    }

    /// Use this rustls configuration for TLS connections instead (e.g. a custom verifier).
    /// It is used whenever the config's `ssl_mode` is not `disable`; [`PgManager::tls`]
    /// then no longer describes what is checked.
    pub fn with_tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(MakeRustlsConnect::new(config));
        self
    }

    /// Parse a connection URL as libpq and Prisma write them:
    /// `postgresql://user:password@host:5432/db?sslmode=verify-full&connection_limit=10`.
    ///
    /// The pool's keys (`connection_limit`, `pool_timeout`, `min_idle`, ...; durations in
    /// whole seconds) come back as [`ConfigOverrides`] for `Builder::options`; TLS keys
    /// (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, and `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGSSLCERT`, `PGSSLKEY` where the URL is silent) build the TLS connector; Prisma's
    /// keys are translated; every libpq key tokio-postgres knows goes to its own parser.
    /// [`KEYS`] lists them all with what they do; docs/connection-urls.md explains them.
    /// An unknown key, a repeated one, a refused one or a malformed value is an error
    /// naming the key and saying why. No error contains the password.
    pub fn from_url(url: &str) -> Result<(PgManager, ConfigOverrides), UrlError> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`PgManager::from_url`] reading the libpq environment variables through `env`
    /// instead of the process environment.
    pub fn from_url_with_env(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(PgManager, ConfigOverrides), UrlError> {
        let parsed = self::url::parse(url, &env)?;
        let tls = parsed
            .tls
            .connector()
            .map_err(|e| UrlError::InvalidParameter {
                name: e.parameter.to_string(),
                reason: e.reason,
            })?;
        let manager = PgManager {
            config: parsed.config,
            reset: ResetMode::default(),
            init_sql: None,
            tls_settings: parsed.tls,
            tls,
            pgbouncer: parsed.pgbouncer,
            primary: false,
            cancel_timeout: DEFAULT_CANCEL_TIMEOUT,
        };
        Ok((manager, parsed.options))
    }

    /// Whether the server is reached through PgBouncer in transaction mode
    /// (`pgbouncer=true`): each transaction may run on a different server session, so
    /// nothing session-level may be relied on or sent between borrowers (no `DISCARD ALL`,
    /// no `SET` without `LOCAL`, no `schema` other than `public` in the URL).
    pub fn pgbouncer(&self) -> bool {
        self.pgbouncer
    }

    /// Say whether the server is reached through PgBouncer in transaction mode.
    pub fn with_pgbouncer(mut self, pgbouncer: bool) -> Self {
        self.pgbouncer = pgbouncer;
        self
    }

    /// The TLS settings connections are opened with.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls_settings
    }

    /// Connect only to a server that takes writes (`target_session_attrs=read-write`: with
    /// several hosts, the one that does), and treat one that does not (in recovery, or
    /// read-only) as a **fatal** connect error: writes fail at once saying so ("database
    /// does not allow writes") instead of waiting out `acquire_timeout`, and the pool
    /// tries again after its backoff (a failover may have promoted a standby by then).
    /// The primary of a [`crate::ReplicaSet`] built from URLs is opened this way.
    pub fn expect_primary(mut self) -> Self {
        self.config
            .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        self.primary = true;
        self
    }

    /// Whether [`PgManager::expect_primary`] was called.
    pub fn expects_primary(&self) -> bool {
        self.primary
    }

    /// Choose how returned connections are cleaned (default [`ResetMode::Auto`]).
    pub fn reset_mode(mut self, mode: ResetMode) -> Self {
        self.reset = mode;
        self
    }

    /// Bound the part of a reset that waits for what the last borrower left in flight,
    /// cancelling a query it abandoned (default [`DEFAULT_CANCEL_TIMEOUT`]). A connection
    /// still busy then is closed (and replaced) instead: the next borrower never waits
    /// behind an abandoned query for longer. The pool's `check_timeout` still bounds the
    /// whole reset.
    pub fn cancel_timeout(mut self, bound: Duration) -> Self {
        self.cancel_timeout = bound;
        self
    }

    /// The tokio-postgres configuration connections are opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Change the tokio-postgres configuration (e.g. `options`, `target_session_attrs`,
    /// `keepalives_idle`), keeping the pool options [`PgManager::from_url`] returned.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Run `sql` (one or more statements, e.g. `SET search_path TO app;
    /// SET statement_timeout = '5s'`) once on every new connection, before it is lent.
    /// An error fails that connect (classified like any connect error).
    pub fn init_sql(mut self, sql: impl Into<String>) -> Self {
        self.init_sql = Some(sql.into().into());
        self
    }
}

/// Run the manager's init SQL, if any, on a new client.
async fn run_init_sql(
    sql: &Option<std::sync::Arc<str>>,
    client: &Client,
) -> Result<(), tokio_postgres::Error> {
    match sql {
        Some(sql) => client.batch_execute(sql).await,
        None => Ok(()),
    }
}

impl fmt::Debug for PgManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("PgManager")
            .field("user", &c.get_user())
            .field("password", &c.get_password().map(|_| "<redacted>"))
            .field("hosts", &c.get_hosts())
            .field("ports", &c.get_ports())
            .field("dbname", &c.get_dbname())
            .field("application_name", &c.get_application_name())
            .field("tls", &self.tls_settings)
            .field("pgbouncer", &self.pgbouncer)
            .field("primary", &self.primary)
            .field("reset", &self.reset)
            // Whether it is set only: init SQL may carry a secret (`SET ... 'key'`).
            .field("init_sql", &self.init_sql.is_some())
            .finish()
    }
}

impl Manager for PgManager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        // The socket is opened by `socket` and observed (see `status`),
        // above TLS when TLS is on.
        let connection = match &self.tls {
            Some(tls) if self.config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable => {
                socket::connect(&self.config, Some(tls.clone())).await?
            }
            _ => socket::connect(&self.config, None::<NoTls>).await?,
        };
        run_init_sql(&self.init_sql, connection.client()).await?;
        Ok(connection)
    }

    fn classify(&self, e: &tokio_postgres::Error) -> ErrorClass {
        if self.primary && refuses_writes(&crate::error::error_chain(e)) {
            return ErrorClass::Fatal;
        }
        classify(e)
    }

    async fn check(&self, client: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        client.simple_query("").await.map(drop)
    }

    async fn reset(&self, client: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        // First what the last borrower left in flight: wait for it, cancelling a query
        // it abandoned, within `cancel_timeout` (anything sent before would queue behind
        // it).
        let status = cancel::settle(client, self.tls.as_ref(), self.cancel_timeout).await?;
        match self.reset {
            ResetMode::Skip => Ok(()),
            ResetMode::Auto => {
                if status != TransactionStatus::Idle {
                    client.batch_execute("ROLLBACK").await?;
                }
                Ok(())
            }
            ResetMode::Rollback => client.batch_execute("ROLLBACK").await,
            ResetMode::Discard => {
                // Two messages: in one, DISCARD ALL would run inside the implicit
                // transaction block and fail.
                if status != TransactionStatus::Idle {
                    client.batch_execute("ROLLBACK").await?;
                }
                client.batch_execute("DISCARD ALL").await
            }
        }
    }

    /// `postgresql`, the first host and port.
    fn target(&self) -> Target {
        target(&self.config)
    }

    fn is_broken(&self, client: &mut PgConnection) -> Verdict {
        if client.is_closed() || client.stream_lost() {
            return Verdict::Broken;
        }
        let status = client.transaction_status();
        match self.reset {
            // Skip trusts the borrowers with transactions, not with abandoned requests:
            // a query still running would hold up the next borrower's first statement.
            ResetMode::Skip if status == TransactionStatus::Unknown => Verdict::NeedsReset,
            ResetMode::Skip => Verdict::Reusable,
            ResetMode::Auto if status == TransactionStatus::Idle => Verdict::Reusable,
            ResetMode::Auto | ResetMode::Rollback | ResetMode::Discard => Verdict::NeedsReset,
        }
    }
}

/// What a connection opened with `config` reaches, for spans: `postgresql`, the first
/// host (name or Unix socket directory) and port.
pub fn target(config: &Config) -> Target {
    use tokio_postgres::config::Host;
    let address = config.get_hosts().first().map(|host| match host {
        Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        Host::Unix(path) => path.display().to_string(),
    });
    Target {
        system: Some("postgresql"),
        address,
        port: Some(config.get_ports().first().copied().unwrap_or(5432)),
    }
}

/// Whether retrying a failed connect can help. Authentication failures, unknown
/// databases and configuration or TLS errors are fatal; refused, reset or timed-out
/// connections, too many clients and a database shutting down or starting up are
/// transient.
pub fn classify(e: &tokio_postgres::Error) -> ErrorClass {
    if let Some(db) = e.as_db_error() {
        // PgBouncer answers a failed login with 08P01 (protocol violation), not class 28.
        if *db.code() == SqlState::PROTOCOL_VIOLATION
            && db.message().contains("authentication failed")
        {
            return ErrorClass::Fatal;
        }
    }
    if let Some(code) = e.code() {
        return classify_sqlstate(code);
    }
    let text = e.to_string();
    let fatal = [
        "invalid configuration",
        "invalid connection string",
        "authentication error",
        "error performing TLS handshake",
    ];
    if fatal.iter().any(|p| text.starts_with(p)) {
        ErrorClass::Fatal
    } else {
        ErrorClass::Transient
    }
}

/// Whether a connect error's text says the server does not take writes (see
/// [`NOT_WRITABLE`]).
pub fn refuses_writes(error: &str) -> bool {
    error.contains(NOT_WRITABLE)
}

/// [`classify`] for a server error code.
pub fn classify_sqlstate(code: &SqlState) -> ErrorClass {
    let c = code.code();
    if c.starts_with("28") // invalid authorization: 28P01 bad password, 28000 no such role / pg_hba
        || c == SqlState::INVALID_CATALOG_NAME.code() // 3D000 no such database
        || c == SqlState::INSUFFICIENT_PRIVILEGE.code()
    // 42501 no CONNECT privilege
    {
        ErrorClass::Fatal
    } else {
        // 53300 too many clients, 57P01 admin shutdown, 57P03 cannot connect now, ...
        ErrorClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        use ErrorClass::{Fatal, Transient};
        for (code, class) in [
            ("28P01", Fatal),
            ("28000", Fatal),
            ("3D000", Fatal),
            ("53300", Transient),
            ("57P01", Transient),
            ("57P03", Transient),
            ("08006", Transient),
        ] {
            assert_eq!(
                classify_sqlstate(&SqlState::from_code(code)),
                class,
                "{code}"
            );
        }
    }

    /// `new` leaves the caller's keepalive settings alone; `from_url` defaults the idle
    /// time only when the URL sets no keepalive key.
    #[test]
    fn keepalives_are_the_callers() {
        let mut config = Config::new();
        config.host("db").keepalives(false);
        let m = PgManager::new(config);
        assert!(!m.config().get_keepalives());
        let mut config = Config::new();
        config.host("db").keepalives_idle(Duration::from_secs(5));
        assert_eq!(
            PgManager::new(config).config().get_keepalives_idle(),
            Duration::from_secs(5)
        );
        let (m, _) = PgManager::from_url("postgresql://db/x").unwrap();
        assert_eq!(m.config().get_keepalives_idle(), Duration::from_secs(60));
        let (m, _) = PgManager::from_url("postgresql://db/x?keepalives_idle=900").unwrap();
        assert_eq!(m.config().get_keepalives_idle(), Duration::from_secs(900));
        let (m, _) = PgManager::from_url("postgresql://db/x?keepalives=0").unwrap();
        assert!(!m.config().get_keepalives());
    }

    /// A one-letter password: `Debug` shows it as `<redacted>` and nothing else is
    /// mangled (a string replacement of "e" would have rewritten every word).
    #[test]
    fn debug_never_shows_the_password() {
        let (m, _) = PgManager::from_url(
            "postgresql://app:e@db.example:5433/shop?application_name=checkout&sslmode=require",
        )
        .unwrap();
        let debug = format!("{m:?}");
        assert!(debug.contains("password: Some(\"<redacted>\")"), "{debug}");
        assert!(debug.contains("user: Some(\"app\")"), "{debug}");
        assert!(debug.contains("dbname: Some(\"shop\")"), "{debug}");
        assert!(
            debug.contains("application_name: Some(\"checkout\")"),
            "{debug}"
        );
        assert!(debug.contains("mode: Require"), "{debug}");
        assert!(!debug.contains("\"e\""), "{debug}");
        let (m, _) = PgManager::from_url("postgresql://app:hunter2@db/shop").unwrap();
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(m.config().get_password(), Some(&b"hunter2"[..]));
    }

    #[tokio::test]
    async fn connection_refused_is_transient_and_names_no_password() {
        // Port 1 on loopback: nothing listens there.
        let (m, _) = PgManager::from_url(
            "postgresql://app:s3cr%40t-pw@127.0.0.1:1/shop?connect_timeout=2&sslmode=disable",
        )
        .unwrap();
        let e = m.connect().await.unwrap_err();
        assert_eq!(m.classify(&e), ErrorClass::Transient);
        let text = crate::error::error_chain(&e);
        assert!(text.contains("error connecting to server"), "{text}");
        assert!(!text.contains("s3cr"), "{text}");
    }
}
