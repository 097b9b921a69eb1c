//! `ClientSession`: one client connection, as a sans-IO state machine, in transaction
//! pooling mode (the default) or session pooling mode ([`PoolMode`]). Inputs are the client's bytes, the bytes of the server it holds, and events
//! (a server granted or unavailable, the server or the client gone); outputs are
//! [`Action`]s drained with [`ClientSession::poll_action`]. No I/O, no clock, no
//! randomness: every input carries `now` (the caller's clock, as in pool-core), the one
//! deadline is read with [`ClientSession::poll_timeout`], and the same inputs give the
//! same actions.
//!
//! # The release rule
//!
//! Every client request that expects a ReadyForQuery is counted when it is forwarded
//! (Query, Sync, FunctionCall; a Parse/Bind/Describe/Execute/Close batch is answered at its
//! Sync), and each ReadyForQuery answers the oldest. The server goes back to the pool only
//! when the last ReadyForQuery said `I`, no counted request is unanswered, no
//! extended-protocol batch is open (messages forwarded since the last Sync), no COPY-in is
//! in progress, no partial server message is buffered, and nothing pinned the session.
//! The decision is taken at the end of an input, atomically: from then on the session holds
//! no server, so a client message that arrives next (a pipelined second query, or the rest
//! of a message that was only partly in) is queued and a new server requested for it. A
//! message is forwarded only once it is whole, so no half message ever reaches a server
//! that is then given away.
//!
//! # Session state
//!
//! Detected, not guessed, from what the protocol shows: see [`PinReason`] for what is
//! seen and `docs/proxy.md` for what cannot be. Detected state either pins the client to
//! its server until it leaves, or refuses the client with an ErrorResponse, per
//! [`StatePolicy`]; either is reported once per client. The parameters a server reports
//! ([`FOLLOWED_PARAMETERS`]) are not pinned on but followed: their values when a
//! transaction ends go with the client ([`Action::ParameterChanged`]).
//!
//! # Named prepared statements
//!
//! In transaction mode they are not session state: `prepared` tracks them and prepares
//! them on whichever server the client holds, with the record of what each server has
//! ([`ServerStatements`]) lent in with the server and handed back with it.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

pub use pool_core::Instant;

use crate::protocol::backend::{error_response, ServerMessage, TransactionStatus};
use crate::protocol::frame::{Frame, Framer, DEFAULT_MAX_MESSAGE_LEN};
use crate::protocol::frontend::ClientMessage;

mod deallocate;
mod prepared;
mod set;
mod sql;
mod statements;

use prepared::{Tracker, Verdict};
pub use statements::{ServerStatements, Statement, SERVER_NAME_PREFIX};

/// The driver's name for a server connection it lent to this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u64);

/// When a server goes back to the pool (PgBouncer's `pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// At the end of each transaction (the release rule): many clients share few servers.
    #[default]
    Transaction,
    /// When the client leaves: every session feature works, one server per client.
    Session,
}

impl PoolMode {
    /// The setting's values, as PgBouncer spells them.
    pub const NAMES: [&'static str; 2] = ["transaction", "session"];
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        })
    }
}

impl std::str::FromStr for PoolMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "transaction" => Ok(PoolMode::Transaction),
            "session" => Ok(PoolMode::Session),
            _ => Err(format!(
                "unknown pool_mode {text:?}; expected one of {} (statement mode is not supported)",
                PoolMode::NAMES.join(", ")
            )),
        }
    }
}

/// What to do when a client changes session state that transaction pooling cannot keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatePolicy {
    /// Keep the client on its server until it disconnects (as RDS Proxy does); the server
    /// is then reset (`DISCARD ALL`) before anyone else gets it.
    #[default]
    Pin,
    /// Answer with an ErrorResponse (SQLSTATE 0A000) and disconnect the client; its server
    /// is reset before anyone else gets it.
    Refuse,
}

/// What to do with a server whose client left inside a transaction (nothing in flight,
/// ReadyForQuery `T` or `E`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AbandonedTransactionPolicy {
    /// Release it for a rollback: the driver runs `ROLLBACK` (under a timeout, closing the
    /// server if that fails) before the pool lends it again.
    #[default]
    Rollback,
    /// Close it.
    Close,
}

impl StatePolicy {
    /// The setting's values (`session_state`).
    pub const NAMES: [&'static str; 2] = ["pin", "refuse"];
}

impl fmt::Display for StatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatePolicy::Pin => "pin",
            StatePolicy::Refuse => "refuse",
        })
    }
}

impl std::str::FromStr for StatePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "pin" => Ok(StatePolicy::Pin),
            "refuse" => Ok(StatePolicy::Refuse),
            _ => Err(format!(
                "unknown session_state {text:?}; expected one of {}",
                StatePolicy::NAMES.join(", ")
            )),
        }
    }
}

impl AbandonedTransactionPolicy {
    /// The setting's values (`abandoned_transaction`).
    pub const NAMES: [&'static str; 2] = ["rollback", "close"];
}

impl fmt::Display for AbandonedTransactionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AbandonedTransactionPolicy::Rollback => "rollback",
            AbandonedTransactionPolicy::Close => "close",
        })
    }
}

impl std::str::FromStr for AbandonedTransactionPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "rollback" => Ok(AbandonedTransactionPolicy::Rollback),
            "close" => Ok(AbandonedTransactionPolicy::Close),
            _ => Err(format!(
                "unknown abandoned_transaction {text:?}; expected one of {}",
                AbandonedTransactionPolicy::NAMES.join(", ")
            )),
        }
    }
}

/// Parameters the server reports (ParameterStatus) that a client may change without a
/// `SET` the session pins on (`set_config(..., false)` in a query, a `SET` inside a
/// transaction block): followed per client instead ([`Action::ParameterChanged`]), as
/// PgBouncer follows its `track_extra_parameters`. The others a server reports
/// (`session_authorization`, `is_superuser`, `server_version`, ...) are not for a pooler
/// to replay.
pub const FOLLOWED_PARAMETERS: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// PgBouncer's default since 1.22: enough for the statements of a typical application's
/// hot paths, a few hundred kilobytes of plans per server at most.
pub const DEFAULT_MAX_PREPARED_STATEMENTS: usize = 200;

/// The session's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Transaction pooling (the release rule) or session pooling (the server goes back
    /// only when the client leaves, reset with `DISCARD ALL`; nothing pins).
    pub pool_mode: PoolMode,
    /// The longest message accepted from the client (its length field).
    pub max_client_message_len: u32,
    /// The longest message accepted from a server.
    pub max_server_message_len: u32,
    /// The most client bytes queued while waiting for a server.
    pub max_queued_bytes: usize,
    /// Session state: pin or refuse.
    pub on_session_state: StatePolicy,
    /// A client gone inside a transaction: roll back or close its server.
    pub on_abandoned_transaction: AbandonedTransactionPolicy,
    /// PgBouncer's `idle_transaction_timeout`: a client that holds a server inside a
    /// transaction (ReadyForQuery `T` or `E`, nothing in flight) and sends nothing for this
    /// long is disconnected with SQLSTATE 25P03, and its transaction rolled back or its
    /// server closed. `None` (the default, as PgBouncer's 0) never.
    pub idle_transaction_timeout: Option<Duration>,
    /// PgBouncer's `max_prepared_statements`: in transaction mode, a client's named
    /// protocol-level statements are tracked and prepared on whichever server it lands on,
    /// at most this many kept per server; 0 turns tracking off (a named Parse is then
    /// session state: pinned or refused).
    pub max_prepared_statements: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            pool_mode: PoolMode::default(),
            max_client_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_server_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_queued_bytes: 1024 * 1024,
            on_session_state: StatePolicy::default(),
            on_abandoned_transaction: AbandonedTransactionPolicy::default(),
            idle_transaction_timeout: None,
            max_prepared_statements: DEFAULT_MAX_PREPARED_STATEMENTS,
        }
    }
}

/// Session state the protocol showed, which outlives a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// CommandComplete `SET` or `RESET` followed by ReadyForQuery `I` (it ran outside a
    /// transaction block, or in one that committed in the same request).
    Set,
    /// CommandComplete `LISTEN`.
    Listen,
    /// CommandComplete `PREPARE` (SQL-level).
    Prepare,
    /// CommandComplete `DECLARE CURSOR` followed by ReadyForQuery `I`: only a `WITH HOLD`
    /// cursor survives outside a transaction block.
    HoldCursor,
    /// CommandComplete `LOAD`.
    Load,
    /// A Parse with a non-empty statement name, when statements are not tracked
    /// (`max_prepared_statements` 0).
    NamedStatement,
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Set => "SET outside a transaction",
            Self::Listen => "LISTEN",
            Self::Prepare => "PREPARE",
            Self::HoldCursor => "a cursor WITH HOLD",
            Self::Load => "LOAD",
            Self::NamedStatement => "a named prepared statement (protocol-level Parse)",
        })
    }
}

/// How a server goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Idle and clean: lend it as it is.
    Clean,
    /// Idle, but it carries session state: `DISCARD ALL` before lending it.
    Reset,
    /// Inside a transaction its client abandoned: `ROLLBACK` (under a timeout, else
    /// close), then `DISCARD ALL` as well when `reset`.
    Rollback { reset: bool },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the client.
    SendToClient(Vec<u8>),
    /// Write these bytes to that server.
    SendToServer(ServerId, Vec<u8>),
    /// Ask the pool for a server; answer with [`Input::ServerGranted`] or
    /// [`Input::ServerUnavailable`].
    RequestServer,
    /// The client left while waiting: withdraw the request (a server granted anyway goes
    /// straight back, clean).
    WithdrawServerRequest,
    /// Give the server back to the pool, with the record of the statements prepared on
    /// it; the session no longer holds it.
    ReleaseServer(ServerId, Release, ServerStatements),
    /// Close that server connection; the session no longer holds it.
    CloseServer(ServerId, String),
    /// A followed parameter ([`FOLLOWED_PARAMETERS`]) has this value on the held server
    /// since the transaction that changed it ended: the client wants it on its next
    /// servers, and the server keeps it (a RESET for a client that did not ask for it).
    ParameterChanged { name: String, value: String },
    /// The client's `DISCARD ALL` put the held server back to its defaults: the client
    /// wants its startup settings again (PostgreSQL's `DISCARD ALL` goes back to the
    /// session's startup values), and the server has none of the proxy's settings.
    SettingsDiscarded,
    /// The client was pinned to its server, for this reason (reported once per client).
    Pinned(PinReason),
    /// The client was refused for changing session state (reported once per client).
    Refused(PinReason),
    /// Close the client connection (after sending what came before).
    CloseClient,
}

/// One input to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes read from the client, split anywhere.
    ClientBytes(&'a [u8]),
    /// The client's connection ended (EOF or error).
    ClientClosed,
    /// The pool lent this server, after [`Action::RequestServer`], with the record of
    /// the statements prepared on it (empty for a new one).
    ServerGranted(ServerId, ServerStatements),
    /// The pool could not lend one (wait timeout, connect failure, closed pool): the
    /// client is told with this SQLSTATE and message, and disconnected.
    ServerUnavailable { sqlstate: &'a str, message: &'a str },
    /// Bytes read from the held server, split anywhere.
    ServerBytes(&'a [u8]),
    /// The held server's connection ended.
    ServerLost,
    /// The deadline from [`ClientSession::poll_timeout`] may have passed (a timer fired).
    /// Early or spurious ones do nothing.
    Timeout,
}

/// A driver bug: an input that cannot happen in the session's current phase. The session
/// is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misuse {
    /// Server bytes, or a lost server, while the session holds none.
    NoServerHeld,
    /// A grant or an unavailability answer without a pending request.
    NotWaiting,
    /// A server input after the session closed.
    Closed,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoServerHeld => "the session holds no server",
            Self::NotWaiting => "the session is not waiting for a server",
            Self::Closed => "the session is closed",
        })
    }
}

impl std::error::Error for Misuse {}

/// A request that a ReadyForQuery answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Query,
    Sync,
    FunctionCall,
}

/// A counted request, with how many COPY ends (CopyDone, CopyFail) the client had sent
/// before it (a Sync sent inside COPY-in mode is ignored by the server), and when it was
/// forwarded.
#[derive(Debug, Clone, Copy)]
struct Pending {
    request: Request,
    copy_ends_before: u64,
    sent_at: Instant,
    /// A simple query that only sets a followed parameter ([`set`]): its `SET` does not pin.
    sets_followed: bool,
}

/// What a session has done so far, cumulative: the proxy's statistics (PgBouncer's
/// `SHOW STATS`) are sums of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests (Query, Sync, FunctionCall) answered by a ReadyForQuery.
    pub queries: u64,
    /// Transactions ended (a ReadyForQuery `I` after requests: an implicit transaction
    /// counts as one).
    pub transactions: u64,
    /// Time from forwarding each request to its ReadyForQuery, summed.
    pub query_time: Duration,
    /// Time from each transaction's first request to its ReadyForQuery `I`, summed.
    pub transaction_time: Duration,
    /// Bytes of whole messages forwarded to servers.
    pub received: u64,
    /// Bytes sent to the client.
    pub sent: u64,
    /// Client statements the proxy prepared on a server (a Parse it sent for one): one per
    /// statement and server when the per-server record is large enough.
    pub prepares: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between transactions, holding no server.
    Idle,
    /// A server was requested; client messages are queued.
    Waiting,
    /// Holding this server.
    Active(ServerId),
    /// The client is gone (or was sent away); nothing more happens.
    Closed,
}

/// What the session knows of the server it holds.
#[derive(Debug)]
struct Link {
    server_in: Framer,
    outstanding: VecDeque<Pending>,
    status: TransactionStatus,
    /// Extended-protocol messages forwarded since the last Sync.
    batch_open: bool,
    /// The server is (as far as the session knows) in COPY-in mode.
    copy_in: bool,
    /// CopyDone/CopyFail messages forwarded to this server so far.
    copy_ends_sent: u64,
    /// `copy_ends_before` of the last answered request.
    answered_mark: u64,
    /// Set by a CommandComplete whose state survives only if ReadyForQuery says `I`.
    if_idle: Option<PinReason>,
    /// Set by a CommandComplete whose state survives regardless.
    always: Option<PinReason>,
    /// When the transaction in progress sent its first request.
    transaction_since: Option<Instant>,
    /// The statements prepared on the server.
    statements: ServerStatements,
    /// Followed parameters the server reported since its last ReadyForQuery `I`, the
    /// latest value of each: they hold once the transaction ends (a `SET LOCAL` or a
    /// rolled-back `SET` is reported again as it reverts).
    reported: Vec<(String, String)>,
    /// A `DISCARD ALL` completed since the last ReadyForQuery `I` (what the server reports
    /// after it are its defaults, not the client's).
    discarded: bool,
}

impl Link {
    fn new(max_len: u32) -> Self {
        Self {
            server_in: Framer::new(max_len),
            outstanding: VecDeque::new(),
            status: TransactionStatus::Idle,
            batch_open: false,
            copy_in: false,
            copy_ends_sent: 0,
            answered_mark: 0,
            if_idle: None,
            always: None,
            transaction_since: None,
            statements: ServerStatements::default(),
            reported: Vec::new(),
            discarded: false,
        }
    }

    /// Nothing in flight: no unanswered request, no open batch or COPY, no partial
    /// message from the server.
    fn quiet(&self) -> bool {
        self.answered() && self.server_in.buffered() == 0
    }

    /// Every request answered: none unanswered, no open batch, no COPY.
    fn answered(&self) -> bool {
        self.outstanding.is_empty() && !self.batch_open && !self.copy_in
    }
}

/// One client connection. See the module documentation.
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    phase: Phase,
    client_in: Framer,
    /// Client messages waiting for a server, and their total size.
    queued: VecDeque<(Frame, ClientMessage)>,
    queued_bytes: usize,
    link: Link,
    /// Detected session state (set once per client).
    pinned: Option<PinReason>,
    /// Since when the client has held its server idle inside a transaction.
    idle_in_transaction_since: Option<Instant>,
    actions: VecDeque<Action>,
    /// The `now` of the input being handled.
    now: Instant,
    counters: Counters,
    /// Named prepared statements, tracked in transaction mode (see `prepared`).
    tracker: Option<Tracker>,
}

impl ClientSession {
    /// A session for a client that finished startup and authentication.
    pub fn new(config: SessionConfig) -> Self {
        let tracks_statements =
            config.pool_mode == PoolMode::Transaction && config.max_prepared_statements > 0;
        Self {
            client_in: Framer::new(config.max_client_message_len),
            link: Link::new(config.max_server_message_len),
            tracker: tracks_statements.then(|| Tracker::new(config.max_prepared_statements)),
            config,
            phase: Phase::Idle,
            queued: VecDeque::new(),
            queued_bytes: 0,
            pinned: None,
            idle_in_transaction_since: None,
            actions: VecDeque::new(),
            now: Instant::ZERO,
            counters: Counters::default(),
        }
    }

    /// What the session has done so far.
    pub fn counters(&self) -> Counters {
        Counters {
            prepares: self.tracker.as_ref().map_or(0, Tracker::prepares),
            ..self.counters
        }
    }

    /// How many named statements the client has defined (transaction mode, tracked).
    pub fn statements(&self) -> usize {
        self.tracker.as_ref().map_or(0, Tracker::defined)
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The server the session holds.
    pub fn server(&self) -> Option<ServerId> {
        match self.phase {
            Phase::Active(server) => Some(server),
            _ => None,
        }
    }

    /// Whether a server was requested and not yet granted.
    pub fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// Whether the client is gone or was sent away.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the client is between transactions: holding no server (or only waiting for
    /// one), or holding one (pinned, or in session mode) that is idle with nothing in
    /// flight. A shutdown lets a client go at such a point without cutting a transaction.
    pub fn between_transactions(&self) -> bool {
        match self.phase {
            Phase::Idle | Phase::Waiting | Phase::Closed => true,
            Phase::Active(_) => self.link.quiet() && self.link.status == TransactionStatus::Idle,
        }
    }

    /// Requests forwarded to the held server and not yet answered by a ReadyForQuery.
    pub fn unanswered(&self) -> usize {
        match self.phase {
            Phase::Active(_) => self.link.outstanding.len(),
            _ => 0,
        }
    }

    /// The session state that pinned (or refused) this client, if any.
    pub fn pinned(&self) -> Option<PinReason> {
        self.pinned
    }

    /// When to feed [`Input::Timeout`]: the idle-in-transaction deadline, if one runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let since = self.idle_in_transaction_since?;
        Some(since + self.config.idle_transaction_timeout?)
    }

    /// Feeds one input at `now`. `Err` only for a driver bug (see [`Misuse`]), and then
    /// nothing changed; anything the client or server sends, however malformed, is `Ok`
    /// and handled with actions.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Result<(), Misuse> {
        self.now = now;
        let result = self.dispatch(now, input);
        // The idle-in-transaction clock starts when the server is left waiting for the
        // client inside a transaction, and stops when a whole client message is forwarded
        // (or the server goes): bytes of a message not yet whole do not restart it, so a
        // client dribbling a long message cannot hold a server for ever.
        let idle_in_transaction = matches!(self.phase, Phase::Active(_))
            && self.link.quiet()
            && self.link.status != TransactionStatus::Idle;
        self.idle_in_transaction_since = match (idle_in_transaction, self.idle_in_transaction_since)
        {
            (false, _) => None,
            (true, since) => Some(since.unwrap_or(now)),
        };
        result
    }

    fn dispatch(&mut self, now: Instant, input: Input<'_>) -> Result<(), Misuse> {
        match input {
            Input::ClientBytes(bytes) => {
                self.on_client_bytes(bytes);
                Ok(())
            }
            Input::ClientClosed => {
                self.client_gone();
                Ok(())
            }
            Input::ServerGranted(server, statements) => self.on_granted(server, statements),
            Input::ServerUnavailable { sqlstate, message } => {
                self.on_unavailable(sqlstate, message)
            }
            Input::ServerBytes(bytes) => self.on_server_bytes(bytes),
            Input::ServerLost => self.on_server_lost(),
            Input::Timeout => {
                if self.poll_timeout().is_some_and(|deadline| deadline <= now) {
                    self.send_error(
                        "25P03",
                        "pool-proxy: terminating connection due to idle-in-transaction timeout",
                    );
                    self.client_gone();
                }
                Ok(())
            }
        }
    }

    // ---- the client side ----

    fn on_client_bytes(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.client_in.push(bytes);
        while self.phase != Phase::Closed {
            let frame = match self.client_in.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.client_protocol_error(&e.to_string());
                    break;
                }
            };
            let message = match ClientMessage::classify(&frame) {
                Ok(message) => message,
                Err(e) => {
                    self.client_protocol_error(&e.to_string());
                    break;
                }
            };
            self.on_client_message(frame, message);
        }
        self.maybe_release();
    }

    fn on_client_message(&mut self, frame: Frame, message: ClientMessage) {
        if message == ClientMessage::Terminate {
            self.client_gone();
            return;
        }
        match self.phase {
            Phase::Idle => {
                // Between transactions a Flush asks for nothing, and COPY messages are
                // leftovers of a COPY the server already ended (it ignores them too).
                if message == ClientMessage::Flush
                    || message.is_copy()
                    || self.answered_by_proxy(&frame, &message)
                {
                    return;
                }
                self.phase = Phase::Waiting;
                self.actions.push_back(Action::RequestServer);
                self.enqueue(frame, message);
            }
            Phase::Waiting => self.enqueue(frame, message),
            Phase::Active(server) => self.forward(server, frame, message),
            Phase::Closed => {}
        }
    }

    fn enqueue(&mut self, frame: Frame, message: ClientMessage) {
        self.queued_bytes += frame.bytes().len();
        self.queued.push_back((frame, message));
        if self.queued_bytes > self.config.max_queued_bytes {
            let text = format!(
                "pool-proxy: more than {} bytes sent while waiting for a server",
                self.config.max_queued_bytes
            );
            self.send_error("54000", &text);
            self.client_gone();
        }
    }

    fn forward(&mut self, server: ServerId, frame: Frame, message: ClientMessage) {
        if message == (ClientMessage::Parse { named: true })
            && self.tracker.is_none()
            && !self.pin(PinReason::NamedStatement)
        {
            return;
        }
        if self.answered_by_proxy(&frame, &message) {
            return;
        }
        let link = &mut self.link;
        let request = match message {
            ClientMessage::Query => Some(Request::Query),
            ClientMessage::Sync => Some(Request::Sync),
            ClientMessage::FunctionCall => Some(Request::FunctionCall),
            _ => None,
        };
        if let Some(request) = request {
            link.outstanding.push_back(Pending {
                request,
                copy_ends_before: link.copy_ends_sent,
                sent_at: self.now,
                sets_followed: request == Request::Query
                    && set::sets_a_followed_parameter(frame.body()),
            });
            link.transaction_since.get_or_insert(self.now);
        }
        self.counters.received += frame.bytes().len() as u64;
        if message == ClientMessage::Sync {
            link.batch_open = false;
        } else if message.in_extended_batch() {
            link.batch_open = true;
        }
        if matches!(message, ClientMessage::CopyDone | ClientMessage::CopyFail) {
            link.copy_ends_sent += 1;
            link.copy_in = false;
        }
        let Some(tracker) = &mut self.tracker else {
            self.send_to_server(server, frame.into_bytes());
            return;
        };
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        tracker.outgoing(
            frame,
            &message,
            &mut link.statements,
            &mut to_server,
            &mut to_client,
            link.status,
        );
        if !to_server.is_empty() {
            self.send_to_server(server, to_server);
        }
        if !to_client.is_empty() {
            self.send_to_client(to_client);
        }
    }

    /// A message the proxy answers itself, as PostgreSQL would, without a server: a
    /// simple query `DEALLOCATE` of a tracked statement, which no server knows by the
    /// client's name (outside an extended-protocol batch, where the server would skip it).
    /// Its answer follows whatever the server still owes.
    fn answered_by_proxy(&mut self, frame: &Frame, message: &ClientMessage) -> bool {
        let Some(tracker) = &mut self.tracker else {
            return false;
        };
        if *message != ClientMessage::Query || self.link.batch_open || !tracker.deallocate(frame) {
            return false;
        }
        // Between transactions the last server's link is stale; no transaction is open.
        let status = match self.phase {
            Phase::Active(_) => self.link.status,
            _ => TransactionStatus::Idle,
        };
        let mut made = Vec::new();
        tracker.make_due(&mut made, status);
        if !made.is_empty() {
            self.send_to_client(made);
        }
        true
    }

    // ---- the pool side ----

    fn on_granted(&mut self, server: ServerId, statements: ServerStatements) -> Result<(), Misuse> {
        match self.phase {
            Phase::Waiting => {}
            Phase::Closed => return Err(Misuse::Closed),
            _ => return Err(Misuse::NotWaiting),
        }
        self.phase = Phase::Active(server);
        self.link = Link::new(self.config.max_server_message_len);
        if let Some(tracker) = &mut self.tracker {
            tracker.granted(&statements);
        }
        self.link.statements = statements;
        self.queued_bytes = 0;
        while let Some((frame, message)) = self.queued.pop_front() {
            if self.phase != Phase::Active(server) {
                break;
            }
            self.forward(server, frame, message);
        }
        self.queued.clear();
        self.maybe_release();
        Ok(())
    }

    fn on_unavailable(&mut self, sqlstate: &str, message: &str) -> Result<(), Misuse> {
        match self.phase {
            Phase::Waiting => {}
            Phase::Closed => return Err(Misuse::Closed),
            _ => return Err(Misuse::NotWaiting),
        }
        self.send_error(sqlstate, message);
        self.close_client();
        Ok(())
    }

    // ---- the server side ----

    fn on_server_bytes(&mut self, bytes: &[u8]) -> Result<(), Misuse> {
        let server = self.held()?;
        self.link.server_in.push(bytes);
        while self.phase == Phase::Active(server) {
            let frame = match self.link.server_in.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.server_broken(server, &e.to_string());
                    break;
                }
            };
            match ServerMessage::classify(&frame) {
                Ok(message) => self.on_server_message(server, frame, message),
                Err(e) => self.server_broken(server, &e.to_string()),
            }
        }
        self.maybe_release();
        Ok(())
    }

    fn on_server_message(&mut self, server: ServerId, frame: Frame, message: ServerMessage) {
        if matches!(message, ServerMessage::ErrorResponse { .. })
            && self.lends_per_transaction()
            && self.link.answered()
            && self.link.status == TransactionStatus::Idle
        {
            // The server's goodbye (FATAL 57P01 after pg_terminate_backend or a shutdown,
            // an idle-session timeout) read together with the ReadyForQuery that ended the
            // client's transaction: it answers nothing the client asked, and the session
            // it ends is not the client's. Forwarded, it would end the client's connection
            // (a FATAL says the session is over) while the proxy kept it open. The server
            // is closed instead; the client's next transaction gets another.
            self.actions.push_back(Action::CloseServer(
                server,
                "it sent an error after its client's transaction had ended".into(),
            ));
            self.phase = Phase::Idle;
            return;
        }
        let verdict = match &mut self.tracker {
            Some(tracker) => tracker.incoming(&frame, &message, &mut self.link.statements),
            None => Verdict::Forward,
        };
        let link = &mut self.link;
        match message {
            ServerMessage::ReadyForQuery(status) => {
                let Some(answered) = link.outstanding.pop_front() else {
                    self.server_broken(server, "ReadyForQuery with no request outstanding");
                    return;
                };
                link.status = status;
                link.answered_mark = answered.copy_ends_before;
                if status == TransactionStatus::Idle {
                    if std::mem::take(&mut link.discarded) {
                        link.reported.clear();
                        self.actions.push_back(Action::SettingsDiscarded);
                    }
                    for (name, value) in link.reported.drain(..) {
                        self.actions
                            .push_back(Action::ParameterChanged { name, value });
                    }
                }
                let counters = &mut self.counters;
                counters.queries += 1;
                counters.query_time += self.now.saturating_since(answered.sent_at);
                if status == TransactionStatus::Idle {
                    if let Some(since) = link.transaction_since.take() {
                        counters.transactions += 1;
                        counters.transaction_time += self.now.saturating_since(since);
                    }
                }
                let if_idle = link
                    .if_idle
                    .take()
                    .filter(|_| status == TransactionStatus::Idle);
                if let Some(reason) = link.always.take().or(if_idle) {
                    if !self.pin(reason) {
                        return;
                    }
                }
            }
            ServerMessage::CommandComplete { tag } if tag == "DISCARD ALL" => {
                link.discarded = true;
            }
            ServerMessage::CommandComplete { tag } => match state_tag(&tag) {
                // Its change is reported, and followed.
                Some(StateTag::IfIdle(PinReason::Set))
                    if link.outstanding.front().is_some_and(|p| p.sets_followed) => {}
                Some(StateTag::IfIdle(reason)) => link.if_idle = Some(reason),
                Some(StateTag::Always(reason)) => link.always = Some(reason),
                None => {}
            },
            ServerMessage::CopyInResponse | ServerMessage::CopyBothResponse => {
                // The COPY began with the oldest unanswered Query, or with an Execute sent
                // after the last answered request. A Sync the client sent after that
                // Execute and before ending the COPY was read in COPY-in mode: the server
                // ignores it, so it will get no ReadyForQuery.
                let mark = match link.outstanding.front() {
                    Some(p) if p.request == Request::Query => p.copy_ends_before,
                    _ => link.answered_mark,
                };
                if let Some(p) = link.outstanding.front() {
                    if p.request == Request::Sync && p.copy_ends_before == mark {
                        link.outstanding.pop_front();
                    }
                }
                link.copy_in = link.copy_ends_sent == mark;
            }
            ServerMessage::ErrorResponse { .. } => {
                // An error ends COPY-in mode on the server's side.
                link.copy_in = false;
            }
            ServerMessage::BackendKeyData { .. } => {
                // The client knows the proxy's key, never a server's.
                return;
            }
            ServerMessage::ParameterStatus { name, value } => {
                if FOLLOWED_PARAMETERS
                    .iter()
                    .any(|followed| followed.eq_ignore_ascii_case(&name))
                {
                    link.reported.retain(|(seen, _)| *seen != name);
                    link.reported.push((name, value));
                }
            }
            ServerMessage::NoticeResponse
            | ServerMessage::CopyOutResponse
            | ServerMessage::Authentication(_)
            | ServerMessage::Other(_) => {}
        }
        match verdict {
            Verdict::Forward => self.send_to_client(frame.into_bytes()),
            Verdict::Hide => {}
            Verdict::Replace(bytes) => self.send_to_client(bytes),
        }
        if let Some(tracker) = &mut self.tracker {
            let mut made = Vec::new();
            tracker.make_due(&mut made, self.link.status);
            if !made.is_empty() {
                self.send_to_client(made);
            }
        }
    }

    fn on_server_lost(&mut self) -> Result<(), Misuse> {
        self.held()?;
        self.phase = Phase::Idle;
        self.send_error("08006", "pool-proxy: the server connection was lost");
        self.close_client();
        Ok(())
    }

    fn held(&self) -> Result<ServerId, Misuse> {
        match self.phase {
            Phase::Active(server) => Ok(server),
            Phase::Closed => Err(Misuse::Closed),
            _ => Err(Misuse::NoServerHeld),
        }
    }

    // ---- decisions, each in one place ----

    /// The release rule.
    fn maybe_release(&mut self) {
        if let Phase::Active(server) = self.phase {
            if self.lends_per_transaction()
                && self.link.quiet()
                && self.link.status == TransactionStatus::Idle
            {
                let statements = std::mem::take(&mut self.link.statements);
                self.actions
                    .push_back(Action::ReleaseServer(server, Release::Clean, statements));
                self.phase = Phase::Idle;
            }
        }
    }

    /// Whether the client's server goes back to the pool after each transaction:
    /// transaction pooling, and nothing pinned the client.
    fn lends_per_transaction(&self) -> bool {
        self.config.pool_mode == PoolMode::Transaction && self.pinned.is_none()
    }

    /// Session state detected: pin or refuse, per the policy, reported once. Returns
    /// whether the session goes on.
    fn pin(&mut self, reason: PinReason) -> bool {
        // In session mode the client keeps its server anyway, and it is reset as it goes.
        if self.pinned.is_some() || self.config.pool_mode == PoolMode::Session {
            return true;
        }
        self.pinned = Some(reason);
        match self.config.on_session_state {
            StatePolicy::Pin => {
                self.actions.push_back(Action::Pinned(reason));
                true
            }
            StatePolicy::Refuse => {
                self.actions.push_back(Action::Refused(reason));
                let text = format!(
                    "pool-proxy: {reason} changes session state, which transaction pooling \
                     cannot keep; use it inside a transaction (SET LOCAL, unnamed statements) \
                     or connect to a session-mode pool"
                );
                self.send_error("0A000", &text);
                self.client_gone();
                false
            }
        }
    }

    /// The client is gone (closed, Terminate, refused, broke the protocol): what becomes
    /// of its server.
    fn client_gone(&mut self) {
        match self.phase {
            Phase::Idle => {}
            Phase::Waiting => self.actions.push_back(Action::WithdrawServerRequest),
            Phase::Active(server) => {
                let reset = self.pinned.is_some() || self.config.pool_mode == PoolMode::Session;
                let action = if !self.link.quiet() {
                    Action::CloseServer(server, "its client left with a request in flight".into())
                } else if self.link.status == TransactionStatus::Idle {
                    Action::ReleaseServer(
                        server,
                        if reset {
                            Release::Reset
                        } else {
                            Release::Clean
                        },
                        std::mem::take(&mut self.link.statements),
                    )
                } else {
                    match self.config.on_abandoned_transaction {
                        AbandonedTransactionPolicy::Rollback => Action::ReleaseServer(
                            server,
                            Release::Rollback { reset },
                            std::mem::take(&mut self.link.statements),
                        ),
                        AbandonedTransactionPolicy::Close => Action::CloseServer(
                            server,
                            "its client left inside a transaction".into(),
                        ),
                    }
                };
                self.actions.push_back(action);
            }
            Phase::Closed => return,
        }
        self.close_client();
    }

    fn client_protocol_error(&mut self, what: &str) {
        self.send_error("08P01", &format!("pool-proxy: protocol violation: {what}"));
        self.client_gone();
    }

    /// The server broke the protocol: close it, tell the client, disconnect it.
    fn server_broken(&mut self, server: ServerId, what: &str) {
        self.actions.push_back(Action::CloseServer(
            server,
            format!("protocol violation: {what}"),
        ));
        self.phase = Phase::Idle;
        self.send_error(
            "08P01",
            &format!("pool-proxy: the server broke the protocol: {what}"),
        );
        self.close_client();
    }

    fn close_client(&mut self) {
        self.phase = Phase::Closed;
        self.queued.clear();
        self.queued_bytes = 0;
        self.actions.push_back(Action::CloseClient);
    }

    fn send_error(&mut self, sqlstate: &str, message: &str) {
        self.send_to_client(error_response("FATAL", sqlstate, message));
    }

    // ---- output, coalesced ----

    fn send_to_client(&mut self, bytes: Vec<u8>) {
        self.counters.sent += bytes.len() as u64;
        if let Some(Action::SendToClient(last)) = self.actions.back_mut() {
            last.extend_from_slice(&bytes);
        } else {
            self.actions.push_back(Action::SendToClient(bytes));
        }
    }

    fn send_to_server(&mut self, server: ServerId, bytes: Vec<u8>) {
        match self.actions.back_mut() {
            Some(Action::SendToServer(to, last)) if *to == server => last.extend_from_slice(&bytes),
            _ => self.actions.push_back(Action::SendToServer(server, bytes)),
        }
    }
}

enum StateTag {
    /// Survives only when the ReadyForQuery after it says `I`.
    IfIdle(PinReason),
    /// Survives the transaction (conservatively, even if it is rolled back).
    Always(PinReason),
}

/// What a CommandComplete tag says about session state.
fn state_tag(tag: &str) -> Option<StateTag> {
    match tag {
        "SET" | "RESET" => Some(StateTag::IfIdle(PinReason::Set)),
        "DECLARE CURSOR" => Some(StateTag::IfIdle(PinReason::HoldCursor)),
        "LISTEN" => Some(StateTag::Always(PinReason::Listen)),
        "PREPARE" => Some(StateTag::Always(PinReason::Prepare)),
        "LOAD" => Some(StateTag::Always(PinReason::Load)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
