//! Errors that say what happened.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use pool_core::{ConfigError, ConnectError, Rejection, Status, TimeoutReport};

/// Why `get()` returned no connection.
#[derive(Debug)]
pub enum PoolError<E> {
    /// The deadline passed. `last_connect_error` is the likeliest reason the pool ran
    /// dry (a database refusing connections); `status` is the pool's counts at that time.
    Timeout {
        waited: Duration,
        last_connect_error: Option<ConnectError>,
        status: Status,
        /// The manager's own error behind `last_connect_error`, when still known.
        source: Option<Arc<E>>,
    },
    /// `max_waiters` callers were already waiting: the request was shed.
    QueueFull { max_waiters: usize },
    /// The pool is closed or closing.
    Closed,
    /// Connecting failed with an error retrying will not fix (wrong password, unknown
    /// database); `source` is the manager's own error when still known.
    Connect {
        error: ConnectError,
        source: Option<Arc<E>>,
    },
}

impl<E> PoolError<E> {
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout { .. })
    }

    /// The core's rejection this error reports, without the manager's `source` error.
    pub fn rejection(&self) -> Rejection {
        match self {
            PoolError::Timeout {
                waited,
                last_connect_error,
                status,
                ..
            } => Rejection::Timeout(Box::new(TimeoutReport {
                waited: *waited,
                last_connect_error: last_connect_error.clone(),
                status: *status,
            })),
            PoolError::QueueFull { max_waiters } => Rejection::QueueFull {
                max_waiters: *max_waiters,
            },
            PoolError::Closed => Rejection::Closed,
            PoolError::Connect { error, .. } => Rejection::ConnectFailed(error.clone()),
        }
    }
}

/// The adapter's error for a rejection: the core's, with the manager's typed error that
/// travelled with the connect error. [`PoolError::rejection`] is its inverse.
impl<E: std::error::Error + Send + Sync + 'static> From<Rejection> for PoolError<E> {
    fn from(rejection: Rejection) -> Self {
        let source_of = |e: &ConnectError| {
            e.source
                .clone()
                .and_then(|source| source.downcast::<E>().ok())
        };
        match rejection {
            Rejection::Timeout(report) => PoolError::Timeout {
                waited: report.waited,
                source: report.last_connect_error.as_ref().and_then(source_of),
                last_connect_error: report.last_connect_error,
                status: report.status,
            },
            Rejection::QueueFull { max_waiters } => PoolError::QueueFull { max_waiters },
            Rejection::Closed => PoolError::Closed,
            Rejection::ConnectFailed(error) => PoolError::Connect {
                source: source_of(&error),
                error,
            },
        }
    }
}

impl<E> fmt::Display for PoolError<E> {
    /// The core's text for the rejection: the manager's own error is the `source`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.rejection(), f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PoolError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Timeout {
                source: Some(e), ..
            }
            | PoolError::Connect {
                source: Some(e), ..
            } => Some(&**e),
            _ => None,
        }
    }
}

/// Why `Builder::build` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// An option is out of range; the error names it.
    Config(ConfigError),
    /// `build()` was called outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::NoRuntime => {
                f.write_str("Pool::build must be called from inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Config(e) => Some(e),
            BuildError::NoRuntime => None,
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

/// An error's message with its chain of causes: `outer: inner: innermost`. Drivers often
/// keep the useful part (the server's message) in a cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error reports the core's rejection, and so its text.
    #[test]
    fn each_error_is_the_cores_rejection() {
        let refused = ConnectError::transient("connection refused");
        let status = Status {
            max_size: 2,
            ..Status::default()
        };
        let waited = Duration::from_secs(3);
        let source = Some(Arc::new(std::io::Error::other("the manager's own")));
        let cases: [(PoolError<std::io::Error>, Rejection); 5] = [
            (
                PoolError::Timeout {
                    waited,
                    last_connect_error: Some(refused.clone()),
                    status,
                    source: source.clone(),
                },
                Rejection::Timeout(Box::new(TimeoutReport {
                    waited,
                    last_connect_error: Some(refused.clone()),
                    status,
                })),
            ),
            (
                PoolError::Timeout {
                    waited,
                    last_connect_error: None,
                    status,
                    source: None,
                },
                Rejection::Timeout(Box::new(TimeoutReport {
                    waited,
                    last_connect_error: None,
                    status,
                })),
            ),
            (
                PoolError::QueueFull { max_waiters: 7 },
                Rejection::QueueFull { max_waiters: 7 },
            ),
            (PoolError::Closed, Rejection::Closed),
            (
                PoolError::Connect {
                    error: refused.clone(),
                    source,
                },
                Rejection::ConnectFailed(refused),
            ),
        ];
        for (error, rejection) in cases {
            assert_eq!(error.rejection(), rejection);
            assert_eq!(error.to_string(), rejection.to_string());
            let back: PoolError<std::io::Error> = PoolError::from(rejection.clone());
            assert_eq!(back.rejection(), rejection, "from is rejection's inverse");
        }
    }

    /// A connect error carries the manager's typed error; the adapter's error hands it
    /// back typed, whichever connect failed.
    #[test]
    fn the_typed_source_travels_with_the_connect_error() {
        let typed = Arc::new(std::io::Error::other("password authentication failed"));
        let error = ConnectError::fatal("auth").with_source(typed.clone());
        let PoolError::<std::io::Error>::Connect {
            source: Some(source),
            ..
        } = PoolError::from(Rejection::ConnectFailed(error))
        else {
            panic!("the source was lost")
        };
        assert!(Arc::ptr_eq(&source, &typed));
        let untyped = ConnectError::fatal("auth").with_source(Arc::new(42u8));
        let PoolError::<std::io::Error>::Connect { source, .. } =
            PoolError::from(Rejection::ConnectFailed(untyped))
        else {
            panic!()
        };
        assert!(source.is_none(), "a source of another type is not forced");
    }
}
