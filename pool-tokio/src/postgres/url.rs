//! `PgManager::from_url`: a connection URL as libpq, Prisma and this pool read it.
//!
//! The URL is parsed with the `url` crate (user info, path, query) after the host list is
//! taken out of the authority (libpq's `host1:5432,host2:5433` is not a URL host). The
//! pool's keys go to [`ConfigOverrides`], the TLS keys to [`TlsSettings`], Prisma's keys
//! are translated, and every libpq key tokio-postgres understands is handed to
//! tokio-postgres's own parser (a conninfo string built from the parsed parts, without the
//! password, which is set on the `Config` afterwards). So no error can contain the
//! password: none is ever built from the URL's text, and no parser that reports errors is
//! ever shown the password. [`KEYS`] lists every key with what it does.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use pool_core::ConfigOverrides;
use tokio_postgres::Config;

use super::tls::{ClientCert, RootCerts, SslMode, TlsSettings};

/// How a pool option says "no timeout" (`pool_timeout=0`, `connect_timeout=0`): pool-core's
/// timeouts are plain `Duration`s, so "none" is a hundred years. The core's deadlines
/// saturate and the tokio timer clamps far deadlines, so nothing overflows.
pub const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// What `from_url` makes of a URL.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub config: Config,
    pub options: ConfigOverrides,
    pub tls: TlsSettings,
    pub pgbouncer: bool,
}

/// What a key does: the table [`KEYS`] is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A pool option (pool-core's `Config`).
    Pool,
    /// Handed to tokio-postgres's own parser.
    Driver,
    /// TLS (`sslmode`, `sslrootcert`, ...).
    Tls,
    /// Prisma's, translated.
    Prisma,
    /// Accepted with no effect; the note says why.
    NoEffect,
    /// Refused; the note is the error's reason.
    Refused,
}

/// Every key `from_url` knows, what it does, and for refused ones why. The refusal
/// messages are the errors' text.
pub const KEYS: &[(&str, KeyKind, &str)] = &[
    // The pool's own options (pool-core's Config); durations in whole seconds.
    ("connection_limit", KeyKind::Pool, "max_size (Prisma's name); at least 1"),
    ("max_size", KeyKind::Pool, "max_size; at least 1"),
    ("min_idle", KeyKind::Pool, "min_idle"),
    ("max_connecting", KeyKind::Pool, "max_connecting; at least 1"),
    ("max_waiters", KeyKind::Pool, "max_waiters"),
    ("pool_timeout", KeyKind::Pool, "acquire_timeout; 0 = no timeout (as in Prisma)"),
    ("acquire_timeout", KeyKind::Pool, "acquire_timeout; 0 = no timeout"),
    ("connect_timeout", KeyKind::Pool, "connect_timeout of the pool and of tokio-postgres; 0 = no timeout (libpq, Prisma)"),
    ("check_timeout", KeyKind::Pool, "check_timeout; at least 1"),
    ("idle_timeout", KeyKind::Pool, "idle_timeout; 0 = never"),
    ("max_idle_connection_lifetime", KeyKind::Pool, "idle_timeout (Prisma's name); 0 = never"),
    ("max_lifetime", KeyKind::Pool, "max_lifetime; 0 = never"),
    ("max_connection_lifetime", KeyKind::Pool, "max_lifetime (Prisma's name); 0 = never"),
    ("leak_threshold", KeyKind::Pool, "leak_threshold; 0 = no leak reports"),
    // libpq keys tokio-postgres implements.
    ("host", KeyKind::Driver, "host names, or a directory for a Unix socket (/var/run/postgresql); comma-separated"),
    ("hostaddr", KeyKind::Driver, "IP addresses to connect to (host stays the TLS name)"),
    ("port", KeyKind::Driver, "ports, comma-separated"),
    ("dbname", KeyKind::Driver, "the database"),
    ("user", KeyKind::Driver, "the user"),
    ("password", KeyKind::Driver, "the password (never shown)"),
    ("options", KeyKind::Driver, "command-line options for the server, e.g. -c statement_timeout=5s"),
    ("application_name", KeyKind::Driver, "application_name"),
    ("fallback_application_name", KeyKind::Driver, "application_name when none is given"),
    ("tcp_user_timeout", KeyKind::Driver, "TCP_USER_TIMEOUT in seconds; 0 = system default"),
    ("keepalives", KeyKind::Driver, "TCP keepalive on (1, default) or off (0)"),
    ("keepalives_idle", KeyKind::Driver, "seconds idle before the first probe (default here 60, tokio-postgres's own 7200)"),
    ("keepalives_interval", KeyKind::Driver, "seconds between probes"),
    ("keepalives_count", KeyKind::Driver, "probes lost before the connection is dropped (tokio-postgres's keepalives_retries)"),
    ("keepalives_retries", KeyKind::Driver, "tokio-postgres's name for keepalives_count"),
    ("target_session_attrs", KeyKind::Driver, "any, read-write or read-only"),
    ("channel_binding", KeyKind::Driver, "disable, prefer or require (SCRAM channel binding over TLS)"),
    ("load_balance_hosts", KeyKind::Driver, "disable or random"),
    ("sslnegotiation", KeyKind::Driver, "postgres or direct"),
    // TLS.
    ("sslmode", KeyKind::Tls, "disable, allow (= prefer), prefer, require, verify-ca, verify-full"),
    ("sslrootcert", KeyKind::Tls, "PEM file of trusted roots, or `system`; with require it means verify-ca"),
    ("sslcert", KeyKind::Tls, "client certificate, PEM (with sslkey)"),
    ("sslkey", KeyKind::Tls, "client key, unencrypted PEM (with sslcert)"),
    ("requiressl", KeyKind::Tls, "deprecated libpq key: 1 = sslmode=require, 0 = prefer"),
    ("sslaccept", KeyKind::Tls, "Prisma's: strict = verify-full, accept_invalid_certs = require"),
    // Prisma's.
    ("schema", KeyKind::Prisma, "search_path, sent as options=-c search_path=\"schema\""),
    ("pgbouncer", KeyKind::Prisma, "true: behind PgBouncer in transaction mode (PgManager::pgbouncer())"),
    ("statement_cache_size", KeyKind::NoEffect, "the pool keeps no statement cache (tokio-postgres prepares only what you prepare)"),
    ("client_encoding", KeyKind::NoEffect, "tokio-postgres always uses UTF8; other encodings are refused"),
    ("sslcompression", KeyKind::NoEffect, "TLS compression is never used (rustls has none; libpq ignores it too)"),
    ("gssencmode", KeyKind::NoEffect, "GSSAPI encryption is never used: disable and prefer accepted, require refused"),
    ("sslcertmode", KeyKind::NoEffect, "allow (the default) accepted; disable drops the client certificate; require refused"),
    ("ssl_min_protocol_version", KeyKind::NoEffect, "rustls speaks TLSv1.2 and TLSv1.3: TLSv1 to TLSv1.2 accepted, TLSv1.3 refused"),
    ("ssl_max_protocol_version", KeyKind::NoEffect, "TLSv1.3 accepted; a lower cap is refused (rustls cannot be capped per connection here)"),
    // Refused, with the reason.
    ("socket_timeout", KeyKind::Refused, "Prisma's per-query client timeout has no tokio-postgres equivalent: wrap queries in tokio::time::timeout, or set a server-side limit with options=-c statement_timeout=..."),
    ("sslidentity", KeyKind::Refused, "PKCS#12 bundles are not read (rustls takes PEM): convert with `openssl pkcs12 -in identity.p12 -nodes -out client.pem` and pass sslcert=client.pem&sslkey=client.pem"),
    ("sslpassword", KeyKind::Refused, "encrypted keys and PKCS#12 bundles are not read: decrypt the key (openssl pkey -in enc.key -out client.key) and pass sslkey"),
    ("passfile", KeyKind::Refused, "password files are not read: put the password in the URL"),
    ("service", KeyKind::Refused, "pg_service.conf is not read: write the service's settings into the URL"),
    ("require_auth", KeyKind::Refused, "tokio-postgres cannot restrict the authentication method; channel_binding=require insists on SCRAM with channel binding"),
    ("requirepeer", KeyKind::Refused, "the Unix socket peer check is not supported by tokio-postgres"),
    ("sslcrl", KeyKind::Refused, "certificate revocation lists are not supported"),
    ("sslcrldir", KeyKind::Refused, "certificate revocation lists are not supported"),
    ("sslsni", KeyKind::Refused, "rustls always sends SNI for host names (never for IP addresses); it cannot be set per URL here"),
    ("sslkeylogfile", KeyKind::Refused, "TLS key logging is not supported"),
    ("krbsrvname", KeyKind::Refused, "GSSAPI/Kerberos authentication is not supported by tokio-postgres"),
    ("gsslib", KeyKind::Refused, "GSSAPI/Kerberos authentication is not supported by tokio-postgres"),
    ("gssdelegation", KeyKind::Refused, "GSSAPI/Kerberos authentication is not supported by tokio-postgres"),
    ("replication", KeyKind::Refused, "replication connections are not pooled"),
    ("min_protocol_version", KeyKind::Refused, "tokio-postgres speaks protocol 3.0 only"),
    ("max_protocol_version", KeyKind::Refused, "tokio-postgres speaks protocol 3.0 only"),
    ("oauth_issuer", KeyKind::Refused, "OAuth authentication is not supported by tokio-postgres"),
    ("oauth_client_id", KeyKind::Refused, "OAuth authentication is not supported by tokio-postgres"),
    ("oauth_client_secret", KeyKind::Refused, "OAuth authentication is not supported by tokio-postgres"),
    ("oauth_scope", KeyKind::Refused, "OAuth authentication is not supported by tokio-postgres"),
    ("scram_client_key", KeyKind::Refused, "SCRAM key pass-through is not supported by tokio-postgres"),
    ("scram_server_key", KeyKind::Refused, "SCRAM key pass-through is not supported by tokio-postgres"),
];

/// A connection URL the pool cannot use. Never contains the password: every message is
/// built from the parsed parts and fixed text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not a `postgres://` or `postgresql://` URL.
    Scheme,
    /// A query parameter no one knows.
    UnknownParameter(String),
    /// A known parameter with a bad value, or one this pool refuses (the reason says why).
    InvalidParameter { name: String, reason: String },
    /// The URL's structure (what the `url` crate or tokio-postgres's parser said).
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
            UrlError::Invalid(reason) => write!(f, "invalid connection URL: {reason}"),
        }
    }
}

impl std::error::Error for UrlError {}

fn bad(name: &str, reason: impl Into<String>) -> UrlError {
    UrlError::InvalidParameter {
        name: name.to_string(),
        reason: reason.into(),
    }
}

fn decode(part: &'static str, s: &str) -> Result<String, UrlError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad(part, "not UTF-8 after percent-decoding"))
}

/// A conninfo value, quoted for tokio-postgres's parser.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Parse `text`; `env` reads the libpq environment variables (`PGSSLMODE`, ...).
pub(crate) fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, UrlError> {
    let Authority {
        userinfo,
        hostlist,
        tail,
        ..
    } = authority(text)?;
    let placeholder = match userinfo {
        Some(u) => format!("postgresql://{u}@placeholder{tail}"),
        None => format!("postgresql://placeholder{tail}"),
    };
    let url = ::url::Url::parse(&placeholder).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if url.fragment().is_some() {
        return Err(UrlError::Invalid(
            "unexpected `#` (percent-encode it as %23 in a password or value)".into(),
        ));
    }

    let mut conninfo: Vec<(String, String)> = Vec::new();
    let (hosts, ports) = parse_hosts(hostlist)?;
    if !hosts.is_empty() {
        conninfo.push(("host".into(), hosts.join(",")));
    }
    if !ports.is_empty() {
        conninfo.push(("port".into(), ports.join(",")));
    }
    let user = decode("user", url.username())?;
    if !user.is_empty() {
        conninfo.push(("user".into(), user));
    }
    let mut password: Option<Vec<u8>> = url
        .password()
        .map(|p| percent_decode_str(p).collect::<Vec<u8>>());
    let dbname = decode("dbname", url.path().trim_start_matches('/'))?;
    if !dbname.is_empty() {
        conninfo.push(("dbname".into(), dbname));
    }

    let mut options = ConfigOverrides::default();
    let mut tls = TlsSettings::default();
    let mut sslmode: Option<SslMode> = None;
    let mut sslaccept: Option<SslMode> = None;
    let (mut sslcert, mut sslkey, mut sslrootcert) = (None, None, None);
    let mut drop_client_cert = false;
    let mut pgbouncer = false;
    let mut schema: Option<String> = None;
    let mut connect_timeout: Option<Duration> = None;
    let mut fallback_application_name: Option<String> = None;
    let mut keepalives_set = false;
    // Which option each key set, so aliases and repeats are caught.
    let mut targets: Vec<(&'static str, String)> = Vec::new();

    for pair in url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode("(a parameter name)", raw_name)?;
        let value = percent_decode_str(raw_value)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad(&name, "not UTF-8 after percent-decoding"))?;
        let target = target_of(&name);
        if let Some((_, first)) = targets.iter().find(|(t, _)| *t == target) {
            return Err(bad(
                &name,
                if *first == name {
                    "given more than once".to_string()
                } else {
                    format!("sets the same thing as `{first}`, given before it")
                },
            ));
        }
        targets.push((target, name.clone()));
        let name = name.as_str();
        let count = || -> Result<usize, UrlError> {
            value
                .parse::<usize>()
                .map_err(|_| bad(name, "expected a whole number"))
        };
        let secs = || -> Result<Duration, UrlError> {
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| bad(name, "expected a whole number of seconds"))
        };
        let positive = |n: usize| -> Result<usize, UrlError> {
            if n == 0 {
                Err(bad(name, "must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let zero_is_none =
            || -> Result<Option<Duration>, UrlError> { Ok(Some(secs()?).filter(|d| !d.is_zero())) };
        let zero_is_no_timeout =
            || -> Result<Duration, UrlError> { Ok(zero_is_none()?.unwrap_or(NO_TIMEOUT)) };
        let flag = || -> Result<bool, UrlError> {
            match value.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(name, "expected true or false")),
            }
        };
        match name {
            "connection_limit" | "max_size" => options.max_size = Some(positive(count()?)?),
            "min_idle" => options.min_idle = Some(count()?),
            "max_connecting" => options.max_connecting = Some(positive(count()?)?),
            "max_waiters" => options.max_waiters = Some(count()?),
            "pool_timeout" | "acquire_timeout" => {
                options.acquire_timeout = Some(zero_is_no_timeout()?)
            }
            "connect_timeout" => {
                let d = zero_is_none()?;
                connect_timeout = d;
                options.connect_timeout = Some(d.unwrap_or(NO_TIMEOUT));
            }
            "check_timeout" => {
                let d = secs()?;
                if d.is_zero() {
                    return Err(bad(name, "must be at least 1 second"));
                }
                options.check_timeout = Some(d);
            }
            "idle_timeout" | "max_idle_connection_lifetime" => {
                options.idle_timeout = Some(zero_is_none()?)
            }
            "max_lifetime" | "max_connection_lifetime" => {
                options.max_lifetime = Some(zero_is_none()?)
            }
            "leak_threshold" => options.leak_threshold = Some(zero_is_none()?),
            "password" => {
                if password.is_some() {
                    return Err(bad(
                        name,
                        "a password is also given before the host; give it once",
                    ));
                }
                password = Some(value.clone().into_bytes());
            }
            "fallback_application_name" => fallback_application_name = Some(value.clone()),
            "keepalives_count" | "keepalives_retries" => {
                keepalives_set = true;
                driver_param(&mut conninfo, name, "keepalives_retries", &value)?;
            }
            "keepalives" | "keepalives_idle" => {
                keepalives_set = true;
                driver_param(&mut conninfo, name, name, &value)?;
            }
            "host" | "port" | "user" | "dbname" => {
                if conninfo.iter().any(|(k, _)| k == name) {
                    return Err(bad(
                        name,
                        "also given in the URL before the query; give it once",
                    ));
                }
                driver_param(&mut conninfo, name, name, &value)?;
            }
            "hostaddr"
            | "options"
            | "application_name"
            | "tcp_user_timeout"
            | "keepalives_interval"
            | "target_session_attrs"
            | "channel_binding"
            | "load_balance_hosts"
            | "sslnegotiation" => {
                driver_param(&mut conninfo, name, name, &value)?;
            }
            "sslmode" => {
                sslmode = Some(SslMode::parse(&value).ok_or_else(|| {
                    bad(
                        name,
                        "expected disable, allow, prefer, require, verify-ca or verify-full",
                    )
                })?)
            }
            "requiressl" => {
                sslmode = Some(match value.as_str() {
                    "1" => SslMode::Require,
                    "0" => SslMode::Prefer,
                    _ => return Err(bad(name, "expected 1 or 0")),
                })
            }
            "sslaccept" => {
                sslaccept = Some(match value.as_str() {
                    "strict" => SslMode::VerifyFull,
                    "accept_invalid_certs" => SslMode::Require,
                    _ => return Err(bad(name, "expected strict or accept_invalid_certs")),
                })
            }
            "sslrootcert" => sslrootcert = Some(value.clone()),
            "sslcert" => sslcert = Some(value.clone()),
            "sslkey" => sslkey = Some(value.clone()),
            "schema" => {
                if value.is_empty() {
                    return Err(bad(name, "empty schema name"));
                }
                schema = Some(value.clone());
            }
            "pgbouncer" => pgbouncer = flag()?,
            "statement_cache_size" => {
                count()?;
            }
            "client_encoding" => {
                if !matches!(
                    value.to_ascii_uppercase().as_str(),
                    "UTF8" | "UTF-8" | "UNICODE"
                ) {
                    return Err(bad(name, "tokio-postgres always uses UTF8"));
                }
            }
            "sslcompression" => {
                if !matches!(value.as_str(), "0" | "1") {
                    return Err(bad(name, "expected 0 or 1"));
                }
            }
            "gssencmode" => match value.as_str() {
                "disable" | "prefer" => {}
                "require" => {
                    return Err(bad(
                        name,
                        "GSSAPI encryption is not supported by tokio-postgres",
                    ))
                }
                _ => return Err(bad(name, "expected disable, prefer or require")),
            },
            "sslcertmode" => {
                match value.as_str() {
                    "allow" => {}
                    "disable" => drop_client_cert = true,
                    "require" => return Err(bad(
                        name,
                        "rustls cannot insist that the server asks for the client certificate; \
                         use allow (the default) with sslcert and sslkey",
                    )),
                    _ => return Err(bad(name, "expected disable, allow or require")),
                }
            }
            "ssl_min_protocol_version" => match value.as_str() {
                "TLSv1" | "TLSv1.1" | "TLSv1.2" => {}
                "TLSv1.3" => {
                    return Err(bad(
                        name,
                        "a TLSv1.3 floor is not supported here (rustls negotiates TLSv1.3 \
                         whenever the server offers it)",
                    ))
                }
                _ => return Err(bad(name, "expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3")),
            },
            "ssl_max_protocol_version" => match value.as_str() {
                "TLSv1.3" | "" => {}
                "TLSv1" | "TLSv1.1" | "TLSv1.2" => {
                    return Err(bad(
                        name,
                        "capping the TLS version is not supported (rustls speaks TLSv1.2 and \
                         TLSv1.3)",
                    ))
                }
                _ => return Err(bad(name, "expected TLSv1.3")),
            },
            _ => match KEYS.iter().find(|(k, ..)| *k == name) {
                Some((_, KeyKind::Refused, why)) => return Err(bad(name, *why)),
                _ => return Err(UrlError::UnknownParameter(name.to_string())),
            },
        }
    }

    // libpq's environment variables, where the URL says nothing.
    let from_env = |var: &str| env(var).filter(|v| !v.is_empty());
    if sslmode.is_none() {
        if let Some(v) = from_env("PGSSLMODE") {
            sslmode = Some(SslMode::parse(&v).ok_or_else(|| {
                bad(
                    "sslmode",
                    "PGSSLMODE: expected disable, allow, prefer, require, verify-ca or \
                     verify-full",
                )
            })?);
        }
    }
    let sslrootcert = sslrootcert.or_else(|| from_env("PGSSLROOTCERT"));
    let sslcert = sslcert.or_else(|| from_env("PGSSLCERT"));
    let sslkey = sslkey.or_else(|| from_env("PGSSLKEY"));

    tls.root_cert = sslrootcert.map(|r| match r.as_str() {
        "system" => RootCerts::System,
        _ => RootCerts::File(r.into()),
    });
    // As in libpq 16: sslrootcert=system makes verify-full the default.
    let default_mode = if tls.root_cert == Some(RootCerts::System) {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    };
    tls.mode = match (sslmode, sslaccept) {
        (Some(SslMode::Disable), Some(_)) => {
            return Err(bad(
                "sslaccept",
                "says how to check the certificate, but sslmode=disable turns TLS off",
            ))
        }
        // `accept_invalid_certs` keeps a mode that does not check (prefer stays prefer).
        (Some(m), Some(SslMode::Require)) if m <= SslMode::Require => m,
        (_, Some(accept)) => accept,
        (Some(m), None) => m,
        (None, None) => default_mode,
    };
    match (sslcert, sslkey) {
        (Some(cert), Some(key)) => {
            if !drop_client_cert {
                tls.client_cert = Some(ClientCert {
                    cert: cert.into(),
                    key: key.into(),
                });
            }
        }
        (Some(_), None) => {
            return Err(bad(
                "sslcert",
                "a client certificate needs its key: add sslkey (or PGSSLKEY). (Prisma's \
                 sslcert, the server's CA certificate, is sslrootcert here)",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "sslkey",
                "a client key needs its certificate: add sslcert (or PGSSLCERT)",
            ))
        }
        (None, None) => {}
    }

    if let Some(schema) = schema {
        if pgbouncer && schema != "public" {
            return Err(bad(
                "schema",
                "behind PgBouncer (pgbouncer=true) the search_path cannot be sent at \
                 connect time (PgBouncer refuses the `options` startup parameter); set it on \
                 the role instead: ALTER ROLE ... SET search_path = ...",
            ));
        }
        // `public` behind PgBouncer: the default search_path already ends in public, and
        // sending it would make PgBouncer refuse the connection.
        if !pgbouncer {
            let setting = format!("-c search_path={}", options_escape(&quote_ident(&schema)));
            match conninfo.iter_mut().find(|(k, _)| k == "options") {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(&setting);
                }
                None => conninfo.push(("options".into(), setting)),
            }
        }
    }

    if !conninfo.iter().any(|(k, _)| k == "host") {
        return Err(UrlError::InvalidParameter {
            name: "host".into(),
            reason: "no host: give one (postgresql://HOST/db) or a Unix socket directory \
                     (?host=/var/run/postgresql)"
                .into(),
        });
    }

    let text = conninfo
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" ");
    // The password is not in `text`, so this error cannot contain it.
    let mut config =
        Config::from_str(&text).map_err(|e| UrlError::Invalid(crate::error::error_chain(&e)))?;
    if let Some(p) = password {
        config.password(p);
    }
    if let Some(d) = connect_timeout {
        config.connect_timeout(d);
    }
    if config.get_application_name().is_none() {
        if let Some(name) = fallback_application_name {
            config.application_name(name);
        }
    }
    // Notice a silently dropped peer within minutes rather than tokio-postgres's two
    // hours, unless the URL says otherwise.
    if !keepalives_set {
        config.keepalives_idle(Duration::from_secs(60));
    }
    config.ssl_mode(tls.mode.driver_mode());
    Ok(Parsed {
        config,
        options,
        tls,
        pgbouncer,
    })
}

/// A URL cut around its host list.
struct Authority<'a> {
    /// Everything before the host list: `postgresql://user:pw@`.
    head: &'a str,
    userinfo: Option<&'a str>,
    /// libpq's `host1:port1,host2:port2`, as written.
    hostlist: &'a str,
    /// Everything after it: `/db?key=value`.
    tail: &'a str,
}

fn authority(text: &str) -> Result<Authority<'_>, UrlError> {
    let (scheme, rest) = text.split_once("://").ok_or(UrlError::Scheme)?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(UrlError::Scheme);
    }
    // The authority ends at the first '/', '?' or '#'; the host list follows the last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let head = &text[..text.len() - tail.len() - hostlist.len()];
    Ok(Authority {
        head,
        userinfo,
        hostlist,
        tail,
    })
}

/// One URL per host of a multi-host URL (`postgresql://u:pw@h1:5432,h2:5433/db?..` gives
/// `postgresql://u:pw@h1:5432/db?..` and `postgresql://u:pw@h2:5433/db?..`); the URL
/// itself when its authority names one host or none. The host list is checked as
/// [`PgManager::from_url`](crate::PgManager::from_url) checks it.
pub(crate) fn split_hosts(text: &str) -> Result<Vec<String>, UrlError> {
    let a = authority(text)?;
    parse_hosts(a.hostlist)?;
    if !a.hostlist.contains(',') {
        return Ok(vec![text.to_string()]);
    }
    Ok(a.hostlist
        .split(',')
        .map(|entry| format!("{}{entry}{}", a.head, a.tail))
        .collect())
}

/// What a key sets, so that two keys setting one thing are caught.
fn target_of(name: &str) -> &'static str {
    match name {
        "connection_limit" | "max_size" => "max_size",
        "pool_timeout" | "acquire_timeout" => "acquire_timeout",
        "idle_timeout" | "max_idle_connection_lifetime" => "idle_timeout",
        "max_lifetime" | "max_connection_lifetime" => "max_lifetime",
        "keepalives_count" | "keepalives_retries" => "keepalives_retries",
        "sslmode" | "requiressl" => "sslmode",
        _ => KEYS
            .iter()
            .find(|(k, ..)| *k == name)
            .map(|(k, ..)| *k)
            .unwrap_or("(unknown)"),
    }
}

/// Check one key with tokio-postgres's own parser (so its error is this key's), then keep
/// it for the whole conninfo.
fn driver_param(
    conninfo: &mut Vec<(String, String)>,
    name: &str,
    driver_name: &str,
    value: &str,
) -> Result<(), UrlError> {
    // Alone, so that its error is about this key only.
    if let Err(e) = Config::from_str(&format!("{driver_name}={}", quote(value))) {
        let reason = crate::error::error_chain(&e);
        return Err(bad(name, format!("tokio-postgres refused it ({reason})")));
    }
    conninfo.push((driver_name.to_string(), value.to_string()));
    Ok(())
}

/// The hosts and ports of libpq's `host1:port1,host2:port2` (IPv6 in brackets,
/// percent-encoded Unix socket directories).
fn parse_hosts(list: &str) -> Result<(Vec<String>, Vec<String>), UrlError> {
    if list.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in list.split(',') {
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| UrlError::Invalid("unclosed `[` in an IPv6 host".into()))?;
            inside
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| UrlError::Invalid("invalid IPv6 address in `[...]`".into()))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| UrlError::Invalid("expected `:port` after `]`".into()))?,
                ),
            };
            (inside.to_string(), port)
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => (decode("host", h)?, Some(p)),
                None => (decode("host", entry)?, None),
            }
        };
        let port = match port {
            None | Some("") => String::new(),
            Some(p) => {
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("port", "not a port number (1 to 65535)"))?;
                p.to_string()
            }
        };
        if host.is_empty() {
            return Err(bad("host", "an empty host in the host list"));
        }
        hosts.push(host);
        ports.push(port);
    }
    if ports.iter().all(String::is_empty) {
        ports.clear();
    }
    Ok((hosts, ports))
}

/// An SQL identifier, always double-quoted (so any schema name, in any case, is exact).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Escape a value for the server's `options` string (words split at spaces; a backslash
/// escapes the next character).
fn options_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::{PgManager, Verification};
    use tokio_postgres::config::{
        ChannelBinding, Host, LoadBalanceHosts, SslNegotiation, TargetSessionAttrs,
    };

    const BASE: &str = "postgresql://app:s3cr%40t-pw@db.example:5433/shop";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn ok(query: &str) -> Parsed {
        parse(&format!("{BASE}?{query}"), &no_env)
            .unwrap_or_else(|e| panic!("`{query}` refused: {e}"))
    }

    fn err(query: &str) -> UrlError {
        let e = parse(&format!("{BASE}?{query}"), &no_env)
            .err()
            .unwrap_or_else(|| panic!("`{query}` accepted"));
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains("s3cr"), "{text}");
        }
        e
    }

    fn reason(query: &str) -> String {
        err(query).to_string()
    }

    #[test]
    fn the_base_url_is_read() {
        let p = ok("");
        let c = &p.config;
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_password(), Some(&b"s3cr@t-pw"[..]));
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(p.options, ConfigOverrides::default());
        assert_eq!(p.tls, TlsSettings::new(SslMode::Prefer));
        assert!(!p.pgbouncer);
    }

    #[test]
    fn hosts_lists_sockets_and_ipv6() {
        let p = parse("postgresql://u@h1:5432,h2:5433,[::1]:5434/d", &no_env).unwrap();
        assert_eq!(
            p.config.get_hosts(),
            &[
                Host::Tcp("h1".into()),
                Host::Tcp("h2".into()),
                Host::Tcp("::1".into())
            ]
        );
        assert_eq!(p.config.get_ports(), &[5432, 5433, 5434]);
        let p = parse("postgresql://%2Fvar%2Frun%2Fpostgresql/d", &no_env).unwrap();
        assert_eq!(
            p.config.get_hosts(),
            &[Host::Unix("/var/run/postgresql".into())]
        );
        let p = parse("postgresql:///d?host=/tmp/sock&port=6543", &no_env).unwrap();
        assert_eq!(p.config.get_hosts(), &[Host::Unix("/tmp/sock".into())]);
        assert_eq!(p.config.get_ports(), &[6543]);
        assert!(parse("postgresql:///d", &no_env)
            .unwrap_err()
            .to_string()
            .contains("no host"));
        assert!(parse("postgresql://h/d?host=x", &no_env)
            .unwrap_err()
            .to_string()
            .contains("`host`: also given"));
    }

    /// Every key of [`KEYS`] (Prisma's and libpq's lists, and the pool's): accepted with
    /// its effect, or refused saying why.
    #[test]
    fn every_key_accepted_with_its_effect_or_refused_with_why() {
        let secs = Duration::from_secs;
        let mut covered: Vec<&str> = Vec::new();
        let mut cover = |k: &'static str| covered.push(k);

        // The pool's keys and their aliases.
        for (key, field) in [("connection_limit", 0), ("max_size", 0)] {
            cover(key);
            let _ = field;
            assert_eq!(ok(&format!("{key}=7")).options.max_size, Some(7));
            assert!(reason(&format!("{key}=0")).contains("at least 1"));
        }
        cover("min_idle");
        assert_eq!(ok("min_idle=2").options.min_idle, Some(2));
        cover("max_connecting");
        assert_eq!(ok("max_connecting=4").options.max_connecting, Some(4));
        assert!(reason("max_connecting=0").contains("at least 1"));
        cover("max_waiters");
        assert_eq!(ok("max_waiters=50").options.max_waiters, Some(50));
        for key in ["pool_timeout", "acquire_timeout"] {
            cover(key);
            assert_eq!(
                ok(&format!("{key}=20")).options.acquire_timeout,
                Some(secs(20))
            );
            // Prisma: 0 means no timeout.
            assert_eq!(
                ok(&format!("{key}=0")).options.acquire_timeout,
                Some(NO_TIMEOUT)
            );
            assert!(reason(&format!("{key}=soon")).contains("whole number of seconds"));
        }
        cover("connect_timeout");
        let p = ok("connect_timeout=3");
        assert_eq!(p.options.connect_timeout, Some(secs(3)));
        assert_eq!(p.config.get_connect_timeout(), Some(&secs(3)));
        let p = ok("connect_timeout=0");
        assert_eq!(p.options.connect_timeout, Some(NO_TIMEOUT));
        assert_eq!(p.config.get_connect_timeout(), None);
        cover("check_timeout");
        assert_eq!(ok("check_timeout=2").options.check_timeout, Some(secs(2)));
        assert!(reason("check_timeout=0").contains("at least 1 second"));
        for key in ["idle_timeout", "max_idle_connection_lifetime"] {
            cover(key);
            assert_eq!(
                ok(&format!("{key}=60")).options.idle_timeout,
                Some(Some(secs(60)))
            );
            assert_eq!(ok(&format!("{key}=0")).options.idle_timeout, Some(None));
        }
        for key in ["max_lifetime", "max_connection_lifetime"] {
            cover(key);
            assert_eq!(
                ok(&format!("{key}=600")).options.max_lifetime,
                Some(Some(secs(600)))
            );
            assert_eq!(ok(&format!("{key}=0")).options.max_lifetime, Some(None));
        }
        cover("leak_threshold");
        assert_eq!(
            ok("leak_threshold=30").options.leak_threshold,
            Some(Some(secs(30)))
        );
        assert_eq!(ok("leak_threshold=0").options.leak_threshold, Some(None));

        // libpq keys, through tokio-postgres's parser.
        cover("host");
        cover("port");
        cover("user");
        cover("dbname");
        let p = parse("postgresql://?host=h&port=6000&user=u&dbname=d", &no_env).unwrap();
        assert_eq!(p.config.get_hosts(), &[Host::Tcp("h".into())]);
        assert_eq!(p.config.get_ports(), &[6000]);
        assert_eq!(p.config.get_user(), Some("u"));
        assert_eq!(p.config.get_dbname(), Some("d"));
        cover("hostaddr");
        assert_eq!(
            ok("hostaddr=10.0.0.5").config.get_hostaddrs(),
            &["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(reason("hostaddr=db").contains("`hostaddr`"));
        cover("password");
        let p = parse("postgresql://app@h/d?password=p%26w", &no_env).unwrap();
        assert_eq!(p.config.get_password(), Some(&b"p&w"[..]));
        let e = reason("password=hunter2");
        assert!(e.contains("give it once") && !e.contains("hunter2"), "{e}");
        cover("options");
        assert_eq!(
            ok("options=-c%20statement_timeout%3D5s")
                .config
                .get_options(),
            Some("-c statement_timeout=5s")
        );
        cover("application_name");
        assert_eq!(
            ok("application_name=my%20app")
                .config
                .get_application_name(),
            Some("my app")
        );
        cover("fallback_application_name");
        assert_eq!(
            ok("fallback_application_name=fb")
                .config
                .get_application_name(),
            Some("fb")
        );
        assert_eq!(
            ok("fallback_application_name=fb&application_name=a")
                .config
                .get_application_name(),
            Some("a")
        );
        cover("tcp_user_timeout");
        assert_eq!(
            ok("tcp_user_timeout=30").config.get_tcp_user_timeout(),
            Some(&secs(30))
        );
        cover("keepalives");
        assert!(!ok("keepalives=0").config.get_keepalives());
        cover("keepalives_idle");
        assert_eq!(
            ok("keepalives_idle=30").config.get_keepalives_idle(),
            secs(30)
        );
        assert_eq!(ok("").config.get_keepalives_idle(), secs(60));
        cover("keepalives_interval");
        assert_eq!(
            ok("keepalives_interval=5").config.get_keepalives_interval(),
            Some(secs(5))
        );
        for key in ["keepalives_count", "keepalives_retries"] {
            cover(key);
            assert_eq!(
                ok(&format!("{key}=4")).config.get_keepalives_retries(),
                Some(4)
            );
        }
        assert!(reason("keepalives_count=3&keepalives_retries=4")
            .contains("same thing as `keepalives_count`"));
        cover("target_session_attrs");
        assert_eq!(
            ok("target_session_attrs=read-write")
                .config
                .get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let e = reason("target_session_attrs=primary");
        assert!(
            e.contains("`target_session_attrs`: tokio-postgres refused it"),
            "{e}"
        );
        cover("channel_binding");
        assert_eq!(
            ok("channel_binding=require").config.get_channel_binding(),
            ChannelBinding::Require
        );
        cover("load_balance_hosts");
        assert_eq!(
            ok("load_balance_hosts=random")
                .config
                .get_load_balance_hosts(),
            LoadBalanceHosts::Random
        );
        cover("sslnegotiation");
        assert_eq!(
            ok("sslnegotiation=direct").config.get_ssl_negotiation(),
            SslNegotiation::Direct
        );

        // TLS.
        cover("sslmode");
        for mode in SslMode::ALL {
            let p = ok(&format!("sslmode={}", mode.as_str()));
            assert_eq!(p.tls.mode, mode);
            assert_eq!(p.config.get_ssl_mode(), mode.driver_mode());
        }
        assert!(reason("sslmode=sometimes").contains("verify-full"));
        cover("sslrootcert");
        let p = ok("sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(p.tls.root_cert, Some(RootCerts::File("/etc/ca.pem".into())));
        assert_eq!(p.tls.verification(), Some(Verification::Chain));
        let p = ok("sslrootcert=system");
        assert_eq!(p.tls.mode, SslMode::VerifyFull);
        assert_eq!(p.tls.root_cert, Some(RootCerts::System));
        cover("sslcert");
        cover("sslkey");
        let p = ok("sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(
            p.tls.client_cert,
            Some(ClientCert {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert!(reason("sslcert=/c.pem").contains("add sslkey"));
        assert!(reason("sslcert=/c.pem").contains("sslrootcert here"));
        assert!(reason("sslkey=/k.pem").contains("add sslcert"));
        cover("requiressl");
        assert_eq!(ok("requiressl=1").tls.mode, SslMode::Require);
        assert_eq!(ok("requiressl=0").tls.mode, SslMode::Prefer);
        assert!(reason("sslmode=require&requiressl=1").contains("same thing as `sslmode`"));
        cover("sslaccept");
        assert_eq!(ok("sslaccept=strict").tls.mode, SslMode::VerifyFull);
        assert_eq!(
            ok("sslmode=require&sslaccept=strict").tls.mode,
            SslMode::VerifyFull
        );
        assert_eq!(
            ok("sslmode=require&sslaccept=accept_invalid_certs")
                .tls
                .mode,
            SslMode::Require
        );
        assert_eq!(
            ok("sslmode=prefer&sslaccept=accept_invalid_certs").tls.mode,
            SslMode::Prefer
        );
        assert_eq!(
            ok("sslaccept=accept_invalid_certs").tls.verification(),
            Some(Verification::None)
        );
        assert!(reason("sslmode=disable&sslaccept=strict").contains("turns TLS off"));

        // Prisma's.
        cover("schema");
        assert_eq!(
            ok("schema=public").config.get_options(),
            Some("-c search_path=\"public\"")
        );
        assert_eq!(
            ok("options=-c%20work_mem%3D4MB&schema=My%20Schema")
                .config
                .get_options(),
            Some("-c work_mem=4MB -c search_path=\"My\\ Schema\"")
        );
        assert_eq!(
            ok("schema=a%22b").config.get_options(),
            Some("-c search_path=\"a\"\"b\"")
        );
        cover("pgbouncer");
        let p = ok("pgbouncer=true&connection_limit=1&schema=public");
        assert!(p.pgbouncer);
        assert_eq!(p.options.max_size, Some(1));
        assert_eq!(
            p.config.get_options(),
            None,
            "public is not sent to PgBouncer"
        );
        assert!(!ok("pgbouncer=false").pgbouncer);
        assert!(reason("pgbouncer=true&schema=app").contains("ALTER ROLE"));
        assert!(reason("pgbouncer=yes").contains("true or false"));

        // Accepted without effect, saying why in KEYS.
        cover("statement_cache_size");
        let p = ok("statement_cache_size=0");
        assert_eq!(p.options, ConfigOverrides::default());
        assert!(reason("statement_cache_size=lots").contains("whole number"));
        cover("client_encoding");
        ok("client_encoding=UTF8");
        ok("client_encoding=utf8");
        assert!(reason("client_encoding=LATIN1").contains("UTF8"));
        cover("sslcompression");
        ok("sslcompression=0");
        ok("sslcompression=1");
        cover("gssencmode");
        ok("gssencmode=disable");
        ok("gssencmode=prefer");
        assert!(reason("gssencmode=require").contains("not supported"));
        cover("sslcertmode");
        ok("sslcertmode=allow&sslcert=/c&sslkey=/k");
        assert_eq!(
            ok("sslcertmode=disable&sslcert=/c&sslkey=/k")
                .tls
                .client_cert,
            None
        );
        assert!(reason("sslcertmode=require").contains("cannot insist"));
        cover("ssl_min_protocol_version");
        ok("ssl_min_protocol_version=TLSv1.2");
        assert!(reason("ssl_min_protocol_version=TLSv1.3").contains("not supported"));
        cover("ssl_max_protocol_version");
        ok("ssl_max_protocol_version=TLSv1.3");
        assert!(reason("ssl_max_protocol_version=TLSv1.2").contains("not supported"));

        // Refused, each with its reason, never echoing the value.
        for (key, kind, why) in KEYS {
            if *kind == KeyKind::Refused {
                cover(key);
                let e = err(&format!("{key}=hunter2"));
                assert_eq!(
                    e,
                    UrlError::InvalidParameter {
                        name: key.to_string(),
                        reason: why.to_string()
                    }
                );
                assert!(!e.to_string().contains("hunter2"));
            }
        }
        assert!(reason("socket_timeout=10").contains("tokio::time::timeout"));
        assert!(reason("sslidentity=id.p12").contains("PKCS#12"));

        // Every key in the table was exercised, and nothing else is in it.
        let mut all: Vec<&str> = KEYS.iter().map(|(k, ..)| *k).collect();
        all.sort();
        covered.sort();
        covered.dedup();
        assert_eq!(covered, all);
    }

    #[test]
    fn unknown_repeated_and_malformed_keys_are_named() {
        assert_eq!(
            err("connection_limt=10"),
            UrlError::UnknownParameter("connection_limt".into())
        );
        assert!(reason("min_idle=1&min_idle=2").contains("`min_idle`: given more than once"));
        assert!(reason("connection_limit=2&max_size=3").contains("same thing"));
        assert!(reason("pool_timeout=-1").contains("`pool_timeout`"));
        assert_eq!(
            parse("mysql://a:b@h/d", &no_env).unwrap_err(),
            UrlError::Scheme
        );
        assert_eq!(
            parse("db.example/shop", &no_env).unwrap_err(),
            UrlError::Scheme
        );
    }

    #[test]
    fn the_environment_fills_in_what_the_url_does_not_say() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLROOTCERT" => Some("/env/ca.pem".to_string()),
            "PGSSLCERT" => Some("/env/c.pem".to_string()),
            "PGSSLKEY" => Some("/env/k.pem".to_string()),
            _ => None,
        };
        let p = parse(BASE, &env).unwrap();
        assert_eq!(p.tls.mode, SslMode::VerifyCa);
        assert_eq!(p.tls.root_cert, Some(RootCerts::File("/env/ca.pem".into())));
        assert_eq!(
            p.tls.client_cert,
            Some(ClientCert {
                cert: "/env/c.pem".into(),
                key: "/env/k.pem".into()
            })
        );
        // The URL wins.
        let p = parse(
            &format!("{BASE}?sslmode=require&sslrootcert=/url/ca.pem"),
            &env,
        )
        .unwrap();
        assert_eq!(p.tls.mode, SslMode::Require);
        assert_eq!(p.tls.root_cert, Some(RootCerts::File("/url/ca.pem".into())));
        let bad = |_: &str| Some("sometimes".to_string());
        assert!(parse(BASE, &bad)
            .unwrap_err()
            .to_string()
            .contains("PGSSLMODE"));
    }

    /// Errors are built from parsed parts: a one-letter password leaves every message
    /// intact, and a distinctive one never appears, whatever part is wrong.
    #[test]
    fn no_error_contains_the_password() {
        let e = parse(
            "postgresql://app:e@db.example:5433/shop?connection_limt=1",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown connection URL parameter `connection_limt`"
        );
        let e = parse("postgresql://app:e@db.example:notaport/shop", &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid connection URL parameter `port`: not a port number (1 to 65535)"
        );
        for bad in [
            "postgresql://app:s3cr%40t-pw@[::1/shop",
            "postgresql://app:s3cr%40t-pw@db.example:notaport/shop",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?port=1",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?sslmode=maybe",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop#frag",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?password=s3cr",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?sslpassword=s3cr",
            "postgresql://app:s3cr%40t-pw@db.example:5433/shop?options=s3cr&options=s3cr",
            "postgresql://app:s3cr%ZZt@db.example:5433/shop?x=1",
        ] {
            let e = PgManager::from_url(bad).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains("s3cr"), "{bad}: {text}");
            }
        }
    }

    /// A multi-host URL splits into one URL per host, keeping user, password,
    /// database and query; a one-host URL stays whole; a bad host list is refused.
    #[test]
    fn multi_host_urls_split_per_host() {
        assert_eq!(
            split_hosts("postgresql://u:p%40w@h1:5432,[::1]:5433,h3/db?sslmode=disable").unwrap(),
            [
                "postgresql://u:p%40w@h1:5432/db?sslmode=disable",
                "postgresql://u:p%40w@[::1]:5433/db?sslmode=disable",
                "postgresql://u:p%40w@h3/db?sslmode=disable",
            ]
        );
        assert_eq!(
            split_hosts("postgres://h1,h2").unwrap(),
            ["postgres://h1", "postgres://h2"]
        );
        assert_eq!(
            split_hosts("postgresql://h/db").unwrap(),
            ["postgresql://h/db"]
        );
        assert_eq!(
            split_hosts("mysql://h1,h2/db").unwrap_err(),
            UrlError::Scheme
        );
        let e = split_hosts("postgresql://u:s3cr3t@h1:99999,h2/db").unwrap_err();
        assert!(e.to_string().contains("`port`") && !e.to_string().contains("s3cr3t"));
    }

    /// docs/connection-urls.md lists every key `from_url` knows.
    #[test]
    fn the_documentation_lists_every_key() {
        let doc = include_str!("../../../docs/connection-urls.md");
        for (key, ..) in KEYS {
            assert!(doc.contains(&format!("`{key}`")), "{key} is not in the doc");
        }
    }
}
