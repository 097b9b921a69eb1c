//! pool-proxy: a PostgreSQL transaction pooler on the same core as the pool.
//!
//! This is its foundation, sans IO: [`protocol`] frames the wire protocol into whole
//! messages and looks inside the few that change state. No sockets, no clock, no
//! randomness: a driver (not built yet) feeds it. See `docs/proxy.md`.

pub mod protocol;
