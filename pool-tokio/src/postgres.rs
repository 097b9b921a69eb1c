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
//! flight makes the status unknown, are in the `postgres_status` module (and
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
//!   open. A query cancelled mid-flight is waited for, not cancelled: a long one
//!   holds its connection in the reset until it ends or `check_timeout` closes it.
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
//! Because the manager opens the socket, `Client::cancel_token()` on these clients
//! cannot open a cancel connection (tokio-postgres keeps the socket settings private);
//! `CancelToken::cancel_query_raw` over a stream the caller opens still works.
//!
//! A closed client (`Client::is_closed`) is always returned as `Broken` and closed, and
//! so is one whose byte stream could not be followed (malformed framing from the server:
//! its status would never be known again).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pool_core::{ConfigOverrides, ErrorClass, Verdict};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

use crate::manager::Manager;
use crate::postgres_socket;
pub use crate::postgres_status::{PgConnection, TransactionStatus};

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
    /// No reset: only for borrowers that use `Client::transaction()` exclusively.
    Skip,
}

/// Opens tokio-postgres clients ([`PgConnection`]s). Its `Debug` never shows the password.
#[derive(Clone)]
pub struct PgManager {
    config: Config,
    reset: ResetMode,
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

    /// Choose how returned connections are cleaned (default [`ResetMode::Auto`]).
    pub fn reset_mode(mut self, mode: ResetMode) -> Self {
        self.reset = mode;
        self
    }

    /// The tokio-postgres configuration connections are opened with.
    pub fn config(&self) -> &Config {
        &self.config
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
            .field("tls", &cfg!(feature = "rustls"))
            .finish()
    }
}

impl Manager for PgManager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        // The socket is opened by `postgres_socket`, observed (see `postgres_status`).
        #[cfg(feature = "rustls")]
        if let Some(tls) = &self.tls {
            if self.config.get_ssl_mode() != SslMode::Disable {
                return postgres_socket::connect(&self.config, Some(tls.clone())).await;
            }
        }
        postgres_socket::connect(&self.config, None::<NoTls>).await
    }

    fn classify(&self, e: &tokio_postgres::Error) -> ErrorClass {
        classify(e)
    }

    async fn check(&self, client: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        client.simple_query("").await.map(drop)
    }

    async fn reset(&self, client: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        match self.reset {
            ResetMode::Skip => Ok(()),
            ResetMode::Auto => {
                if client.settled_transaction_status().await != TransactionStatus::Idle {
                    client.batch_execute("ROLLBACK").await?;
                }
                Ok(())
            }
            ResetMode::Rollback => client.batch_execute("ROLLBACK").await,
            ResetMode::Discard => {
                // Two messages: in one, DISCARD ALL would run inside the implicit
                // transaction block and fail.
                if client.settled_transaction_status().await != TransactionStatus::Idle {
                    client.batch_execute("ROLLBACK").await?;
                }
                client.batch_execute("DISCARD ALL").await
            }
        }
    }

    fn is_broken(&self, client: &mut PgConnection) -> Verdict {
        if client.is_closed() || client.stream_lost() {
            return Verdict::Broken;
        }
        match self.reset {
            ResetMode::Skip => Verdict::Reusable,
            ResetMode::Auto if client.transaction_status() == TransactionStatus::Idle => {
                Verdict::Reusable
            }
            ResetMode::Auto | ResetMode::Rollback | ResetMode::Discard => Verdict::NeedsReset,
        }
    }
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
