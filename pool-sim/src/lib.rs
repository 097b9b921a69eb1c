//! # pool-sim
//!
//! A deterministic simulator for `pool-core`: a virtual clock driving a discrete-event
//! queue, a seeded random generator, a simulated PostgreSQL server and simulated clients,
//! with fault injection. It drives the real [`pool_core::Pool`] through its public API and
//! checks the pool's invariants after every input. See `docs/simulator.md`.

pub mod cli;
pub mod client;
pub mod db;
pub mod faults;
pub mod plot;
pub mod report;
pub mod rng;
pub mod scenarios;
pub mod size;
pub mod swarm;
pub mod vtime;
pub mod world;
