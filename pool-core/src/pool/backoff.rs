//! Connect retry policy: one pool-wide exponential backoff with jitter, so a database that
//! refuses connections sees a trickle of attempts, not a storm.

use std::time::Duration;

use crate::config::Config;
use crate::input::ConnectError;
use crate::rng::Rng;
use crate::time::Instant;

#[derive(Clone, Debug, Default)]
pub(crate) struct Backoff {
    /// Consecutive failed connects since the last success.
    failures: u32,
    /// No new connect starts before this.
    retry_at: Instant,
    /// Reported in timeout rejections; cleared by a successful connect.
    last_error: Option<ConnectError>,
    /// When `last_error` happened.
    failed_at: Instant,
}

impl Backoff {
    pub fn on_success(&mut self) {
        *self = Backoff::default();
    }

    /// Record a failure and return the delay chosen: `base * 2^(n-1)` capped at `max`,
    /// then "equal jitter" (half fixed, half random) so pools restarted together drift
    /// apart.
    pub fn on_failure(
        &mut self,
        now: Instant,
        error: ConnectError,
        config: &Config,
        rng: &mut Rng,
    ) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(31);
        let full = config
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(config.backoff_max);
        let half = u64::try_from(full.as_nanos() / 2).unwrap_or(u64::MAX);
        let delay = Duration::from_nanos(half.saturating_add(rng.up_to(half)));
        self.retry_at = now + delay;
        self.last_error = Some(error);
        self.failed_at = now;
        delay
    }

    /// Opens are paused until `retry_at`.
    pub fn blocked(&self, now: Instant) -> bool {
        now < self.retry_at
    }

    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }

    pub fn last_error(&self) -> Option<&ConnectError> {
        self.last_error.as_ref()
    }

    /// The last connect error since the last successful connect, and when it happened.
    pub fn last_failure(&self) -> Option<(&ConnectError, Instant)> {
        self.last_error.as_ref().map(|e| (e, self.failed_at))
    }

    /// The fatal error in force: the last connect failed fatally and its retry time has
    /// not come. While it is, an acquire that would have to wait fails at once.
    pub fn fatal(&self, now: Instant) -> Option<&ConnectError> {
        self.last_error
            .as_ref()
            .filter(|e| e.is_fatal() && self.blocked(now))
    }
}
