//! The shell's only source of synchronization primitives. One switch point, as in tokio's
//! `loom` facade: std in production, loom for exhaustive interleavings
//! (`--features loom`), shuttle for randomized schedules (`--features shuttle`).

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Arc, Mutex, MutexGuard};

#[cfg(all(feature = "loom", not(feature = "shuttle")))]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(any(feature = "loom", feature = "shuttle")))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Lock, ignoring poison: every critical section leaves the state consistent before it
/// can panic (the core's inputs do not panic), so a panicking holder elsewhere is no
/// reason to stop lending connections.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
