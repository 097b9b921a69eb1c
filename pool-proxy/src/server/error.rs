//! `ServerError`: why a server connection could not be opened, checked or reset, and
//! whether trying again can help.

use std::fmt;
use std::io;

use pool_core::ErrorClass;
use pool_tokio::postgres::{classify_sqlstate, SocketError};
use tokio_postgres::error::SqlState;

use crate::protocol::backend::TransactionStatus;

/// What went wrong with a server connection. No variant ever holds the password: the
/// server's messages name the user at most, and the proxy's own texts are written
/// without it.
#[derive(Debug)]
pub enum ServerError {
    /// The server said no: its ErrorResponse (FATAL during the login, ERROR from a check
    /// or reset query).
    Server {
        severity: String,
        sqlstate: String,
        message: String,
    },
    /// The socket failed: refused, reset, timed out, or closed by the server.
    Io(io::Error),
    /// The server sent what the protocol does not allow at that point.
    Protocol(String),
    /// The login cannot work as configured (no password for a server that asks for one,
    /// an authentication method or TLS mode the proxy does not speak, no user, unusable
    /// hosts): retrying will not help.
    Config(String),
    /// The server failed SCRAM on its side: its messages were malformed or its signature
    /// did not prove it knows the password (an impostor, or a broken link).
    Auth(String),
    /// A check or reset query left the server inside a transaction.
    NotIdle {
        query: String,
        status: TransactionStatus,
    },
}

impl ServerError {
    /// The server's SQLSTATE, when the server refused.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ServerError::Server { sqlstate, .. } => Some(sqlstate),
            _ => None,
        }
    }

    /// Whether retrying can help: an authentication failure (class 28: wrong password,
    /// unknown role, no pg_hba.conf entry), an unknown database or a missing CONNECT
    /// privilege, and a login that cannot work as configured are `Fatal`, so waiters fail
    /// at once; too many connections, a server starting up or shutting down, and I/O
    /// errors are `Transient`. SQLSTATEs are judged as pool-tokio judges them.
    pub fn class(&self) -> ErrorClass {
        match self {
            ServerError::Server { sqlstate, .. } => {
                classify_sqlstate(&SqlState::from_code(sqlstate))
            }
            ServerError::Config(_) | ServerError::Auth(_) => ErrorClass::Fatal,
            ServerError::Io(_) | ServerError::Protocol(_) | ServerError::NotIdle { .. } => {
                ErrorClass::Transient
            }
        }
    }

    /// A protocol error naming what was expected and what came instead.
    pub(crate) fn unexpected(expected: &str, got: impl fmt::Debug) -> Self {
        ServerError::Protocol(format!("expected {expected}, got {got:?}"))
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Server {
                severity,
                sqlstate,
                message,
            } => write!(f, "server said {severity} {sqlstate}: {message}"),
            ServerError::Io(e) => write!(f, "server connection failed: {e}"),
            ServerError::Protocol(what) => write!(f, "protocol error from the server: {what}"),
            ServerError::Config(what) => f.write_str(what),
            ServerError::Auth(what) => write!(f, "authentication of the server failed: {what}"),
            ServerError::NotIdle { query, status } => {
                let status = match status {
                    TransactionStatus::Idle => "idle",
                    TransactionStatus::InTransaction => "in a transaction",
                    TransactionStatus::Failed => "in a failed transaction",
                };
                write!(f, "after {query:?} the server is {status}, not idle")
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ServerError {
    fn from(e: io::Error) -> Self {
        ServerError::Io(e)
    }
}

impl From<SocketError<ServerError>> for ServerError {
    fn from(e: SocketError<ServerError>) -> Self {
        match e {
            SocketError::InvalidHosts(what) => {
                ServerError::Config(format!("invalid hosts: {what}"))
            }
            SocketError::Io(e) => ServerError::Io(e),
            SocketError::Attempt(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sqlstate: &str) -> ServerError {
        ServerError::Server {
            severity: "FATAL".into(),
            sqlstate: sqlstate.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn logins_that_cannot_succeed_are_fatal() {
        for code in ["28P01", "28000", "3D000", "42501"] {
            assert_eq!(refused(code).class(), ErrorClass::Fatal, "{code}");
        }
        assert_eq!(
            ServerError::Config("no password".into()).class(),
            ErrorClass::Fatal
        );
    }

    #[test]
    fn busy_or_unreachable_servers_are_transient() {
        for code in ["53300", "57P03", "57P01", "08006"] {
            assert_eq!(refused(code).class(), ErrorClass::Transient, "{code}");
        }
        let io = ServerError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(io.class(), ErrorClass::Transient);
        assert!(std::error::Error::source(&io).is_some());
    }
}
