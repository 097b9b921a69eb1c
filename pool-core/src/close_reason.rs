//! Why a connection was closed: named in `Action::Close` and counted in `Stats`.

/// Why a connection was closed. Counted per reason in `Stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// Returned with `Verdict::Broken`.
    Broken,
    /// Failed its checkout health check.
    CheckFailed,
    /// Its checkout health check did not answer within `check_timeout`.
    CheckTimeout,
    /// Its reset failed or did not answer within `check_timeout`.
    ResetFailed,
    /// Idle longer than `idle_timeout` while the pool had more than `min_idle` idle.
    IdleTimeout,
    /// Older than its (jittered) `max_lifetime`.
    MaxLifetime,
    /// Its connect did not finish within `connect_timeout`.
    ConnectTimeout,
    /// The pool was closed.
    PoolClosed,
    /// Still leased at the drain deadline; the lease was revoked.
    DrainTimeout,
    /// Opened before an `evict_all`: closed when idle, or when it next came back (or
    /// finished opening, its check or its reset) instead of being lent.
    Evicted,
    /// Became ready while the pool held more connections than a smaller `max_size`
    /// given to `resize`; closed instead of being lent or filed idle.
    Resized,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Broken,
        CloseReason::CheckFailed,
        CloseReason::CheckTimeout,
        CloseReason::ResetFailed,
        CloseReason::IdleTimeout,
        CloseReason::MaxLifetime,
        CloseReason::ConnectTimeout,
        CloseReason::PoolClosed,
        CloseReason::DrainTimeout,
        CloseReason::Evicted,
        CloseReason::Resized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Broken => "broken",
            CloseReason::CheckFailed => "check_failed",
            CloseReason::CheckTimeout => "check_timeout",
            CloseReason::ResetFailed => "reset_failed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::DrainTimeout => "drain_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Resized => "resized",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason;

    /// The names are what metrics and logs show: distinct, and snake case.
    #[test]
    fn close_reason_names_are_distinct_and_stable() {
        let names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "broken",
                "check_failed",
                "check_timeout",
                "reset_failed",
                "idle_timeout",
                "max_lifetime",
                "connect_timeout",
                "pool_closed",
                "drain_timeout",
                "evicted",
                "resized"
            ]
        );
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
