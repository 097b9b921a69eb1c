//! The configuration file: TOML, the settings as top-level keys and a `[databases]`
//! table. Read with the span of every key, so each error names the file and the line.

use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::databases::{self, DatabaseEntry};
use super::error::line_of;
use super::settings::{nearest, Layer, Raw, PGBOUNCER_ONLY, SETTINGS};
use super::{ConfigError, Origin};

/// What the file set.
#[derive(Default)]
pub(crate) struct FileSettings {
    pub(crate) layer: Layer,
    pub(crate) databases: Vec<(String, DatabaseEntry)>,
}

/// Reads and checks the file at `path`. Relative paths in it are taken from its
/// directory, so the file means the same wherever the proxy is started from.
pub(crate) fn load(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_owned(),
        line: None,
        problem: format!("cannot read the configuration file: {e}"),
    })?;
    let mut settings = parse(&text, path)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    settings.layer.paths_relative_to(dir);
    Ok(settings)
}

/// `text`, the contents of the file at `path`.
pub(crate) fn parse(text: &str, path: &Path) -> Result<FileSettings, ConfigError> {
    // Only the parser's message and position: its `Display` would quote the line, and the
    // line may hold a database URL's password.
    let document = DeTable::parse(text).map_err(|e| ConfigError::Unreadable {
        path: path.to_owned(),
        line: e.span().map(|span| line_of(text, span.start)),
        problem: format!("not valid TOML: {}", e.message()),
    })?;
    let at = |span: std::ops::Range<usize>| Origin::File {
        path: PathBuf::from(path),
        line: line_of(text, span.start),
    };
    let mut settings = FileSettings::default();
    for (key, value) in document.get_ref() {
        let origin = at(key.span());
        let name = key.get_ref().as_ref();
        if name == "databases" {
            settings.databases = databases::from_toml(value, &at)?;
            continue;
        }
        match settings
            .layer
            .set(name, origin.clone(), Raw::Toml(value.get_ref()))
        {
            Ok(true) => {}
            Ok(false) => return Err(ConfigError::invalid(&origin, name, unknown_key(name))),
            Err(problem) => return Err(ConfigError::invalid(&origin, name, problem)),
        }
    }
    Ok(settings)
}

/// Why `name` is not a key, with the likeliest fix.
fn unknown_key(name: &str) -> String {
    if name == "pgbouncer" {
        return "PgBouncer's [pgbouncer] section has no equivalent: write its settings as \
                top-level keys, before the [databases] table"
            .to_owned();
    }
    if PGBOUNCER_ONLY.contains(&name) {
        return format!(
            "PgBouncer's `{name}` is not supported by pool-proxy (docs/proxy-settings.md lists \
             the settings)"
        );
    }
    let known = SETTINGS.iter().map(|s| s.name).chain(["databases"]);
    match nearest(name, known) {
        Some(near) => format!("unknown key `{name}`; did you mean `{near}`?"),
        None => format!(
            "unknown key `{name}` (`pool-proxy --help` and docs/proxy-settings.md list the \
             settings)"
        ),
    }
}
