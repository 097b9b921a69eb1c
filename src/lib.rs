//! # A database connection pool you can prove
//!
//! A connection pool for Rust whose core is a sans-IO state machine, model-checked for
//! leaks, fairness and backpressure, and driven unchanged by a deterministic simulator, a
//! tokio adapter, a fuzzer and a reference model.
//!
//! This crate (`pool-suite`, the repository root) holds no code: it is the home of the
//! cross-crate tests in `tests/`. Which crate to use for what:
//!
//! | crate | use it to |
//! |---|---|
//! | `pool-tokio` | pool connections in a tokio application; `PgManager` pools PostgreSQL over tokio-postgres. **Start here.** |
//! | `pool-core` | build an adapter for another runtime: the sans-IO state machine (`Pool`) and the runtime-agnostic shell (`shell::SharedPool`) |
//! | `pool-sim` | see the pool's behaviour under spikes, restarts and faults on a virtual clock (`cargo run --release -p pool-sim`), swarm-test it, size it |
//! | `pool-bench` (`bench/`) | compare against deadpool, bb8 and a bare semaphore |
//! | `users-service` (`examples/`) | read a small axum service that embeds the pool |
//!
//! How it is verified (`docs/verification.md`):
//!
//! * `cargo test --workspace`: unit tests, the proptest reference model, the simulator, the
//!   tokio adapter, and the real PostgreSQL/PgBouncer tests in `tests/` (their clusters come
//!   from `pg-harness`, a test-support crate);
//! * `cargo test --features loom` and `cargo test --features shuttle` here: the shell under
//!   loom's exhaustive interleavings and shuttle's randomized schedules (`tests/loom_shell.rs`,
//!   `tests/shuttle_shell.rs`, against pool-core's source built by `verify/loom` and
//!   `verify/shuttle`);
//! * `fuzz/`: cargo-fuzz targets; `bash scripts/test.sh`: all of the above.
