//! The records behind prepared statements in transaction pooling: a [`Statement`] (one
//! text, one name on every server), each client's names for its statements
//! ([`ClientStatements`]) and what is prepared on one server ([`ServerStatements`], which
//! travels with that server from client to client).

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::protocol::backend::write_message;

/// The prefix of every statement name the proxy prepares on a server.
pub const SERVER_NAME_PREFIX: &str = "pool_proxy_";

/// A statement as servers know it. Its server name is derived from its content (the query
/// and its parameter types), so every server and every client agrees on it without any
/// shared table, and two clients' statements share a server statement only when they are
/// the same statement. SHA-256, not a fast hash: a collision would run one client's
/// statement for another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    server_name: Arc<str>,
    /// The Parse body after the name: the query (NUL-terminated), the parameter count and
    /// the parameter type OIDs.
    definition: Arc<[u8]>,
}

impl Statement {
    /// The statement a Parse body defines, given the body after the statement name.
    pub fn new(definition: &[u8]) -> Self {
        let digest = Sha256::digest(definition);
        let mut name = String::with_capacity(SERVER_NAME_PREFIX.len() + 32);
        name.push_str(SERVER_NAME_PREFIX);
        for byte in &digest[..16] {
            name.push_str(&format!("{byte:02x}"));
        }
        Self {
            server_name: name.into(),
            definition: definition.into(),
        }
    }

    /// `named`'s server name with another definition: a Parse redefining a name the
    /// client already defined, which the server refuses as PostgreSQL would.
    pub fn with_name(named: &Statement, definition: &[u8]) -> Self {
        Self {
            server_name: named.server_name.clone(),
            definition: definition.into(),
        }
    }

    /// Its name on every server.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// A Parse of this statement under its server name.
    pub fn write_parse(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(self.server_name.len() + 1 + self.definition.len());
        body.extend_from_slice(self.server_name.as_bytes());
        body.push(0);
        body.extend_from_slice(&self.definition);
        write_message(out, b'P', &body);
    }
}

/// A Close of the statement named `name` (a no-op on a server that has none).
pub fn write_close(out: &mut Vec<u8>, name: &str) {
    let mut body = Vec::with_capacity(name.len() + 2);
    body.push(b'S');
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    write_message(out, b'C', &body);
}

/// One client's named statements, by the client's names. Unbounded, as they would be on
/// a server the client held itself; each is one message the client sent.
#[derive(Debug, Clone, Default)]
pub struct ClientStatements {
    by_name: HashMap<String, Statement>,
}

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Statement> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: String, statement: Statement) {
        self.by_name.insert(name, statement);
    }

    pub fn remove(&mut self, name: &str) -> Option<Statement> {
        self.by_name.remove(name)
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The proxy's statements prepared on one server, with when each was last used. It may
/// know of fewer statements than the server has (a Close skipped after an error, a stale
/// plan dropped, a `DEALLOCATE` by a client), never of more: a statement is prepared again
/// with a Close before its Parse, which is harmless when the server already had it, while a
/// statement it wrongly believed prepared would fail the client's Bind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStatements {
    last_used: HashMap<Arc<str>, u64>,
    clock: u64,
}

impl ServerStatements {
    /// Whether the statement is (as far as the proxy knows) prepared there; marks it used.
    pub fn touch(&mut self, name: &str) -> bool {
        self.clock += 1;
        match self.last_used.get_mut(name) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, statement: &Statement) {
        self.clock += 1;
        self.last_used
            .insert(statement.server_name.clone(), self.clock);
    }

    pub fn remove(&mut self, name: &str) {
        self.last_used.remove(name);
    }

    /// Forgets everything: after `DISCARD ALL` or `DEALLOCATE ALL` the server has none.
    pub fn clear(&mut self) {
        self.last_used.clear();
    }

    pub fn len(&self) -> usize {
        self.last_used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty()
    }

    /// A stamp that orders uses: statements used after it are in use by the batch begun then.
    pub fn now(&self) -> u64 {
        self.clock
    }

    /// The least recently used statement not used since `since` (the start of the batch
    /// in progress, whose messages may still refer to its statements), to make room.
    pub fn victim(&self, since: u64) -> Option<Arc<str>> {
        self.last_used
            .iter()
            .filter(|(_, used)| **used <= since)
            .min_by_key(|(_, used)| **used)
            .map(|(name, _)| name.clone())
    }

    /// The statement names, for tests and the admin console.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.last_used.keys().map(|name| &**name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_named_by_its_text_and_types() {
        let a = Statement::new(b"SELECT $1\0\0\x01\0\0\0\x17");
        let same = Statement::new(b"SELECT $1\0\0\x01\0\0\0\x17");
        let other_type = Statement::new(b"SELECT $1\0\0\x01\0\0\0\x19");
        assert_eq!(a.server_name(), same.server_name());
        assert_ne!(a.server_name(), other_type.server_name());
        assert!(a.server_name().starts_with(SERVER_NAME_PREFIX));
        // Within PostgreSQL's NAMEDATALEN (63 bytes), so never truncated.
        assert_eq!(a.server_name().len(), SERVER_NAME_PREFIX.len() + 32);
    }

    #[test]
    fn the_victim_is_the_least_recently_used_outside_the_batch() {
        let s = |q: &[u8]| Statement::new(q);
        let (a, b, c) = (s(b"a\0\0\0"), s(b"b\0\0\0"), s(b"c\0\0\0"));
        let mut on = ServerStatements::default();
        on.insert(&a);
        on.insert(&b);
        on.insert(&c);
        assert!(on.touch(a.server_name()));
        assert_eq!(on.victim(on.now()).as_deref(), Some(b.server_name()));
        let batch = on.now();
        assert!(on.touch(b.server_name()));
        assert!(on.touch(c.server_name()));
        assert_eq!(on.victim(batch).as_deref(), Some(a.server_name()));
        on.touch(a.server_name());
        assert_eq!(
            on.victim(batch),
            None,
            "every statement is in use by the batch"
        );
        on.remove(a.server_name());
        assert!(!on.touch(a.server_name()));
    }
}
