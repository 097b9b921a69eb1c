//! Time as the core sees it: an opaque monotonic tick passed in by the caller.
//!
//! The core never reads a clock. Every input carries `now`, so a test, a fuzzer or the
//! simulator can drive time however it likes, and the same inputs always give the same
//! outputs.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds since an arbitrary origin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the caller's clock.
    pub const ZERO: Instant = Instant(0);
    /// A deadline that never comes.
    pub const NEVER: Instant = Instant(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Saturates at [`Instant::NEVER`] instead of overflowing: "now + a very long timeout" is
/// simply "never".
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Instant::NEVER {
            f.write_str("never")
        } else {
            write!(f, "t+{:?}", Duration::from_nanos(self.0))
        }
    }
}

/// A duration as people read it in messages: `20s`, `2.5s`, `150ms`, `2.5ms`, `40µs`,
/// `12ns`: whole units from ten of them up, one decimal below, the largest unit that
/// gives at least one. Whole seconds print without a decimal (`2s`). `Debug` prints
/// nanosecond precision (`2.000123456s`), which nobody reads in a log line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if self.0.subsec_nanos() == 0 {
            return write!(f, "{}s", self.0.as_secs());
        }
        let (scale, unit) = match nanos {
            0..=999 => return write!(f, "{nanos}ns"),
            // What would round up to 1000 of a unit is 1.0 of the next.
            1_000..=999_499 => (1e3, "µs"),
            999_500..=999_499_999 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        let value = nanos as f64 / scale;
        match value {
            v if v >= 9.95 => write!(f, "{v:.0}{unit}"),
            v => write!(f, "{v:.1}{unit}"),
        }
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_people_read_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_nanos(2_000_123_456), "2.0s"),
            (Duration::from_millis(2_500), "2.5s"),
            (Duration::from_millis(20_400), "20s"),
            (Duration::from_millis(9_960), "10s"),
            (Duration::from_secs(3_600), "3600s"),
            (Duration::from_millis(150), "150ms"),
            (Duration::from_nanos(150_400_001), "150ms"),
            (Duration::from_micros(2_500), "2.5ms"),
            (Duration::from_micros(40), "40µs"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_micros(999_700), "1.0s"),
            (Duration::from_nanos(999_700), "1.0ms"),
            (Duration::from_nanos(999_400), "999µs"),
        ];
        for (d, text) in cases {
            assert_eq!(HumanDuration(d).to_string(), text, "{d:?}");
        }
    }

    #[test]
    fn subtracting_saturates_at_zero() {
        let t = Instant::from_nanos(5_000);
        assert_eq!(t - Duration::from_nanos(1_000), Instant::from_nanos(4_000));
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
    }

    #[test]
    fn adding_saturates_at_never() {
        let t = Instant::from_nanos(u64::MAX - 5);
        assert_eq!(t + Duration::from_secs(1), Instant::NEVER);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            Instant::from_nanos(5).saturating_since(Instant::from_nanos(9)),
            Duration::ZERO
        );
    }
}
