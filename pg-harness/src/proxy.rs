//! An in-test TCP proxy for fault injection between a client and a server (PostgreSQL or
//! PgBouncer), on 127.0.0.1 only.
//!
//! * [`FaultProxy::blackhole`]: stop moving bytes in both directions but keep every socket
//!   open — the client sees a half-open connection: writes succeed, nothing ever comes back.
//!   New connections are accepted but not connected upstream. Bytes already in flight are
//!   held, not dropped, so [`FaultProxy::resume`] continues every stream intact (like a
//!   network partition that heals).
//! * [`FaultProxy::kill_all`]: reset (RST) every current connection on both sides.
//! * [`FaultProxy::refuse_new`]: new connections are accepted and immediately reset, so a
//!   connect attempt fails fast with "connection reset".
//!
//! All tasks are bounded by the proxy's lifetime: dropping the [`FaultProxy`] stops the
//! accept loop and closes every connection.
//!
//! ```no_run
//! # async fn demo(cluster: &pg_harness::PgCluster) -> std::io::Result<()> {
//! let proxy = pg_harness::FaultProxy::start(cluster.addr()).await?;
//! let url = cluster.url_on_port(proxy.port());
//! proxy.blackhole();   // queries through `url` now hang
//! proxy.resume();      // ... and complete
//! proxy.kill_all();    // every proxied connection is reset
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a proxied connection may take to connect upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct State {
    forwarding: bool,
    kill_generation: u64,
    shutdown: bool,
}

struct Control {
    state: watch::Sender<State>,
    refuse_new: AtomicBool,
    active: AtomicUsize,
    accepted: AtomicU64,
}

/// A fault-injecting TCP proxy; see the module docs.
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: Arc<Control>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("state", &*self.control.state.borrow())
            .finish()
    }
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `target`.
    /// Must be called inside a tokio runtime (it spawns the proxy's tasks there).
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State {
            forwarding: true,
            kill_generation: 0,
            shutdown: false,
        });
        let control = Arc::new(Control {
            state,
            refuse_new: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, target, Arc::clone(&control)));
        Ok(FaultProxy {
            addr,
            target,
            control,
            accept_task,
        })
    }

    /// The proxy's listening address (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Stops forwarding in both directions, keeping all sockets open (half-open).
    pub fn blackhole(&self) {
        self.control.state.send_modify(|s| s.forwarding = false);
    }

    /// Forwards again, including whatever was held while blackholed.
    pub fn resume(&self) {
        self.control.state.send_modify(|s| s.forwarding = true);
    }

    /// Resets (RST) every current connection, on both the client and the upstream side.
    /// Connections accepted afterwards are unaffected.
    pub fn kill_all(&self) {
        self.control.state.send_modify(|s| s.kill_generation += 1);
    }

    /// While `true`, new connections are accepted and immediately reset.
    pub fn refuse_new(&self, refuse: bool) {
        self.control.refuse_new.store(refuse, Ordering::SeqCst);
    }

    /// Whether bytes are currently forwarded.
    pub fn is_forwarding(&self) -> bool {
        self.control.state.borrow().forwarding
    }

    /// Connections currently proxied (including those waiting out a blackhole).
    pub fn active_connections(&self) -> usize {
        self.control.active.load(Ordering::SeqCst)
    }

    /// Connections accepted since start (including refused ones).
    pub fn accepted_total(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.control.state.send_modify(|s| s.shutdown = true);
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, control: Arc<Control>) {
    let mut state = control.state.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = state.wait_for(|s| s.shutdown) => return,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(_) => {
                // e.g. EMFILE: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        control.accepted.fetch_add(1, Ordering::SeqCst);
        if control.refuse_new.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }
        tokio::spawn(proxy_connection(client, target, Arc::clone(&control)));
    }
}

/// Closes with RST rather than FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves when this connection must end: killed (generation moved on) or shutdown.
async fn doomed(mut state: watch::Receiver<State>, generation: u64) {
    let _ = state
        .wait_for(|s| s.shutdown || s.kill_generation != generation)
        .await;
}

/// Waits until forwarding is on. Returns `false` if the proxy is gone.
async fn forwarding(state: &mut watch::Receiver<State>) -> bool {
    match state.wait_for(|s| s.forwarding || s.shutdown).await {
        Ok(s) => !s.shutdown,
        Err(_) => false,
    }
}

async fn proxy_connection(mut client: TcpStream, target: SocketAddr, control: Arc<Control>) {
    control.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(&control.active);
    let mut state = control.state.subscribe();
    let generation = state.borrow().kill_generation;

    // A blackholed network: the connection is accepted here but goes nowhere yet.
    let upstream = tokio::select! {
        up = async {
            if !forwarding(&mut state).await {
                return None;
            }
            tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target))
                .await
                .ok()
                .and_then(Result::ok)
        } => up,
        _ = doomed(control.state.subscribe(), generation) => None,
    };
    let Some(mut upstream) = upstream else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let killed = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let both = async {
            tokio::try_join!(
                pump(&mut cr, &mut uw, control.state.subscribe()),
                pump(&mut ur, &mut cw, control.state.subscribe()),
            )
        };
        tokio::select! {
            _ = both => false,
            _ = doomed(control.state.subscribe(), generation) => true,
        }
    };
    if killed {
        reset(client);
        reset(upstream);
    }
}

/// Copies `src` → `dst` while forwarding is on; on EOF passes the half-close on.
async fn pump(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    mut state: watch::Receiver<State>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut state).await {
            return Ok(());
        }
        let n = tokio::select! {
            r = src.read(&mut buf) => r?,
            // Mode changed: re-check before reading (stop reading while blackholed).
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        if n == 0 {
            let _ = dst.shutdown().await;
            return Ok(());
        }
        // Blackholed after these bytes were read: hold them until resumed.
        if !forwarding(&mut state).await {
            return Ok(());
        }
        dst.write_all(&buf[..n]).await?;
    }
}
