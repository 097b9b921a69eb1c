//! The proxy's one clock: tokio's, read as pool-core's [`Instant`] for the session state
//! machines (which read no clock of their own), and back again for the timers that wait
//! for their deadlines. Under tokio's paused test clock both follow it.

use pool_core::Instant;

/// Nanoseconds since the proxy started, on tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        let nanos = self.epoch.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The tokio deadline for a core deadline.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        let far = self.epoch + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        self.epoch
            .checked_add(at.saturating_since(Instant::ZERO))
            .map_or(far, |at| at.min(far))
    }
}
