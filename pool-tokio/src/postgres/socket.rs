//! Opening a PostgreSQL connection on a socket the manager opens itself, so the byte
//! stream can be observed (see `status`), then `Config::connect_raw` over it.
//!
//! This follows tokio-postgres's own `connect` (0.7): the config's hosts in order (or
//! shuffled with `load_balance_hosts=random`), each `hostaddr` instead of resolving its
//! host, one port for all or one per host, every resolved address of a host name in turn,
//! `connect_timeout` per socket connect, `TCP_NODELAY`, keepalives and (Linux)
//! `tcp_user_timeout`, a Unix socket `<dir>/.s.PGSQL.<port>` when the host is a path, and
//! `target_session_attrs=read-write|read-only` checked after the login. The last error is
//! returned when every host fails.
//!
//! The socket part alone is [`connect_socket`]: public, so that a client speaking the
//! protocol itself (pool-proxy's server connections) opens its sockets the same way, with
//! its own login in place of `connect_raw`.
//!
//! Not carried over: `Client::cancel_token()` on these clients has no socket to connect
//! to (tokio-postgres keeps that private), so `CancelToken::cancel_query` fails;
//! `cancel_query_raw` over a stream the caller opens still works. The connection
//! remembers the address it reached ([`Peer`]) so that the manager can cancel a query a
//! borrower abandoned (see `cancel`).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio_postgres::config::{Host, LoadBalanceHosts, SslNegotiation, TargetSessionAttrs};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Config, Error, NoTls, SimpleQueryMessage};

use super::cancel::Peer;
use super::status::{Driven, ObservedStream, Observer, PgConnection};

/// The connect error (its cause) when `target_session_attrs=read-write` finds a server
/// that does not allow writes: in recovery (a standby) or `default_transaction_read_only`.
pub const NOT_WRITABLE: &str = "database does not allow writes";

/// A TCP or Unix socket.
pub enum RawSocket {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

/// The stream tokio-postgres is given: the socket, observed.
pub type ObservedSocket = ObservedStream<RawSocket>;

impl AsyncRead for RawSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            RawSocket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RawSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RawSocket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            RawSocket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            RawSocket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RawSocket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            RawSocket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TLS connector whose streams are observed above TLS (the plaintext), sharing the
/// connection's observer.
pub struct ObserveTls<T> {
    inner: T,
    observer: Arc<Observer>,
}

impl<S, T: TlsConnect<S>> TlsConnect<S> for ObserveTls<T> {
    type Stream = ObservedStream<T::Stream>;
    type Error = T::Error;
    type Future = ObserveTlsFuture<T::Future>;

    fn connect(self, stream: S) -> Self::Future {
        ObserveTlsFuture {
            inner: Box::pin(self.inner.connect(stream)),
            observer: Some(self.observer),
        }
    }
}

/// [`ObserveTls`]'s handshake.
pub struct ObserveTlsFuture<F> {
    inner: Pin<Box<F>>,
    observer: Option<Arc<Observer>>,
}

impl<F, S, E> std::future::Future for ObserveTlsFuture<F>
where
    F: std::future::Future<Output = Result<S, E>>,
{
    type Output = Result<ObservedStream<S>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stream = match self.inner.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        let observer = self.observer.take().unwrap_or_default();
        Poll::Ready(Ok(ObservedStream::new(stream, observer, true)))
    }
}

/// Connect as `config` says, TLS through `tls` when given (and not on a Unix socket).
pub(crate) async fn connect<M>(config: &Config, mut tls: Option<M>) -> Result<PgConnection, Error>
where
    M: MakeTlsConnect<ObservedSocket> + Send,
    M::TlsConnect: Send,
    <M::TlsConnect as TlsConnect<ObservedSocket>>::Future: Send,
    M::Stream: Send + 'static,
{
    let result = connect_socket(config, |socket, hostname| {
        // Like tokio-postgres, a TLS connector that refuses the host name fails the
        // connect at once; PostgreSQL has no TLS over Unix sockets (no host name here): a
        // `require` fails when the server says so.
        let connector = match (tls.as_mut(), hostname) {
            (Some(make), Some(name)) => Some(
                make.make_tls_connect(name)
                    .map_err(|e| tls_error(e.into()))?,
            ),
            _ => None,
        };
        // Where the socket went, so that a query a borrower abandons can be cancelled.
        let peer = match &socket {
            RawSocket::Tcp(s) => Peer::Tcp {
                addr: s
                    .peer_addr()
                    .map_err(|e| io_error_sync(e.kind(), e.to_string()))?,
                hostname: hostname.map(str::to_owned),
            },
            #[cfg(unix)]
            RawSocket::Unix(s) => Peer::Unix(
                s.peer_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
                    .ok_or_else(|| {
                        io_error_sync(io::ErrorKind::InvalidInput, "Unix socket peer has no path")
                    })?,
            ),
        };
        Ok(handshake(config, socket, peer, connector))
    })
    .await;
    match result {
        Ok(c) => Ok(c),
        // tokio-postgres checks the same before any I/O: its error is the right one.
        Err(SocketError::InvalidHosts(what)) => Err(config
            .connect(NoTls)
            .await
            .err()
            .unwrap_or_else(|| io_error_sync(io::ErrorKind::InvalidInput, what))),
        Err(SocketError::Io(e)) => Err(io_error_sync(e.kind(), e.to_string())),
        Err(SocketError::Attempt(e)) => Err(e),
    }
}

/// Why [`connect_socket`] found no server: the last failure.
#[derive(Debug)]
pub enum SocketError<E> {
    /// The config names no host, or its hosts, `hostaddr`s and ports do not line up
    /// (what is wrong, e.g. `"number of hosts (2) and ports (3) differ"`).
    InvalidHosts(String),
    /// No socket to the last address tried: `error connecting to server at <addr>:<port>:
    /// <cause>` (refused, timed out, not resolved).
    Io(io::Error),
    /// The last login's own error (or the first refused synchronously).
    Attempt(E),
}

impl<E: fmt::Display> fmt::Display for SocketError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::InvalidHosts(what) => write!(f, "invalid hosts: {what}"),
            SocketError::Io(e) => e.fmt(f),
            SocketError::Attempt(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SocketError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocketError::InvalidHosts(_) => None,
            SocketError::Io(e) => e.source(),
            SocketError::Attempt(e) => e.source(),
        }
    }
}

/// Open sockets to the servers `config` names, as libpq and tokio-postgres do (see the
/// module docs: hosts in order or shuffled, `hostaddr`, ports, every resolved address,
/// `connect_timeout` per socket, `TCP_NODELAY`, keepalives, `tcp_user_timeout`, Unix
/// sockets), and log in over each with `attempt` until one succeeds.
///
/// `attempt` gets the socket and the host name it was reached by (`None` for a Unix socket
/// or a bare `hostaddr`: no TLS server name). It returns the login to run, which on failure
/// moves on to the next address, or an error that ends the connect at once (a setting that
/// no other address would make right).
pub async fn connect_socket<T, E, F, Fut>(
    config: &Config,
    mut attempt: F,
) -> Result<T, SocketError<E>>
where
    F: FnMut(RawSocket, Option<&str>) -> Result<Fut, E>,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let count = hosts.len().max(addrs.len());
    if count == 0 {
        return Err(SocketError::InvalidHosts("no host given".into()));
    }
    if !(hosts.is_empty() || addrs.is_empty() || hosts.len() == addrs.len()) {
        return Err(SocketError::InvalidHosts(format!(
            "number of hosts ({}) and hostaddrs ({}) differ",
            hosts.len(),
            addrs.len()
        )));
    }
    if !(ports.len() <= 1 || ports.len() == count) {
        return Err(SocketError::InvalidHosts(format!(
            "number of hosts ({count}) and ports ({}) differ",
            ports.len()
        )));
    }
    let mut order: Vec<usize> = (0..count).collect();
    if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
        shuffle(&mut order);
    }
    let mut last = None;
    for i in order {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let hostname = match hosts.get(i) {
            Some(Host::Tcp(h)) => Some(h.as_str()),
            _ => None,
        };
        let result = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => connect_tcp(config, &[*ip], hostname, port, &mut attempt).await,
            (None, Some(Host::Tcp(name))) => {
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(found) => {
                        let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                        if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
                            shuffle(&mut ips);
                        }
                        connect_tcp(config, &ips, hostname, port, &mut attempt).await
                    }
                    Err(e) => Err(Failure::Next(SocketError::Io(socket_error(e, name, port)))),
                }
            }
            #[cfg(unix)]
            (None, Some(Host::Unix(dir))) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                match with_timeout(UnixStream::connect(&path), config.get_connect_timeout()).await {
                    Ok(s) => match attempt(RawSocket::Unix(s), None) {
                        Ok(login) => login
                            .await
                            .map_err(|e| Failure::Next(SocketError::Attempt(e))),
                        Err(e) => Err(Failure::Stop(e)),
                    },
                    Err(e) => Err(Failure::Next(SocketError::Io(socket_error(
                        e,
                        &path.display().to_string(),
                        port,
                    )))),
                }
            }
            _ => Err(Failure::Next(SocketError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no host",
            )))),
        };
        match result {
            Ok(c) => return Ok(c),
            Err(Failure::Stop(e)) => return Err(SocketError::Attempt(e)),
            Err(Failure::Next(e)) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| SocketError::Io(io::Error::new(io::ErrorKind::InvalidInput, "no host"))))
}

/// How one address failed: try the next, or end the connect.
enum Failure<E> {
    Next(SocketError<E>),
    Stop(E),
}

async fn connect_tcp<T, E, F, Fut>(
    config: &Config,
    ips: &[IpAddr],
    hostname: Option<&str>,
    port: u16,
    attempt: &mut F,
) -> Result<T, Failure<E>>
where
    F: FnMut(RawSocket, Option<&str>) -> Result<Fut, E>,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = None;
    for ip in ips {
        let stream = match with_timeout(
            TcpStream::connect((*ip, port)),
            config.get_connect_timeout(),
        )
        .await
        .and_then(|s| configure_tcp(config, s))
        {
            Ok(s) => s,
            Err(e) => {
                last = Some(SocketError::Io(socket_error(e, &ip.to_string(), port)));
                continue;
            }
        };
        let login = attempt(RawSocket::Tcp(stream), hostname).map_err(Failure::Stop)?;
        match login.await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(SocketError::Attempt(e)),
        }
    }
    Err(Failure::Next(last.unwrap_or_else(|| {
        SocketError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve any addresses",
        ))
    })))
}

fn configure_tcp(config: &Config, stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&stream);
    #[cfg(target_os = "linux")]
    if let Some(t) = config.get_tcp_user_timeout() {
        sock.set_tcp_user_timeout(Some(*t))?;
    }
    if config.get_keepalives() {
        #[allow(unused_mut)]
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        #[cfg(any(target_os = "linux", target_os = "macos", windows))]
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        sock.set_tcp_keepalive(&keepalive)?;
    }
    Ok(stream)
}

/// Log in over `socket`, observed; TLS through `connector` (observed above TLS).
async fn handshake<T>(
    config: &Config,
    socket: RawSocket,
    peer: Peer,
    connector: Option<T>,
) -> Result<PgConnection, Error>
where
    T: TlsConnect<ObservedSocket> + Send,
    T::Future: Send,
    T::Stream: Send + 'static,
{
    let observer = Arc::new(Observer::default());
    // With direct TLS negotiation the first byte is already TLS: observe above it only.
    let direct = config.get_ssl_negotiation() == SslNegotiation::Direct && connector.is_some();
    let stream = ObservedStream::new(socket, observer.clone(), !direct);
    let client = match connector {
        Some(connector) => {
            let tls = ObserveTls {
                inner: connector,
                observer: observer.clone(),
            };
            let (client, connection) = config.connect_raw(stream, tls).await?;
            spawn_connection(Driven::new(connection, observer.clone()));
            client
        }
        None => {
            let (client, connection) = config.connect_raw(stream, NoTls).await?;
            spawn_connection(Driven::new(connection, observer.clone()));
            client
        }
    };
    if config.get_target_session_attrs() != TargetSessionAttrs::Any {
        let rows = client.simple_query("SHOW transaction_read_only").await?;
        let read_only = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "on"),
            _ => None,
        });
        let wanted_read_only = config.get_target_session_attrs() == TargetSessionAttrs::ReadOnly;
        if read_only.is_some_and(|ro| ro != wanted_read_only) {
            let what = if wanted_read_only {
                "database is not read-only"
            } else {
                NOT_WRITABLE
            };
            return Err(io_error(io::ErrorKind::PermissionDenied, what).await);
        }
    }
    Ok(PgConnection::new(client, observer, peer))
}

/// Drive a client's socket until it closes.
fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %crate::error::error_chain(&e), "postgres connection ended");
        }
    });
}

async fn with_timeout<T>(
    connect: impl std::future::Future<Output = io::Result<T>>,
    timeout: Option<&Duration>,
) -> io::Result<T> {
    match timeout {
        Some(t) => match tokio::time::timeout(*t, connect).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection timed out",
            )),
        },
        None => connect.await,
    }
}

fn shuffle<T>(items: &mut [T]) {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// `error connecting to server at <addr>:<port>: <cause>`, of the cause's kind.
fn socket_error(e: io::Error, addr: &str, port: u16) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("error connecting to server at {addr}:{port}: {e}"),
    )
}

/// A TLS error as tokio-postgres makes it (`error performing TLS handshake: ...`, which
/// `classify` calls fatal): `connect_raw` over a stream that agrees to TLS, with a TLS
/// connector that fails with `e`. No I/O happens.
fn tls_error(e: Box<dyn std::error::Error + Send + Sync>) -> Error {
    let mut config = Config::new();
    config
        .user("-")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let fut = config.connect_raw(Failing::agreeing_to_tls(), FailTls(Some(e)));
    match poll_once(fut) {
        Some(Err(e)) => e,
        _ => unreachable_error(),
    }
}

/// A TLS connector that fails with its error.
struct FailTls(Option<Box<dyn std::error::Error + Send + Sync>>);

impl<S> TlsConnect<S> for FailTls {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::future::Ready<Result<Self::Stream, Self::Error>>;

    fn connect(mut self, _: S) -> Self::Future {
        std::future::ready(Err(self
            .0
            .take()
            .unwrap_or_else(|| "TLS connector failed".into())))
    }
}

/// Poll a future that needs no I/O once, without an executor.
fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let fut = std::pin::pin!(fut);
    let waker = std::task::Waker::from(Arc::new(Noop));
    match std::future::Future::poll(fut, &mut Context::from_waker(&waker)) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// A tokio-postgres [`Error`] carrying `message` (tokio-postgres has no public
/// constructor): the error `connect_raw` returns when its stream fails at once. Its
/// `Display` is tokio-postgres's "error communicating with the server"; the cause
/// (`source`) is the message. No I/O happens.
async fn io_error(kind: io::ErrorKind, message: impl Into<String>) -> Error {
    let mut config = Config::new();
    config.user("-");
    match config
        .connect_raw(
            Failing(Some(io::Error::new(kind, message.into())), false),
            NoTls,
        )
        .await
    {
        Err(e) => e,
        // A stream that fails every call cannot log in.
        Ok(_) => unreachable_error(),
    }
}

/// [`io_error`] without an executor: the future completes on its first poll.
pub(crate) fn io_error_sync(kind: io::ErrorKind, message: impl Into<String>) -> Error {
    poll_once(io_error(kind, message)).unwrap_or_else(unreachable_error)
}

#[cold]
fn unreachable_error() -> Error {
    // `connect_raw` over a failing stream finishes at its first write: never reached.
    Error::__private_api_timeout()
}

/// A stream whose every operation fails with its error (then with `BrokenPipe`), or
/// that accepts writes and answers `S` (TLS accepted) once.
struct Failing(Option<io::Error>, bool);

impl Failing {
    fn agreeing_to_tls() -> Self {
        Failing(None, true)
    }

    fn take(&mut self) -> io::Error {
        self.0
            .take()
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl AsyncRead for Failing {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.1) {
            buf.put_slice(b"S");
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Err(this.take()))
    }
}

impl AsyncWrite for Failing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.1 {
            return Poll::Ready(Ok(b.len()));
        }
        Poll::Ready(Err(this.take()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.1 {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Err(this.take()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_errors_read_like_tokio_postgres_errors() {
        let e = socket_error(
            io::Error::from(io::ErrorKind::ConnectionRefused),
            "10.0.0.1",
            5433,
        );
        let e = io_error_sync(e.kind(), e.to_string());
        let text = crate::error::error_chain(&e);
        assert!(
            text.contains("error connecting to server at 10.0.0.1:5433"),
            "{text}"
        );
        assert_eq!(
            crate::postgres::classify(&e),
            pool_core::ErrorClass::Transient
        );

        let e = tls_error("invalid DNS name".into());
        let text = crate::error::error_chain(&e);
        assert!(text.starts_with("error performing TLS handshake"), "{text}");
        assert!(text.contains("invalid DNS name"), "{text}");
        assert_eq!(crate::postgres::classify(&e), pool_core::ErrorClass::Fatal);
    }

    #[test]
    fn shuffle_keeps_every_item() {
        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
