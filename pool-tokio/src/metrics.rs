//! A snapshot of the pool's counts, counters and histograms, for exporters.

use pool_core::{Stats, Status};

/// Everything the pool counts, at one instant: the core's [`Status`] and [`Stats`]. With
/// the `serde` feature it serializes as one flat object: `Status`'s fields, then `Stats`'s
/// (closes per reason name, histograms as summaries with durations in nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Metrics {
    /// The pool's counts now.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub status: Status,
    /// Counters and histograms since the pool was built.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub stats: Stats,
}

impl Metrics {
    pub(crate) fn new(status: Status, stats: &Stats) -> Self {
        Metrics {
            status,
            stats: stats.clone(),
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One flat object, as exporters read it: the status's counts and the stats'
    /// counters side by side, closes by reason name, histograms as summaries.
    #[test]
    fn serializes_flat() {
        let mut stats = Stats::default();
        stats.grants = 3;
        stats.wait.record(Duration::from_nanos(100));
        let status = Status {
            max_size: 10,
            idle: 2,
            ..Status::default()
        };
        let json = serde_json::to_value(Metrics::new(status, &stats)).unwrap();
        assert_eq!(json["max_size"], 10);
        assert_eq!(json["idle"], 2);
        assert_eq!(json["grants"], 3);
        assert_eq!(json["closes"]["broken"], 0);
        assert_eq!(
            json["closes"].as_object().unwrap().len(),
            pool_core::CloseReason::ALL.len()
        );
        assert_eq!(json["wait"]["count"], 1);
        assert_eq!(json["wait"]["p99_ns"], 100);
        assert_eq!(json["wait"]["buckets"][0], serde_json::json!([127, 1]));
        assert_eq!(json["hold"]["count"], 0);
    }
}
