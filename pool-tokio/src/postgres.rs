//! A [`Manager`] for PostgreSQL over tokio-postgres.
//!
//! # Session state between borrowers
//!
//! A connection that comes back inside a transaction (a `BEGIN` sent with
//! `batch_execute`, a task cancelled between `BEGIN` and `COMMIT`) must never reach the
//! next borrower, and tokio-postgres does not expose the server's transaction status
//! (the `ReadyForQuery` byte). So the manager cannot *see* a dirty connection; it has to
//! assume one. [`ResetMode`] chooses how:
//!
//! - [`ResetMode::Rollback`] (the default) returns every connection as `NeedsReset`; the
//!   pool runs `ROLLBACK` on it in a background task before lending it again (bounded by
//!   `check_timeout`, and closed if it fails). Sound for transactions whatever the
//!   borrower did; costs one round trip per return, off the borrower's path. Outside a
//!   transaction PostgreSQL answers `ROLLBACK` with a harmless `WARNING: there is no
//!   transaction in progress` (which the server logs at the default `log_min_messages`).
//! - [`ResetMode::Discard`] runs `ROLLBACK` and then `DISCARD ALL`: also clears `SET`s,
//!   temporary tables, prepared statements, advisory locks and `LISTEN`s. Do not use it
//!   behind PgBouncer in transaction mode.
//! - [`ResetMode::Skip`] trusts the borrowers: only correct if every transaction goes
//!   through tokio-postgres's `Client::transaction()`, whose guard queues a `ROLLBACK` on
//!   drop before the connection can be returned (so cancellation is covered too), and
//!   nobody sends `BEGIN` by hand.
//!
//! A closed client (`Client::is_closed`) is always returned as `Broken` and closed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pool_core::{ConfigOverrides, ErrorClass, Verdict};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::manager::{Manager, Target};

/// How a returned connection is cleaned before its next borrower; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResetMode {
    /// `ROLLBACK` on every return.
    #[default]
    Rollback,
    /// `ROLLBACK`, then `DISCARD ALL`, on every return.
    Discard,
    /// No reset: only for borrowers that use `Client::transaction()` exclusively.
    Skip,
}

/// Opens tokio-postgres clients. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct PgManager {
    config: Config,
    reset: ResetMode,
    /// SQL run once on every new connection (`PgManager::init_sql`).
    init_sql: Option<std::sync::Arc<str>>,
    /// The TLS connector for `sslmode=prefer|require` (feature `rustls`).
    #[cfg(feature = "rustls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl PgManager {
    /// A manager for `config`, with TCP keepalive on (first probe after 60 s idle), so
    /// a silently dropped peer is noticed by the kernel.
    pub fn new(mut config: Config) -> Self {
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(60));
        PgManager {
            config,
            reset: ResetMode::default(),
            init_sql: None,
            #[cfg(feature = "rustls")]
            tls: Some(default_tls()),
        }
    }

    /// Use this rustls configuration (e.g. a private CA's roots) for TLS connections.
    #[cfg(feature = "rustls")]
    pub fn with_tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(tokio_postgres_rustls::MakeRustlsConnect::new(config));
        self
    }

    /// Parse `postgresql://user:password@host:5432/db?connection_limit=10&pool_timeout=20`.
    ///
    /// Query parameters (durations in whole seconds):
    /// `connection_limit` (max_size), `min_idle`, `pool_timeout` (acquire timeout),
    /// `connect_timeout`, `idle_timeout` and `max_lifetime` (`0` disables them),
    /// `sslmode` (`disable`, `prefer`, or with the `rustls` feature `require`; rustls
    /// always verifies the server's certificate chain and host name, so `verify-ca` and
    /// `verify-full` mean `require` too; without the feature they are an error),
    /// `application_name`. Any other parameter, a repeated one or a malformed value is
    /// an error naming it. No error ever contains the password.
    pub fn from_url(url: &str) -> Result<(PgManager, ConfigOverrides), UrlError> {
        let password = raw_password(url);
        let redact = |text: String| redact(text, password.as_deref());
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
            return Err(UrlError::Scheme);
        }
        let mut config = Config::from_str(base)
            .map_err(|e| UrlError::Invalid(redact(crate::error::error_chain(&e))))?;
        let mut options = ConfigOverrides::default();
        let mut seen: Vec<String> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).ok_or_else(|| UrlError::InvalidParameter {
                name: "(a parameter name)".into(),
                reason: "bad percent-encoding".into(),
            })?;
            if seen.contains(&name) {
                return Err(UrlError::InvalidParameter {
                    name,
                    reason: "given more than once".into(),
                });
            }
            let bad = |reason: &str| UrlError::InvalidParameter {
                name: name.clone(),
                reason: reason.into(),
            };
            let value = percent_decode(value).ok_or_else(|| bad("bad percent-encoding"))?;
            let count = || -> Result<usize, UrlError> {
                value
                    .parse::<usize>()
                    .map_err(|_| bad("expected a whole number"))
            };
            let secs = || -> Result<Duration, UrlError> {
                value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| bad("expected a whole number of seconds"))
            };
            let positive_secs = || -> Result<Duration, UrlError> {
                let d = secs()?;
                if d.is_zero() {
                    return Err(bad("must be at least 1 second"));
                }
                Ok(d)
            };
            let optional_secs = || -> Result<Option<Duration>, UrlError> {
                Ok(Some(secs()?).filter(|d| !d.is_zero()))
            };
            match name.as_str() {
                "connection_limit" => {
                    let n = count()?;
                    if n == 0 {
                        return Err(bad("must be at least 1"));
                    }
                    options.max_size = Some(n);
                }
                "min_idle" => options.min_idle = Some(count()?),
                "pool_timeout" => options.acquire_timeout = Some(positive_secs()?),
                "connect_timeout" => {
                    let d = positive_secs()?;
                    config.connect_timeout(d);
                    options.connect_timeout = Some(d);
                }
                "idle_timeout" => options.idle_timeout = Some(optional_secs()?),
                "max_lifetime" => options.max_lifetime = Some(optional_secs()?),
                "sslmode" => match value.as_str() {
                    "disable" => {
                        config.ssl_mode(SslMode::Disable);
                    }
                    "prefer" => {
                        config.ssl_mode(SslMode::Prefer);
                    }
                    "require" | "verify-ca" | "verify-full" => {
                        if cfg!(feature = "rustls") {
                            config.ssl_mode(SslMode::Require);
                        } else {
                            return Err(UrlError::TlsUnavailable { sslmode: value });
                        }
                    }
                    _ => return Err(bad("expected disable, prefer or require")),
                },
                "application_name" => {
                    config.application_name(value.clone());
                }
                _ => return Err(UrlError::UnknownParameter(name)),
            }
            seen.push(name);
        }
        Ok((PgManager::new(config), options))
    }

    /// Choose how returned connections are cleaned (default [`ResetMode::Rollback`]).
    pub fn reset_mode(mut self, mode: ResetMode) -> Self {
        self.reset = mode;
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
            .field("ssl_mode", &c.get_ssl_mode())
            .field("reset", &self.reset)
            .field("init_sql", &self.init_sql)
            .field("tls", &cfg!(feature = "rustls"))
            .finish()
    }
}

impl Manager for PgManager {
    type Connection = Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        #[cfg(feature = "rustls")]
        if let Some(tls) = &self.tls {
            if self.config.get_ssl_mode() != SslMode::Disable {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                spawn_connection(connection);
                run_init_sql(&self.init_sql, &client).await?;
                return Ok(client);
            }
        }
        let (client, connection) = self.config.connect(NoTls).await?;
        spawn_connection(connection);
        run_init_sql(&self.init_sql, &client).await?;
        Ok(client)
    }

    fn classify(&self, e: &tokio_postgres::Error) -> ErrorClass {
        classify(e)
    }

    async fn check(&self, client: &mut Client) -> Result<(), tokio_postgres::Error> {
        client.simple_query("").await.map(drop)
    }

    async fn reset(&self, client: &mut Client) -> Result<(), tokio_postgres::Error> {
        match self.reset {
            ResetMode::Skip => Ok(()),
            ResetMode::Rollback => client.batch_execute("ROLLBACK").await,
            ResetMode::Discard => {
                // Two messages: in one, DISCARD ALL would run inside the implicit
                // transaction block and fail.
                client.batch_execute("ROLLBACK").await?;
                client.batch_execute("DISCARD ALL").await
            }
        }
    }

    /// `postgresql`, the first host and port.
    fn target(&self) -> Target {
        use tokio_postgres::config::Host;
        let address = self.config.get_hosts().first().map(|host| match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        });
        Target {
            system: Some("postgresql"),
            address,
            port: Some(self.config.get_ports().first().copied().unwrap_or(5432)),
        }
    }

    fn is_broken(&self, client: &mut Client) -> Verdict {
        if client.is_closed() {
            Verdict::Broken
        } else if self.reset == ResetMode::Skip {
            Verdict::Reusable
        } else {
            Verdict::NeedsReset
        }
    }
}

/// Drive a client's socket until it closes.
fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %crate::error::error_chain(&e), "postgres connection ended");
        }
    });
}

/// rustls with the ring provider and the Mozilla roots (webpki-roots).
#[cfg(feature = "rustls")]
fn default_tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
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

/// A connection URL the pool cannot use. Never contains the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not a `postgres://` or `postgresql://` URL.
    Scheme,
    /// A query parameter this pool does not know.
    UnknownParameter(String),
    /// A known parameter with a bad value.
    InvalidParameter { name: String, reason: String },
    /// `sslmode` asks for TLS, which this build does not include.
    TlsUnavailable { sslmode: String },
    /// tokio-postgres rejected the rest of the URL (password redacted).
    Invalid(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme => {
                f.write_str("connection URL must start with postgres:// or postgresql://")
            }
            UrlError::UnknownParameter(name) => {
                write!(f, "unknown connection URL parameter `{name}`")
            }
            UrlError::InvalidParameter { name, reason } => {
                write!(f, "invalid connection URL parameter `{name}`: {reason}")
            }
            UrlError::TlsUnavailable { sslmode } => write!(
                f,
                "`sslmode={sslmode}` needs TLS, which this build of pool-tokio does not \
                 include; use sslmode=disable or sslmode=prefer"
            ),
            UrlError::Invalid(reason) => write!(f, "invalid connection URL: {reason}"),
        }
    }
}

impl std::error::Error for UrlError {}

/// The password as written in the URL's authority, if any.
fn raw_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let raw = userinfo.split_once(':')?.1;
    Some(raw.to_string())
}

fn redact(mut text: String, password: Option<&str>) -> String {
    if let Some(raw) = password.filter(|p| !p.is_empty()) {
        text = text.replace(raw, "<redacted>");
        if let Some(decoded) = percent_decode(raw).filter(|d| !d.is_empty()) {
            text = text.replace(&decoded, "<redacted>");
        }
    }
    text
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr%40t-pw";

    fn url(query: &str) -> String {
        format!("postgresql://app:{SECRET}@db.example:5433/shop{query}")
    }

    #[test]
    fn parses_pool_parameters() {
        let (m, o) = PgManager::from_url(&url(
            "?connection_limit=10&pool_timeout=20&connect_timeout=3&min_idle=2\
             &idle_timeout=0&max_lifetime=600&sslmode=disable&application_name=my%20app",
        ))
        .unwrap();
        assert_eq!(o.max_size, Some(10));
        assert_eq!(o.acquire_timeout, Some(Duration::from_secs(20)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(o.min_idle, Some(2));
        assert_eq!(o.idle_timeout, Some(None));
        assert_eq!(o.max_lifetime, Some(Some(Duration::from_secs(600))));
        let c = m.config();
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_password(), Some(&b"s3cr@t-pw"[..]));
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_application_name(), Some("my app"));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(60));
        let mut config = pool_core::Config::default();
        o.apply(&mut config);
        assert_eq!(config.max_size, 10);
        assert_eq!(config.idle_timeout, None);
        config.validate().unwrap();
    }

    #[test]
    fn without_parameters_nothing_is_overridden() {
        let (_, o) = PgManager::from_url("postgres://app@localhost/db").unwrap();
        assert_eq!(o, ConfigOverrides::default());
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |q: &str| PgManager::from_url(&url(q)).unwrap_err();
        assert_eq!(
            err("?connection_limt=10"),
            UrlError::UnknownParameter("connection_limt".into())
        );
        assert!(err("?pool_timeout=soon")
            .to_string()
            .contains("`pool_timeout`"));
        assert!(err("?connection_limit=0")
            .to_string()
            .contains("`connection_limit`"));
        assert!(err("?min_idle=1&min_idle=2")
            .to_string()
            .contains("more than once"));
        assert!(err("?sslmode=sometimes").to_string().contains("`sslmode`"));
        #[cfg(not(feature = "rustls"))]
        assert!(matches!(
            err("?sslmode=require"),
            UrlError::TlsUnavailable { .. }
        ));
        // A password passed as a parameter is refused without echoing it.
        let e = err("?password=hunter2");
        assert_eq!(e, UrlError::UnknownParameter("password".into()));
        assert!(!e.to_string().contains("hunter2"));
        assert_eq!(
            PgManager::from_url("mysql://a:b@h/d").unwrap_err(),
            UrlError::Scheme
        );
    }

    #[test]
    fn the_password_never_shows() {
        let (m, _) = PgManager::from_url(&url("")).unwrap();
        let debug = format!("{m:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("\"app\""), "{debug}");
        // Errors from every path, including tokio-postgres's own parser.
        for bad in [
            "postgresql://app:s3cr%40t-pw@[::1/shop".to_string(),
            "postgresql://app:s3cr%40t-pw@db.example:notaport/shop".to_string(),
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?port=1".to_string(),
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?sslmode=maybe".to_string(),
        ] {
            let e = PgManager::from_url(&bad).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains("s3cr"), "{text}");
            }
        }
    }

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

#[cfg(all(test, feature = "rustls"))]
mod tls_tests {
    use super::*;

    #[test]
    fn sslmode_require_is_accepted_with_rustls() {
        for mode in ["require", "verify-full"] {
            let (m, _) =
                PgManager::from_url(&format!("postgresql://a:pw@db.example/d?sslmode={mode}"))
                    .unwrap();
            assert_eq!(m.config().get_ssl_mode(), SslMode::Require);
            assert!(m.tls.is_some());
        }
    }
}
