//! Errors of a replica set: which member, and why.

use std::fmt;

use pool_router::{ReadReport, RouterConfigError};

use crate::error::{BuildError, PoolError};

/// Why [`super::ReplicaSet::read`] or [`super::ReplicaSet::write`] returned no
/// connection.
#[derive(Debug)]
pub enum ReplicaError<E> {
    /// A read got no connection: `report` names each replica's state and how this read
    /// fared on it; `primary` is the primary pool's error when the read fell back to it
    /// (or the set has no replicas).
    Read {
        report: ReadReport,
        primary: Option<PoolError<E>>,
    },
    /// A write got no connection from the primary's pool (which says why).
    Write {
        primary: String,
        error: PoolError<E>,
    },
    /// A write was refused because the primary does not take writes: a probe found it in
    /// recovery, or its connects say so. `error` is the pool's, when it came from there.
    NotPrimary {
        primary: String,
        reason: String,
        error: Option<PoolError<E>>,
    },
    /// The set is closed.
    Closed,
}

impl<E> ReplicaError<E> {
    /// The member pool's error behind this one, if any.
    pub fn pool_error(&self) -> Option<&PoolError<E>> {
        match self {
            ReplicaError::Read { primary, .. } => primary.as_ref(),
            ReplicaError::Write { error, .. } => Some(error),
            ReplicaError::NotPrimary { error, .. } => error.as_ref(),
            ReplicaError::Closed => None,
        }
    }

    /// Whether the deadline passed (a read's or the primary pool's).
    pub fn is_timeout(&self) -> bool {
        match self {
            ReplicaError::Read { primary: None, .. } => true,
            e => e.pool_error().is_some_and(PoolError::is_timeout),
        }
    }
}

impl<E> fmt::Display for ReplicaError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaError::Read {
                report,
                primary: Some(e),
            } if report.members.is_empty() => write!(f, "read from the primary: {e}"),
            ReplicaError::Read { report, primary } => {
                write!(f, "{report}")?;
                if let Some(e) = primary {
                    write!(f, "; then the primary: {e}")?;
                }
                Ok(())
            }
            ReplicaError::Write { primary, error } => write!(f, "write on {primary}: {error}"),
            ReplicaError::NotPrimary {
                primary, reason, ..
            } if reason.starts_with(primary.as_str()) => f.write_str(reason),
            ReplicaError::NotPrimary {
                primary, reason, ..
            } => write!(f, "{primary} does not take writes: {reason}"),
            ReplicaError::Closed => f.write_str("the replica set is closed"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ReplicaError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.pool_error().map(|e| e as _)
    }
}

/// Why a replica set could not be built; names the member.
#[derive(Debug)]
pub enum SetBuildError {
    /// The routing options are out of range.
    Routing(RouterConfigError),
    /// A member's pool could not be built.
    Pool { member: String, error: BuildError },
    /// A member's URL is unusable.
    #[cfg(feature = "postgres")]
    Url {
        member: String,
        error: super::ReplicaUrlError,
    },
}

impl fmt::Display for SetBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetBuildError::Routing(e) => write!(f, "replica set routing: {e}"),
            SetBuildError::Pool { member, error } => write!(f, "{member}: {error}"),
            #[cfg(feature = "postgres")]
            SetBuildError::Url { member, error } => write!(f, "{member} URL: {error}"),
        }
    }
}

impl std::error::Error for SetBuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetBuildError::Routing(e) => Some(e),
            SetBuildError::Pool { error, .. } => Some(error),
            #[cfg(feature = "postgres")]
            SetBuildError::Url { error, .. } => Some(error),
        }
    }
}

impl From<RouterConfigError> for SetBuildError {
    fn from(e: RouterConfigError) -> Self {
        SetBuildError::Routing(e)
    }
}
