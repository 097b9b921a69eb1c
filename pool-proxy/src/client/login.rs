//! A client's login, from the first byte to its first ReadyForQuery: SSLRequest answered
//! with TLS or `N`, GSSENCRequest with `N`, a CancelRequest forwarded, the StartupMessage
//! checked, the client authenticated, its route found (which proves the route can reach
//! its server), then AuthenticationOk, the parameters, the proxy's own BackendKeyData and
//! ReadyForQuery. The whole login runs under `client_login_timeout`; every refusal is an
//! ErrorResponse naming the cause before the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::params::{self, ServerSettings, REFUSED};
use super::{relay::relay, unavailable, ClientContext};
use crate::admin;
use crate::auth::{ClientAuth, Step};
use crate::config::ClientTlsMode;
use crate::protocol::backend::{error_response, ready_for_query, write_message, TransactionStatus};
use crate::protocol::frame::{
    Framer, StartupFramer, StartupPacket, DEFAULT_MAX_STARTUP_LEN, PROTOCOL_3_0,
};
use crate::proxy::{ClientSlot, Shared, NOT_ACCEPTING};
use crate::registry::ClientFacts;
use crate::routes::Route;

/// A client's byte stream: TCP, or TLS over it.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}
pub(crate) type ClientStream = Box<dyn ClientIo>;

/// The admin console's database name: PgBouncer's, so its dashboards and scripts work.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// The client went away, or was told why not and let go.
struct Gone;

/// What the registry lists about a logged-in client besides its route.
struct Facts {
    database: String,
    application_name: String,
    tls: bool,
}

/// Where a logged-in client goes.
enum Destination {
    Route(Arc<Route>, ServerSettings),
    Admin { may_change: bool },
}

/// Serves one accepted connection to the end. `slot` is its place under
/// `max_client_conn`, or `None` when the proxy is full (the client is told so).
pub(crate) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<ClientSlot>,
) {
    let _ = socket.set_nodelay(true);
    let local = socket.local_addr().ok();
    let id = shared.next_client_id();
    // No timeout (0) is a deadline a century away.
    let deadline = Instant::now()
        + shared
            .config()
            .client_login_timeout
            .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
    let mut stream: ClientStream = Box::new(socket);
    // A client still logging in has no transaction to finish: a shutdown lets it go at
    // once rather than at shutdown_timeout.
    let mut shutdown = shared.shutdown.subscribe();
    // Boxed: the login's state (startup framing, SCRAM, TLS) is freed once the client is
    // in, instead of sizing the task of every idle client for it.
    let logged_in = tokio::select! {
        logged_in = Box::pin(login(&mut stream, &shared, slot.is_some(), deadline, id, peer)) => Some(logged_in),
        _ = Box::pin(shutdown.wait_for(|down| *down)) => None,
    };
    let (user, facts, destination, hello, early) = match logged_in {
        Some(Ok(logged_in)) => logged_in,
        // Told why (or gone) already.
        Some(Err(Gone)) => return,
        None => {
            let _: Result<(), Gone> = Box::pin(fail(&mut stream, "57P03", NOT_ACCEPTING)).await;
            return;
        }
    };
    let ticket = shared.cancel_keys.issue();
    let client = shared.registry.register_client(ClientFacts {
        id,
        database: facts.database,
        user: user.clone(),
        peer,
        local,
        application_name: facts.application_name,
        tls: facts.tls,
    });
    let ctx = ClientContext {
        id,
        shared: shared.clone(),
        ticket,
        client,
    };
    let mut hello = hello;
    let (key_pid, key_secret) = ctx.ticket.key();
    hello.extend_from_slice(&backend_key_data(key_pid, key_secret));
    ready_for_query(&mut hello, TransactionStatus::Idle);
    match destination {
        Destination::Admin { may_change } => {
            tracing::info!(client = id, %peer, user = %user, "admin console login");
            // Boxed, as the login: a console's state does not size every client's task.
            Box::pin(admin::serve(stream, hello, early, &ctx, may_change)).await;
        }
        Destination::Route(route, wanted) => {
            tracing::debug!(client = id, %peer, database = %route.database, user = %user, "login");
            let _client = route.stats.client();
            let (r, mut w) = tokio::io::split(stream);
            if Box::pin(w.write_all(&hello)).await.is_err() {
                return;
            }
            relay(r, w, early, &route, wanted, &ctx).await;
        }
    }
    drop(slot);
}

async fn login(
    stream: &mut ClientStream,
    shared: &Shared,
    admitted: bool,
    deadline: Instant,
    id: u64,
    peer: SocketAddr,
) -> Result<(String, Facts, Destination, Vec<u8>, Vec<u8>), Gone> {
    let config = &*shared.config();
    let mut buf = vec![0u8; 8192];
    let mut startup = StartupFramer::new(DEFAULT_MAX_STARTUP_LEN);
    let mut encrypted = false;
    let (protocol, startup_params) = loop {
        match startup.next_packet() {
            Err(e) => {
                return fail(
                    stream,
                    "08P01",
                    &format!("pool-proxy: invalid startup packet: {e}"),
                )
                .await
            }
            Ok(Some(StartupPacket::SslRequest)) => {
                if startup.buffered() > 0 {
                    // Bytes sent before the TLS handshake must not be read as if they came
                    // through it (CVE-2021-23222's lesson).
                    return fail(
                        stream,
                        "08P01",
                        "received unencrypted data after SSL request",
                    )
                    .await;
                }
                match shared.tls.as_ref().filter(|_| !encrypted) {
                    Some(acceptor) => {
                        write(stream, b"S", deadline).await?;
                        let plain = std::mem::replace(stream, Box::new(tokio::io::duplex(1).0));
                        let tls = timeout_at(deadline, acceptor.accept(plain)).await;
                        match tls {
                            Ok(Ok(tls)) => *stream = Box::new(tls),
                            _ => {
                                tracing::info!(client = id, %peer, "TLS handshake failed");
                                return Err(Gone);
                            }
                        }
                        encrypted = true;
                    }
                    None => write(stream, b"N", deadline).await?,
                }
            }
            Ok(Some(StartupPacket::GssEncRequest)) => write(stream, b"N", deadline).await?,
            Ok(Some(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            })) => {
                if let Some((addr, key)) = shared.cancel_keys.target(process_id, secret_key) {
                    tracing::debug!(client = id, "forwarding a cancel request");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        crate::server::cancel(&addr, key),
                    )
                    .await;
                }
                return Err(Gone);
            }
            Ok(Some(StartupPacket::Startup { protocol, params })) => break (protocol, params),
            Ok(None) => {
                let n = read(stream, &mut buf, deadline, id).await?;
                startup.push(&buf[..n]);
            }
        }
    };
    let param = |name: &str| {
        startup_params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let unknown: Vec<&str> = startup_params
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("_pq_."))
        .collect();
    if protocol != PROTOCOL_3_0 || !unknown.is_empty() {
        write(stream, &negotiate_protocol_version(&unknown), deadline).await?;
    }
    if config.client_tls_sslmode == ClientTlsMode::Require && !encrypted {
        return fail(stream, "28000", "pool-proxy: SSL required").await;
    }
    let Some(user) = param("user").filter(|user| !user.is_empty()) else {
        return fail(
            stream,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
    };
    let database = param("database")
        .filter(|db| !db.is_empty())
        .unwrap_or_else(|| user.clone());
    for (name, why) in REFUSED {
        if param(name).is_some() {
            let text = format!("pool-proxy: unsupported startup parameter \"{name}\": {why}");
            return fail(stream, "08P01", &text).await;
        }
    }
    if *shared.shutdown.borrow() {
        return fail(stream, "57P03", NOT_ACCEPTING).await;
    }
    if !admitted {
        let text = format!(
            "sorry, too many clients already (pool-proxy: max_client_conn is {})",
            config.max_client_conn
        );
        return fail(stream, "53300", &text).await;
    }

    // Authentication.
    let mut framer = Framer::new(config.max_packet_size);
    framer.push(&startup.into_remaining());
    let secret = config.users.get(&user);
    let (mut auth, mut step) = ClientAuth::start_with_salt_key(
        config.auth_type,
        &user,
        secret,
        rand::random(),
        &shared.salt_key,
    );
    let mut hello = loop {
        match step {
            Step::Send(bytes) => {
                write(stream, &bytes, deadline).await?;
                let frame = loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => break frame,
                        Ok(None) => {
                            let n = read(stream, &mut buf, deadline, id).await?;
                            framer.push(&buf[..n]);
                        }
                        Err(e) => {
                            let text = format!("pool-proxy: protocol violation: {e}");
                            return fail(stream, "08P01", &text).await;
                        }
                    }
                };
                step = auth.handle(frame.bytes());
            }
            Step::Done(bytes) => break bytes,
            Step::Failed(bytes) => {
                tracing::info!(client = id, %peer, user = %user,
                    reason = auth.failure().unwrap_or("-"), "authentication failed");
                let _ = write(stream, &bytes, deadline).await;
                return Err(Gone);
            }
        }
    };

    // Where the client goes.
    let early = framer.into_remaining();
    let facts = Facts {
        database: database.clone(),
        application_name: param("application_name").unwrap_or_default(),
        tls: encrypted,
    };
    if database == ADMIN_DATABASE {
        let admin = config.admin_users.contains(&user);
        if !admin && !config.stats_users.contains(&user) {
            let text = format!(
                "pool-proxy: user \"{user}\" is not allowed to use the admin console \
                 (admin_users, stats_users)"
            );
            return fail(stream, "28000", &text).await;
        }
        hello.extend_from_slice(&params::replay(
            &admin::parameters(),
            &ServerSettings::new(),
        ));
        return Ok((
            user,
            facts,
            Destination::Admin { may_change: admin },
            hello,
            early,
        ));
    }
    let route = match shared.routes.route(&database, &user) {
        Ok(route) => route,
        Err(e) => return fail(stream, e.sqlstate, &e.message).await,
    };
    let defaults = match timeout_at(deadline, route.defaults()).await {
        Ok(Ok(defaults)) => defaults,
        Ok(Err(error)) => {
            let (sqlstate, message) = unavailable(&error);
            route.stats.error(&sqlstate);
            return fail(stream, &sqlstate, &message).await;
        }
        Err(_) => {
            let text = "pool-proxy: no server connection within client_login_timeout";
            return fail(stream, "57P03", text).await;
        }
    };
    let wanted = params::wanted(defaults, &startup_params);
    hello.extend_from_slice(&params::replay(defaults, &wanted));
    Ok((user, facts, Destination::Route(route, wanted), hello, early))
}

async fn read(
    stream: &mut ClientStream,
    buf: &mut [u8],
    deadline: Instant,
    id: u64,
) -> Result<usize, Gone> {
    match timeout_at(deadline, stream.read(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(Gone),
        Ok(Ok(n)) => Ok(n),
        Err(_) => {
            tracing::info!(client = id, "login timed out (client_login_timeout)");
            let text =
                "pool-proxy: the client did not finish logging in within client_login_timeout";
            let _: Result<(), Gone> = fail(stream, "08P01", text).await;
            Err(Gone)
        }
    }
}

async fn write(stream: &mut ClientStream, bytes: &[u8], deadline: Instant) -> Result<(), Gone> {
    match timeout_at(deadline, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(Gone),
    }
}

/// Tells the client why (FATAL, this SQLSTATE and text) and lets it go.
async fn fail<T>(stream: &mut ClientStream, sqlstate: &str, message: &str) -> Result<T, Gone> {
    let bytes = error_response("FATAL", sqlstate, message);
    let _ = write(stream, &bytes, Instant::now() + Duration::from_secs(1)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    Err(Gone)
}

fn backend_key_data(process_id: u32, secret: u32) -> Vec<u8> {
    let mut body = process_id.to_be_bytes().to_vec();
    body.extend_from_slice(&secret.to_be_bytes());
    let mut out = Vec::new();
    write_message(&mut out, b'K', &body);
    out
}

/// NegotiateProtocolVersion: the proxy speaks 3.0 and knows no `_pq_.` options.
fn negotiate_protocol_version(unknown: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    // The newest minor version of protocol 3 the proxy speaks.
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&(unknown.len() as u32).to_be_bytes());
    for option in unknown {
        body.extend_from_slice(option.as_bytes());
        body.push(0);
    }
    let mut out = Vec::new();
    write_message(&mut out, b'v', &body);
    out
}
