//! The command line and the environment: a flag (`--default-pool-size`) and a variable
//! (`POOL_PROXY_DEFAULT_POOL_SIZE`) for every setting in the list, plus the few that are
//! not settings: `--config`, `--check-config`, `--database`.
//!
//! The environment is read here through the function `load` is given, not by clap's
//! `env` feature: clap would read the process's environment, which tests must not touch,
//! and would blur which of flag and variable set a value (the precedence, and the name an
//! error gives).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser};

use super::databases::{self, DatabaseEntry};
use super::settings::{Layer, Raw, SETTINGS};
use super::{ConfigError, Origin};

/// The variable naming the configuration file.
pub(crate) const CONFIG_ENV: &str = "POOL_PROXY_CONFIG";
/// The variable listing databases.
pub(crate) const DATABASES_ENV: &str = "POOL_PROXY_DATABASES";

/// The flags that are not settings.
#[derive(Parser, Debug)]
#[command(
    name = "pool-proxy",
    version,
    about = "A PostgreSQL transaction pooler, in PgBouncer's words.",
    long_about = "A PostgreSQL transaction pooler, in PgBouncer's words.\n\n\
        Every setting is a key in the configuration file, a flag and an environment \
        variable; a flag wins over a variable, a variable over the file, the file over \
        the default. Durations are seconds (120, 0.5) or a number with a unit (250ms, 2s, \
        5min). docs/proxy-settings.md compares each setting with PgBouncer's."
)]
pub(crate) struct Cli {
    /// The configuration file (TOML): the settings as top-level keys and a [databases]
    /// table. Relative paths in it are taken from its directory. [env: POOL_PROXY_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Load and check the configuration (the database URLs, the users file), print
    /// "config ok" and exit: 0 if it is good, 2 if not.
    #[arg(long)]
    pub(crate) check_config: bool,

    /// A database clients may connect to, as NAME=postgres://user:password@host:port/db;
    /// repeat it for more. It replaces a database of the same name from the file or the
    /// environment. [env: POOL_PROXY_DATABASES, NAME=URL entries separated by whitespace]
    #[arg(long = "database", value_name = "NAME=URL")]
    pub(crate) databases: Vec<String>,
}

/// What the command line said: the flags that are not settings, and the settings.
pub(crate) struct CommandLine {
    pub(crate) cli: Cli,
    pub(crate) layer: Layer,
    pub(crate) databases: Vec<(String, DatabaseEntry)>,
}

/// The command: [`Cli`] and a flag per setting, its help from the setting's doc.
pub(crate) fn command() -> clap::Command {
    SETTINGS.iter().fold(Cli::command(), |command, setting| {
        let default = (setting.default)();
        let shown_default = match default.as_str() {
            "" => "not set".to_owned(),
            text => text.to_owned(),
        };
        let paragraph = setting.paragraph();
        let summary = paragraph.split(". ").next().unwrap_or(&paragraph);
        command.arg(
            Arg::new(setting.name)
                .long(setting.flag().trim_start_matches('-').to_owned())
                .alias(setting.name)
                .value_name("VALUE")
                .action(ArgAction::Set)
                // The last one wins, as a script appending a flag expects.
                .overrides_with(setting.name)
                .help(format!(
                    "{} [default: {shown_default}]",
                    summary.trim_end_matches('.')
                ))
                .long_help(format!(
                    "{}\n\nValue: {}. [default: {shown_default}] [env: {}]",
                    paragraph,
                    (setting.expected)(),
                    setting.env()
                )),
        )
    })
}

/// Parses the command line (`args` starts with the program's name).
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<CommandLine, ConfigError> {
    let matches = command().try_get_matches_from(args).map_err(|e| {
        let text = e.render().to_string();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ConfigError::Help(text)
            }
            _ => ConfigError::Usage(text),
        }
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| ConfigError::Usage(e.to_string()))?;
    let mut layer = Layer::default();
    for setting in SETTINGS {
        if let Some(text) = matches.get_one::<String>(setting.name) {
            let flag = setting.flag();
            layer
                .set(setting.name, Origin::Flag(flag.clone()), Raw::Text(text))
                .map_err(|problem| {
                    ConfigError::invalid(&Origin::Flag(flag), setting.name, problem)
                })?;
        }
    }
    let mut entries = Vec::new();
    for text in &cli.databases {
        entries.extend(databases::from_text(
            text,
            &Origin::Flag("--database".into()),
        )?);
    }
    Ok(CommandLine {
        cli,
        layer,
        databases: entries,
    })
}

/// The settings and databases the environment sets. An empty variable counts as unset,
/// as a container's `VAR=` usually means.
pub(crate) fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Layer, Vec<(String, DatabaseEntry)>), ConfigError> {
    let mut layer = Layer::default();
    for setting in SETTINGS {
        let name = setting.env();
        let Some(text) = env(&name).filter(|text| !text.is_empty()) else {
            continue;
        };
        let origin = Origin::Env(name);
        layer
            .set(setting.name, origin.clone(), Raw::Text(&text))
            .map_err(|problem| ConfigError::invalid(&origin, setting.name, problem))?;
    }
    let databases = match env(DATABASES_ENV) {
        Some(text) => databases::from_text(&text, &Origin::Env(DATABASES_ENV.into()))?,
        None => Vec::new(),
    };
    Ok((layer, databases))
}
