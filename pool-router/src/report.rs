//! Errors that say which member and why: what a read that got no connection saw on each
//! replica, and why a write was refused.

use std::fmt;
use std::time::Duration;

use pool_core::HumanDuration;

use crate::config::Fallback;
use crate::member::{Member, State};
use crate::read::HopEnd;

/// Why a read got no connection: every replica's state, and how this read fared on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReport {
    /// How long the read waited in all.
    pub waited: Duration,
    pub fallback: Fallback,
    /// Each replica, with the last hop this read made on it (if any).
    pub members: Vec<(Member, Option<HopEnd>)>,
    /// Per member (the primary first), how long until its next probe.
    pub(crate) probe_in: Vec<Option<Duration>>,
}

impl fmt::Display for ReadReport {
    /// `no replica could serve the read within 1.5s (fallback to the primary: never):
    /// replica-1 at 127.0.0.1:5433: benched 1.0s ago: unreachable (2 failed in a row):
    /// ...; next probe in 2.0s; replica-2 at ...: waited 500ms without a connection (size
    /// 2/2: 0 idle, 2 leased, 0 opening, 0 checking, 0 closing; 3 waiting)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no replica could serve the read within {} (fallback to the primary: {})",
            HumanDuration(self.waited),
            self.fallback
        )?;
        if self.members.is_empty() {
            return f.write_str(": the set has no replicas");
        }
        for (i, (m, hop)) in self.members.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{m}: ")?;
            match hop {
                Some(HopEnd::TimedOut { status, error }) => {
                    write!(f, "no connection in time ({status})")?;
                    if let Some(e) = error {
                        write!(f, ", last connect error: {e}")?;
                    }
                    if !m.state.in_service() {
                        f.write_str("; now ")?;
                    }
                }
                Some(HopEnd::Failed { error, .. }) => {
                    write!(f, "refused: {error}")?;
                    if !m.state.in_service() {
                        f.write_str("; now ")?;
                    }
                }
                Some(HopEnd::Served | HopEnd::Abandoned) | None => {}
            }
            match &m.state {
                State::InService => {
                    if hop.is_none() {
                        f.write_str("in service, not tried")?;
                    }
                }
                State::Benched { reason, .. } => {
                    write!(f, "benched: {reason}")?;
                    if let Some(Some(next)) = self.probe_in.get(m.id.0) {
                        write!(f, "; next probe in {}", HumanDuration(*next))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a write was refused: the primary is in recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRefused {
    pub primary: Member,
    /// How long it has been benched.
    pub for_: Duration,
}

impl fmt::Display for WriteRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.primary.state {
            State::Benched { reason, .. } => write!(
                f,
                "{} does not take writes: {reason} (found {} ago; writes fail at once until a probe finds it writable)",
                self.primary,
                HumanDuration(self.for_)
            ),
            State::InService => write!(f, "{} refused the write", self.primary),
        }
    }
}

impl std::error::Error for WriteRefused {}
impl std::error::Error for ReadReport {}
