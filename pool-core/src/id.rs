//! Identifiers the core hands out. They come from counters, never from addresses or
//! randomness, so a run is reproducible and an id is never reused.

use std::fmt;

/// One connection, from the moment the core asks for it to be opened until it is closed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) u64);

/// One pending acquire. Ids grow with arrival, so their order is the FIFO order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub(crate) u64);

/// One loan of a connection. A connection lent twice gets two different leases, so a stale
/// or double release is told apart from a valid one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId {
    pub(crate) conn: ConnId,
    pub(crate) seq: u64,
}

impl ConnId {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl WaiterId {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl LeaseId {
    /// The connection this lease lends.
    pub fn conn(self) -> ConnId {
        self.conn
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

impl fmt::Debug for WaiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waiter#{}", self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease#{}.{}", self.conn.0, self.seq)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
