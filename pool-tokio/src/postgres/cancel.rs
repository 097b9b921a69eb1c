//! A borrower that gives up on a query (its request timed out: the query future and then
//! the guard are dropped) leaves the query running on the server. Whatever the pool sends
//! next on that session (`ROLLBACK`, or the next borrower's first statement) waits
//! behind it, so the pool cancels it: PostgreSQL's `CancelRequest`, on a new connection
//! to the address this session's socket reached ([`Peer`]), with the session's key
//! (`Client::cancel_token`). Then the session answers the abandoned query with an error
//! (57014, "canceling statement due to user request") and is ready again within
//! milliseconds. See docs/reset.md for why cancel, and not close and replace.
//!
//! The cancel connection's end is waited for: the server closes it only after it has
//! signalled the backend, so a cancel can never arrive late and hit the next borrower's
//! query (a backend that gets a cancel while it waits for a command ignores it).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Error, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::socket::{io_error_sync, RawSocket};
use super::status::{PgConnection, TransactionStatus};

/// Where a connection's socket went: where its cancel requests go.
#[derive(Clone, Debug)]
pub(crate) enum Peer {
    /// The address connected to, and the host name (the TLS server name), if any.
    Tcp {
        addr: SocketAddr,
        hostname: Option<String>,
    },
    /// The socket file.
    Unix(PathBuf),
}

/// The session's status once nothing is queued or in flight, cancelling what the server
/// is still working on, all within `bound`. `Unknown` if the stream could not be followed
/// or the connection ended. An error if it did not settle in time (the caller closes the
/// connection) or the cancel could not be sent.
pub(crate) async fn settle(
    client: &PgConnection,
    tls: Option<&MakeRustlsConnect>,
    bound: Duration,
) -> Result<TransactionStatus, Error> {
    let observer = client.observer();
    let deadline = tokio::time::Instant::now() + bound;
    // The answers seen when the last cancel was sent: one cancel per query in flight.
    let mut cancelled_at = None;
    loop {
        let changed = observer.changed.notified();
        tokio::pin!(changed);
        // Registered before looking: a change after the look still wakes us.
        changed.as_mut().enable();
        let status = client.transaction_status();
        if status != TransactionStatus::Unknown || observer.hopeless() {
            return Ok(status);
        }
        if let Some(answered) = observer.awaiting_server() {
            if cancelled_at != Some(answered) {
                cancelled_at = Some(answered);
                tracing::debug!("cancelling a query its borrower abandoned");
                match tokio::time::timeout_at(deadline, cancel(client, tls)).await {
                    Ok(result) => result?,
                    Err(_) => return Err(not_settled(bound)),
                }
                continue;
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(not_settled(bound));
        }
    }
}

fn not_settled(bound: Duration) -> Error {
    io_error_sync(
        io::ErrorKind::TimedOut,
        format!(
            "a query the last borrower abandoned did not end within {} of the reset \
             (cancel_timeout); closing the connection",
            pool_core::HumanDuration(bound)
        ),
    )
}

/// Send a `CancelRequest` for this session and wait until the server has acted on it.
pub(crate) async fn cancel(
    client: &PgConnection,
    tls: Option<&MakeRustlsConnect>,
) -> Result<(), Error> {
    let token = client.cancel_token();
    let (socket, hostname) = match client.peer() {
        Peer::Tcp { addr, hostname } => {
            let stream = TcpStream::connect(addr).await.map_err(|e| {
                io_error_sync(e.kind(), format!("cancel: connecting to {addr}: {e}"))
            })?;
            (RawSocket::Tcp(stream), hostname.as_deref())
        }
        #[cfg(unix)]
        Peer::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(|e| {
                io_error_sync(
                    e.kind(),
                    format!("cancel: connecting to {}: {e}", path.display()),
                )
            })?;
            (RawSocket::Unix(stream), None)
        }
        #[cfg(not(unix))]
        Peer::Unix(_) => return Err(io_error_sync(io::ErrorKind::Unsupported, "no Unix sockets")),
    };
    let stream = UntilClosed {
        inner: socket,
        shut: false,
    };
    match (tls, hostname) {
        (Some(make), Some(name)) => {
            let mut make = make.clone();
            let connect =
                <MakeRustlsConnect as MakeTlsConnect<UntilClosed<RawSocket>>>::make_tls_connect(
                    &mut make, name,
                )
                .map_err(|e| io_error_sync(io::ErrorKind::InvalidInput, format!("cancel: {e}")))?;
            token.cancel_query_raw(stream, connect).await
        }
        _ => token.cancel_query_raw(stream, NoTls).await,
    }
}

/// A stream whose shutdown, after sending its own end, waits for the server to close
/// the other (discarding anything it sends): the server has then done what was asked.
pub(crate) struct UntilClosed<S> {
    inner: S,
    /// Our end is shut: now reading until theirs is.
    shut: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for UntilClosed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for UntilClosed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.shut = true;
        }
        let mut scratch = [0u8; 64];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                // A reset is a close too.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
