//! The registry of live connections, for `SHOW CLIENTS` and `SHOW SERVERS`: each logged-in
//! client and each open server connection, with its addresses, route and state.
//!
//! Cheap by construction: the registry's lock is taken when a connection registers and
//! when it goes (its [`ClientRegistration`] or [`ServerRegistration`] is dropped), and by
//! the console's listing; a state change at a grant or a release stores atomics in the
//! connection's own entry, never the registry's lock. Nothing is done per message.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pool_core::Instant;

use crate::server::{CancelAddr, ServerConnection};

/// Every live client and server connection, by the proxy's number for it.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    servers: Mutex<BTreeMap<u64, Arc<ServerEntry>>>,
    next_server: AtomicU64,
}

/// What a logged-in client is doing, as `SHOW CLIENTS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Between transactions: holding no server, asking for none.
    Idle,
    /// Waiting for a server (in the pool's queue, or behind a `PAUSE`).
    Waiting,
    /// Holding a server (inside a transaction, or pinned, or in session mode).
    Active,
}

/// What a server connection is doing, as `SHOW SERVERS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// In the pool (idle, or being checked or reset).
    Idle,
    /// Lent to a client (its `link`).
    Active,
}

/// A logged-in client. The fixed facts are set at login; the state at each grant and
/// release.
pub struct ClientEntry {
    pub id: u64,
    pub database: String,
    pub user: String,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub application_name: String,
    pub tls: bool,
    pub connected: SystemTime,
    state: AtomicU8,
    /// When it last asked for a server: microseconds since the Unix epoch.
    requested: AtomicU64,
    /// When its current wait began, on the proxy's clock (nanoseconds; 0: not waiting).
    waiting_since: AtomicU64,
    /// The server it holds (its `ptr`), 0 for none.
    link: AtomicU64,
}

/// An open server connection of a route.
pub struct ServerEntry {
    pub id: u64,
    pub database: String,
    pub user: String,
    /// The server's address and port (a Unix socket's path and no port).
    pub addr: String,
    pub port: u16,
    /// The proxy's end of it (TCP only): the server's `client_addr` and `client_port`.
    pub local: Option<SocketAddr>,
    /// The server process's id (BackendKeyData).
    pub remote_pid: i32,
    pub connected: SystemTime,
    state: AtomicU8,
    requested: AtomicU64,
    link: AtomicU64,
}

/// A client's place in the registry: removed when dropped.
pub struct ClientRegistration {
    entry: Arc<ClientEntry>,
    registry: Arc<Registry>,
}

/// A server's place in the registry, kept in the connection's extensions: removed when
/// the pool drops the connection.
pub struct ServerRegistration {
    entry: Arc<ServerEntry>,
    registry: Arc<Registry>,
}

/// What a client is registered with.
pub struct ClientFacts {
    pub id: u64,
    pub database: String,
    pub user: String,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub application_name: String,
    pub tls: bool,
}

impl Registry {
    pub fn register_client(self: &Arc<Self>, facts: ClientFacts) -> ClientRegistration {
        let entry = Arc::new(ClientEntry {
            id: facts.id,
            database: facts.database,
            user: facts.user,
            peer: facts.peer,
            local: facts.local,
            application_name: facts.application_name,
            tls: facts.tls,
            connected: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            requested: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            link: AtomicU64::new(0),
        });
        lock(&self.clients).insert(entry.id, entry.clone());
        ClientRegistration {
            entry,
            registry: self.clone(),
        }
    }

    /// Registers a server connection of the route (`database`, `user`) just opened.
    pub fn register_server(
        self: &Arc<Self>,
        database: &str,
        user: &str,
        conn: &ServerConnection,
    ) -> ServerRegistration {
        let (addr, port) = match &conn.cancel_addr {
            CancelAddr::Tcp(addr) => (addr.ip().to_string(), addr.port()),
            #[cfg(unix)]
            CancelAddr::Unix(path) => (path.display().to_string(), 0),
        };
        let entry = Arc::new(ServerEntry {
            id: self.next_server.fetch_add(1, Relaxed) + 1,
            database: database.to_owned(),
            user: user.to_owned(),
            addr,
            port,
            local: conn.local_addr(),
            remote_pid: conn.key.pid,
            connected: SystemTime::now(),
            state: AtomicU8::new(ServerState::Idle as u8),
            requested: AtomicU64::new(0),
            link: AtomicU64::new(0),
        });
        lock(&self.servers).insert(entry.id, entry.clone());
        ServerRegistration {
            entry,
            registry: self.clone(),
        }
    }

    /// Every client, by id.
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).values().cloned().collect()
    }

    /// Every server, by id.
    pub fn servers(&self) -> Vec<Arc<ServerEntry>> {
        lock(&self.servers).values().cloned().collect()
    }
}

impl ClientRegistration {
    pub fn entry(&self) -> &ClientEntry {
        &self.entry
    }
}

impl Drop for ClientRegistration {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.entry.id);
    }
}

impl ServerRegistration {
    pub fn entry(&self) -> &ServerEntry {
        &self.entry
    }
}

impl Drop for ServerRegistration {
    fn drop(&mut self) {
        lock(&self.registry.servers).remove(&self.entry.id);
    }
}

impl ClientEntry {
    pub fn state(&self) -> ClientState {
        match self.state.load(Relaxed) {
            s if s == ClientState::Waiting as u8 => ClientState::Waiting,
            s if s == ClientState::Active as u8 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    /// It asked for a server at `now` (the proxy's clock) and waits for one.
    pub fn waiting(&self, now: Instant) {
        self.requested
            .store(unix_micros(SystemTime::now()), Relaxed);
        let nanos = now.saturating_since(Instant::ZERO).as_nanos();
        self.waiting_since
            .store(u64::try_from(nanos).unwrap_or(u64::MAX).max(1), Relaxed);
        self.state.store(ClientState::Waiting as u8, Relaxed);
    }

    /// It holds the server `server` (its registry id; 0 if unknown). A grant without a
    /// wait (an idle server at once) is a request too.
    pub fn active(&self, server: u64) {
        if self.waiting_since.swap(0, Relaxed) == 0 {
            self.requested
                .store(unix_micros(SystemTime::now()), Relaxed);
        }
        self.link.store(server, Relaxed);
        self.state.store(ClientState::Active as u8, Relaxed);
    }

    /// It holds no server and asks for none.
    pub fn idle(&self) {
        self.waiting_since.store(0, Relaxed);
        self.link.store(0, Relaxed);
        self.state.store(ClientState::Idle as u8, Relaxed);
    }

    /// How long its current wait has lasted at `now`; zero when not waiting.
    pub fn wait(&self, now: Instant) -> Duration {
        match self.waiting_since.load(Relaxed) {
            0 => Duration::ZERO,
            since => now.saturating_since(Instant::from_nanos(since)),
        }
    }

    /// When it last asked for a server, if ever.
    pub fn requested(&self) -> Option<SystemTime> {
        from_unix_micros(self.requested.load(Relaxed))
    }

    /// The server it holds (its id), if any.
    pub fn link(&self) -> Option<u64> {
        Some(self.link.load(Relaxed)).filter(|&id| id != 0)
    }
}

impl ServerEntry {
    pub fn state(&self) -> ServerState {
        match self.state.load(Relaxed) {
            s if s == ServerState::Active as u8 => ServerState::Active,
            _ => ServerState::Idle,
        }
    }

    /// Lent to client `client`.
    pub fn lent(&self, client: u64) {
        self.requested
            .store(unix_micros(SystemTime::now()), Relaxed);
        self.link.store(client, Relaxed);
        self.state.store(ServerState::Active as u8, Relaxed);
    }

    /// Back in the pool.
    pub fn returned(&self) {
        self.link.store(0, Relaxed);
        self.state.store(ServerState::Idle as u8, Relaxed);
    }

    /// When it was last lent, if ever.
    pub fn requested(&self) -> Option<SystemTime> {
        from_unix_micros(self.requested.load(Relaxed))
    }

    /// The client it is lent to (its id), if any.
    pub fn link(&self) -> Option<u64> {
        Some(self.link.load(Relaxed)).filter(|&id| id != 0)
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        })
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Idle => "idle",
            ServerState::Active => "active",
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn from_unix_micros(micros: u64) -> Option<SystemTime> {
    (micros != 0).then(|| UNIX_EPOCH + Duration::from_micros(micros))
}

/// A wall-clock time as PgBouncer's console shows it: `2024-05-01 12:34:56 UTC`.
pub fn timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_pgbouncer_writes_them() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let at = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // a leap day
        assert_eq!(timestamp(at), "2024-02-29 12:34:56 UTC");
        let at = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(at), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn a_client_is_listed_while_registered_and_its_state_follows_grants() {
        let registry = Arc::new(Registry::default());
        let facts = ClientFacts {
            id: 7,
            database: "db".into(),
            user: "u".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: None,
            application_name: String::new(),
            tls: false,
        };
        let registration = registry.register_client(facts);
        let entry = &registry.clients()[0];
        assert_eq!((entry.id, entry.state()), (7, ClientState::Idle));
        assert_eq!(entry.requested(), None);
        entry.waiting(Instant::from_nanos(1_000));
        assert_eq!(entry.state(), ClientState::Waiting);
        assert_eq!(
            entry.wait(Instant::from_nanos(5_000)),
            Duration::from_nanos(4_000)
        );
        assert!(entry.requested().is_some());
        entry.active(3);
        assert_eq!(
            (entry.state(), entry.link()),
            (ClientState::Active, Some(3))
        );
        assert_eq!(entry.wait(Instant::from_nanos(9_000)), Duration::ZERO);
        entry.idle();
        assert_eq!((entry.state(), entry.link()), (ClientState::Idle, None));
        drop(registration);
        assert!(registry.clients().is_empty());
    }
}
