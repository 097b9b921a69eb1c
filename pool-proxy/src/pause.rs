//! `PAUSE [db]` and `RESUME [db]`: the gate a client's request for a server passes.
//!
//! While a database is paused its clients' new transactions wait (as `waiting` clients)
//! before asking the pool; clients inside a transaction finish it. `PAUSE` itself returns
//! once no server of the database is lent (see `admin/control.rs`). Checking the gate is
//! one atomic load while nothing is paused, and a read of the pause set otherwise, once
//! per request for a server, never per message.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// What is paused: everything, or some databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    pub all: bool,
    pub databases: BTreeSet<String>,
}

impl Paused {
    pub fn covers(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }

    fn is_empty(&self) -> bool {
        !self.all && self.databases.is_empty()
    }
}

/// The proxy's pause state.
pub struct Pauses {
    state: watch::Sender<Paused>,
    /// Whether anything is paused: the fast path's one load.
    any: AtomicBool,
}

impl Default for Pauses {
    fn default() -> Self {
        Pauses {
            state: watch::Sender::new(Paused::default()),
            any: AtomicBool::new(false),
        }
    }
}

impl Pauses {
    /// Whether `database`'s new transactions must wait now.
    pub fn is_paused(&self, database: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.state.borrow().covers(database)
    }

    /// Waits until `database` is not paused.
    pub async fn resumed(&self, database: &str) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|paused| !paused.covers(database)).await;
    }

    /// Pauses `database`, or everything.
    pub fn pause(&self, database: Option<&str>) {
        self.state.send_modify(|paused| match database {
            None => paused.all = true,
            Some(db) => {
                paused.databases.insert(db.to_owned());
            }
        });
        self.any.store(true, Ordering::Release);
    }

    /// Resumes `database` (paused by name), or everything (every pause). `false`: it was
    /// not paused.
    pub fn resume(&self, database: Option<&str>) -> bool {
        let mut was = false;
        self.state.send_modify(|paused| match database {
            None => {
                was = !paused.is_empty();
                *paused = Paused::default();
            }
            Some(db) => was = paused.databases.remove(db),
        });
        self.any
            .store(!self.state.borrow().is_empty(), Ordering::Release);
        was
    }

    /// What is paused now.
    pub fn paused(&self) -> Paused {
        self.state.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_database_waits_until_resumed_and_others_pass() {
        let pauses = std::sync::Arc::new(Pauses::default());
        assert!(!pauses.is_paused("a"));
        pauses.pause(Some("a"));
        assert!(pauses.is_paused("a") && !pauses.is_paused("b"));
        let waiter = {
            let pauses = pauses.clone();
            tokio::spawn(async move { pauses.resumed("a").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!pauses.resume(Some("b")));
        assert!(pauses.resume(Some("a")));
        waiter.await.unwrap();
        pauses.pause(None);
        assert!(pauses.is_paused("b"));
        assert!(pauses.resume(None));
        assert!(!pauses.is_paused("b"));
        assert!(!pauses.resume(None));
    }
}
