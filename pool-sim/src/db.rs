//! The simulated PostgreSQL server: a bounded set of backends (`max_connections`), connect
//! and query latency distributions, a per-connection memory cost, and the fault state the
//! scenarios switch on and off (down, restarted, half-open sockets, broken authentication,
//! slow connects).

use std::collections::BTreeMap;
use std::time::Duration;

use pool_core::ConnectError;

use crate::rng::Rng;

/// A latency distribution: `base + U(0, jitter)`, and with probability `tail_permille`/1000
/// multiplied by `tail_factor` (a slow outlier).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub base: Duration,
    pub jitter: Duration,
    pub tail_permille: u16,
    pub tail_factor: u32,
}

impl Latency {
    pub const fn fixed(d: Duration) -> Self {
        Latency {
            base: d,
            jitter: Duration::ZERO,
            tail_permille: 0,
            tail_factor: 1,
        }
    }

    pub const fn ms(base: u64, jitter: u64) -> Self {
        Latency {
            base: Duration::from_millis(base),
            jitter: Duration::from_millis(jitter),
            tail_permille: 0,
            tail_factor: 1,
        }
    }

    pub const fn with_tail(mut self, permille: u16, factor: u32) -> Self {
        self.tail_permille = permille;
        self.tail_factor = factor;
        self
    }

    /// A sample in nanoseconds.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let base = self.base.as_nanos() as u64;
        let jitter = self.jitter.as_nanos() as u64;
        let mut v = base + if jitter > 0 { rng.below(jitter + 1) } else { 0 };
        if self.tail_permille > 0 && rng.below(1000) < u64::from(self.tail_permille) {
            v = v.saturating_mul(u64::from(self.tail_factor));
        }
        v.max(1)
    }

    /// The mean in nanoseconds.
    pub fn mean_nanos(&self) -> f64 {
        let body = self.base.as_nanos() as f64 + self.jitter.as_nanos() as f64 / 2.0;
        let p = f64::from(self.tail_permille) / 1000.0;
        body * (1.0 - p) + body * f64::from(self.tail_factor) * p
    }
}

/// The database's fixed properties.
#[derive(Clone, Debug, PartialEq)]
pub struct DbSpec {
    /// Server backends allowed at once; a connect beyond it fails with "too many clients".
    pub max_connections: usize,
    pub connect: Latency,
    pub query: Latency,
    /// Round trip of a health check, a reset, or an error reply.
    pub rtt: Duration,
    /// Memory one backend costs the server (PostgreSQL: a forked process, ~10 MB).
    pub mem_per_conn_mb: u32,
}

impl Default for DbSpec {
    fn default() -> Self {
        DbSpec {
            max_connections: 100,
            connect: Latency::ms(20, 10),
            query: Latency::ms(2, 2),
            rtt: Duration::from_micros(200),
            mem_per_conn_mb: 10,
        }
    }
}

/// A server backend as the database sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Alive,
    /// The network path silently dropped: nothing sent on it is ever answered.
    HalfOpen,
}

/// How a server-side connection looks to the client using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Alive,
    HalfOpen,
    /// Killed (restart, server-side timeout): any use fails fast.
    Dead,
}

pub const ERR_TOO_MANY: &str = "FATAL: sorry, too many clients already";
pub const ERR_REFUSED: &str = "connection refused: is the server running?";
pub const ERR_STARTING: &str = "FATAL: the database system is starting up";
pub const ERR_AUTH: &str = "FATAL: password authentication failed for user \"app\"";

/// What the server decided when a connect started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectStart {
    /// Nobody listening (down or restarting).
    Refused,
    /// Every backend slot is taken: "sorry, too many clients already".
    TooMany,
    /// A backend slot is reserved; the handshake finishes later.
    Pending,
}

/// The database's live state.
#[derive(Clone, Debug)]
pub struct Db {
    pub spec: DbSpec,
    backends: BTreeMap<u64, Backend>,
    /// Handshakes in progress, each holding a backend slot.
    connecting: usize,
    next_id: u64,
    /// Nesting counts of the switchable faults.
    down: u32,
    auth_broken: u32,
    slow_factor: u64,
    pub peak: usize,
    pub connects_ok: u64,
    /// Failed connects by server message.
    pub connects_failed: BTreeMap<&'static str, u64>,
    /// Backends killed by a restart or a server-side timeout.
    pub killed: u64,
}

impl Db {
    pub fn new(spec: DbSpec) -> Self {
        Db {
            spec,
            backends: BTreeMap::new(),
            connecting: 0,
            next_id: 0,
            down: 0,
            auth_broken: 0,
            slow_factor: 1,
            peak: 0,
            connects_ok: 0,
            connects_failed: BTreeMap::new(),
            killed: 0,
        }
    }

    /// Backends the server holds, including handshakes in progress.
    pub fn open_count(&self) -> usize {
        self.backends.len() + self.connecting
    }

    /// Established backends (handshakes in progress excluded).
    pub fn established(&self) -> usize {
        self.backends.len()
    }

    pub fn is_down(&self) -> bool {
        self.down > 0
    }

    /// Start a connect: how long until its outcome is known, and what the server decided
    /// at once. A down server refuses within a round trip; a full one answers "too many
    /// clients" after the startup packet. Otherwise a backend slot is taken for the whole
    /// handshake (PostgreSQL forks the backend before authentication).
    pub fn start_connect(&mut self, rng: &mut Rng) -> (u64, ConnectStart) {
        let rtt = self.spec.rtt.as_nanos() as u64;
        if self.is_down() {
            return (rtt, ConnectStart::Refused);
        }
        if self.backends.len() + self.connecting >= self.spec.max_connections {
            return (rtt, ConnectStart::TooMany);
        }
        self.connecting += 1;
        self.peak = self.peak.max(self.backends.len() + self.connecting);
        let lat = self
            .spec
            .connect
            .sample(rng)
            .saturating_mul(self.slow_factor);
        (lat, ConnectStart::Pending)
    }

    fn fail(&mut self, msg: &'static str) -> ConnectError {
        *self.connects_failed.entry(msg).or_default() += 1;
        if msg == ERR_AUTH {
            ConnectError::fatal(msg)
        } else {
            ConnectError::transient(msg)
        }
    }

    /// The client gave up on a pending handshake (closed its socket): the server frees the
    /// slot at once. The connect's completion must then not be passed to `finish_connect`.
    pub fn abort_connect(&mut self) {
        self.connecting = self.connecting.saturating_sub(1);
    }

    /// The end of a connect: a new backend, or the server's refusal.
    pub fn finish_connect(&mut self, start: ConnectStart) -> Result<u64, ConnectError> {
        match start {
            ConnectStart::Refused => return Err(self.fail(ERR_REFUSED)),
            ConnectStart::TooMany => return Err(self.fail(ERR_TOO_MANY)),
            ConnectStart::Pending => self.connecting = self.connecting.saturating_sub(1),
        }
        if self.is_down() {
            return Err(self.fail(ERR_STARTING));
        }
        if self.auth_broken > 0 {
            return Err(self.fail(ERR_AUTH));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.backends.insert(id, Backend::Alive);
        self.connects_ok += 1;
        Ok(id)
    }

    pub fn health(&self, backend: u64) -> Health {
        match self.backends.get(&backend) {
            Some(Backend::Alive) => Health::Alive,
            Some(Backend::HalfOpen) => Health::HalfOpen,
            None => Health::Dead,
        }
    }

    /// The client closed its connection (a no-op for a killed backend).
    pub fn disconnect(&mut self, backend: u64) {
        self.backends.remove(&backend);
    }

    /// The server kills a backend (server-side idle timeout of a frozen client).
    pub fn kill(&mut self, backend: u64) {
        if self.backends.remove(&backend).is_some() {
            self.killed += 1;
        }
    }

    // ---- faults ------------------------------------------------------------------------

    /// Restart: every backend is killed.
    pub fn kill_all(&mut self) {
        self.killed += self.backends.len() as u64;
        self.backends.clear();
    }

    pub fn set_down(&mut self, on: bool) {
        if on {
            self.down += 1;
        } else {
            self.down = self.down.saturating_sub(1);
        }
    }

    pub fn set_auth_broken(&mut self, on: bool) {
        if on {
            self.auth_broken += 1;
        } else {
            self.auth_broken = self.auth_broken.saturating_sub(1);
        }
    }

    pub fn set_slow(&mut self, factor: u32, on: bool) {
        let f = u64::from(factor.max(1));
        if on {
            self.slow_factor = self.slow_factor.saturating_mul(f);
        } else {
            self.slow_factor = (self.slow_factor / f).max(1);
        }
    }

    /// `count` live backends, chosen at random, stop answering.
    pub fn make_half_open(&mut self, count: usize, rng: &mut Rng) -> usize {
        let alive: Vec<u64> = self
            .backends
            .iter()
            .filter(|(_, b)| **b == Backend::Alive)
            .map(|(id, _)| *id)
            .collect();
        let mut picked = 0;
        let mut pool = alive;
        while picked < count && !pool.is_empty() {
            let i = rng.below(pool.len() as u64) as usize;
            let id = pool.swap_remove(i);
            self.backends.insert(id, Backend::HalfOpen);
            picked += 1;
        }
        picked
    }

    pub fn half_open_count(&self) -> usize {
        self.backends
            .values()
            .filter(|b| **b == Backend::HalfOpen)
            .count()
    }

    /// Total failed connects.
    pub fn connects_failed_total(&self) -> u64 {
        self.connects_failed.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_refuses_with_too_many_clients() {
        let mut db = Db::new(DbSpec {
            max_connections: 2,
            ..DbSpec::default()
        });
        let mut rng = Rng::new(1);
        let (_, a) = db.start_connect(&mut rng);
        let (_, b) = db.start_connect(&mut rng);
        let (_, c) = db.start_connect(&mut rng);
        assert_eq!(
            c,
            ConnectStart::TooMany,
            "a handshake in progress holds a slot"
        );
        assert!(db.finish_connect(a).is_ok());
        assert!(db.finish_connect(b).is_ok());
        let e = db.finish_connect(c).unwrap_err();
        assert!(!e.is_fatal());
        assert_eq!(&*e.message, ERR_TOO_MANY);
        assert_eq!(db.peak, 2);
        assert_eq!(db.connects_failed[ERR_TOO_MANY], 1);
    }

    #[test]
    fn faults_switch_and_nest() {
        let mut rng = Rng::new(1);
        let mut db = Db::new(DbSpec::default());
        let a = db.finish_connect(ConnectStart::Pending).unwrap();
        db.set_auth_broken(true);
        assert!(db
            .finish_connect(ConnectStart::Pending)
            .unwrap_err()
            .is_fatal());
        db.set_auth_broken(false);
        db.set_down(true);
        db.set_down(true);
        db.set_down(false);
        assert_eq!(
            db.start_connect(&mut rng).1,
            ConnectStart::Refused,
            "still down after one of two windows ends"
        );
        db.set_down(false);
        let (_, p) = db.start_connect(&mut rng);
        assert_eq!(p, ConnectStart::Pending);
        db.finish_connect(p).unwrap();
        assert_eq!(db.make_half_open(5, &mut rng), 2);
        assert_eq!(db.health(a), Health::HalfOpen);
        db.kill_all();
        assert_eq!(db.health(a), Health::Dead);
        assert_eq!(db.killed, 2);
        assert_eq!(db.open_count(), 0);
    }
}
