//! A queued waiter's answer cell, shared by the pool (which answers it inside the pool's
//! critical section) and the waiting [`super::Acquire`] (which takes the answer out
//! without the pool lock).
//!
//! Why a cell of its own: with the answer kept in the pool's state, a hand-off took the
//! pool lock twice (the release that grants, then the woken waiter's pick-up), and under
//! contention the pick-up queued behind other tasks' acquires and releases. The cell's
//! lock is shared by two parties only, and the pool takes it while already holding its
//! own: locks nest pool → cell, never the other way.

use std::task::{Context, Waker};

use crate::action::{Grant, Rejection};

use super::sync::{lock, Mutex};

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
