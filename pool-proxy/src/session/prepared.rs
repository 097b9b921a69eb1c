//! Named prepared statements through transaction pooling, without pinning (PgBouncer's
//! `max_prepared_statements`): a client's statement works on whichever server its next
//! transaction lands on.
//!
//! The client's names never reach a server. A Parse of a named statement is recorded
//! under the client's name and sent as its [`Statement`], under the statement's server
//! name; a Bind or Describe of it is renamed; a statement the server lacks is prepared
//! there first (a Close, then a Parse, both hidden from the client); a Parse of one the
//! server already has is not sent at all, and a Close of one is answered by the proxy, so
//! other clients' statements on that server stay. The server's record is bounded: the least
//! recently used statement is closed to make room.
//!
//! Every message sent has a [`Reply`] in a queue, in the server's order, saying what ends
//! its answer and whose answer it is: the client's (forwarded, with the server name put
//! back in an error), the proxy's (hidden), or one the proxy makes itself when its turn
//! comes (a ParseComplete or CloseComplete for a message not sent; the whole answer to a
//! simple query `DEALLOCATE` of a client's statement, see [`super::deallocate`]). An
//! error to an extended-protocol message makes the server skip everything up to the next
//! Sync, so the replies up to there are dropped and what their messages would have done is
//! undone: a statement not prepared after all, a client's name not defined or not closed
//! after all.

use std::collections::VecDeque;
use std::sync::Arc;

use super::deallocate::deallocated_name;
use super::statements::{write_close, ClientStatements, ServerStatements, Statement};
use crate::protocol::backend::{
    command_complete, error_response, ready_for_query, write_message, ServerMessage,
    TransactionStatus,
};
use crate::protocol::frame::Frame;
use crate::protocol::frontend::ClientMessage;
use crate::protocol::take_cstr;

/// The server message that ends the answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    ParseComplete,
    BindComplete,
    /// RowDescription or NoData (a statement's ParameterDescription comes before).
    Description,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execution,
    CloseComplete,
    /// ReadyForQuery, to a Query or FunctionCall.
    ReadyForQuery,
    /// ReadyForQuery, to a Sync (which the server ignores in COPY-in mode).
    Sync,
}

impl Ends {
    fn of(message: &ClientMessage) -> Option<Self> {
        Some(match message {
            ClientMessage::Parse { .. } => Self::ParseComplete,
            ClientMessage::Bind => Self::BindComplete,
            ClientMessage::Describe => Self::Description,
            ClientMessage::Execute => Self::Execution,
            ClientMessage::Close => Self::CloseComplete,
            ClientMessage::Query | ClientMessage::FunctionCall => Self::ReadyForQuery,
            ClientMessage::Sync => Self::Sync,
            _ => return None,
        })
    }

    fn by(self, tag: u8) -> bool {
        match self {
            Self::ParseComplete => tag == b'1',
            Self::BindComplete => tag == b'2',
            Self::Description => matches!(tag, b'T' | b'n'),
            Self::Execution => matches!(tag, b'C' | b'I' | b's'),
            Self::CloseComplete => tag == b'3',
            Self::ReadyForQuery | Self::Sync => tag == b'Z',
        }
    }

    /// Ends with a ReadyForQuery: the end of a batch, where the server stops skipping.
    fn is_ready(self) -> bool {
        matches!(self, Self::ReadyForQuery | Self::Sync)
    }
}

/// What a message would have done, undone when the server skips or fails it.
#[derive(Debug, Default)]
struct Undo {
    /// The client's name it defined.
    defined: Option<String>,
    /// The statement it prepared on the server.
    prepared: Option<Arc<str>>,
    /// The client's statement it closed.
    closed: Option<(String, Statement)>,
}

/// Whose answer a sent (or unsent) message gets.
#[derive(Debug)]
enum Reply {
    /// The client's message: its answer goes to the client, with the statement's server
    /// name (if it names one) given back as the client's name in an error.
    Client {
        ends: Ends,
        names: Option<(Arc<str>, String)>,
        undo: Undo,
        /// COPY ends (CopyDone, CopyFail) the client had sent before it.
        copy_mark: u64,
    },
    /// A message the proxy added: its answer is not the client's.
    Hidden { ends: Ends, undo: Undo },
    /// A message not sent: the proxy answers it when its turn comes.
    Made { answer: Answer, undo: Undo },
}

/// The answer the proxy makes to a message it did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    ParseComplete,
    CloseComplete,
    /// To a simple query `DEALLOCATE` of a client's statement: CommandComplete and
    /// ReadyForQuery, or inside a failed transaction the error PostgreSQL gives there
    /// (and the statement stays).
    Deallocate,
}

impl Reply {
    fn ends(&self) -> Option<Ends> {
        match self {
            Self::Client { ends, .. } | Self::Hidden { ends, .. } => Some(*ends),
            Self::Made { .. } => None,
        }
    }

    fn into_undo(self) -> Undo {
        match self {
            Self::Client { undo, .. } | Self::Hidden { undo, .. } | Self::Made { undo, .. } => undo,
        }
    }
}

/// What becomes of a server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// The answer to a message the proxy added.
    Hide,
    /// Forward this instead (an error naming the client's statement).
    Replace(Vec<u8>),
}

/// One client's prepared statements and the replies its server owes. See the module
/// documentation.
#[derive(Debug)]
pub struct Tracker {
    statements: ClientStatements,
    replies: VecDeque<Reply>,
    /// The most statements kept prepared on one server.
    bound: usize,
    /// The server record's stamp when the batch in progress began: statements used since
    /// are not closed to make room.
    batch_start: u64,
    /// Statements the proxy prepared on servers (each a Parse it sent).
    prepares: u64,
    /// COPY ends (CopyDone, CopyFail) the client has sent.
    copy_ends: u64,
}

impl Tracker {
    pub fn new(bound: usize) -> Self {
        Self {
            statements: ClientStatements::default(),
            replies: VecDeque::new(),
            bound: bound.max(1),
            batch_start: 0,
            prepares: 0,
            copy_ends: 0,
        }
    }

    /// A server was lent: nothing is owed yet, and its batch begins now.
    pub fn granted(&mut self, on_server: &ServerStatements) {
        self.replies.clear();
        self.batch_start = on_server.now();
    }

    /// Statements this client has defined.
    pub fn defined(&self) -> usize {
        self.statements.len()
    }

    /// Statements prepared on servers for this client so far.
    pub fn prepares(&self) -> u64 {
        self.prepares
    }

    /// One client message for the server: what to send (`to_server`: the message, renamed,
    /// maybe after messages that prepare its statement, or nothing) and answers the proxy
    /// gives at once (`to_client`).
    pub fn outgoing(
        &mut self,
        frame: Frame,
        message: &ClientMessage,
        on_server: &mut ServerStatements,
        to_server: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
        status: TransactionStatus,
    ) {
        let handled = match message {
            ClientMessage::Parse { named: true } => self.parse(&frame, on_server, to_server),
            ClientMessage::Bind => self.bind(&frame, on_server, to_server),
            ClientMessage::Describe => self.describe(&frame, on_server, to_server),
            ClientMessage::Close => self.close(&frame),
            ClientMessage::CopyDone | ClientMessage::CopyFail => {
                self.copy_ends += 1;
                false
            }
            _ => false,
        };
        if !handled {
            if let Some(ends) = Ends::of(message) {
                self.replies.push_back(Reply::Client {
                    copy_mark: self.copy_ends,
                    ends,
                    names: None,
                    undo: Undo::default(),
                });
                if ends.is_ready() {
                    self.batch_start = on_server.now();
                }
            }
            to_server.extend_from_slice(frame.bytes());
        }
        self.make_due(to_client, status);
    }

    /// One server message: forwarded, hidden or replaced. Answers the proxy makes that
    /// are due after it are appended to `to_client` by [`Tracker::make_due`].
    pub fn incoming(
        &mut self,
        frame: &Frame,
        message: &ServerMessage,
        on_server: &mut ServerStatements,
    ) -> Verdict {
        if let ServerMessage::CommandComplete { tag } = message {
            match tag.as_str() {
                // The server has none of its prepared statements any more, nor has the
                // client (as it would have without a pooler).
                "DEALLOCATE ALL" | "DISCARD ALL" => {
                    on_server.clear();
                    self.statements.clear();
                }
                // Some statement is gone (maybe one of the proxy's, named directly).
                "DEALLOCATE" => on_server.clear(),
                _ => {}
            }
        }
        let tag = frame.tag();
        if tag == b'Z' {
            // Everything before the request it answers is answered: a point to resync at.
            while let Some(reply) = self.replies.pop_front() {
                if reply.ends().is_some_and(Ends::is_ready) {
                    break;
                }
                self.undo(reply.into_undo(), on_server);
            }
            return Verdict::Forward;
        }
        let Some(front) = self.replies.front() else {
            return Verdict::Forward;
        };
        let Some(ends) = front.ends() else {
            // A made answer is given as soon as it is due, never left at the front.
            return Verdict::Forward;
        };
        if matches!(
            message,
            ServerMessage::CopyInResponse | ServerMessage::CopyBothResponse
        ) {
            self.copy_began();
            return Verdict::Forward;
        }
        if let ServerMessage::ErrorResponse { sqlstate, .. } = message {
            if ends.is_ready() {
                return Verdict::Forward;
            }
            // The server skips the rest up to the next Sync: none of it happened.
            let Some(failed) = self.replies.pop_front() else {
                return Verdict::Forward;
            };
            let verdict = match &failed {
                Reply::Client {
                    ends,
                    names: Some((server_name, client_name)),
                    ..
                } => {
                    if *ends == Ends::BindComplete && sqlstate == "0A000" {
                        // `cached plan must not change result type` after DDL: prepared
                        // again next time, so the statement works from then on.
                        on_server.remove(server_name);
                    }
                    Verdict::Replace(rename_in_error(frame, server_name, client_name))
                }
                _ => Verdict::Forward,
            };
            self.undo(failed.into_undo(), on_server);
            while self
                .replies
                .front()
                .is_some_and(|reply| !reply.ends().is_some_and(Ends::is_ready))
            {
                if let Some(skipped) = self.replies.pop_front() {
                    self.undo(skipped.into_undo(), on_server);
                }
            }
            return verdict;
        }
        if !ends.by(tag) {
            return Verdict::Forward;
        }
        match self.replies.pop_front() {
            Some(Reply::Hidden { .. }) => Verdict::Hide,
            _ => Verdict::Forward,
        }
    }

    /// The front request (an Execute or Query of a `COPY ... FROM STDIN`) put the server
    /// in COPY-in mode, where it ignores Syncs: those the client sent after the request and
    /// before ending the COPY will get no ReadyForQuery.
    fn copy_began(&mut self) {
        let Some(Reply::Client { copy_mark, .. }) = self.replies.front() else {
            return;
        };
        let mark = *copy_mark;
        let mut i = 1;
        while i < self.replies.len() {
            match &self.replies[i] {
                Reply::Client {
                    ends: Ends::Sync,
                    copy_mark,
                    ..
                } if *copy_mark == mark => {
                    self.replies.remove(i);
                }
                _ => i += 1,
            }
        }
    }

    /// Appends the answers the proxy makes that are now due: those at the front of the
    /// queue, with nothing the server still owes before them. `status` is the server's
    /// transaction status after everything before them.
    pub fn make_due(&mut self, to_client: &mut Vec<u8>, status: TransactionStatus) {
        while matches!(self.replies.front(), Some(Reply::Made { .. })) {
            let Some(Reply::Made { answer, undo }) = self.replies.pop_front() else {
                break;
            };
            match answer {
                Answer::ParseComplete => write_message(to_client, b'1', &[]),
                Answer::CloseComplete => write_message(to_client, b'3', &[]),
                Answer::Deallocate if status == TransactionStatus::Failed => {
                    if let Some((name, statement)) = undo.closed {
                        self.statements.insert(name, statement);
                    }
                    to_client.extend(error_response(
                        "ERROR",
                        "25P02",
                        "current transaction is aborted, commands ignored until end of \
                         transaction block",
                    ));
                    ready_for_query(to_client, status);
                }
                Answer::Deallocate => {
                    command_complete(to_client, "DEALLOCATE");
                    ready_for_query(to_client, status);
                }
            }
        }
    }

    /// A named Parse: defines the client's name; prepares the statement on the server
    /// unless it is there. A name already defined fails on the server as it would
    /// without a pooler (a Parse under a server name the server has).
    fn parse(
        &mut self,
        frame: &Frame,
        on_server: &mut ServerStatements,
        to_server: &mut Vec<u8>,
    ) -> bool {
        let Some((name, definition)) = take_cstr(frame.body()) else {
            return false;
        };
        if let Some(existing) = self.statements.get(name).cloned() {
            self.prepare(&existing, on_server, to_server);
            let again = Statement::with_name(&existing, definition);
            again.write_parse(to_server);
            self.replies.push_back(Reply::Client {
                copy_mark: self.copy_ends,
                ends: Ends::ParseComplete,
                names: Some((existing.server_name().into(), name.to_owned())),
                undo: Undo::default(),
            });
            return true;
        }
        let statement = Statement::new(definition);
        self.statements.insert(name.to_owned(), statement.clone());
        let defined = Some(name.to_owned());
        if on_server.touch(statement.server_name()) {
            self.replies.push_back(Reply::Made {
                answer: Answer::ParseComplete,
                undo: Undo {
                    defined,
                    ..Undo::default()
                },
            });
            return true;
        }
        self.make_room(on_server, to_server);
        self.close_hidden(statement.server_name(), to_server);
        statement.write_parse(to_server);
        on_server.insert(&statement);
        self.prepares += 1;
        self.replies.push_back(Reply::Client {
            copy_mark: self.copy_ends,
            ends: Ends::ParseComplete,
            names: Some((statement.server_name().into(), name.to_owned())),
            undo: Undo {
                defined,
                prepared: Some(statement.server_name().into()),
                closed: None,
            },
        });
        true
    }

    /// A Bind of a client's statement: renamed, after preparing it where it is missing.
    fn bind(
        &mut self,
        frame: &Frame,
        on_server: &mut ServerStatements,
        to_server: &mut Vec<u8>,
    ) -> bool {
        let Some((portal, rest)) = take_cstr(frame.body()) else {
            return false;
        };
        let Some((name, parameters)) = take_cstr(rest) else {
            return false;
        };
        let Some(statement) = self.statements.get(name).cloned() else {
            return false;
        };
        self.prepare(&statement, on_server, to_server);
        let mut body = Vec::with_capacity(frame.body().len() + 64);
        body.extend_from_slice(portal.as_bytes());
        body.push(0);
        body.extend_from_slice(statement.server_name().as_bytes());
        body.push(0);
        body.extend_from_slice(parameters);
        write_message(to_server, b'B', &body);
        self.replies.push_back(Reply::Client {
            copy_mark: self.copy_ends,
            ends: Ends::BindComplete,
            names: Some((statement.server_name().into(), name.to_owned())),
            undo: Undo::default(),
        });
        true
    }

    /// A Describe of a client's statement: renamed, after preparing it where it is missing.
    fn describe(
        &mut self,
        frame: &Frame,
        on_server: &mut ServerStatements,
        to_server: &mut Vec<u8>,
    ) -> bool {
        let [b'S', name @ ..] = frame.body() else {
            return false;
        };
        let Some((name, [])) = take_cstr(name) else {
            return false;
        };
        let Some(statement) = self.statements.get(name).cloned() else {
            return false;
        };
        self.prepare(&statement, on_server, to_server);
        let mut body = vec![b'S'];
        body.extend_from_slice(statement.server_name().as_bytes());
        body.push(0);
        write_message(to_server, b'D', &body);
        self.replies.push_back(Reply::Client {
            copy_mark: self.copy_ends,
            ends: Ends::Description,
            names: Some((statement.server_name().into(), name.to_owned())),
            undo: Undo::default(),
        });
        true
    }

    /// A Close of a client's statement: the client's name goes, the server's statement
    /// stays for others; the proxy answers when its turn comes.
    fn close(&mut self, frame: &Frame) -> bool {
        let [b'S', name @ ..] = frame.body() else {
            return false;
        };
        let Some((name, [])) = take_cstr(name) else {
            return false;
        };
        let Some(statement) = self.statements.remove(name) else {
            return false;
        };
        self.replies.push_back(Reply::Made {
            answer: Answer::CloseComplete,
            undo: Undo {
                closed: Some((name.to_owned(), statement)),
                ..Undo::default()
            },
        });
        true
    }

    /// A simple query `DEALLOCATE` of a client's statement (no server knows it by that
    /// name): taken as a Close, and answered by the proxy when its turn comes. Statements
    /// are not transactional, so that is what PostgreSQL does, except in a failed
    /// transaction ([`Answer::Deallocate`]). Returns whether it was one.
    pub fn deallocate(&mut self, query: &Frame) -> bool {
        if self.statements.is_empty() {
            return false;
        }
        let Some(name) = deallocated_name(query.body()) else {
            return false;
        };
        let Some(statement) = self.statements.remove(&name) else {
            return false;
        };
        self.replies.push_back(Reply::Made {
            answer: Answer::Deallocate,
            undo: Undo {
                closed: Some((name, statement)),
                ..Undo::default()
            },
        });
        true
    }

    /// Makes sure the server has the statement: prepared (hidden) unless the record says so.
    fn prepare(
        &mut self,
        statement: &Statement,
        on_server: &mut ServerStatements,
        to_server: &mut Vec<u8>,
    ) {
        if on_server.touch(statement.server_name()) {
            return;
        }
        self.make_room(on_server, to_server);
        self.close_hidden(statement.server_name(), to_server);
        statement.write_parse(to_server);
        on_server.insert(statement);
        self.prepares += 1;
        self.replies.push_back(Reply::Hidden {
            ends: Ends::ParseComplete,
            undo: Undo {
                prepared: Some(statement.server_name().into()),
                ..Undo::default()
            },
        });
    }

    /// At the bound, closes the least recently used statement not used by this batch.
    fn make_room(&mut self, on_server: &mut ServerStatements, to_server: &mut Vec<u8>) {
        if on_server.len() < self.bound {
            return;
        }
        if let Some(victim) = on_server.victim(self.batch_start) {
            on_server.remove(&victim);
            self.close_hidden(&victim, to_server);
        }
    }

    /// A hidden Close: a statement the record may not know of goes before it is prepared
    /// again (closing one the server lacks is no error).
    fn close_hidden(&mut self, server_name: &str, to_server: &mut Vec<u8>) {
        write_close(to_server, server_name);
        self.replies.push_back(Reply::Hidden {
            ends: Ends::CloseComplete,
            undo: Undo::default(),
        });
    }

    fn undo(&mut self, undo: Undo, on_server: &mut ServerStatements) {
        if let Some(name) = undo.defined {
            self.statements.remove(&name);
        }
        if let Some(server_name) = undo.prepared {
            on_server.remove(&server_name);
        }
        if let Some((name, statement)) = undo.closed {
            self.statements.insert(name, statement);
        }
    }
}

/// An ErrorResponse with `from` replaced by `to` in its fields: the client hears of its
/// own statement name, never the proxy's.
fn rename_in_error(frame: &Frame, from: &str, to: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(frame.body().len());
    let mut rest = frame.body();
    while let [code, fields @ ..] = rest {
        if *code == 0 {
            break;
        }
        let Some((value, after)) = take_cstr(fields) else {
            return frame.bytes().to_vec();
        };
        body.push(*code);
        body.extend_from_slice(value.replace(from, to).as_bytes());
        body.push(0);
        rest = after;
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    write_message(&mut out, b'E', &body);
    out
}
