//! Fuzz target `proxy_session`: arbitrary client and server bytes, interleaved by the fuzz
//! input with pool events, fed to `pool_proxy::ClientSession`. Bytes come either raw
//! (arbitrary, split anywhere) or as well-formed messages drawn from the ones that change
//! state (so deep states are reached: transactions, pipelines, COPY, pins).
//!
//! The harness plays the driver and keeps its own books, from what it fed and what the
//! session emitted. Checked after every step:
//! - no panic, and `Err(Misuse)` exactly for inputs the driver must not give (a grant
//!   without a request, server bytes while no server is held, anything server-side after
//!   the close);
//! - never two servers: a server is requested only while none is held or requested, a
//!   grant is accepted only for a request, every action about a server names the one held,
//!   and `server()` agrees with the books;
//! - a server is released clean only in a clean state: the last ReadyForQuery fed said
//!   `I` (or none was fed since the grant), every counted request forwarded (Query, Sync,
//!   FunctionCall, read back from the bytes sent) was answered by a ReadyForQuery or
//!   swallowed by a COPY-in response, and the session is not pinned; Reset and Rollback
//!   releases happen only as the client goes;
//! - the count of unanswered requests never exceeds the counted requests forwarded;
//! - the client receives whole, well-formed messages; CloseClient comes once, and nothing
//!   is sent to anyone after it; a pin or a refusal is reported at most once;
//! - with named statements tracked (transaction mode, `max_prepared_statements` > 0): a
//!   client's statement is never prepared on a server under the client's name (every
//!   Parse sent is of the unnamed statement or the proxy's; a Bind, Describe or Close of
//!   a name the client never defined goes as it is, for the server to refuse), and a
//!   named Parse never pins.
//!   Each released server's record goes back to a shelf the next grants may take it from.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pool_proxy::protocol::frame::Framer;
use pool_proxy::{
    AbandonedTransactionPolicy, Action, ClientSession, Input, Instant, Misuse, PoolMode, Release,
    ServerId, ServerStatements, SessionConfig, StatePolicy, FOLLOWED_PARAMETERS,
    SERVER_NAME_PREFIX,
};
use std::time::Duration;

#[derive(Arbitrary, Debug)]
enum ClientMsg {
    Query(u8),
    /// Statement 0 is the unnamed one; 1 and 2 are named, each with two texts.
    Parse { statement: u8, text: bool },
    Bind { statement: u8 },
    Describe { statement: Option<u8> },
    Execute,
    Close { statement: Option<u8> },
    Sync,
    Flush,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall,
    Terminate,
}

#[derive(Arbitrary, Debug)]
enum ServerMsg {
    ReadyForQuery(u8),
    CommandComplete(u8),
    Error,
    Notice,
    CopyIn,
    CopyOut,
    CopyBoth,
    ParseComplete,
    BindComplete,
    CloseComplete,
    DataRow,
    /// A followed parameter (TimeZone) or another one the server reports (is_superuser).
    ParameterStatus { followed: bool },
    BackendKeyData,
}

#[derive(Arbitrary, Debug)]
enum Op {
    ClientRaw(Vec<u8>),
    Client {
        msgs: Vec<ClientMsg>,
        split: u16,
    },
    ClientClosed,
    /// A server from the pool: a new one, or one released earlier (with its record).
    Grant { reused: bool },
    Unavailable,
    ServerRaw(Vec<u8>),
    Server {
        msgs: Vec<ServerMsg>,
        split: u16,
    },
    ServerLost,
    /// The clock moves on this many milliseconds.
    Advance(u16),
    Timeout,
}

#[derive(Arbitrary, Debug)]
struct Case {
    /// Session pooling instead of transaction pooling.
    session_mode: bool,
    refuse: bool,
    close_abandoned: bool,
    small_limits: bool,
    /// `max_prepared_statements`: 0 (off) to 3.
    statements: u8,
    /// `idle_transaction_timeout` in milliseconds, if any.
    idle_timeout_ms: Option<u16>,
    ops: Vec<Op>,
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    b.extend_from_slice(body);
    b
}

const QUERIES: [&str; 9] = [
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "SET a = 1",
    "COPY t FROM STDIN",
    "LISTEN c",
    // The proxy answers these itself when the client has that statement.
    "DEALLOCATE s1",
    "deallocate prepare \"s2\";",
    // A followed parameter: its SET does not pin.
    "SET TimeZone = 'UTC'",
];
const TAGS: [&str; 11] = [
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SET",
    "RESET",
    "LISTEN",
    "PREPARE",
    "DECLARE CURSOR",
    "COPY 1",
    "DISCARD ALL",
];

fn client_bytes(m: &ClientMsg) -> Vec<u8> {
    match m {
        ClientMsg::Query(i) => msg(
            b'Q',
            format!("{}\0", QUERIES[*i as usize % QUERIES.len()]).as_bytes(),
        ),
        ClientMsg::Parse { statement, text } => msg(
            b'P',
            format!(
                "{}\0SELECT {}\0\0\0",
                statement_name(*statement),
                u8::from(*text)
            )
            .as_bytes(),
        ),
        ClientMsg::Bind { statement } => msg(
            b'B',
            format!("\0{}\0\0\0\0\0\0\0", statement_name(*statement)).as_bytes(),
        ),
        ClientMsg::Describe { statement } => msg(b'D', &describe_or_close(*statement)),
        ClientMsg::Execute => msg(b'E', b"\0\0\0\0\0"),
        ClientMsg::Close { statement } => msg(b'C', &describe_or_close(*statement)),
        ClientMsg::Sync => msg(b'S', b""),
        ClientMsg::Flush => msg(b'H', b""),
        ClientMsg::CopyData => msg(b'd', b"1\n"),
        ClientMsg::CopyDone => msg(b'c', b""),
        ClientMsg::CopyFail => msg(b'f', b"no\0"),
        ClientMsg::FunctionCall => msg(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
        ClientMsg::Terminate => msg(b'X', b""),
    }
}

fn statement_name(statement: u8) -> &'static str {
    ["", "s1", "s2"][usize::from(statement % 3)]
}

/// The body of a Describe or Close: of a statement, or of the unnamed portal.
fn describe_or_close(statement: Option<u8>) -> Vec<u8> {
    match statement {
        Some(s) => format!("S{}\0", statement_name(s)).into_bytes(),
        None => b"P\0".to_vec(),
    }
}

/// The statement a Parse defines: its body up to the first NUL.
fn parsed_statement(body: &[u8]) -> &[u8] {
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    &body[..end]
}

fn server_bytes(m: &ServerMsg) -> Vec<u8> {
    match m {
        ServerMsg::ReadyForQuery(s) => msg(b'Z', &[[b'I', b'T', b'E'][*s as usize % 3]]),
        ServerMsg::CommandComplete(i) => msg(
            b'C',
            format!("{}\0", TAGS[*i as usize % TAGS.len()]).as_bytes(),
        ),
        ServerMsg::Error => msg(b'E', b"SERROR\0C22012\0Mboom\0\0"),
        ServerMsg::Notice => msg(b'N', b"SNOTICE\0C00000\0Mhi\0\0"),
        ServerMsg::CopyIn => msg(b'G', &[0, 0, 1, 0, 0]),
        ServerMsg::CopyOut => msg(b'H', &[0, 0, 0]),
        ServerMsg::CopyBoth => msg(b'W', &[0, 0, 0]),
        ServerMsg::ParseComplete => msg(b'1', b""),
        ServerMsg::BindComplete => msg(b'2', b""),
        ServerMsg::CloseComplete => msg(b'3', b""),
        ServerMsg::DataRow => msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']),
        ServerMsg::ParameterStatus { followed: true } => msg(b'S', b"TimeZone\0UTC\0"),
        ServerMsg::ParameterStatus { followed: false } => msg(b'S', b"is_superuser\0on\0"),
        ServerMsg::BackendKeyData => msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
    }
}

/// The driver's books about the server it lent.
#[derive(Default)]
struct Lent {
    id: u64,
    /// Counted requests read back from the bytes forwarded to it.
    counted: u64,
    /// ReadyForQuery messages fed from it (whole ones, read back with a framer).
    answers: u64,
    /// COPY-in and COPY-both responses fed from it (each may swallow one Sync).
    copy_responses: u64,
    /// The status of the last ReadyForQuery fed (`I` at the grant).
    last_status: u8,
    server_out: Option<Framer>,
}

struct Harness {
    session: ClientSession,
    now: Instant,
    requested: bool,
    lent: Option<Lent>,
    next_id: u64,
    closed: bool,
    pin_reports: u32,
    client_out: Framer,
    session_mode: bool,
    tracked: bool,
    /// Records of released servers, for later grants.
    shelf: Vec<ServerStatements>,
}

impl Harness {
    fn feed_server(&mut self, bytes: &[u8]) {
        let lent = self.lent.as_mut().expect("fed only while lent");
        let framer = lent.server_out.get_or_insert_with(|| Framer::new(u32::MAX));
        framer.push(bytes);
        while let Ok(Some(frame)) = framer.next_frame() {
            match frame.tag() {
                b'Z' => {
                    lent.answers += 1;
                    lent.last_status = frame.body().first().copied().unwrap_or(0);
                }
                b'G' | b'W' => lent.copy_responses += 1,
                _ => {}
            }
        }
    }

    fn step(&mut self, input: Input<'_>) {
        let expect_misuse = match input {
            Input::ServerGranted(..) | Input::ServerUnavailable { .. } => !self.requested,
            Input::ServerBytes(_) | Input::ServerLost => self.lent.is_none(),
            Input::ClientBytes(_) | Input::ClientClosed | Input::Timeout => false,
        };
        let due = self
            .session
            .poll_timeout()
            .is_some_and(|deadline| deadline <= self.now);
        if let (Input::ServerBytes(bytes), false) = (&input, expect_misuse) {
            self.feed_server(bytes);
        }
        let result = self.session.handle(self.now, input.clone());
        assert_eq!(result.is_err(), expect_misuse, "{input:?} gave {result:?}");
        if let Err(e) = result {
            let expected = if self.closed {
                Misuse::Closed
            } else if self.lent.is_none()
                && matches!(input, Input::ServerBytes(_) | Input::ServerLost)
            {
                Misuse::NoServerHeld
            } else {
                Misuse::NotWaiting
            };
            assert_eq!(e, expected);
            assert!(
                self.session.poll_action().is_none(),
                "misuse changed nothing"
            );
            return;
        }
        let was_closed = self.closed;
        match input {
            Input::ServerGranted(ServerId(id), _) => {
                self.requested = false;
                self.lent = Some(Lent {
                    id,
                    last_status: b'I',
                    ..Lent::default()
                });
            }
            Input::ServerUnavailable { .. } => self.requested = false,
            Input::ServerLost => self.lent = None,
            _ => {}
        }
        while let Some(action) = self.session.poll_action() {
            self.check(action);
        }
        assert_eq!(
            self.session.server().map(|s| s.0),
            self.lent.as_ref().map(|l| l.id)
        );
        assert_eq!(self.session.is_waiting(), self.requested);
        assert_eq!(self.session.is_closed(), self.closed);
        if matches!(input, Input::Timeout) {
            assert_eq!(
                self.closed,
                due || was_closed,
                "a due timeout closes, an early one does nothing"
            );
        }
        if let Some(deadline) = self.session.poll_timeout() {
            assert!(
                self.lent.is_some() && !self.closed,
                "a deadline only while a server is held"
            );
            assert!(
                deadline > self.now || input != Input::Timeout,
                "nothing due after a timeout"
            );
        }
        let unanswered = self.session.unanswered() as u64;
        if let Some(lent) = &self.lent {
            assert!(
                unanswered <= lent.counted,
                "{unanswered} unanswered of {} counted",
                lent.counted
            );
        } else {
            assert_eq!(unanswered, 0);
        }
    }

    fn check(&mut self, action: Action) {
        assert!(!self.closed, "{action:?} after CloseClient");
        let held = |lent: &Option<Lent>, id: ServerId| {
            assert_eq!(
                lent.as_ref().map(|l| l.id),
                Some(id.0),
                "an action names a server not held"
            );
        };
        match action {
            Action::SendToClient(bytes) => {
                self.client_out.push(&bytes);
                while let Some(frame) = self.client_out.next_frame().expect("well-formed output") {
                    assert!(frame.bytes().len() >= 5);
                }
            }
            Action::SendToServer(id, bytes) => {
                held(&self.lent, id);
                let lent = self.lent.as_mut().unwrap();
                let mut framer = Framer::new(u32::MAX);
                framer.push(&bytes);
                while let Some(frame) = framer.next_frame().expect("whole messages forwarded") {
                    if matches!(frame.tag(), b'Q' | b'S' | b'F') {
                        lent.counted += 1;
                    }
                    if self.tracked && frame.tag() == b'P' {
                        let name = parsed_statement(frame.body());
                        assert!(
                            name.is_empty() || name.starts_with(SERVER_NAME_PREFIX.as_bytes()),
                            "a client's statement prepared under its name: {:?}",
                            String::from_utf8_lossy(name)
                        );
                    }
                }
                assert_eq!(framer.buffered(), 0, "only whole messages are forwarded");
            }
            Action::RequestServer => {
                assert!(
                    !self.requested && self.lent.is_none(),
                    "a second server requested"
                );
                self.requested = true;
            }
            Action::WithdrawServerRequest => {
                assert!(self.requested);
                self.requested = false;
            }
            Action::ReleaseServer(id, how, statements) => {
                held(&self.lent, id);
                self.shelf.push(statements);
                let lent = self.lent.take().unwrap();
                match how {
                    Release::Clean => {
                        assert!(!self.session_mode, "session mode releases only with a reset");
                        assert_eq!(lent.last_status, b'I', "released clean outside idle");
                        assert!(
                            lent.counted <= lent.answers + lent.copy_responses,
                            "released clean with {} counted, {} answered, {} copy responses",
                            lent.counted,
                            lent.answers,
                            lent.copy_responses
                        );
                        assert!(
                            self.session.pinned().is_none() || self.session.is_closed(),
                            "a pinned server released clean"
                        );
                    }
                    Release::Reset | Release::Rollback { .. } => {
                        assert!(self.session.is_closed(), "{how:?} only as the client goes");
                        if how == Release::Reset {
                            assert_eq!(lent.last_status, b'I');
                        } else {
                            assert_ne!(lent.last_status, b'I');
                        }
                    }
                }
            }
            Action::CloseServer(id, reason) => {
                held(&self.lent, id);
                assert!(!reason.is_empty());
                self.lent = None;
            }
            Action::SettingsDiscarded => {
                assert!(self.lent.is_some(), "settings discarded on no server");
            }
            Action::ParameterChanged { name, .. } => {
                assert!(self.lent.is_some(), "a parameter changed on no server");
                assert!(
                    FOLLOWED_PARAMETERS.contains(&name.as_str()),
                    "{name} is not followed"
                );
            }
            Action::Pinned(reason) | Action::Refused(reason) => {
                assert!(!self.session_mode, "nothing pins in session mode");
                assert!(
                    !(self.tracked && reason == pool_proxy::PinReason::NamedStatement),
                    "a tracked named statement pinned"
                );
                self.pin_reports += 1;
                assert_eq!(self.pin_reports, 1, "pins are reported once per client");
            }
            Action::CloseClient => {
                assert!(
                    self.lent.is_none(),
                    "the server is dealt with before the client closes"
                );
                assert!(
                    !self.requested,
                    "the request is withdrawn before the client closes"
                );
                self.closed = true;
            }
        }
    }
}

fuzz_target!(|case: Case| {
    let mut config = SessionConfig {
        pool_mode: if case.session_mode {
            PoolMode::Session
        } else {
            PoolMode::Transaction
        },
        on_session_state: if case.refuse {
            StatePolicy::Refuse
        } else {
            StatePolicy::Pin
        },
        on_abandoned_transaction: if case.close_abandoned {
            AbandonedTransactionPolicy::Close
        } else {
            AbandonedTransactionPolicy::Rollback
        },
        idle_transaction_timeout: case
            .idle_timeout_ms
            .map(|ms| Duration::from_millis(ms.into())),
        max_prepared_statements: usize::from(case.statements % 4),
        ..SessionConfig::default()
    };
    let tracked = !case.session_mode && config.max_prepared_statements > 0;
    if case.small_limits {
        config.max_client_message_len = 64;
        config.max_server_message_len = 64;
        config.max_queued_bytes = 128;
    }
    let mut h = Harness {
        session: ClientSession::new(config),
        now: Instant::ZERO,
        requested: false,
        lent: None,
        next_id: 1,
        closed: false,
        pin_reports: 0,
        client_out: Framer::new(u32::MAX),
        session_mode: case.session_mode,
        tracked,
        shelf: Vec::new(),
    };
    for op in case.ops.iter().take(256) {
        match op {
            Op::ClientRaw(bytes) => h.step(Input::ClientBytes(bytes)),
            Op::Client { msgs, split } => {
                let bytes: Vec<u8> = msgs.iter().flat_map(client_bytes).collect();
                let at = usize::from(*split).min(bytes.len());
                h.step(Input::ClientBytes(&bytes[..at]));
                h.step(Input::ClientBytes(&bytes[at..]));
            }
            Op::ClientClosed => h.step(Input::ClientClosed),
            Op::Grant { reused } => {
                let id = ServerId(h.next_id);
                h.next_id += 1;
                let statements = if *reused {
                    h.shelf.pop().unwrap_or_default()
                } else {
                    ServerStatements::default()
                };
                h.step(Input::ServerGranted(id, statements));
            }
            Op::Unavailable => h.step(Input::ServerUnavailable {
                sqlstate: "53300",
                message: "no server",
            }),
            Op::ServerRaw(bytes) => h.step(Input::ServerBytes(bytes)),
            Op::Server { msgs, split } => {
                let bytes: Vec<u8> = msgs.iter().flat_map(server_bytes).collect();
                let at = usize::from(*split).min(bytes.len());
                h.step(Input::ServerBytes(&bytes[..at]));
                h.step(Input::ServerBytes(&bytes[at..]));
            }
            Op::ServerLost => h.step(Input::ServerLost),
            Op::Advance(ms) => h.now = h.now + Duration::from_millis((*ms).into()),
            Op::Timeout => h.step(Input::Timeout),
        }
    }
});
