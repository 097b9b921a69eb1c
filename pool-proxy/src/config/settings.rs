//! The list of settings: each one's name, type, default and doc, once. Everything else is
//! generated from it by [`define_settings`]: the fields of
//! [`ProxyConfig`](super::ProxyConfig), their defaults, the TOML keys, the flags and
//! their `--help` text, the environment variables and the listing for `SHOW CONFIG`. A
//! setting added here is known everywhere; docs/proxy-settings.md is checked against it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::value::SettingValue;
use super::Origin;
use crate::auth::AuthMethod;
use crate::session::{AbandonedTransactionPolicy, PoolMode, StatePolicy};

/// The settings list. Calls `callback!` with every setting as
///
/// ```text
/// /// doc lines: what it does, and why the default is what it is
/// name: Type = default_expr,
/// ```
///
/// Names and meanings are PgBouncer's where it has the setting. Durations are written
/// with [`secs`] so the defaults read as PgBouncer's documentation does.
macro_rules! proxy_settings {
    ($callback:ident) => {
        $callback! {
            /// The address to listen on for clients: an IP address or a host name, `*` for
            /// every address. Loopback by default, as PostgreSQL's `listen_addresses`: a
            /// pooler reachable from the network is a choice to make, not a default.
            listen_addr: String = String::from("127.0.0.1"),
            /// The TCP port to listen on. PgBouncer's 6432, so clients and scripts written
            /// for it connect unchanged. 0 takes any free port (the proxy prints the
            /// address it listens on), for tests and scripts.
            listen_port: u16 = 6432,
            /// When a server goes back to the pool: `transaction` (at the end of each
            /// transaction) or `session` (when the client leaves). Transaction pooling is
            /// the reason to run a pooler in front of many short-lived clients; session
            /// state it cannot keep is handled by `session_state`.
            pool_mode: PoolMode = PoolMode::Transaction,
            /// Server connections per database pool (a database's `pool_size` overrides
            /// it). PgBouncer's 20: enough to keep a database busy, few enough that
            /// PostgreSQL's per-backend memory stays small.
            default_pool_size: usize = 20,
            /// Idle server connections kept open per pool, to hide connect latency when
            /// load returns after a quiet spell. None by default: connections are opened
            /// on demand, and an idle service holds nothing open.
            min_pool_size: usize = 0,
            /// Most client connections at once; beyond it a client is refused. PgBouncer's
            /// 100: each client costs a socket and buffers, and the file-descriptor limit
            /// must cover this plus the server connections.
            max_client_conn: usize = 100,
            /// How long a client waits for a server before it is told no (0 = for ever).
            /// PgBouncer's 120 s: long enough to ride out a restart of the database, short
            /// enough that a client learns the database is gone.
            query_wait_timeout: Option<Duration> = Some(secs(120)),
            /// Close a server connection idle this long, down to `min_pool_size` (0 =
            /// never). PgBouncer's 600 s: connections a burst opened are given back to the
            /// database after ten quiet minutes.
            server_idle_timeout: Option<Duration> = Some(secs(600)),
            /// Close a server connection this old once it is idle. PgBouncer's 3600 s: it
            /// frees memory the backend accumulated and picks up DNS or failover changes.
            /// Must be above 0 (PgBouncer's 0, "use each connection once", is not
            /// supported).
            server_lifetime: Duration = secs(3600),
            /// Run `server_check_query` on a server idle longer than this before lending
            /// it (0 = always). PgBouncer's 30 s: a connection used moments ago is almost
            /// surely alive, and checking it would cost a round trip per transaction.
            server_check_delay: Duration = secs(30),
            /// Give up a server connect (TCP, TLS and login) that takes longer than this.
            /// PgBouncer's 15 s: a cold database or a failover takes seconds, a dead host
            /// never answers.
            server_connect_timeout: Duration = secs(15),
            /// Disconnect a client that sits inside a transaction, holding its server and
            /// sending nothing, this long (0 = never). Off by default, as PgBouncer's: a
            /// long interactive transaction is not an error, and PostgreSQL's own
            /// `idle_in_transaction_session_timeout` may already be set.
            idle_transaction_timeout: Option<Duration> = None,
            /// Disconnect a client that has not finished startup and authentication this
            /// long after connecting (0 = never). PgBouncer's 60 s: a client that never
            /// finishes its login must not hold a connection slot for ever.
            client_login_timeout: Option<Duration> = Some(secs(60)),
            /// How clients prove who they are: `scram-sha-256`, `md5` or `trust`. SCRAM by
            /// default, as PostgreSQL's since version 14: the password never crosses the
            /// wire. Anything but `trust` needs `auth_file`.
            auth_type: AuthMethod = AuthMethod::ScramSha256,
            /// The users file: PgBouncer's userlist.txt format, one `"user" "secret"` per
            /// line, the secret a password, an MD5 hash or a SCRAM verifier, `${VAR}`
            /// replaced from the environment. Not set by default: there is no safe
            /// default list of users.
            auth_file: Option<PathBuf> = None,
            /// Users allowed to run admin commands on the console. None by default:
            /// nobody administers the proxy unless named.
            admin_users: Vec<String> = Vec::new(),
            /// Users allowed to read the console's statistics. None by default, as for
            /// `admin_users`.
            stats_users: Vec<String> = Vec::new(),
            /// TLS for clients: `disable`, `allow` or `prefer` (TLS when the client asks),
            /// `require` (refuse clients without TLS). Left unset, it is `prefer` when a
            /// certificate and key are given and `disable` otherwise: giving them is asking
            /// for TLS, and without them there is nothing to offer.
            client_tls_sslmode: ClientTlsMode = ClientTlsMode::Disable,
            /// The certificate (PEM, with its chain) the proxy shows clients. Not set by
            /// default; set it with `client_tls_key_file`.
            client_tls_cert_file: Option<PathBuf> = None,
            /// The private key (PEM) of `client_tls_cert_file`. Not set by default.
            client_tls_key_file: Option<PathBuf> = None,
            /// Run on a server whose client left session state behind (a pinned client),
            /// before anyone else gets it. PgBouncer's `DISCARD ALL`: it clears every kind
            /// of session state. Must not be empty (the next client would inherit the
            /// state).
            server_reset_query: String = String::from("DISCARD ALL"),
            /// The query a server is checked with after `server_check_delay` idle (empty =
            /// no check). PgBouncer's `select 1`: the cheapest round trip that proves the
            /// session works.
            server_check_query: String = String::from("SELECT 1"),
            /// The longest protocol message accepted from a client or a server, in bytes.
            /// 16 MiB, not PgBouncer's 2 GiB: a larger query or row is rare, and the limit
            /// keeps one connection from making the proxy buffer gigabytes.
            max_packet_size: u32 = 16 * 1024 * 1024,
            /// In transaction mode, a client's named protocol-level prepared statements
            /// are tracked and prepared on whichever server its transaction lands on, at
            /// most this many kept on one server (the least recently used is closed to
            /// make room); 0 turns tracking off, and a named statement is then session
            /// state. PgBouncer's default since 1.22.
            max_prepared_statements: usize = crate::session::DEFAULT_MAX_PREPARED_STATEMENTS,
            /// A client that changes session state transaction pooling cannot keep (`SET`,
            /// `LISTEN`, SQL `PREPARE`): `pin` keeps it on its server until it
            /// leaves, `refuse` disconnects it with an error. Pin by default, as RDS Proxy
            /// does: the client keeps working, at the cost of a server.
            session_state: StatePolicy = StatePolicy::Pin,
            /// A server whose client left inside a transaction: `rollback` (then lend it
            /// again) or `close`. Rollback by default: it is one round trip, and a new
            /// connection costs a fork and a login.
            abandoned_transaction: AbandonedTransactionPolicy = AbandonedTransactionPolicy::Rollback,
            /// On SIGTERM, how long running transactions may finish before their clients
            /// are disconnected. 30 s: Kubernetes' default grace period, so the proxy is
            /// done before it would be killed.
            shutdown_timeout: Duration = secs(30),
            /// Where to serve Prometheus metrics (`/metrics`) and a health check
            /// (`/health`) over HTTP: `host:port`, e.g. `127.0.0.1:9127`; empty = off. Off
            /// by default: an HTTP port is one more thing to expose, and the admin console
            /// already answers SHOW STATS. Use a loopback or private address: the metrics
            /// name databases and users, and nothing authenticates a scrape.
            metrics_addr: String = String::new(),
            /// Threads serving clients; 0 = one per CPU core. The default uses the machine
            /// it is given. A pooler mostly waits on sockets, and one thread spends the
            /// least CPU per transaction (no wake-ups across threads: about a quarter less
            /// on 2 cores in docs/performance.md), so 1 (as PgBouncer runs) suits a small
            /// machine shared with the database; raise it when one core is not enough.
            worker_threads: usize = 0,
        }
    };
}

/// The durations in the list are written with this.
pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A setting as `--help`, the docs and `SHOW CONFIG` describe it.
#[derive(Clone, Copy)]
pub struct SettingInfo {
    /// The TOML key (`default_pool_size`).
    pub name: &'static str,
    /// The doc from the list, as written: a line per source line.
    pub doc: &'static str,
    /// What a value looks like.
    pub expected: fn() -> String,
    /// The default, shown as the setting reads it.
    pub default: fn() -> String,
}

impl SettingInfo {
    /// The command-line flag (`--default-pool-size`).
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// The doc as one paragraph.
    pub fn paragraph(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The environment variable (`POOL_PROXY_DEFAULT_POOL_SIZE`).
    pub fn env(&self) -> String {
        format!("POOL_PROXY_{}", self.name.to_ascii_uppercase())
    }

    /// Whether a RELOAD changes it for the running proxy (else only a restart does; see
    /// [`NEEDS_RESTART`]).
    pub fn reloadable(&self) -> bool {
        !NEEDS_RESTART.contains(&self.name)
    }
}

/// The settings a RELOAD cannot put in force, and why: the socket, the client limit and
/// TLS are set up when the proxy binds; the server-side timeouts and `min_pool_size` are
/// held by each pool's core, which can change only its size while running (a pool
/// created after the RELOAD, for a new database or user, gets the new values). RELOAD
/// names each one that changed, in the log and in a NOTICE.
pub const NEEDS_RESTART: &[&str] = &[
    "listen_addr",
    "listen_port",
    "max_client_conn",
    "client_tls_sslmode",
    "client_tls_cert_file",
    "client_tls_key_file",
    "metrics_addr",
    "worker_threads",
];

/// A setting's value as text (a flag, a variable) or TOML (the file).
pub(crate) enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::de::DeValue<'a>),
}

fn read<T: SettingValue>(raw: Raw<'_>) -> Result<T, String> {
    match raw {
        Raw::Text(text) => T::from_text(text),
        Raw::Toml(value) => T::from_toml(value),
    }
}

macro_rules! define_settings {
    ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {
        /// The proxy's configuration, loaded by [`load`](super::load) from the file, the
        /// environment and the flags. Its `Debug` shows no password: database URLs are
        /// redacted and users' secrets show only their kind.
        #[derive(Debug, Clone)]
        pub struct ProxyConfig {
            $(
                $(#[doc = $doc])*
                pub $name: $ty,
            )*
            /// The databases clients may connect to, by the name they ask for.
            pub databases: std::collections::BTreeMap<String, super::DatabaseConfig>,
            /// The users from `auth_file`, by name.
            pub users: std::collections::BTreeMap<String, crate::auth::Secret>,
            /// Where it was loaded from, so RELOAD can load it again the same way.
            pub source: super::ConfigSource,
        }

        /// Every setting, in the list's order.
        pub const SETTINGS: &[SettingInfo] = &[$(
            SettingInfo {
                name: stringify!($name),
                doc: concat!($($doc, "\n",)*),
                expected: <$ty as SettingValue>::expected,
                default: || <$ty as SettingValue>::show(&$default),
            },
        )*];

        /// One source's settings (the file, the environment or the flags): each `None`
        /// unless that source set it, with where it did.
        #[derive(Default)]
        pub(crate) struct Layer {
            $(pub(crate) $name: Option<(Origin, $ty)>,)*
        }

        /// Where each setting of a [`ProxyConfig`] came from.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) struct Origins {
            $(pub(crate) $name: Origin,)*
        }

        impl Layer {
            /// Sets `key` from `raw`. `Ok(false)`: no setting has that name; `Err`: the
            /// value is wrong, and why.
            pub(crate) fn set(&mut self, key: &str, origin: Origin, raw: Raw<'_>) -> Result<bool, String> {
                match key {
                    $(stringify!($name) => {
                        self.$name = Some((origin, read::<$ty>(raw)?));
                    })*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Paths this layer set, made relative to `dir` (the file's directory).
            pub(crate) fn paths_relative_to(&mut self, dir: &std::path::Path) {
                $(
                    if let Some((_, value)) = &mut self.$name {
                        <$ty as SettingValue>::relative_to(value, dir);
                    }
                )*
            }

            /// Whether this layer set `name`.
            pub(crate) fn has(&self, name: &str) -> bool {
                match name {
                    $(stringify!($name) => self.$name.is_some(),)*
                    _ => false,
                }
            }
        }

        impl ProxyConfig {
            /// Each setting from the first layer that has it (the layers in precedence
            /// order), else its default; no databases and no users yet.
            pub(crate) fn from_layers(layers: &[&Layer]) -> (ProxyConfig, Origins) {
                $(
                    let (origin, $name) = layers
                        .iter()
                        .find_map(|layer| layer.$name.clone())
                        .unwrap_or_else(|| (Origin::Default, $default));
                    let $name = ($name, origin);
                )*
                let config = ProxyConfig {
                    $($name: $name.0,)*
                    databases: Default::default(),
                    users: Default::default(),
                    source: Default::default(),
                };
                let origins = Origins { $($name: $name.1,)* };
                (config, origins)
            }

            /// Sets the setting `name` back to its value in `from` (RELOAD keeps what it
            /// cannot change); `false` if no setting has that name.
            pub(crate) fn keep_setting(&mut self, from: &ProxyConfig, name: &str) -> bool {
                match name {
                    $(stringify!($name) => self.$name = from.$name.clone(),)*
                    _ => return false,
                }
                true
            }

            /// The settings as `SHOW CONFIG` lists them, in the list's order, each shown as
            /// it would be written; then each database (`databases.<name>`, its URL
            /// without the password) and the users' names (never their secrets).
            pub fn listing(&self) -> Vec<(String, String)> {
                let mut listing = vec![$(
                    (stringify!($name).to_owned(), <$ty as SettingValue>::show(&self.$name)),
                )*];
                listing.extend(self.databases.iter().map(|(name, database)| {
                    (format!("databases.{name}"), database.to_string())
                }));
                listing.push((
                    "users".to_owned(),
                    self.users.keys().cloned().collect::<Vec<_>>().join(", "),
                ));
                listing
            }
        }
    };
}

proxy_settings!(define_settings);

/// The setting named `name`.
pub fn setting(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|setting| setting.name == name)
}

/// TLS towards clients (PgBouncer's `client_tls_sslmode`, without the `verify-*` modes:
/// client certificates are not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTlsMode {
    /// Plain TCP; a client asking for TLS is told no.
    #[default]
    Disable,
    /// TLS when the client asks for it.
    Allow,
    /// The same as `Allow` (as in PgBouncer).
    Prefer,
    /// Refuse clients that do not ask for TLS.
    Require,
}

impl ClientTlsMode {
    /// The setting's values, as PgBouncer spells them.
    pub const NAMES: [&'static str; 4] = ["disable", "allow", "prefer", "require"];
}

impl fmt::Display for ClientTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientTlsMode::Disable => "disable",
            ClientTlsMode::Allow => "allow",
            ClientTlsMode::Prefer => "prefer",
            ClientTlsMode::Require => "require",
        })
    }
}

impl FromStr for ClientTlsMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "disable" => Ok(ClientTlsMode::Disable),
            "allow" => Ok(ClientTlsMode::Allow),
            "prefer" => Ok(ClientTlsMode::Prefer),
            "require" => Ok(ClientTlsMode::Require),
            "verify-ca" | "verify-full" => Err(format!(
                "client_tls_sslmode {text} is not supported: client certificates are not \
                 checked; use require"
            )),
            _ => Err(format!(
                "unknown client_tls_sslmode {text:?}; expected one of {}",
                ClientTlsMode::NAMES.join(", ")
            )),
        }
    }
}

/// PgBouncer settings pool-proxy does not have, so that a PgBouncer user is told so
/// instead of being offered a near name that means something else.
pub(crate) const PGBOUNCER_ONLY: &[&str] = &[
    "logfile",
    "pidfile",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "user",
    "auth_user",
    "auth_query",
    "auth_hba_file",
    "auth_dbname",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "max_db_connections",
    "max_user_connections",
    "server_round_robin",
    "server_login_retry",
    "server_reset_query_always",
    "server_fast_close",
    "ignore_startup_parameters",
    "client_idle_timeout",
    "query_timeout",
    "cancel_wait_timeout",
    "suspend_timeout",
    "autodb_idle_timeout",
    "dns_max_ttl",
    "stats_period",
    "verbose",
    "syslog",
    "pkt_buf",
    "listen_backlog",
    "so_reuseport",
    "tcp_keepalive",
    "server_tls_sslmode",
    "client_tls_ca_file",
    "client_tls_protocols",
    "client_tls_ciphers",
];

/// The known name nearest to `name`, if one is near enough to be a likely typo.
pub(crate) fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|&(distance, candidate)| distance <= (candidate.len() / 3).max(2))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults in the list are the ones `ProxyConfig` gets, and each setting's doc
    /// argues its default (a doc that says nothing about it is a setting added in haste).
    #[test]
    fn every_setting_has_a_doc_a_default_and_distinct_names() {
        let (config, origins) = ProxyConfig::from_layers(&[]);
        assert_eq!(config.listen_port, 6432);
        assert_eq!(config.query_wait_timeout, Some(Duration::from_secs(120)));
        assert_eq!(config.idle_transaction_timeout, None);
        assert_eq!(config.max_packet_size, 16 * 1024 * 1024);
        assert_eq!(origins.listen_port, Origin::Default);
        let listing = config.listing();
        for (setting, (name, value)) in SETTINGS.iter().zip(&listing) {
            assert_eq!(setting.name, name);
            assert_eq!((setting.default)(), *value, "{name}");
            assert!(setting.doc.len() > 60, "{name}: {}", setting.doc);
        }
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        assert_eq!(SETTINGS.len(), 29);
        for name in NEEDS_RESTART {
            assert!(setting(name).is_some(), "{name} is not a setting");
        }
        for name in PGBOUNCER_ONLY {
            assert!(setting(name).is_none(), "{name} is a setting now");
        }
    }

    #[test]
    fn flags_and_variables_are_named_after_the_key() {
        let setting = setting("default_pool_size").unwrap();
        assert_eq!(setting.flag(), "--default-pool-size");
        assert_eq!(setting.env(), "POOL_PROXY_DEFAULT_POOL_SIZE");
    }

    #[test]
    fn near_names_are_suggested_far_ones_are_not() {
        let names = || SETTINGS.iter().map(|s| s.name);
        assert_eq!(
            nearest("default_poolsize", names()),
            Some("default_pool_size")
        );
        assert_eq!(nearest("listen_prot", names()), Some("listen_port"));
        assert_eq!(nearest("max_client_con", names()), Some("max_client_conn"));
        assert_eq!(nearest("colour", names()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
