//! A queued waiter's answer cell, shared by the pool (which answers it inside the pool's
//! critical section) and the waiting [`super::Acquire`] (which takes the answer out
//! without the pool lock).
//!
//! Why a cell of its own: with the answer kept in the pool's state, a hand-off took the
//! pool lock twice (the release that grants, then the woken waiter's pick-up), and under
//! contention the pick-up queued behind other tasks' acquires and releases. The cell's
//! lock is shared by two parties only, and the pool takes it while already holding its
//! own: locks nest pool → cell, never the other way.

use std::collections::VecDeque;
use std::task::{Context, Waker};

use crate::action::{Grant, Rejection};

use super::sync::{lock, Arc, Mutex};

/// What a queued waiter has been told so far.
pub(super) enum Answer<C> {
    /// No answer yet; the waker of the task to tell.
    Waiting(Option<Waker>),
    Granted(Grant, C),
    Rejected(Rejection),
    /// The waiter took its answer, or gave it back.
    Taken,
}

pub(super) struct Cell<C> {
    answer: Mutex<Answer<C>>,
}

impl<C> Cell<C> {
    pub(super) fn waiting(waker: &Waker) -> Self {
        Cell {
            answer: Mutex::new(Answer::Waiting(Some(waker.clone()))),
        }
    }

    /// A spare cell made ready for a new waiter, if no earlier waiter still holds it.
    fn reuse(mut cell: Arc<Self>, waker: &Waker) -> Option<Arc<Self>> {
        let answer = Arc::get_mut(&mut cell)?
            .answer
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *answer = Answer::Waiting(Some(waker.clone()));
        Some(cell)
    }

    /// Store the pool's answer; returns the waker to wake once the pool lock is released.
    pub(super) fn answer(&self, answer: Answer<C>) -> Option<Waker> {
        match std::mem::replace(&mut *lock(&self.answer), answer) {
            Answer::Waiting(waker) => waker,
            _ => panic!("shell invariant: a waiter was answered twice"),
        }
    }

    /// The answer if there is one (taken out); otherwise keep the waker current.
    pub(super) fn take(&self, cx: &Context<'_>) -> Option<Result<(Grant, C), Rejection>> {
        let mut answer = lock(&self.answer);
        match &mut *answer {
            Answer::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                None
            }
            _ => match std::mem::replace(&mut *answer, Answer::Taken) {
                Answer::Granted(grant, connection) => Some(Ok((grant, connection))),
                Answer::Rejected(rejection) => Some(Err(rejection)),
                Answer::Waiting(_) | Answer::Taken => {
                    panic!("shell invariant: an answer was taken twice")
                }
            },
        }
    }

    /// Empty the cell for a waiter that gives up. Called inside the pool's critical
    /// section, so the answer cannot change in between.
    pub(super) fn abandon(&self) -> Answer<C> {
        std::mem::replace(&mut *lock(&self.answer), Answer::Taken)
    }

    pub(super) fn is_waiting(&self) -> bool {
        matches!(*lock(&self.answer), Answer::Waiting(_))
    }
}

/// Answered cells, kept for reuse once their waiters let go: a cell per queued acquire
/// would otherwise be an allocation and a free on every hand-off.
pub(super) struct Spares<C> {
    cells: VecDeque<Arc<Cell<C>>>,
    /// Cells made new rather than reused (tests check that reuse happens).
    #[cfg(test)]
    pub(super) made: usize,
}

impl<C> Spares<C> {
    /// Enough for every waiter answered in a burst to come back before it is needed.
    const KEEP: usize = 64;

    pub(super) fn new() -> Self {
        Spares {
            cells: VecDeque::new(),
            #[cfg(test)]
            made: 0,
        }
    }

    /// A cell for a new waiter: the oldest spare if its waiter has let go, else a new one.
    /// A spare still held (its waiter not yet polled, or leaked) is not waited for.
    pub(super) fn take(&mut self, waker: &Waker) -> Arc<Cell<C>> {
        if let Some(cell) = self.cells.pop_front().and_then(|c| Cell::reuse(c, waker)) {
            return cell;
        }
        #[cfg(test)]
        {
            self.made += 1;
        }
        Arc::new(Cell::waiting(waker))
    }

    pub(super) fn keep(&mut self, cell: Arc<Cell<C>>) {
        if self.cells.len() < Self::KEEP {
            self.cells.push_back(cell);
        }
    }
}
