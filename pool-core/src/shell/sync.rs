//! The shell's only source of synchronization primitives. One switch point, as in tokio's
//! `loom` facade, on `cfg` names rather than cargo features: std in pool-core, loom under
//! `cfg(loom)` for exhaustive interleavings, shuttle under `cfg(shuttle)` for randomized
//! schedules. Only the shadow packages `verify/loom` and `verify/shuttle` set those cfgs
//! (they compile this same source as `pool_core_loom` / `pool_core_shuttle` for the root's
//! `cargo test --features loom` / `--features shuttle`), so no feature of any crate can
//! swap the primitives under pool-core's real users.

#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Arc, Mutex, MutexGuard};

#[cfg(all(loom, not(shuttle)))]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Lock, ignoring poison: every critical section leaves the state consistent before it
/// can panic (the core's inputs do not panic), so a panicking holder elsewhere is no
/// reason to stop lending connections.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
