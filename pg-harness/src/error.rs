//! The harness's error type.

use std::fmt;
use std::io;

/// Everything that can go wrong while setting up or driving the test infrastructure.
#[derive(Debug)]
pub enum HarnessError {
    /// A required program is not installed. `install` is the exact command that fixes it.
    NotInstalled {
        /// What was looked for, and where.
        what: String,
        /// The command that installs it, e.g. `apt-get install -y postgresql`.
        install: &'static str,
    },
    /// An external command (initdb, pg_ctl, psql, pgbouncer) failed.
    Command {
        /// The command line, for the message.
        command: String,
        /// Exit code, if the process exited normally.
        status: Option<i32>,
        /// Its stdout/stderr, plus the tail of the server log where relevant.
        output: String,
    },
    /// A filesystem or socket operation failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An admin SQL statement failed.
    Postgres(tokio_postgres::Error),
    /// Something did not become ready in time.
    Timeout(String),
    /// Anything else (bad configuration, unparsable output, ...).
    Other(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::NotInstalled { what, install } => write!(
                f,
                "{what} not found; install it with `{install}` \
                 (or run scripts/install-deps.sh as root)"
            ),
            HarnessError::Command {
                command,
                status,
                output,
            } => {
                write!(f, "`{command}` failed")?;
                match status {
                    Some(code) => write!(f, " with exit code {code}")?,
                    None => write!(f, " (killed by a signal)")?,
                }
                if !output.trim().is_empty() {
                    write!(f, ":\n{}", output.trim_end())?;
                }
                Ok(())
            }
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::Postgres(e) => write!(f, "admin SQL failed: {e}"),
            HarnessError::Timeout(what) => write!(f, "timed out: {what}"),
            HarnessError::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            HarnessError::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for HarnessError {
    fn from(e: tokio_postgres::Error) -> Self {
        HarnessError::Postgres(e)
    }
}
