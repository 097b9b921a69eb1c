//! The connections the shell holds: idle ones, plus the one handed in with the current
//! input until the core says where it goes.

use crate::id::ConnId;

use super::id_map::IdMap;

/// A returned connection usually leaves again in the same critical section (granted to
/// the next waiter), so it is kept "in hand" rather than inserted into the map and removed
/// again at once; [`Held::settle`] files it at the end of the critical section.
pub(super) struct Held<C> {
    in_hand: Option<(ConnId, C)>,
    idle: IdMap<ConnId, C>,
}

impl<C> Held<C> {
    pub(super) fn new() -> Self {
        Held {
            in_hand: None,
            idle: IdMap::default(),
        }
    }

    pub(super) fn insert(&mut self, conn: ConnId, connection: C) {
        if let Some((id, previous)) = self.in_hand.replace((conn, connection)) {
            self.idle.insert(id, previous);
        }
    }

    pub(super) fn remove(&mut self, conn: &ConnId) -> Option<C> {
        match self.in_hand.take() {
            Some((id, connection)) if id == *conn => Some(connection),
            other => {
                self.in_hand = other;
                self.idle.remove(conn)
            }
        }
    }

    /// File the connection in hand with the idle ones.
    pub(super) fn settle(&mut self) {
        if let Some((id, connection)) = self.in_hand.take() {
            self.idle.insert(id, connection);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.idle.len() + usize::from(self.in_hand.is_some())
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use super::Held;
    use crate::id::ConnId;

    #[test]
    fn in_hand_then_settled() {
        let mut held = Held::new();
        held.insert(ConnId(1), "a");
        held.insert(ConnId(2), "b"); // files "a"
        assert_eq!(held.len(), 2);
        assert_eq!(held.remove(&ConnId(1)), Some("a"));
        assert_eq!(held.remove(&ConnId(3)), None);
        held.settle();
        assert_eq!(held.len(), 1);
        assert_eq!(held.remove(&ConnId(2)), Some("b"));
        assert_eq!(held.len(), 0);
    }
}
