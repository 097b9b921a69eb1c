//! The proxy: the listener, the limit on clients, and the shutdown.
//!
//! Shutdown (SIGTERM, or [`ProxyHandle::shutdown`]): the listener closes at once; a client
//! still logging in is told `57P03`, and an admin console client or a client between
//! transactions (or still waiting for a server) `57P01`, and let go; one
//! inside a transaction is left to finish it and then let go; at `shutdown_timeout` the
//! rest are told `57P01` and let go as any client that leaves mid-transaction (its
//! transaction rolled back or its server closed, per `abandoned_transaction`; a server
//! with a request in flight is closed), and a task that still has not ended a moment
//! later (a client that does not read) is cut off, its server closed; then every pool
//! closes its connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::cancel::CancelKeys;
use crate::clock::Clock;
use crate::config::ProxyConfig;
use crate::pause::Pauses;
use crate::registry::Registry;
use crate::routes::Routes;

/// What a client let go by a shutdown is told, with SQLSTATE 57P01 (PostgreSQL's own for
/// an administrator's shutdown).
pub(crate) const SHUTTING_DOWN: &str =
    "pool-proxy: terminating connection because the proxy is shutting down";

/// What a client that has not finished logging in is told when the proxy shuts down
/// (57P03, PostgreSQL's "cannot connect now").
pub(crate) const NOT_ACCEPTING: &str = "pool-proxy: the proxy is shutting down";

/// What a client still inside a transaction at `shutdown_timeout` is told (57P01).
pub(crate) const CUT_OFF: &str = "pool-proxy: terminating connection because the proxy is \
     shutting down and shutdown_timeout has passed";

/// How long clients told [`CUT_OFF`] have to go before their tasks are aborted.
const CUT_OFF_GRACE: Duration = Duration::from_secs(1);

/// A client's place under `max_client_conn`.
pub(crate) type ClientSlot = OwnedSemaphorePermit;

/// What every client task shares.
pub(crate) struct Shared {
    /// The routes, and the configuration in force ([`Shared::config`]).
    pub routes: Routes,
    /// Live clients and servers (SHOW CLIENTS, SHOW SERVERS).
    pub registry: Arc<Registry>,
    /// PAUSE and RESUME.
    pub pauses: Arc<Pauses>,
    pub cancel_keys: Arc<CancelKeys>,
    pub clock: Clock,
    /// `true` once shutting down.
    pub shutdown: watch::Sender<bool>,
    /// `true` once `shutdown_timeout` has passed: clients still inside a transaction go.
    pub cut_off: watch::Sender<bool>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The key an unknown user's fake SCRAM salt (and a password secret's salt) is
    /// derived from: fixed for the proxy's life, so a salt never gives a user away by
    /// changing between attempts.
    pub salt_key: [u8; 32],
    next_client: AtomicU64,
}

impl Shared {
    /// The configuration in force: the one loaded at start, or the last RELOAD's.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.routes.config()
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Relaxed) + 1
    }
}

/// Why the proxy could not start.
#[derive(Debug)]
pub enum StartError {
    Bind(SocketAddr, std::io::Error),
    Address(String),
    Tls(String),
    Metrics(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Address(text) => write!(f, "listen_addr: {text}"),
            StartError::Tls(text) => write!(f, "client TLS: {text}"),
            StartError::Metrics(text) => write!(f, "metrics_addr: {text}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A bound proxy, ready to [`run`](Proxy::run).
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    /// The metrics endpoint's socket (`metrics_addr`), if set.
    metrics: Option<TcpListener>,
}

/// Asks a running proxy to shut down.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the listening socket and loads the TLS certificate, so a mistake in either is
    /// an error before any client is accepted.
    pub async fn bind(config: ProxyConfig) -> Result<Proxy, StartError> {
        // `*` is every address, as in PgBouncer and PostgreSQL.
        let host = match config.listen_addr.as_str() {
            "*" => "0.0.0.0",
            host => host,
        };
        let addr: SocketAddr = tokio::net::lookup_host((host, config.listen_port))
            .await
            .map_err(|e| StartError::Address(format!("{host:?}: {e}")))?
            .next()
            .ok_or_else(|| StartError::Address(format!("{host:?} resolves to nothing")))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Bind(addr, e))?;
        let tls = match (&config.client_tls_cert_file, &config.client_tls_key_file) {
            (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(cert, key).map_err(|e| StartError::Tls(e.to_string()))?,
            )),
            _ => None,
        };
        let metrics = match config.metrics_addr.trim() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Metrics(format!("cannot listen on {addr:?}: {e}")))?,
            ),
        };
        let registry = Arc::new(Registry::default());
        let shared = Arc::new(Shared {
            routes: Routes::new(Arc::new(config), registry.clone()),
            registry,
            pauses: Arc::default(),
            cancel_keys: Arc::new(CancelKeys::default()),
            clock: Clock::start(),
            shutdown: watch::Sender::new(false),
            cut_off: watch::Sender::new(false),
            tls,
            salt_key: rand::random(),
            next_client: AtomicU64::new(0),
        });
        Ok(Proxy {
            shared,
            listener,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/metrics` and `/health` are served, when `metrics_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves clients until shut down, then drains them (see the module documentation).
    pub async fn run(self) {
        let Proxy {
            shared,
            listener,
            metrics,
        } = self;
        // The endpoint answers through the drain (`/health` says 503), until the end.
        let (stopped, stop) = tokio::sync::oneshot::channel::<()>();
        let metrics = metrics.map(|metrics| {
            tokio::spawn(crate::metrics::serve(metrics, shared.clone(), async {
                let _ = stop.await;
            }))
        });
        let config = shared.config();
        let slots = Arc::new(Semaphore::new(config.max_client_conn));
        let mut shutdown = shared.shutdown.subscribe();
        let mut clients = JoinSet::new();
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "pool-proxy listening");
        while !*shutdown.borrow() {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let slot = slots.clone().try_acquire_owned().ok();
                        clients.spawn(crate::client::serve(socket, peer, shared.clone(), slot));
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: let some clients go first.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => {}
            }
            while clients.try_join_next().is_some() {}
        }
        drop(listener);
        // The shutdown_timeout in force now (a RELOAD may have changed it).
        let shutdown_timeout = shared.config().shutdown_timeout;
        tracing::info!(clients = clients.len(), timeout = ?shutdown_timeout,
            "shutting down: draining clients");
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        loop {
            tokio::select! {
                next = clients.join_next() => if next.is_none() { break },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(clients = clients.len(), "shutdown_timeout: cutting off the rest");
                    shared.cut_off.send_replace(true);
                    let grace = tokio::time::Instant::now() + CUT_OFF_GRACE;
                    while let Ok(Some(_)) = tokio::time::timeout_at(grace, clients.join_next()).await {}
                    clients.abort_all();
                    while clients.join_next().await.is_some() {}
                    break;
                }
            }
        }
        for route in shared.routes.all() {
            route.pool.close(Duration::from_secs(5)).await;
        }
        let _ = stopped.send(());
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        tracing::info!("pool-proxy stopped");
    }
}

impl ProxyHandle {
    /// Stops accepting and drains the clients; [`Proxy::run`] returns when done.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}
