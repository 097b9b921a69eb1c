//! The waiter queue: strict arrival order, plus an index by deadline for the timer. Each
//! waiter carries the embedder's token (the shell's answer cell, the simulator's request),
//! handed back with its answer, so no embedder keeps a second queue beside this one.

use std::collections::{BTreeSet, VecDeque};

use crate::id::WaiterId;
use crate::time::Instant;

#[derive(Clone, Debug)]
pub(crate) struct Waiter<W> {
    pub arrived: Instant,
    pub deadline: Instant,
    pub token: W,
}

/// Waiter ids grow with arrival, so a queue kept in id order is the FIFO order.
///
/// Built for the hot path: pushing at the back and popping at the front are O(1) (a
/// B-tree shifts and rebalances its nodes on every pop at the front). A cancel anywhere
/// is a binary search that leaves a tombstone; tombstones never sit at either end, and
/// are swept out once they outnumber the live waiters, so the queue stays O(live).
///
/// The deadline index is only kept while it is needed: while every waiter's deadline is
/// no earlier than those queued before it (all acquires with the same timeout), the
/// arrival order *is* the deadline order, and the front holds the earliest deadline. It
/// is built when a waiter arrives with an earlier deadline than one ahead of it, and
/// dropped again once that waiter has left the front of the queue. (Acquirers on other
/// threads read the clock before they lock the pool, so their deadlines arrive slightly
/// out of order now and then; under steady contention the queue never empties, and an
/// index kept until it did cost a B-tree update on every push and pop.)
#[derive(Clone, Debug)]
pub(crate) struct Waiters<W> {
    /// In id order; `None` is a cancelled waiter not yet swept out.
    queue: VecDeque<(WaiterId, Option<Waiter<W>>)>,
    live: usize,
    /// `None` while deadlines are non-decreasing in arrival order.
    by_deadline: Option<BTreeSet<(Instant, WaiterId)>>,
    /// The newest waiter queued with an earlier deadline than a live waiter ahead of it.
    /// Every waiter after it arrived with a deadline no earlier than any ahead of it, so
    /// once it has left the front, arrival order is deadline order again.
    disordered_until: Option<WaiterId>,
    next_id: u64,
}

impl<W> Default for Waiters<W> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
            live: 0,
            by_deadline: None,
            disordered_until: None,
            next_id: 0,
        }
    }
}

impl<W> Waiters<W> {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The id the next [`Self::push`] will get.
    pub fn next_id(&self) -> WaiterId {
        WaiterId(self.next_id)
    }

    pub fn push(&mut self, arrived: Instant, deadline: Instant, token: W) -> WaiterId {
        let id = WaiterId(self.next_id);
        self.next_id += 1;
        // The latest deadline of any live waiter: the back's while arrival order is
        // deadline order (the back is never a tombstone), else the index's last.
        let latest = match &self.by_deadline {
            Some(index) => index.last().map(|&(d, _)| d),
            None => self
                .queue
                .back()
                .and_then(|(_, w)| w.as_ref().map(|w| w.deadline)),
        };
        if latest.is_some_and(|latest| deadline < latest) {
            self.disordered_until = Some(id);
            if self.by_deadline.is_none() {
                self.by_deadline = Some(
                    self.queue
                        .iter()
                        .filter_map(|(id, w)| w.as_ref().map(|w| (w.deadline, *id)))
                        .collect(),
                );
            }
        }
        if let Some(index) = &mut self.by_deadline {
            index.insert((deadline, id));
        }
        self.queue.push_back((
            id,
            Some(Waiter {
                arrived,
                deadline,
                token,
            }),
        ));
        self.live += 1;
        id
    }

    pub fn tokens(&self) -> impl Iterator<Item = &W> {
        self.queue
            .iter()
            .filter_map(|(_, w)| w.as_ref().map(|w| &w.token))
    }

    /// The waiter a grant would go to.
    pub fn front(&self) -> Option<(WaiterId, &Waiter<W>)> {
        // The front is never a tombstone.
        self.queue
            .front()
            .and_then(|(id, w)| w.as_ref().map(|w| (*id, w)))
    }

    pub fn pop_front(&mut self) -> Option<(WaiterId, Waiter<W>)> {
        // The front is never a tombstone.
        let (id, w) = self.queue.pop_front()?;
        let w = w.expect("the front of the waiter queue is live");
        if let Some(index) = &mut self.by_deadline {
            index.remove(&(w.deadline, id));
        }
        self.live -= 1;
        self.tidy();
        Some((id, w))
    }

    pub fn remove(&mut self, id: WaiterId) -> Option<Waiter<W>> {
        let pos = self.queue.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        let w = self.queue[pos].1.take()?;
        if let Some(index) = &mut self.by_deadline {
            index.remove(&(w.deadline, id));
        }
        self.live -= 1;
        self.tidy();
        Some(w)
    }

    /// The earliest deadline of any waiter, and whose.
    pub fn earliest_deadline(&self) -> Option<(Instant, WaiterId)> {
        match &self.by_deadline {
            Some(index) => index.first().copied(),
            None => self.front().map(|(id, w)| (w.deadline, id)),
        }
    }

    /// Remove and return the waiter with the earliest deadline if it is due.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(WaiterId, Waiter<W>)> {
        let (deadline, id) = self.earliest_deadline()?;
        if !super::timers::due(deadline, now) {
            return None;
        }
        let w = self.remove(id)?;
        Some((id, w))
    }

    /// Keep both ends live, sweep tombstones once they outnumber the live waiters, and
    /// drop the deadline index once arrival order is deadline order again.
    fn tidy(&mut self) {
        while matches!(self.queue.front(), Some((_, None))) {
            self.queue.pop_front();
        }
        while matches!(self.queue.back(), Some((_, None))) {
            self.queue.pop_back();
        }
        if self.queue.len() - self.live > self.live + 16 {
            self.queue.retain(|(_, w)| w.is_some());
        }
        let in_order_again = self
            .disordered_until
            .is_some_and(|last| self.queue.front().is_none_or(|(front, _)| *front > last));
        if in_order_again {
            self.by_deadline = None;
            self.disordered_until = None;
        }
    }

    /// The internal indexes agree, and ids are in arrival order.
    pub fn consistent(&self) -> bool {
        let live: Vec<(WaiterId, &Waiter<W>)> = self
            .queue
            .iter()
            .filter_map(|(id, w)| w.as_ref().map(|w| (*id, w)))
            .collect();
        let ends_live = self.queue.front().is_none_or(|(_, w)| w.is_some())
            && self.queue.back().is_none_or(|(_, w)| w.is_some());
        let ids_ascending = self
            .queue
            .iter()
            .zip(self.queue.iter().skip(1))
            .all(|(a, b)| a.0 < b.0);
        let arrivals_ordered = live
            .iter()
            .zip(live.iter().skip(1))
            .all(|(a, b)| a.1.arrived <= b.1.arrived);
        let deadlines_indexed = match &self.by_deadline {
            Some(index) => {
                index.len() == live.len()
                    && live
                        .iter()
                        .all(|(id, w)| index.contains(&(w.deadline, *id)))
            }
            None => live
                .iter()
                .zip(live.iter().skip(1))
                .all(|(a, b)| a.1.deadline <= b.1.deadline),
        };
        self.live == live.len()
            && ends_live
            && ids_ascending
            && arrivals_ordered
            && deadlines_indexed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Instant {
        Instant::from_nanos(n)
    }

    #[test]
    fn fifo_with_cancels_anywhere_and_deadlines_out_of_order() {
        let mut w = Waiters::<()>::default();
        let ids: Vec<WaiterId> = (0..100).map(|i| w.push(t(i), t(1_000 + i), ())).collect();
        assert!(w.by_deadline.is_none() && w.consistent());
        // Cancel most of the middle: tombstones are swept, order is kept.
        for id in &ids[1..90] {
            assert!(w.remove(*id).is_some());
            assert!(w.consistent());
        }
        assert!(w.remove(ids[5]).is_none(), "a cancelled waiter is gone");
        assert_eq!(w.len(), 11);
        assert_eq!(w.earliest_deadline().map(|(d, _)| d), Some(t(1_000)));
        // An earlier deadline than the last one queued: the index takes over.
        let early = w.push(t(200), t(500), ());
        assert!(w.by_deadline.is_some() && w.consistent());
        assert_eq!(w.earliest_deadline().map(|(d, _)| d), Some(t(500)));
        assert_eq!(w.pop_expired(t(499)).map(|(id, _)| id), None);
        assert_eq!(w.pop_expired(t(500)).map(|(id, _)| id), Some(early));
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(ids[0]));
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(ids[90]));
        while w.pop_front().is_some() {
            assert!(w.consistent());
        }
        assert!(w.is_empty() && w.by_deadline.is_none() && w.consistent());
    }

    #[test]
    fn the_deadline_index_goes_once_the_out_of_order_waiter_has_left_the_front() {
        let mut w = Waiters::<()>::default();
        let a = w.push(t(0), t(1_000), ());
        let b = w.push(t(1), t(2_000), ());
        let early = w.push(t(2), t(1_500), ()); // earlier than b's: index
        let c = w.push(t(3), t(1_800), ()); // after early's, but earlier than b's: index
        let d = w.push(t(4), t(3_000), ());
        assert!(w.by_deadline.is_some() && w.consistent());
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(a));
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(b));
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(early));
        assert!(
            w.by_deadline.is_some(),
            "c is still out of order behind b's deadline"
        );
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(c));
        // Only d is left (and whoever comes after, in order): no index, though the queue
        // never emptied.
        let e = w.push(t(5), t(3_000), ());
        assert!(w.by_deadline.is_none() && w.consistent());
        assert_eq!(w.earliest_deadline().map(|(d, _)| d), Some(t(3_000)));
        // A cancel of the out-of-order waiter itself also ends the disorder.
        let f = w.push(t(6), t(2_500), ());
        assert!(w.by_deadline.is_some());
        w.remove(f);
        assert!(w.by_deadline.is_some(), "f is a tombstone behind the front");
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(d));
        assert_eq!(w.pop_front().map(|(id, _)| id), Some(e));
        assert!(w.is_empty() && w.by_deadline.is_none() && w.consistent());
    }

    #[test]
    fn tombstones_never_outnumber_live_waiters_by_more_than_the_slack() {
        let mut w = Waiters::<()>::default();
        let ids: Vec<WaiterId> = (0..1000).map(|i| w.push(t(i), t(i), ())).collect();
        for id in ids.iter().skip(1).step_by(2) {
            w.remove(*id);
            assert!(
                w.queue.len() - w.live <= w.live + 16,
                "{} slots for {}",
                w.queue.len(),
                w.live
            );
        }
        assert_eq!(w.len(), 500);
        // Sweeps happen only when needed: a queue with few tombstones keeps them.
        let mut w = Waiters::<()>::default();
        let ids: Vec<WaiterId> = (0..100).map(|i| w.push(t(i), t(i), ())).collect();
        w.remove(ids[50]);
        assert_eq!(w.queue.len(), 100, "one tombstone is not worth a sweep");
    }

    /// `consistent` backs `check_invariants`: it must notice each kind of corruption.
    #[test]
    fn consistent_notices_each_corruption() {
        fn queue() -> Waiters<()> {
            let mut w = Waiters::<()>::default();
            for i in 0..4 {
                w.push(t(i), t(10 + i), ());
            }
            w.remove(WaiterId(1));
            assert!(w.consistent());
            w
        }
        type Corruption = (&'static str, fn(&mut Waiters<()>));
        let corruptions: Vec<Corruption> = vec![
            ("live count", |w| w.live += 1),
            ("tombstone at the front", |w| w.queue[0].1 = None),
            ("tombstone at the back", |w| w.queue[3].1 = None),
            ("ids out of order", |w| w.queue.swap(0, 2)),
            ("arrivals out of order", |w| {
                w.queue[3].1 = Some(Waiter {
                    arrived: t(0),
                    deadline: t(13),
                    token: (),
                })
            }),
            ("deadlines out of order without an index", |w| {
                w.queue[3].1 = Some(Waiter {
                    arrived: t(3),
                    deadline: t(0),
                    token: (),
                })
            }),
            ("index missing a waiter", |w| {
                w.by_deadline = Some(BTreeSet::new())
            }),
            ("index with a wrong deadline", |w| {
                w.by_deadline = Some(
                    [
                        (t(10), WaiterId(0)),
                        (t(12), WaiterId(2)),
                        (t(99), WaiterId(3)),
                    ]
                    .into(),
                )
            }),
        ];
        for (name, corrupt) in corruptions {
            let mut w = queue();
            corrupt(&mut w);
            assert!(!w.consistent(), "{name} went unnoticed");
        }
    }
}
