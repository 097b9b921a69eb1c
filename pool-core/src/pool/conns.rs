//! The connection table: every connection the pool knows, in exactly one state. The idle
//! list holds the idle connections themselves: the pool is their only keeper.

use std::collections::VecDeque;

use crate::close_reason::CloseReason;
use crate::config::IdleOrder;
use crate::id::ConnId;
use crate::id_map::IdMap;
use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// The embedder is opening it; abandoned at `deadline`.
    Opening { started: Instant, deadline: Instant },
    /// Ready to lend; in the idle list.
    Idle { since: Instant },
    /// Being health-checked before a checkout.
    Checking { deadline: Instant },
    /// Being reset after a return.
    Resetting { deadline: Instant },
    /// Lent out under lease `seq`.
    Leased {
        seq: u64,
        since: Instant,
        leak_reported: bool,
    },
    /// Closed by the pool but maybe not gone from the server yet: still counted against
    /// `max_size` until `close_finished`, or abandoned at `deadline`.
    Closing {
        deadline: Instant,
        reason: CloseReason,
        owed: Owed,
    },
}

/// What the embedder still owes the pool for a closing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owed {
    /// It was closed while its open, check or reset was under way, so the embedder still
    /// holds it: the answer to that work (`connect_finished`, `check_finished`,
    /// `reset_finished`) hands it back to be closed, or `close_finished` says it is gone.
    Answer(Work),
    /// The embedder was handed it to close: `close_finished` when it is gone.
    Close,
}

/// Work the embedder does on a connection, whose answer hands it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    Open,
    Check,
    Reset,
}

#[derive(Clone, Debug)]
pub(crate) struct Conn {
    /// When the connect finished (when it started, while opening).
    pub created: Instant,
    /// Jittered end of life; `Instant::NEVER` without `max_lifetime`.
    pub expires_at: Instant,
    /// When the connection last came back (or was opened); for the checkout check.
    pub last_used: Instant,
    pub state: State,
    /// The eviction generation it was opened in; older than [`Connections::generation`]
    /// means evicted: never lent or filed idle again.
    pub generation: u64,
}

/// Every live connection, plus the idle list and per-state counts kept in step with it.
pub(crate) struct Connections<C> {
    table: IdMap<ConnId, Conn>,
    /// Idle connections in the order they became idle: the front has been idle longest.
    idle: VecDeque<(ConnId, C)>,
    pub opening: usize,
    pub checking: usize,
    pub resetting: usize,
    pub leased: usize,
    pub closing: usize,
    next_id: u64,
    /// Ids ever handed out and connections ever removed: `created - retired == len()`.
    pub created: u64,
    pub retired: u64,
    /// The eviction generation: bumped by every `evict_all`.
    pub generation: u64,
    /// Evicted connections still opening, being checked or being reset: they will be
    /// closed when they finish, so they are no supply for waiters.
    pub doomed: usize,
}

impl<C> Default for Connections<C> {
    fn default() -> Self {
        Connections {
            table: IdMap::default(),
            idle: VecDeque::new(),
            opening: 0,
            checking: 0,
            resetting: 0,
            leased: 0,
            closing: 0,
            next_id: 0,
            created: 0,
            retired: 0,
            generation: 0,
            doomed: 0,
        }
    }
}

impl<C> Connections<C> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.table.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.table.get_mut(&id)
    }

    /// Every connection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ConnId, &Conn)> {
        self.table.iter()
    }

    /// The ids of the connections `keep` selects, in id order (the order actions about
    /// them come out in).
    pub fn ids_where(&self, keep: impl Fn(&Conn) -> bool) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .table
            .iter()
            .filter(|(_, c)| keep(c))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn idle_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.idle.iter().map(|(id, _)| *id)
    }

    /// The connection idle longest.
    pub fn oldest_idle(&self) -> Option<ConnId> {
        self.idle.front().map(|(id, _)| *id)
    }

    /// A new connection in the opening state.
    pub fn insert_opening(&mut self, started: Instant, deadline: Instant) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.created += 1;
        self.opening += 1;
        self.table.insert(
            id,
            Conn {
                created: started,
                expires_at: Instant::NEVER,
                last_used: started,
                state: State::Opening { started, deadline },
                generation: self.generation,
            },
        );
        id
    }

    /// Start a new eviction generation: every connection now live is evicted. The caller
    /// closes the idle ones; those in flight become doomed.
    pub fn evict(&mut self) {
        self.generation += 1;
        self.doomed = self.opening + self.checking + self.resetting;
    }

    /// Opened before the last `evict`.
    pub fn is_evicted(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.generation < self.generation)
    }

    /// The connection [`Self::pop_idle`] would take.
    pub fn peek_idle(&self, order: IdleOrder) -> Option<ConnId> {
        match order {
            IdleOrder::Lifo => self.idle.back(),
            IdleOrder::Fifo => self.idle.front(),
        }
        .map(|(id, _)| *id)
    }

    /// [`Self::peek_idle`]'s connection itself.
    pub fn peek_idle_mut(&mut self, order: IdleOrder) -> Option<&mut C> {
        match order {
            IdleOrder::Lifo => self.idle.back_mut(),
            IdleOrder::Fifo => self.idle.front_mut(),
        }
        .map(|(_, c)| c)
    }

    /// Take a given idle connection out of the idle list (its state is still `Idle`, as
    /// with [`Self::pop_idle`]).
    pub fn take_idle(&mut self, id: ConnId) -> Option<C> {
        let pos = self.idle.iter().position(|(i, _)| *i == id)?;
        self.idle.remove(pos).map(|(_, c)| c)
    }

    /// Take the next idle connection in `order`. Its state is still `Idle`: the caller
    /// must move it on with [`Self::set`] or [`Self::remove`] at once.
    pub fn pop_idle(&mut self, order: IdleOrder) -> Option<(ConnId, C)> {
        match order {
            IdleOrder::Lifo => self.idle.pop_back(),
            IdleOrder::Fifo => self.idle.pop_front(),
        }
    }

    /// File a connection as idle since `since`.
    pub fn set_idle(&mut self, id: ConnId, since: Instant, connection: C) {
        self.set(id, State::Idle { since });
        self.idle.push_back((id, connection));
    }

    /// Move a connection to a state other than `Idle` (see [`Self::set_idle`]), keeping
    /// counts in step. A connection leaving `Idle` must have been taken with
    /// [`Self::pop_idle`] or [`Self::take_idle`].
    pub fn set(&mut self, id: ConnId, state: State) {
        let generation = self.generation;
        let Some(conn) = self.table.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut conn.state, state);
        let evicted = conn.generation < generation;
        if evicted && in_flight(old) && !in_flight(state) {
            // An evicted connection in flight is being closed: no longer doomed supply.
            self.doomed -= 1;
        }
        self.count(old, -1);
        self.count(state, 1);
    }

    /// Forget a connection (closed, failed to open, or detached), with the connection
    /// itself if the pool held it (idle).
    pub fn remove(&mut self, id: ConnId) -> Option<(Conn, Option<C>)> {
        let conn = self.table.remove(&id)?;
        self.retired += 1;
        if conn.generation < self.generation && in_flight(conn.state) {
            self.doomed -= 1;
        }
        let mut connection = None;
        if let State::Idle { .. } = conn.state {
            connection = self.take_idle(id);
        }
        self.count(conn.state, -1);
        Some((conn, connection))
    }

    fn count(&mut self, state: State, delta: isize) {
        let slot = match state {
            State::Opening { .. } => &mut self.opening,
            State::Checking { .. } => &mut self.checking,
            State::Resetting { .. } => &mut self.resetting,
            State::Leased { .. } => &mut self.leased,
            State::Closing { .. } => &mut self.closing,
            State::Idle { .. } => return,
        };
        *slot = slot.wrapping_add_signed(delta);
    }
}

/// Opening, being checked or being reset: on its way to becoming ready.
pub(crate) fn in_flight(state: State) -> bool {
    matches!(
        state,
        State::Opening { .. } | State::Checking { .. } | State::Resetting { .. }
    )
}
