//! A client connection's life: [`login`] (TLS, the startup packet, authentication, the
//! route, the parameters, the cancel key), then the [`relay`] for a database or the
//! admin console for `pgbouncer`.

mod login;
mod params;
mod read_buffer;
mod relay;

use std::sync::Arc;

use pool_tokio::PoolError;

use crate::cancel::CancelTicket;
use crate::proxy::Shared;
use crate::registry::ClientRegistration;
use crate::server::ServerError;

pub(crate) use login::{serve, ClientStream};

/// What a logged-in client's tasks share.
pub(crate) struct ClientContext {
    /// The proxy's number for the client, in logs.
    pub id: u64,
    pub shared: Arc<Shared>,
    pub ticket: CancelTicket,
    /// Its entry in the registry (SHOW CLIENTS), removed when it goes.
    pub client: ClientRegistration,
}

/// What a client is told when the pool lends it no server: a SQLSTATE and a message.
/// A server's own refusal (a wrong upstream password, a database that does not exist)
/// keeps the server's SQLSTATE, so the client sees the real cause at once.
pub(crate) fn unavailable(error: &PoolError<ServerError>) -> (String, String) {
    match error {
        PoolError::Connect {
            source: Some(server),
            ..
        } => match server.sqlstate() {
            Some(code) => (
                code.to_owned(),
                format!("pool-proxy: the server refused the proxy's login: {server}"),
            ),
            None => (
                "08006".to_owned(),
                format!("pool-proxy: cannot connect to the server: {server}"),
            ),
        },
        PoolError::Connect { error, .. } => (
            "08006".to_owned(),
            format!("pool-proxy: cannot connect to the server: {error}"),
        ),
        PoolError::Timeout { .. } => (
            "57P03".to_owned(),
            format!("pool-proxy: query_wait_timeout: {error}"),
        ),
        PoolError::QueueFull { .. } => ("53300".to_owned(), format!("pool-proxy: {error}")),
        PoolError::Closed => (
            "57P01".to_owned(),
            "pool-proxy: the pool is closed: the proxy is shutting down".to_owned(),
        ),
    }
}
