//! The shell's entry per queued waiter, in waiter-id order.

use std::collections::VecDeque;

use crate::id::WaiterId;

/// Slots are inserted in increasing id order (each right after the core queued the
/// waiter, in the same critical section) and mostly taken from the front, so a `VecDeque`
/// in id order serves every operation without the shifting and rebalancing a B-tree does
/// on each removal at the front. A removal elsewhere leaves a tombstone; tombstones never
/// sit at either end and are swept once they outnumber the live slots.
pub(super) struct Slots<V> {
    queue: VecDeque<(WaiterId, Option<V>)>,
    live: usize,
}

impl<V> Slots<V> {
    pub(super) fn new() -> Self {
        Slots {
            queue: VecDeque::new(),
            live: 0,
        }
    }

    /// Add the slot of a waiter newer than every slot held.
    pub(super) fn insert(&mut self, id: WaiterId, slot: V) {
        assert!(
            self.queue.back().is_none_or(|(last, _)| *last < id),
            "shell invariant: waiter slots are inserted in id order"
        );
        self.queue.push_back((id, Some(slot)));
        self.live += 1;
    }

    fn position(&self, id: WaiterId) -> Option<usize> {
        // Every waiter the core queues gets a slot, and a removal leaves a tombstone, so
        // until a sweep the slots are contiguous in id: the offset from the front is the
        // index. After a sweep, search.
        let (first, _) = self.queue.front()?;
        // Ids below the front's are gone.
        let offset = id.0.checked_sub(first.0)?;
        if let Ok(guess) = usize::try_from(offset) {
            if matches!(self.queue.get(guess), Some((at, _)) if *at == id) {
                return Some(guess);
            }
        }
        self.queue.binary_search_by_key(&id, |(i, _)| *i).ok()
    }

    pub(super) fn remove(&mut self, id: WaiterId) -> Option<V> {
        let pos = self.position(id)?;
        let slot = self.queue[pos].1.take()?;
        self.live -= 1;
        while matches!(self.queue.front(), Some((_, None))) {
            self.queue.pop_front();
        }
        while matches!(self.queue.back(), Some((_, None))) {
            self.queue.pop_back();
        }
        if self.queue.len() - self.live > self.live + 16 {
            self.queue.retain(|(_, s)| s.is_some());
        }
        Some(slot)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.queue.iter().filter_map(|(_, s)| s.as_ref())
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::Slots;
    use crate::id::WaiterId;

    #[test]
    fn removes_anywhere_and_sweeps_tombstones() {
        let mut slots = Slots::new();
        for i in 0..100 {
            slots.insert(WaiterId(i), i);
        }
        for i in (1..99).rev() {
            assert_eq!(slots.remove(WaiterId(i)), Some(i));
        }
        assert_eq!(slots.remove(WaiterId(50)), None);
        assert!(slots.queue.len() <= 2 * slots.live + 16);
        assert_eq!(slots.values().copied().collect::<Vec<_>>(), vec![0, 99]);
        assert_eq!(slots.remove(WaiterId(0)), Some(0));
        assert_eq!(slots.remove(WaiterId(99)), Some(99));
        assert!(slots.queue.is_empty() && slots.live == 0);
    }

    #[test]
    fn a_few_tombstones_are_not_worth_a_sweep() {
        let mut slots = Slots::new();
        for i in 0..100 {
            slots.insert(WaiterId(i), i);
        }
        slots.remove(WaiterId(50));
        assert_eq!(
            slots.queue.len(),
            100,
            "one tombstone stays until sweeping pays"
        );
        assert_eq!(slots.values().count(), 99);
    }
}
