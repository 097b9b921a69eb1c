//! What the embedder tells the core, beyond the method names themselves: how a returned
//! connection is judged, and how a failed connect is classified.

use std::fmt;
use std::sync::Arc;

use crate::id::{ConnId, LeaseId, WaiterId};

/// The borrower's judgement of a connection it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Clean: lend it again.
    Reusable,
    /// Unusable (I/O error, closed socket, panic while held): close it, free its capacity
    /// at once, and open a replacement if anyone is waiting.
    Broken,
    /// Usable after a reset (e.g. an open transaction to roll back): reset it first and
    /// close it if the reset fails or times out.
    NeedsReset,
}

/// Whether retrying a failed connect can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Refused, reset, timed out, too many clients: retry with backoff; waiters keep
    /// waiting until their deadline.
    Transient,
    /// Authentication failed, unknown database: retrying will not help. Waiters are
    /// rejected at once with this error instead of timing out.
    Fatal,
}

/// A failed connect as the core keeps it: a class and a message for people, and the
/// driver's own error for an adapter to hand back typed (the core never looks inside it;
/// it travels with the error, so two connects failing at once cannot swap sources).
/// The message must never contain a secret; adapters build it from the driver's error,
/// which names the failure, not the password.
#[derive(Clone)]
pub struct ConnectError {
    pub class: ErrorClass,
    pub message: Arc<str>,
    pub source: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Two errors are the same failure when class and message agree; the source is only
/// carried.
impl PartialEq for ConnectError {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class && self.message == other.message
    }
}

impl Eq for ConnectError {}

impl ConnectError {
    pub fn new(class: ErrorClass, message: impl Into<Arc<str>>) -> Self {
        ConnectError {
            class,
            message: message.into(),
            source: None,
        }
    }

    pub fn transient(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    pub fn fatal(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::Fatal, message)
    }

    /// Carry the driver's error with it.
    pub fn with_source(mut self, source: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }

    pub fn is_fatal(&self) -> bool {
        self.class == ErrorClass::Fatal
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({:?})", self.class, &*self.message)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            ErrorClass::Transient => "transient",
            ErrorClass::Fatal => "fatal",
        };
        write!(f, "{} ({class})", self.message)
    }
}

/// An input the core refused. The state is exactly as it was before the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// No such waiter: it was already granted, rejected or cancelled.
    UnknownWaiter(WaiterId),
    /// No such lease: released twice, never granted, or revoked by a forced close.
    UnknownLease(LeaseId),
    /// No such connection, or it is not in the state the input needs (e.g. a connect result
    /// for a connection that was abandoned after its connect timeout).
    UnexpectedConnection(ConnId),
    /// `close` was already called.
    AlreadyClosed,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::UnknownWaiter(w) => write!(f, "unknown waiter {w:?}"),
            InputError::UnknownLease(l) => {
                write!(f, "unknown lease {l}: released twice or revoked")
            }
            InputError::UnexpectedConnection(c) => {
                write!(f, "{c} is not in a state that accepts this input")
            }
            InputError::AlreadyClosed => f.write_str("the pool is already closed"),
        }
    }
}

impl std::error::Error for InputError {}

/// An input the core refused that handed it a connection: the connection comes back
/// (the embedder closes it), and the state is exactly as it was.
pub struct Refused<C> {
    pub error: InputError,
    pub connection: C,
}

impl<C> Refused<C> {
    pub(crate) fn unknown_lease(lease: LeaseId, connection: C) -> Self {
        Refused {
            error: InputError::UnknownLease(lease),
            connection,
        }
    }
}

impl<C> fmt::Debug for Refused<C> {
    /// Omits the connection: its `Debug` may show credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Refused({:?})", self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same failure: class and message agree, whatever source either carries.
    #[test]
    fn connect_errors_are_equal_when_class_and_message_agree() {
        let refused = ConnectError::transient("refused");
        let with_source = ConnectError::transient("refused").with_source(Arc::new(7u8));
        assert_eq!(refused, with_source);
        assert_ne!(refused, ConnectError::fatal("refused"), "another class");
        assert_ne!(refused, ConnectError::transient("reset"), "another message");
        assert_ne!(refused, ConnectError::fatal("reset"), "both differ");
    }
}
