//! The open-file limit (`RLIMIT_NOFILE`): 5,000 idle clients and `pgbench -c 500` need
//! more descriptors than a default soft limit of 1024 allows, in this process (the idle
//! clients' sockets) and in the poolers and pgbench, which inherit it when spawned.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit to at least `want` (and the hard limit too, which root may), or as
/// far as the hard limit allows. Returns the soft limit now in force (`u64::MAX`:
/// unlimited).
pub(crate) fn raise_to(want: u64) -> u64 {
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= want {
        return current;
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    if hard < want {
        // Only a privileged process may raise the hard limit; try, then settle for it.
        let both = Rlimit {
            current: Some(want),
            maximum: Some(want),
        };
        if setrlimit(Resource::Nofile, both).is_ok() {
            return want;
        }
    }
    let soft = Rlimit {
        current: Some(want.min(hard)),
        maximum: now.maximum,
    };
    let _ = setrlimit(Resource::Nofile, soft);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_and_reports_the_limit_in_force() {
        let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        assert_eq!(raise_to(16), now, "a smaller want leaves the limit alone");
        let raised = raise_to(now.saturating_add(1).min(4096).max(now));
        assert!(raised >= now);
        assert_eq!(
            getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX),
            raised
        );
    }
}
