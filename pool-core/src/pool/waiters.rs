//! The waiter queue: strict arrival order, plus an index by deadline for the timer.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::WaiterId;
use crate::time::Instant;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter {
    pub arrived: Instant,
    pub deadline: Instant,
}

/// Waiter ids grow with arrival, so the map's key order is the FIFO order: the front is
/// the first key, and a cancel anywhere in the queue is O(log n).
#[derive(Clone, Debug, Default)]
pub(crate) struct Waiters {
    queue: BTreeMap<WaiterId, Waiter>,
    by_deadline: BTreeSet<(Instant, WaiterId)>,
    next_id: u64,
}

impl Waiters {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn push(&mut self, arrived: Instant, deadline: Instant) -> WaiterId {
        let id = WaiterId(self.next_id);
        self.next_id += 1;
        self.queue.insert(id, Waiter { arrived, deadline });
        self.by_deadline.insert((deadline, id));
        id
    }

    pub fn pop_front(&mut self) -> Option<(WaiterId, Waiter)> {
        let (id, w) = self.queue.pop_first()?;
        self.by_deadline.remove(&(w.deadline, id));
        Some((id, w))
    }

    pub fn remove(&mut self, id: WaiterId) -> Option<Waiter> {
        let w = self.queue.remove(&id)?;
        self.by_deadline.remove(&(w.deadline, id));
        Some(w)
    }

    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(d, _)| d)
    }

    /// Remove and return the waiter with the earliest deadline if it is due.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(WaiterId, Waiter)> {
        let &(deadline, id) = self.by_deadline.first()?;
        if !super::timers::due(deadline, now) {
            return None;
        }
        self.by_deadline.pop_first();
        let w = self.queue.remove(&id)?;
        Some((id, w))
    }

    /// The internal indexes agree, and ids are in arrival order.
    pub fn consistent(&self) -> bool {
        self.queue.len() == self.by_deadline.len()
            && self
                .by_deadline
                .iter()
                .all(|(d, id)| self.queue.get(id).is_some_and(|w| w.deadline == *d))
            && self
                .queue
                .values()
                .zip(self.queue.values().skip(1))
                .all(|(a, b)| a.arrived <= b.arrived)
    }
}
