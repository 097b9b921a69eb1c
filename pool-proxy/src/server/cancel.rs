//! Cancelling a server's running query: a CancelRequest on a connection of its own.

use std::io;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use super::connection::{BackendKey, CancelAddr};
use super::exchange::send;

/// Ask the server at `addr` to cancel what the connection with `key` is running: a new
/// connection, the 16-byte CancelRequest, and a wait until the server closes it (as libpq
/// does: then the request has been handled). The server answers nothing either way, so
/// `Ok` says the request was delivered, not that a query was cancelled. Not bounded in
/// time: wrap it in a timeout.
pub async fn cancel(addr: &CancelAddr, key: BackendKey) -> io::Result<()> {
    let mut request = BytesMut::new();
    frontend::cancel_request(key.pid, key.secret, &mut request);
    match addr {
        CancelAddr::Tcp(addr) => {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            deliver(&mut stream, &request).await
        }
        #[cfg(unix)]
        CancelAddr::Unix(path) => deliver(&mut UnixStream::connect(path).await?, &request).await,
    }
}

async fn deliver(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &[u8],
) -> io::Result<()> {
    send(stream, request).await?;
    let mut rest = [0u8; 64];
    while stream.read(&mut rest).await? > 0 {}
    Ok(())
}
