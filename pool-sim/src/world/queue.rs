//! The discrete-event queue. Events run in (time, sequence) order: events at one instant
//! run in the order they were scheduled, so every run replays exactly.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::event::Ev;

struct Entry {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

#[derive(Default)]
pub(super) struct EventQueue {
    seq: u64,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl EventQueue {
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            t: at,
            seq: self.seq,
            ev,
        }));
    }

    /// The next event and its time.
    pub(super) fn pop(&mut self) -> Option<(u64, Ev)> {
        self.heap.pop().map(|Reverse(e)| (e.t, e.ev))
    }
}
