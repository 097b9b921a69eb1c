//! The databases clients may connect to: a name, the server's URL (checked by pool-tokio's
//! own parser at load), and the pool settings a database may override. Written in the
//! file's `[databases]` table, as `--database name=url`, or in `POOL_PROXY_DATABASES`.

use std::fmt;
use std::time::Duration;

use pool_core::{ConfigOverrides, IdleOrder};
use pool_tokio::postgres::PgManager;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::value::{wrong_type, SettingValue};
use super::{ConfigError, Origin, ProxyConfig};
use crate::session::PoolMode;

/// A database's URL as written. `Debug` and `Display` show it without the password;
/// [`DatabaseUrl::expose`] is the one way to the text itself.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as written, password included: for connecting, never for showing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact(&self.0))
    }
}

/// A database as the proxy serves it: the pool settings resolved (its own where it set
/// them, else the global ones).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The server's URL.
    pub url: DatabaseUrl,
    /// What pool-tokio made of the URL: the server connections are opened with it.
    pub manager: PgManager,
    /// Server connections in its pool (`pool_size`, else `default_pool_size`).
    pub pool_size: usize,
    /// Idle server connections kept open (`min_pool_size`, else the global one capped at
    /// `pool_size`, as PgBouncer caps it).
    pub min_pool_size: usize,
    /// Transaction or session pooling (`pool_mode`, else the global one).
    pub pool_mode: PoolMode,
}

impl fmt::Display for DatabaseConfig {
    /// The URL without its password, then the pool settings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pool_size {}, min_pool_size {}, pool_mode {})",
            self.url, self.pool_size, self.min_pool_size, self.pool_mode
        )
    }
}

/// A database as one source wrote it, before the global settings are applied.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseEntry {
    /// Where it was written (the file's line, the variable, the flag).
    pub(crate) at: Origin,
    pub(crate) url: String,
    pub(crate) pool_size: Option<(Origin, usize)>,
    pub(crate) min_pool_size: Option<(Origin, usize)>,
    pub(crate) pool_mode: Option<PoolMode>,
}

/// The keys of a database written as a table.
const ENTRY_KEYS: [&str; 4] = ["url", "pool_size", "min_pool_size", "pool_mode"];

/// The `[databases]` table: `name = "url"` or `name = { url = "...", pool_size = 10 }`.
/// `at` turns a span of the file into its origin (its line).
pub(crate) fn from_toml(
    table: &Spanned<DeValue<'_>>,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
) -> Result<Vec<(String, DatabaseEntry)>, ConfigError> {
    let DeValue::Table(table) = table.get_ref() else {
        return Err(ConfigError::invalid(
            &at(table.span()),
            "databases",
            wrong_type("a table of databases", table.get_ref()),
        ));
    };
    table
        .iter()
        .map(|(name, value)| {
            let origin = at(name.span());
            let key = format!("databases.{}", name.get_ref());
            if name.get_ref().is_empty() {
                return Err(ConfigError::invalid(
                    &origin,
                    key,
                    "a database needs a name",
                ));
            }
            if super::settings::setting(name.get_ref()).is_some() {
                return Err(ConfigError::invalid(
                    &origin,
                    key,
                    format!(
                        "`{}` is a setting, not a database: settings go before the \
                         [databases] table (in TOML, keys after a [table] belong to it)",
                        name.get_ref()
                    ),
                ));
            }
            let entry = match value.get_ref() {
                DeValue::String(url) => DatabaseEntry {
                    at: origin,
                    url: url.to_string(),
                    pool_size: None,
                    min_pool_size: None,
                    pool_mode: None,
                },
                DeValue::Table(fields) => entry_from_table(fields, origin, &key, at)?,
                other => {
                    return Err(ConfigError::invalid(
                        &origin,
                        key,
                        wrong_type(
                            "a URL string or a table { url = \"...\", pool_size = ... }",
                            other,
                        ),
                    ))
                }
            };
            Ok((name.get_ref().to_string(), entry))
        })
        .collect()
}

fn entry_from_table(
    fields: &DeTable<'_>,
    origin: Origin,
    key: &str,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
) -> Result<DatabaseEntry, ConfigError> {
    let mut url = None;
    let mut entry = DatabaseEntry {
        at: origin.clone(),
        url: String::new(),
        pool_size: None,
        min_pool_size: None,
        pool_mode: None,
    };
    for (field, value) in fields {
        let field_at = at(field.span());
        let field_key = format!("{key}.{}", field.get_ref());
        let bad = |problem: String| ConfigError::invalid(&field_at, field_key.clone(), problem);
        match field.get_ref().as_ref() {
            "url" => match value.get_ref() {
                DeValue::String(text) => url = Some(text.to_string()),
                other => return Err(bad(wrong_type("a URL string", other))),
            },
            "pool_size" => {
                let size = usize::from_toml(value.get_ref()).map_err(bad)?;
                entry.pool_size = Some((field_at.clone(), size));
            }
            "min_pool_size" => {
                let size = usize::from_toml(value.get_ref()).map_err(bad)?;
                entry.min_pool_size = Some((field_at.clone(), size));
            }
            "pool_mode" => {
                entry.pool_mode = Some(PoolMode::from_toml(value.get_ref()).map_err(bad)?);
            }
            unknown => {
                let hint = match super::settings::nearest(unknown, ENTRY_KEYS) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None => format!("; a database's keys are {}", ENTRY_KEYS.join(", ")),
                };
                return Err(bad(format!("unknown key `{unknown}`{hint}")));
            }
        }
    }
    entry.url = url.ok_or_else(|| {
        ConfigError::invalid(&origin, key, "the table has no `url = \"postgres://...\"`")
    })?;
    Ok(entry)
}

/// Databases as text: `name=url`, one per `--database`, whitespace-separated in
/// `POOL_PROXY_DATABASES` (not commas: a URL may hold a comma-separated host list).
pub(crate) fn from_text(
    text: &str,
    at: &Origin,
) -> Result<Vec<(String, DatabaseEntry)>, ConfigError> {
    text.split_whitespace()
        .map(|item| {
            // A URL without `name=` splits at a `=` in its query: its "name" would hold
            // the password, so it must not reach an error message.
            let Some((name, url)) = item
                .split_once('=')
                .filter(|(name, _)| !name.is_empty() && !name.contains(['/', ':', '@']))
            else {
                return Err(ConfigError::invalid(
                    at,
                    "databases",
                    "expected name=postgres://user:password@host:port/database",
                ));
            };
            let entry = DatabaseEntry {
                at: at.clone(),
                url: url.to_owned(),
                pool_size: None,
                min_pool_size: None,
                pool_mode: None,
            };
            Ok((name.to_owned(), entry))
        })
        .collect()
}

impl DatabaseEntry {
    /// The database as served: the URL checked by pool-tokio (its error, which never
    /// contains the password), the pool settings resolved and checked.
    pub(crate) fn resolve(
        self,
        name: &str,
        config: &ProxyConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DatabaseConfig, ConfigError> {
        let key = format!("databases.{name}");
        let (manager, overrides) = PgManager::from_url_with_env(&self.url, env)
            .map_err(|e| ConfigError::invalid(&self.at, &key, e.to_string()))?;
        let set = options_set(&overrides);
        if !set.is_empty() {
            return Err(ConfigError::invalid(
                &self.at,
                &key,
                format!(
                    "the URL sets the pool's {}: the proxy sizes and times its pools with its \
                     own settings (pool_size, min_pool_size, query_wait_timeout, \
                     server_connect_timeout, server_idle_timeout, server_lifetime); remove \
                     the pool keys from the URL",
                    set.join(", ")
                ),
            ));
        }
        let pool_size = match &self.pool_size {
            Some((at, 0)) => {
                return Err(ConfigError::invalid(
                    at,
                    format!("{key}.pool_size"),
                    "must be at least 1",
                ))
            }
            Some((at, size)) if *size > pool_core::MAX_SIZE_LIMIT => {
                return Err(ConfigError::invalid(
                    at,
                    format!("{key}.pool_size"),
                    format!("must be at most {}", pool_core::MAX_SIZE_LIMIT),
                ))
            }
            Some((_, size)) => *size,
            None => config.default_pool_size,
        };
        let min_pool_size = match &self.min_pool_size {
            Some((at, min)) if *min > pool_size => {
                return Err(ConfigError::invalid(
                    at,
                    format!("{key}.min_pool_size"),
                    format!("({min}) must not exceed the pool size ({pool_size})"),
                ))
            }
            Some((_, min)) => *min,
            None => config.min_pool_size.min(pool_size),
        };
        Ok(DatabaseConfig {
            url: DatabaseUrl(self.url),
            manager,
            pool_size,
            min_pool_size,
            pool_mode: self.pool_mode.unwrap_or(config.pool_mode),
        })
    }
}

/// The pool options a URL set (`connection_limit` sets `max_size`, ...), by the pool's
/// names, from pool-core's own list of them.
fn options_set(overrides: &ConfigOverrides) -> Vec<&'static str> {
    macro_rules! set_options {
        ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $default:expr,)*) => {{
            let mut set = Vec::new();
            $(
                let value: &Option<$ty> = &overrides.$name;
                if value.is_some() {
                    set.push(stringify!($name));
                }
            )*
            set
        }};
    }
    pool_core::config_fields!(set_options)
}

/// The URL with its password (in the user info, or a `password=` parameter) replaced by
/// `<redacted>`.
fn redact(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push(':');
                            out.push_str(HIDDEN);
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(hosts);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    format!("{key}={HIDDEN}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_the_url_holds_them() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:<redacted>@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://app:p%40ss@h1:5432,h2:5433/app"),
            "postgresql://app:<redacted>@h1:5432,h2:5433/app"
        );
        assert_eq!(
            redact("postgres://app@db/app?password=s3cret&application_name=x"),
            "postgres://app@db/app?password=<redacted>&application_name=x"
        );
        assert_eq!(redact("postgres://db/app"), "postgres://db/app");
        let url = DatabaseUrl("postgres://app:s3cret@db/app".into());
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        assert_eq!(url.expose(), "postgres://app:s3cret@db/app");
    }

    #[test]
    fn text_entries_are_name_equals_url_separated_by_whitespace() {
        let at = Origin::Env("POOL_PROXY_DATABASES".into());
        let entries = from_text(
            " app=postgres://a@h1,h2/app\n\tlogs=postgres://b@h/logs?x=1 ",
            &at,
        )
        .unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|(n, e)| (n.as_str(), e.url.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("app", "postgres://a@h1,h2/app"),
                ("logs", "postgres://b@h/logs?x=1")
            ]
        );
        let err = from_text("postgres://a@h/app", &at)
            .unwrap_err()
            .to_string();
        assert!(err.contains("POOL_PROXY_DATABASES"), "{err}");
        assert!(err.contains("expected name=postgres://"), "{err}");
        assert!(from_text("=postgres://a@h/app", &at).is_err());
        let err = from_text("postgres://a:s3cret@h/app?sslmode=require", &at)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected name=postgres://"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn pool_keys_in_a_url_are_named() {
        let (_, overrides) = PgManager::from_url_with_env(
            "postgres://a@h/app?connection_limit=5&pool_timeout=3",
            |_| None,
        )
        .unwrap();
        assert_eq!(options_set(&overrides), ["max_size", "acquire_timeout"]);
        let (_, none) = PgManager::from_url_with_env("postgres://a@h/app", |_| None).unwrap();
        assert!(options_set(&none).is_empty());
    }
}
