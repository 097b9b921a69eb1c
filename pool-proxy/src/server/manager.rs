//! `ServerManager`: server connections as pool-tokio's pool lends them.

use std::time::Duration;

use bytes::BytesMut;
use pool_core::{ErrorClass, Verdict};
use pool_tokio::postgres::{connect_socket, target};
use pool_tokio::{Manager, Target};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::connection::{Liveness, ServerConnection};
use super::error::ServerError;
use super::exchange::{run_to_idle, send};
use super::login::login;
use super::upstream::Upstream;
use crate::session::Release;

/// How long a close may spend saying goodbye (Terminate) to a server before the socket is
/// just dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens, checks, cleans and judges server connections for one [`Upstream`].
#[derive(Debug, Clone)]
pub struct ServerManager {
    upstream: Upstream,
}

impl ServerManager {
    pub fn new(upstream: Upstream) -> Self {
        ServerManager { upstream }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

impl Manager for ServerManager {
    type Connection = ServerConnection;
    type Error = ServerError;

    /// A socket as pool-tokio opens its own (each host and address in turn), then the
    /// login; the first server that lets the proxy in.
    async fn connect(&self) -> Result<ServerConnection, ServerError> {
        let upstream = &self.upstream;
        connect_socket(upstream.config(), |socket, _host| {
            Ok(login(upstream, socket))
        })
        .await
        .map_err(ServerError::from)
    }

    fn classify(&self, error: &ServerError) -> ErrorClass {
        error.class()
    }

    /// The check query (none when empty), answered up to a ReadyForQuery that says idle.
    async fn check(&self, conn: &mut ServerConnection) -> Result<(), ServerError> {
        match self.upstream.check_query() {
            "" => Ok(()),
            query => run_to_idle(conn, query).await,
        }
    }

    /// What `pending` asks for, each statement its own Query answered up to an idle
    /// ReadyForQuery: `Rollback` runs `ROLLBACK` (then the reset query when `reset`),
    /// `Reset` the reset query (none when it is empty). Any error closes the server.
    async fn reset(&self, conn: &mut ServerConnection) -> Result<(), ServerError> {
        let reset_query = self.upstream.reset_query();
        let (rollback, reset) = match conn.pending {
            None | Some(Release::Clean) => (false, false),
            Some(Release::Reset) => (false, true),
            Some(Release::Rollback { reset }) => (true, reset),
        };
        if rollback {
            run_to_idle(conn, "ROLLBACK").await?;
        }
        if reset && !reset_query.is_empty() {
            run_to_idle(conn, reset_query).await?;
            // DISCARD ALL puts every setting back to the session's defaults and deallocates
            // every statement. Another reset query may keep statements, but a record that
            // knows of fewer than the server has is safe (see `ServerStatements`).
            conn.settings.clear();
            conn.statements.clear();
        }
        conn.pending = None;
        Ok(())
    }

    /// `broken` or a socket that is closed or has unsolicited bytes: `Broken`; something
    /// pending: `NeedsReset`; else `Reusable`. No waiting: the socket is only looked at.
    fn is_broken(&self, conn: &mut ServerConnection) -> Verdict {
        if conn.broken || conn.liveness() != Liveness::Quiet {
            return Verdict::Broken;
        }
        match conn.pending {
            None => Verdict::Reusable,
            Some(Release::Clean) => {
                conn.pending = None;
                Verdict::Reusable
            }
            Some(Release::Reset | Release::Rollback { .. }) => Verdict::NeedsReset,
        }
    }

    /// A Terminate, so the server logs a clean disconnect, within [`CLOSE_TIMEOUT`];
    /// nothing for a `broken` connection, whose stream may end inside a message (the
    /// Terminate's bytes would be read as part of it).
    async fn close(&self, mut conn: ServerConnection) {
        if conn.broken {
            return;
        }
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            send(&mut conn, &buf).await?;
            conn.shutdown().await
        })
        .await;
    }

    fn target(&self) -> Target {
        target(self.upstream.config())
    }
}
