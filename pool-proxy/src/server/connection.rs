//! `ServerConnection`: one logged-in server, its socket and what its startup said.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use pool_tokio::postgres::RawSocket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp;

use crate::session::ServerStatements;
#[cfg(unix)]
use tokio::net::unix;

use crate::session::Release;

/// The key a CancelRequest for a server's running query must carry (BackendKeyData).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    /// The server process's id.
    pub pid: i32,
    /// The secret proving the canceller knows this connection.
    pub secret: i32,
}

impl fmt::Debug for BackendKey {
    /// Omits the secret: whoever holds it can cancel this server's queries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendKey")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Where a CancelRequest for a server goes: the address its own socket reached (of the
/// config's hosts and addresses, the one that answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelAddr {
    Tcp(SocketAddr),
    /// The Unix socket's path (`<dir>/.s.PGSQL.<port>`).
    #[cfg(unix)]
    Unix(PathBuf),
}

impl CancelAddr {
    /// The peer of a connected socket.
    pub(crate) fn of(socket: &RawSocket) -> io::Result<CancelAddr> {
        match socket {
            RawSocket::Tcp(s) => s.peer_addr().map(CancelAddr::Tcp),
            #[cfg(unix)]
            RawSocket::Unix(s) => s
                .peer_addr()?
                .as_pathname()
                .map(|p| CancelAddr::Unix(p.to_path_buf()))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "Unix socket peer has no path")
                }),
        }
    }
}

/// One server connection, logged in and idle when the pool lends it. The proxy's driver
/// reads and writes its socket directly (through [`ServerConnection::split`] or the
/// `AsyncRead`/`AsyncWrite` impls), and before returning it says what it needs:
/// `pending` (the cleaning, run by the pool's reset) and `broken` (close it).
pub struct ServerConnection {
    stream: RawSocket,
    /// The ParameterStatus messages of its startup, in order (`server_version`,
    /// `client_encoding`, `TimeZone`, ...).
    pub parameters: Vec<(String, String)>,
    /// Its BackendKeyData: what a CancelRequest for it carries.
    pub key: BackendKey,
    /// Where a CancelRequest for it goes.
    pub cancel_addr: CancelAddr,
    /// What cleaning it needs before its next borrower, set by the driver before returning
    /// it (`None`: none); cleared by the reset.
    pub pending: Option<Release>,
    /// The settings the proxy made on it over its startup defaults (lower-case name →
    /// value), so a client's startup settings are applied only where they differ; a
    /// reset forgets them, as the server does.
    pub settings: ServerSettings,
    /// The client statements prepared on it (transaction mode): lent to each client's
    /// session with the server, handed back with it; a reset forgets them, as the server.
    pub statements: ServerStatements,
    /// Set by the driver when its byte stream can no longer be trusted (a request in
    /// flight, a protocol error): it is closed, without even a Terminate.
    pub broken: bool,
}

/// Setting name (lower case) → value: what the proxy set on a server over its defaults,
/// or what a client wants over its route's defaults.
pub type ServerSettings = std::collections::BTreeMap<String, String>;

/// What a look at an idle server's socket found, without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing to read: as an idle server should be.
    Quiet,
    /// End of stream or a socket error: the server is gone.
    Closed,
    /// Bytes nobody asked for (e.g. the FATAL PostgreSQL sends when its backend is
    /// terminated): the stream belongs to no request.
    Unsolicited,
}

impl ServerConnection {
    pub(crate) fn new(stream: RawSocket, cancel_addr: CancelAddr) -> Self {
        ServerConnection {
            stream,
            parameters: Vec::new(),
            key: BackendKey { pid: 0, secret: 0 },
            cancel_addr,
            pending: None,
            settings: ServerSettings::new(),
            statements: ServerStatements::default(),
            broken: false,
        }
    }

    /// The proxy's end of a TCP connection (what the server's `pg_stat_activity` shows as
    /// the client's address and port); `None` over a Unix socket.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.stream {
            RawSocket::Tcp(s) => s.local_addr().ok(),
            #[cfg(unix)]
            RawSocket::Unix(_) => None,
        }
    }

    /// The value of a parameter the server reported at startup.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Borrowed read and write halves, to read and write at once.
    pub fn split(
        &mut self,
    ) -> (
        impl AsyncRead + Unpin + Send + '_,
        impl AsyncWrite + Unpin + Send + '_,
    ) {
        match &mut self.stream {
            RawSocket::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            #[cfg(unix)]
            RawSocket::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }

    /// Look at the socket without waiting: a server lent or returned idle has nothing to
    /// say, so any byte (or the end of the stream) means it is no longer usable. Reads at
    /// most one byte, which is lost: call it only on a connection about to be judged.
    pub fn liveness(&self) -> Liveness {
        let mut byte = [0u8; 1];
        let read = match &self.stream {
            RawSocket::Tcp(s) => s.try_read(&mut byte),
            #[cfg(unix)]
            RawSocket::Unix(s) => s.try_read(&mut byte),
        };
        match read {
            Ok(0) => Liveness::Closed,
            Ok(_) => Liveness::Unsolicited,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Liveness::Quiet,
            Err(_) => Liveness::Closed,
        }
    }
}

impl fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConnection")
            .field("key", &self.key)
            .field("cancel_addr", &self.cancel_addr)
            .field("parameters", &self.parameters.len())
            .field("pending", &self.pending)
            .field("statements", &self.statements.len())
            .field("broken", &self.broken)
            .finish()
    }
}

impl AsyncRead for ServerConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The read half of [`ServerConnection::split`].
enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    #[cfg(unix)]
    Unix(unix::ReadHalf<'a>),
}

/// The write half of [`ServerConnection::split`].
enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    #[cfg(unix)]
    Unix(unix::WriteHalf<'a>),
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            ReadHalf::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
