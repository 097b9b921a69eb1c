//! The proxy's upstream side: raw, logged-in connections to PostgreSQL, lent by a
//! pool-tokio [`Pool`](pool_tokio::Pool) over a [`ServerManager`].
//!
//! tokio-postgres hides its socket, and the proxy must forward a client's bytes to the
//! server as they are, so it opens and speaks the protocol itself:
//!
//! - [`Upstream`], where (a tokio-postgres `Config`, as pool-tokio's URL parser builds it)
//!   and as whom (its user and password, or the client's), and the check and reset
//!   queries.
//! - sockets are opened by pool-tokio's own code ([`pool_tokio::postgres::connect_socket`]:
//!   hosts, ports, `hostaddr`, timeouts, keepalives, TCP and Unix); no TLS upstream yet;
//! - the login: StartupMessage and authentication as a client (SCRAM-SHA-256, MD5,
//!   cleartext, trust), up to the first ReadyForQuery;
//! - [`ServerConnection`], the socket, its startup's ParameterStatus messages, its
//!   [`BackendKey`] and [`CancelAddr`], and what the driver says about it when it returns
//!   it (`pending` cleaning, `broken`);
//! - [`ServerManager`], the pool's [`Manager`](pool_tokio::Manager): connect, check,
//!   reset, the judgement at return and checkout, close;
//! - [`cancel`], a CancelRequest for a server's running query;
//! - [`ServerError`], the server's ErrorResponse, an I/O or protocol error, or a login
//!   that cannot work, classified fatal or transient.

mod cancel;
mod connection;
mod error;
mod exchange;
mod login;
mod manager;
mod upstream;

pub use cancel::cancel;
pub use connection::{BackendKey, CancelAddr, Liveness, ServerConnection, ServerSettings};
pub use error::ServerError;
pub(crate) use exchange::run_to_idle;
pub use manager::{ServerManager, CLOSE_TIMEOUT};
pub use upstream::Upstream;
