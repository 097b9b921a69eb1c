//! What is wrong with a configuration, and where it was written: the file and line, the
//! environment variable or the flag. No error contains a password or a secret: values
//! from the database URLs and the users file are never echoed.

use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// A file (the configuration or the users file), at a line counted from 1.
    File { path: PathBuf, line: usize },
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag (`--listen-port`).
    Flag(String),
}

/// Why the configuration could not be loaded, or the one non-error: `--help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `--help` or `--version` was asked for: print this on stdout and exit 0.
    Help(String),
    /// The command line is not understood: clap's message, which names the flag.
    Usage(String),
    /// A file cannot be read, or is not TOML, or not in the users file's format.
    Unreadable {
        path: PathBuf,
        line: Option<usize>,
        problem: String,
    },
    /// A setting, a database or a user is wrong: where it was written, which one, and
    /// why.
    Invalid {
        at: Origin,
        key: String,
        problem: String,
    },
}

impl ConfigError {
    /// The process's exit status for this outcome: 0 for `--help`, 2 (a usage error, as
    /// clap and most tools use) otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Help(_) => 0,
            _ => 2,
        }
    }

    pub(crate) fn invalid(at: &Origin, key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            at: at.clone(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help(text) | ConfigError::Usage(text) => f.write_str(text.trim_end()),
            ConfigError::Unreadable {
                path,
                line: Some(line),
                problem,
            } => write!(f, "{}:{line}: {problem}", path.display()),
            ConfigError::Unreadable {
                path,
                line: None,
                problem,
            } => write!(f, "{}: {problem}", path.display()),
            ConfigError::Invalid { at, key, problem } => match at {
                Origin::Default => write!(f, "{key} (by default): {problem}"),
                Origin::File { path, line } => {
                    write!(f, "{}:{line}: {key}: {problem}", path.display())
                }
                Origin::Env(name) => write!(f, "environment variable {name}: {key}: {problem}"),
                Origin::Flag(flag) => write!(f, "flag {flag}: {key}: {problem}"),
            },
        }
    }
}

impl std::error::Error for ConfigError {}

/// The line (from 1) of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_is_named() {
        let problem = |at| ConfigError::invalid(&at, "listen_port", "must not be 0").to_string();
        assert_eq!(
            problem(Origin::File {
                path: "proxy.toml".into(),
                line: 3
            }),
            "proxy.toml:3: listen_port: must not be 0"
        );
        assert_eq!(
            problem(Origin::Env("POOL_PROXY_LISTEN_PORT".into())),
            "environment variable POOL_PROXY_LISTEN_PORT: listen_port: must not be 0"
        );
        assert_eq!(
            problem(Origin::Flag("--listen-port".into())),
            "flag --listen-port: listen_port: must not be 0"
        );
        assert_eq!(
            problem(Origin::Default),
            "listen_port (by default): must not be 0"
        );
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }
}
