//! Cancel keys. PostgreSQL cancels a query through a new connection carrying the
//! BackendKeyData its client got at startup. Behind a transaction pooler the client's
//! server changes with every transaction, so the proxy issues each client a key of its
//! own and forwards a CancelRequest carrying it to the server that client holds at that
//! moment, with that server's key. A request for a client holding no server, or with a
//! wrong secret, is dropped, as PostgreSQL drops one it cannot match.
//!
//! A cancel racing the end of a transaction can reach the server after it went back to
//! the pool (PgBouncer has the same window): the release and the forward are not
//! atomic, because the cancel travels over a connection of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::server::{BackendKey, CancelAddr};

/// Where a cancel for a client goes now: its server's address and key.
pub type CancelTarget = (CancelAddr, BackendKey);

/// Where one client is now, shared by its ticket and the registry.
type Whereabouts = Arc<Mutex<Option<CancelTarget>>>;

/// Every connected client's key (process id → secret), and the server it is on.
#[derive(Debug, Default)]
pub struct CancelKeys {
    clients: Mutex<HashMap<u32, (u32, Whereabouts)>>,
}

/// One client's key; dropping it forgets the client.
#[derive(Debug)]
pub struct CancelTicket {
    keys: Arc<CancelKeys>,
    process_id: u32,
    secret: u32,
    on: Whereabouts,
}

impl CancelKeys {
    /// A fresh key for a new client: a process id no connected client has, and a random
    /// secret.
    pub fn issue(self: &Arc<Self>) -> CancelTicket {
        let on = Arc::new(Mutex::new(None));
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let (process_id, secret) = loop {
            let process_id = rand::random::<u32>() & 0x7fff_ffff;
            if process_id != 0 && !clients.contains_key(&process_id) {
                break (process_id, rand::random::<u32>());
            }
        };
        clients.insert(process_id, (secret, on.clone()));
        CancelTicket {
            keys: self.clone(),
            process_id,
            secret,
            on,
        }
    }

    /// The server to cancel for this key, if the key is a client's and that client holds
    /// a server now.
    pub fn target(&self, process_id: u32, secret: u32) -> Option<CancelTarget> {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let (expected, on) = clients.get(&process_id)?;
        if *expected != secret {
            return None;
        }
        let target = on.lock().unwrap_or_else(PoisonError::into_inner).clone();
        target
    }

    /// How many clients hold a key.
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelTicket {
    /// The key as BackendKeyData carries it: (process id, secret).
    pub fn key(&self) -> (u32, u32) {
        (self.process_id, self.secret)
    }

    /// The client is now on this server (or on none).
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.on.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }
}

impl Drop for CancelTicket {
    fn drop(&mut self) {
        self.keys
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.process_id);
    }
}
