//! The relay: one client's task after startup. It owns the sockets and carries out what
//! the sans-IO [`ClientSession`] decides: it feeds the session the client's bytes, the
//! held server's bytes, the pool's answers and the timer, and performs the actions in
//! order. It never decides anything about transactions itself.
//!
//! Both directions are buffered and written concurrently with reading, so neither side
//! can deadlock the other (a large pipelined input while the server sends a large result);
//! reading a side stops while the buffer towards the other side is over [`BUFFER_LIMIT`],
//! which is how backpressure reaches the faster side. A client waiting for a server is
//! not read at all: what it sends meanwhile stays in its socket, not in the proxy.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::params::{self, ServerSettings};
use super::read_buffer::ReadBuffer;
use crate::client::ClientContext;
use crate::protocol::backend::error_response;
use crate::proxy::{CUT_OFF, SHUTTING_DOWN};
use crate::routes::Route;
use crate::server::ServerError;
use crate::session::{Action, ClientSession, Counters, Input, Release, ServerId};

/// Stop reading a side while this much is still to be written to the other.
const BUFFER_LIMIT: usize = 256 * 1024;

use crate::routes::Lease;
type Acquire = Pin<
    Box<
        dyn Future<Output = Result<Lease, pool_tokio::PoolError<crate::server::ServerError>>>
            + Send,
    >,
>;

/// The server the session holds. Dropped in any way but [`Held::release`] (the client
/// gone mid-request, a panic, the task cut off at shutdown) it is closed: its state is
/// unknown, and it must never reach another client mid-transaction.
struct Held {
    id: ServerId,
    lease: Lease,
    released: bool,
}

impl Held {
    fn release(mut self) {
        self.released = true;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            self.lease.broken = true;
        }
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    WroteClient(std::io::Result<usize>),
    WroteServer(std::io::Result<usize>),
    Granted(Box<Result<Lease, pool_tokio::PoolError<crate::server::ServerError>>>),
    Timer,
    Shutdown,
    CutOff,
}

/// Relays one logged-in client until it leaves, is sent away, or the proxy shuts down.
/// `early` holds client bytes that arrived with its startup.
pub(crate) async fn relay<R, W>(
    mut client_r: R,
    mut client_w: W,
    early: Vec<u8>,
    route: &Route,
    mut wanted: ServerSettings,
    ctx: &ClientContext,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let clock = ctx.shared.clock;
    // What the client asked for at startup: what a DISCARD ALL of its own goes back to.
    let startup = wanted.clone();
    let mut session = ClientSession::new(route.session_config());
    let mut held: Option<Held> = None;
    let mut acquire: Option<(Acquire, tokio::time::Instant)> = None;
    let mut next_id = 0u64;
    let mut to_client: Vec<u8> = Vec::new();
    let mut to_server: Vec<u8> = Vec::new();
    let mut client_buf = ReadBuffer::new(512, 16 * 1024);
    let mut server_buf = ReadBuffer::new(0, 64 * 1024);
    let mut client_open = true;
    let mut shutdown: watch::Receiver<bool> = ctx.shared.shutdown.subscribe();
    let mut draining = *shutdown.borrow();
    let mut cut_off: watch::Receiver<bool> = ctx.shared.cut_off.subscribe();
    let mut reported = Counters::default();
    let mut closing = false;

    if !early.is_empty() {
        let _ = session.handle(clock.now(), Input::ClientBytes(&early));
    }
    loop {
        // Carry out the session's decisions, in order.
        while let Some(action) = session.poll_action() {
            match action {
                Action::SendToClient(bytes) => to_client.extend_from_slice(&bytes),
                Action::SendToServer(id, bytes) => {
                    debug_assert_eq!(held.as_ref().map(|h| h.id), Some(id));
                    to_server.extend_from_slice(&bytes);
                }
                Action::RequestServer => {
                    // The fast path: an idle server now, without a task or a timer (unless
                    // the database is paused: then the request waits for RESUME).
                    let paused = ctx.shared.pauses.is_paused(&route.database);
                    if let Some(lease) = route.pool.try_get().filter(|_| !paused) {
                        route.stats.granted_at_once();
                        held =
                            Box::pin(take(&mut session, lease, &wanted, ctx, &mut next_id)).await;
                    } else {
                        route.stats.wait_started(ctx.id, clock.now());
                        ctx.client.entry().waiting(clock.now());
                        let acquire_one = route.acquire(ctx.shared.pauses.clone());
                        acquire = Some((Box::pin(acquire_one), tokio::time::Instant::now()));
                    }
                }
                Action::WithdrawServerRequest => {
                    acquire = None;
                    route.stats.wait_ended(ctx.id, None);
                    ctx.client.entry().idle();
                }
                Action::ReleaseServer(id, release, statements) => {
                    let Some(mut server) = held.take() else {
                        continue;
                    };
                    debug_assert_eq!(server.id, id);
                    ctx.ticket.set(None);
                    let lease = &mut server.lease;
                    lease.statements = statements;
                    if !to_server.is_empty() {
                        // Whole messages after the last answered request (a Flush, leftover
                        // COPY messages): the server must read them before anyone else
                        // writes to it; a failure closes it.
                        // Boxed, as every await off the hot path: each one's state would
                        // otherwise size the task of every (idle) client.
                        let written = Box::pin(tokio::time::timeout(
                            Duration::from_secs(5),
                            AsyncWriteExt::write_all(&mut **lease, &to_server),
                        ))
                        .await;
                        to_server.clear();
                        if !matches!(written, Ok(Ok(()))) {
                            lease.broken = true;
                        }
                    }
                    if release != Release::Clean {
                        lease.pending = Some(release);
                    }
                    released(&server.lease, ctx);
                    server.release();
                }
                Action::CloseServer(id, why) => {
                    if let Some(server) = held.take() {
                        debug_assert_eq!(server.id, id);
                        released(&server.lease, ctx);
                        ctx.ticket.set(None);
                        tracing::info!(client = ctx.id, reason = %why, "closing a server connection");
                        to_server.clear();
                        // A query still running there would run to its end for nobody
                        // (PostgreSQL notices a closed socket only when it next writes):
                        // cancel it. The server is closed, so the cancel can reach no one
                        // else's query.
                        let (addr, key) = (server.lease.cancel_addr.clone(), server.lease.key);
                        tokio::spawn(async move {
                            let bound = Duration::from_secs(5);
                            let _ = tokio::time::timeout(bound, crate::server::cancel(&addr, key))
                                .await;
                        });
                        drop(server);
                    }
                }
                Action::ParameterChanged { name, value } => {
                    if let Some(server) = held.as_mut() {
                        params::follow(&mut server.lease, &mut wanted, &name, &value);
                    }
                }
                Action::SettingsDiscarded => {
                    if let Some(server) = held.as_mut() {
                        server.lease.settings.clear();
                    }
                    wanted.clone_from(&startup);
                }
                Action::Pinned(reason) => {
                    route.stats.pinned();
                    tracing::info!(client = ctx.id, %reason, "client pinned to its server");
                }
                Action::Refused(reason) => {
                    route.stats.refused();
                    tracing::info!(client = ctx.id, %reason, "client refused for session state");
                }
                Action::CloseClient => closing = true,
            }
        }
        report(&session, &mut reported, route);

        if draining && !closing && session.between_transactions() {
            // Shutting down: a client between transactions (or still waiting, or pinned
            // and idle) is told and let go; one inside a transaction is left to finish it.
            acquire = None;
            route.stats.wait_ended(ctx.id, None);
            ctx.client.entry().idle();
            to_client.extend(error_response("FATAL", "57P01", SHUTTING_DOWN));
            let _ = session.handle(clock.now(), Input::ClientClosed);
            continue;
        }
        if closing {
            break;
        }

        if held.is_none() {
            // Between transactions (or waiting): what the last one needed goes back.
            client_buf.shrink();
            server_buf.shrink();
        }
        let deadline = session.poll_timeout().map(|at| clock.deadline(at));
        let event = {
            let (mut server_r, mut server_w) = match held.as_mut() {
                Some(server) => {
                    let (r, w) = server.lease.split();
                    (Some(r), Some(w))
                }
                None => (None, None),
            };
            let server_readable = server_r.is_some() && to_client.len() < BUFFER_LIMIT;
            let server_writable = server_w.is_some() && !to_server.is_empty();
            tokio::select! {
                biased;
                n = async { server_buf.read_from(server_r.as_mut().unwrap()).await }, if server_readable => Event::Server(n),
                n = async { server_w.as_mut().unwrap().write(&to_server).await }, if server_writable => Event::WroteServer(n),
                n = client_w.write(&to_client), if !to_client.is_empty() => Event::WroteClient(n),
                granted = async { (&mut acquire.as_mut().unwrap().0).await }, if acquire.is_some() => Event::Granted(Box::new(granted)),
                n = client_buf.read_from(&mut client_r), if client_open && !session.is_waiting() && to_server.len() < BUFFER_LIMIT => Event::Client(n),
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => Event::Timer,
                _ = shutdown.changed(), if !draining => Event::Shutdown,
                Ok(_) = cut_off.wait_for(|cut| *cut), if draining => Event::CutOff,
            }
        };
        let now = clock.now();
        match event {
            Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                client_open = false;
                let _ = session.handle(now, Input::ClientClosed);
            }
            Event::Client(Ok(n)) => {
                debug_assert_eq!(client_buf.filled().len(), n);
                let _ = session.handle(now, Input::ClientBytes(client_buf.filled()));
            }
            Event::Server(Ok(0)) | Event::Server(Err(_)) | Event::WroteServer(Err(_)) => {
                // The session answers by telling the client; the server is closed.
                let _ = session.handle(now, Input::ServerLost);
                if let Some(server) = held.take() {
                    released(&server.lease, ctx);
                }
                ctx.ticket.set(None);
                to_server.clear();
            }
            Event::Server(Ok(n)) => {
                debug_assert_eq!(server_buf.filled().len(), n);
                let _ = session.handle(now, Input::ServerBytes(server_buf.filled()));
            }
            Event::WroteServer(Ok(n)) => {
                to_server.drain(..n);
            }
            Event::WroteClient(Ok(n)) if n > 0 => {
                to_client.drain(..n);
            }
            Event::WroteClient(_) => {
                // The client is gone: nothing more can reach it.
                to_client.clear();
                client_open = false;
                let _ = session.handle(now, Input::ClientClosed);
            }
            Event::Granted(result) => {
                let (_, since) = acquire.take().expect("granted while acquiring");
                route.stats.wait_ended(ctx.id, Some(since.elapsed()));
                match *result {
                    Ok(lease) => {
                        held = Box::pin(take(&mut session, lease, &wanted, ctx, &mut next_id)).await
                    }
                    Err(error) => {
                        ctx.client.entry().idle();
                        let (sqlstate, message) = crate::client::unavailable(&error);
                        route.stats.error(&sqlstate);
                        let _ = session.handle(
                            now,
                            Input::ServerUnavailable {
                                sqlstate: &sqlstate,
                                message: &message,
                            },
                        );
                    }
                }
            }
            Event::Timer => {
                let _ = session.handle(now, Input::Timeout);
            }
            Event::Shutdown => draining = true,
            Event::CutOff => {
                // shutdown_timeout passed inside a transaction: the client goes as one that
                // left would (its transaction rolled back or its server closed), told why.
                tracing::info!(
                    client = ctx.id,
                    "shutdown_timeout: letting go of a client inside a transaction"
                );
                to_client.extend(error_response("FATAL", "57P01", CUT_OFF));
                let _ = session.handle(now, Input::ClientClosed);
            }
        }
    }
    // Write what is left for the client (its last answer, the reason it is sent away),
    // bounded: a client that stopped reading does not hold the task.
    if !to_client.is_empty() {
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(5),
            client_w.write_all(&to_client),
        ))
        .await;
    }
    let _ = Box::pin(tokio::time::timeout(
        Duration::from_secs(1),
        client_w.shutdown(),
    ))
    .await;
    route.stats.wait_ended(ctx.id, None);
}

/// Hands a lent server to the session, after making its settings what the client asked
/// for at startup. A server that cannot be set up is closed and the client told.
async fn take(
    session: &mut ClientSession,
    mut lease: Lease,
    wanted: &ServerSettings,
    ctx: &ClientContext,
    next_id: &mut u64,
) -> Option<Held> {
    let clock = ctx.shared.clock;
    if let Err(error) = params::sync(&mut lease, wanted).await {
        // A value the server refuses is the client's error, with the server's SQLSTATE
        // (PostgreSQL would have refused the login); the server is fine. Anything else
        // leaves the server unusable.
        let (sqlstate, message) = match &error {
            ServerError::Server {
                sqlstate, message, ..
            } => (
                sqlstate.clone(),
                format!("pool-proxy: the server refused the client's startup settings: {message}"),
            ),
            _ => {
                lease.broken = true;
                (
                    "08006".to_owned(),
                    format!("pool-proxy: the server could not take the client's settings: {error}"),
                )
            }
        };
        drop(lease);
        ctx.client.entry().idle();
        let _ = session.handle(
            clock.now(),
            Input::ServerUnavailable {
                sqlstate: &sqlstate,
                message: &message,
            },
        );
        return None;
    }
    *next_id += 1;
    let id = ServerId(*next_id);
    // The registry's link both ways (SHOW CLIENTS, SHOW SERVERS): two atomic stores each.
    let server = Route::server_entry(&lease).map_or(0, |registration| {
        registration.entry().lent(ctx.id);
        registration.entry().id
    });
    ctx.client.entry().active(server);
    ctx.ticket.set(Some((lease.cancel_addr.clone(), lease.key)));
    let statements = std::mem::take(&mut lease.statements);
    let _ = session.handle(clock.now(), Input::ServerGranted(id, statements));
    Some(Held {
        id,
        lease,
        released: false,
    })
}

/// The registry's record of a server going back (or being closed): neither side linked.
fn released(lease: &Lease, ctx: &ClientContext) {
    if let Some(registration) = Route::server_entry(lease) {
        registration.entry().returned();
    }
    ctx.client.entry().idle();
}

/// Adds what the session did since the last report to the route's statistics: once per
/// transaction (or when the client holds no server), not per message, so the route's
/// lock is taken once per transaction.
fn report(session: &ClientSession, reported: &mut Counters, route: &Route) {
    let now = session.counters();
    let due = now.transactions != reported.transactions || session.server().is_none();
    if due && now != *reported {
        route.stats.add(&now, reported);
        *reported = now;
    }
}
