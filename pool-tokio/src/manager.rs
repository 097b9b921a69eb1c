//! What a user plugs in: how to open, check, reset and judge one kind of connection.

use std::future::Future;

use pool_core::{ErrorClass, Verdict};

/// Opens and looks after connections of one kind. The pool calls it from spawned tasks;
/// it never holds the pool's lock while a manager method runs.
///
/// Implementations may write `async fn` for the async methods, as long as the futures
/// are `Send`.
pub trait Manager: Send + Sync + 'static {
    type Connection: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Open a new connection. The pool enforces `connect_timeout` itself: a connect that
    /// takes longer is abandoned (its task aborted) and counted as a transient failure.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Whether retrying a failed connect can help. `Fatal` errors (wrong password, unknown
    /// database) fail every waiter at once instead of letting them time out.
    fn classify(&self, error: &Self::Error) -> ErrorClass;

    /// Health-check an idle connection before lending it (only when it sat idle longer
    /// than `check_after_idle`). Bounded by `check_timeout`.
    fn check(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Clean a returned connection that [`Manager::is_broken`] judged `NeedsReset`
    /// (e.g. roll back an open transaction). An error closes the connection.
    fn reset(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = connection;
        async { Ok(()) }
    }

    /// Judge a connection as it comes back from a borrower: cheap and synchronous (no
    /// I/O), called inside the guard's `drop`. `Broken` closes it, `NeedsReset` runs
    /// [`Manager::reset`] before it is lent again.
    fn is_broken(&self, connection: &mut Self::Connection) -> Verdict;

    /// Close a connection the pool is done with. The default just drops it.
    fn close(&self, connection: Self::Connection) -> impl Future<Output = ()> + Send {
        async move { drop(connection) }
    }

    /// What it connects to, named on the pool's `pool.get` and `pool.connect` spans
    /// (OpenTelemetry's `db.system.name`, `server.address`, `server.port`). Default:
    /// nothing known.
    fn target(&self) -> Target {
        Target::default()
    }
}

/// What a manager connects to, for spans: see [`Manager::target`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// OpenTelemetry's `db.system.name`, e.g. `postgresql`.
    pub system: Option<&'static str>,
    /// The server's host name, IP address or Unix socket path (never credentials).
    pub address: Option<String>,
    pub port: Option<u16>,
}
