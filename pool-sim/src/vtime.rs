//! Virtual time: the clock counts whole nanoseconds (exact and ordered); reports show
//! milliseconds rounded to the microsecond, so text and JSON stay stable.

use std::time::Duration;

use serde::Serializer;

/// A duration on the virtual clock; saturates rather than wrapping.
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds to milliseconds, rounded to the microsecond (stable text and JSON).
pub fn ms(nanos: u64) -> f64 {
    (nanos as f64 / 1_000.0).round() / 1_000.0
}

/// For `#[serde(serialize_with)]`: durations in JSON are milliseconds like every other time.
pub fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(d.as_nanos() as u64))
}
