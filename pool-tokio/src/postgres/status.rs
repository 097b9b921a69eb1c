//! The server's transaction status, read off the wire: what lets [`crate::PgManager`]
//! return an idle connection with no round trip and clean a dirty one only when it is
//! dirty ([`crate::ResetMode::Auto`]).
//!
//! PostgreSQL ends the answer to every simple query (`Q`), every extended-protocol `Sync`
//! (`S`), every function call (`F`) and the startup with a `ReadyForQuery` message
//! (`Z`) whose one-byte body is the session's transaction status: `I` idle, `T` inside a
//! transaction block, `E` inside a failed one. tokio-postgres reads it and throws it
//! away, so the manager opens the socket itself and hands tokio-postgres an
//! [`ObservedStream`] that watches the bytes going by:
//!
//! - the **read side** parses the backend framing (a 1-byte tag, then a 4-byte
//!   big-endian length that counts itself) and records the status byte of each
//!   `ReadyForQuery`, and counts them;
//! - the **write side** parses the frontend framing (the untagged startup or
//!   `SSLRequest` first, then tagged messages) and counts the messages that each get one
//!   `ReadyForQuery` back (startup, `Q`, `S`, `F`).
//!
//! While more were sent than answered, a request is in flight and the last status is
//! stale. Under TLS the socket carries ciphertext: the raw observer stops when the server
//! answers the `SSLRequest` with `S`, and an observer above TLS (wrapping the TLS
//! connector's stream) takes over with the same counters.
//!
//! The bytes on the socket are not the whole story: a request the borrower handed to
//! tokio-postgres (which queues it for the connection task) and then abandoned may not
//! be written yet. So the connection task runs inside [`Driven`], which counts its polls
//! (odd while one runs) and notes any wake-up since the last poll (a queued request wakes
//! it). [`Observer::judge`] says `Idle` only when the task is quiescent (no poll running,
//! none began during the judgement, no wake-up pending, no write blocked) and every
//! request has been answered with `I`.
//!
//! Malformed input (a length below 4, an unknown answer to `SSLRequest`) never panics:
//! the observer marks itself lost and the connection is judged unknowable (so it is
//! synchronised with an empty query before reuse).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The session's transaction state as last reported by the server, when it is current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block, nothing in flight (`ReadyForQuery` `I`).
    Idle,
    /// Inside a transaction block (`T`).
    InTransaction,
    /// Inside a failed transaction block (`E`): only `ROLLBACK` gets out.
    Failed,
    /// Not known without a round trip: a request is queued or in flight, the connection
    /// task is running, or the byte stream could not be followed.
    Unknown,
}

/// How long [`Observer::judge`] waits for a running poll of the connection task to end:
/// spin-loop hints (a few microseconds), then thread yields.
const JUDGE_SPINS: u32 = 2_000;
const JUDGE_YIELDS: u32 = 4;

/// The counters shared by a connection's observers, its driver and its judge.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    /// The status byte of the last `ReadyForQuery` (0 before the first).
    status: AtomicU8,
    /// Messages written that each get one `ReadyForQuery` (startup, `Q`, `S`, `F`).
    expected: AtomicU64,
    /// `ReadyForQuery` messages read.
    received: AtomicU64,
    /// The value of `expected` at the last request that may change the transaction
    /// status: a `Q`, an `F`, or a `Sync` closing a batch with anything but `Close`
    /// and `Flush` in it (tokio-postgres queues `Close` + `Sync` when a prepared
    /// statement or portal is dropped). Answers beyond it cannot change the status.
    tainted: AtomicU64,
    /// The batch being written since the last `Sync` has a message other than
    /// `Close` / `Flush` (written by the connection task only).
    batch_changes: AtomicBool,
    /// The last write returned `Pending`: bytes may wait in tokio-postgres's buffer.
    write_blocked: AtomicBool,
    /// The stream could not be followed (malformed framing).
    lost: AtomicBool,
    /// Incremented when the connection task's poll starts and when it ends.
    polls: AtomicU64,
    /// The connection task was woken since its last poll started.
    woken: AtomicBool,
    /// The connection task has ended.
    finished: AtomicBool,
    /// Signalled after each `ReadyForQuery` and at the end of each poll of the
    /// connection task: what [`Observer::settled`] waits on.
    pub(crate) changed: tokio::sync::Notify,
}

impl Observer {
    /// The transaction status, if it is current; see the module docs.
    pub(crate) fn judge(&self) -> TransactionStatus {
        let mut before = self.polls.load(SeqCst);
        // The connection task is usually just finishing the poll that delivered the
        // answer the borrower was waiting for: give it a few microseconds (spinning,
        // then a few `sched_yield`s in case its thread was preempted) rather than call
        // the connection unknown, which costs a reset task.
        let mut spins = 0;
        while before % 2 == 1 && spins < JUDGE_SPINS + JUDGE_YIELDS {
            if spins < JUDGE_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins += 1;
            before = self.polls.load(SeqCst);
        }
        if before % 2 == 1 || self.woken.load(SeqCst) {
            return TransactionStatus::Unknown;
        }
        let blocked = self.write_blocked.load(SeqCst);
        let lost = self.lost.load(SeqCst);
        let expected = self.expected.load(SeqCst);
        let received = self.received.load(SeqCst);
        let status = self.status.load(SeqCst);
        let tainted = self.tainted.load(SeqCst);
        // A poll that began after `before` may have written a request we did not count.
        // Requests still unanswered are fine only if none of them can change the status.
        if self.polls.load(SeqCst) != before
            || blocked
            || lost
            || received < tainted
            || received > expected
        {
            return TransactionStatus::Unknown;
        }
        match status {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => TransactionStatus::Unknown,
        }
    }

    /// The status once it is known: waits (no I/O of its own) for the connection task
    /// to write what is queued and for the server to answer what is in flight.
    /// `Unknown` only if the stream could not be followed or the connection ended.
    /// Unbounded: the caller bounds it (the pool's `check_timeout` for a reset).
    pub(crate) async fn settled(&self) -> TransactionStatus {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking: a change after the look still wakes us.
            changed.as_mut().enable();
            let status = self.judge();
            if status != TransactionStatus::Unknown
                || self.lost.load(SeqCst)
                || self.finished.load(SeqCst)
            {
                return status;
            }
            changed.await;
        }
    }

    /// A request that may change the transaction status (a query: `Q`, `F`, or an
    /// extended-protocol batch with more than `Close`s) has been written and the server
    /// has not answered it: the server is working on it (or on one queued behind it).
    /// `Some(answers so far)`, to tell one such wait from the next; `None` when nothing
    /// is awaited, or what is unanswered may still be in tokio-postgres's queue (the
    /// connection task is running, woken or blocked on a write: ask again after it
    /// polls).
    pub(crate) fn awaiting_server(&self) -> Option<u64> {
        let before = self.polls.load(SeqCst);
        if before % 2 == 1
            || self.woken.load(SeqCst)
            || self.write_blocked.load(SeqCst)
            || self.lost.load(SeqCst)
            || self.finished.load(SeqCst)
        {
            return None;
        }
        let received = self.received.load(SeqCst);
        let tainted = self.tainted.load(SeqCst);
        (received < tainted && self.polls.load(SeqCst) == before).then_some(received)
    }

    /// The byte stream could not be followed, or the connection task ended: the status
    /// will never settle.
    pub(crate) fn hopeless(&self) -> bool {
        self.lost.load(SeqCst) || self.finished.load(SeqCst)
    }

    fn on_frontend(&self, event: Frontend) {
        match event {
            Frontend::Startup | Frontend::Message(b'Q' | b'F') => {
                let n = self.expected.fetch_add(1, SeqCst) + 1;
                self.tainted.store(n, SeqCst);
                self.batch_changes.store(false, SeqCst);
            }
            Frontend::Message(b'S') => {
                let n = self.expected.fetch_add(1, SeqCst) + 1;
                if self.batch_changes.swap(false, SeqCst) {
                    self.tainted.store(n, SeqCst);
                }
            }
            Frontend::Message(b'C' | b'H') | Frontend::SslRequest => {}
            Frontend::Message(_) => self.batch_changes.store(true, SeqCst),
        }
    }

    fn on_ready(&self, status: u8) {
        // Status first: a judge that sees the count sees the status that came with it.
        self.status.store(status, SeqCst);
        self.received.fetch_add(1, SeqCst);
        self.changed.notify_waiters();
    }

    fn lose(&self) {
        self.lost.store(true, SeqCst);
    }
}

/// What the frontend parser saw: an untagged message once its 8-byte header is out, a
/// tagged one as soon as its tag is (the server cannot answer it before it is all out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frontend {
    SslRequest,
    Startup,
    /// A tagged message (`Q`, `S` and `F` each get one `ReadyForQuery`).
    Message(u8),
}

/// What the backend parser saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The one-byte answer to `SSLRequest` (`S` or `N`).
    SslAnswer(u8),
    /// A `ReadyForQuery` with this status byte.
    Ready(u8),
    /// The framing made no sense; nothing more will be reported.
    Malformed,
}

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// The big-endian `u32` in the first four bytes of `bytes` (a length or request code).
fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Drops up to `skip` bytes (the rest of a message body) off the front of `data`,
/// counting them off `skip`.
fn skip_bytes(skip: &mut u64, data: &mut &[u8]) {
    let n = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
    *skip -= n as u64;
    *data = &data[n..];
}

/// Incremental parser of the frontend (client → server) byte stream.
#[derive(Debug)]
pub(crate) struct FrontendParser {
    header: [u8; 8],
    have: usize,
    /// Body bytes still to skip.
    skip: u64,
    /// The next message has no tag (startup or `SSLRequest`): 8 header bytes, not 5.
    untagged: bool,
    dead: bool,
}

impl FrontendParser {
    pub(crate) fn new() -> Self {
        FrontendParser {
            header: [0; 8],
            have: 0,
            skip: 0,
            untagged: true,
            dead: false,
        }
    }

    /// Feed bytes that were written; `on` hears each event. Returns false once the
    /// stream stopped making sense.
    pub(crate) fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Frontend)) -> bool {
        while !data.is_empty() && !self.dead {
            if self.skip > 0 {
                skip_bytes(&mut self.skip, &mut data);
                continue;
            }
            if !self.untagged && self.have == 0 {
                // A tagged message starts: count it now (the server cannot answer it
                // before it is all out).
                on(Frontend::Message(data[0]));
            }
            let want = if self.untagged { 8 } else { 5 };
            let n = (want - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < want {
                continue;
            }
            self.have = 0;
            if self.untagged {
                let len = be_u32(&self.header[0..4]);
                let code = be_u32(&self.header[4..8]);
                if len < 8 {
                    self.dead = true;
                    break;
                }
                self.skip = u64::from(len - 8);
                if code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE {
                    on(Frontend::SslRequest);
                } else {
                    self.untagged = false;
                    on(Frontend::Startup);
                }
            } else {
                let len = be_u32(&self.header[1..5]);
                if len < 4 {
                    self.dead = true;
                    break;
                }
                self.skip = u64::from(len - 4);
            }
        }
        !self.dead
    }
}

/// Incremental parser of the backend (server → client) byte stream.
#[derive(Debug)]
pub(crate) struct BackendParser {
    header: [u8; 5],
    have: usize,
    skip: u64,
    /// The tag of the message whose body is being skipped, and whether its first body
    /// byte is still to come.
    tag: u8,
    first: bool,
    /// Answers to `SSLRequest`s still to come (one byte each, no framing).
    ssl_answers: u32,
    dead: bool,
}

impl BackendParser {
    pub(crate) fn new() -> Self {
        BackendParser {
            header: [0; 5],
            have: 0,
            skip: 0,
            tag: 0,
            first: false,
            ssl_answers: 0,
            dead: false,
        }
    }

    /// The client sent an `SSLRequest`: the next byte from the server is its answer.
    pub(crate) fn expect_ssl_answer(&mut self) {
        self.ssl_answers += 1;
    }

    /// Feed bytes that were read; `on` hears each event. Returns false once the stream
    /// stopped making sense.
    pub(crate) fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Backend)) -> bool {
        while !data.is_empty() && !self.dead {
            if self.skip > 0 {
                if self.first {
                    self.first = false;
                    if self.tag == b'Z' {
                        on(Backend::Ready(data[0]));
                    }
                }
                skip_bytes(&mut self.skip, &mut data);
                continue;
            }
            if self.ssl_answers > 0 && self.have == 0 {
                self.ssl_answers -= 1;
                let answer = data[0];
                data = &data[1..];
                on(Backend::SslAnswer(answer));
                if answer != b'N' {
                    // `S`: TLS from here on (not ours to read); anything else: an error
                    // tokio-postgres reports itself.
                    self.dead = true;
                }
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                continue;
            }
            self.have = 0;
            let len = be_u32(&self.header[1..5]);
            if len < 4 {
                self.dead = true;
                on(Backend::Malformed);
                break;
            }
            self.tag = self.header[0];
            self.skip = u64::from(len - 4);
            self.first = self.skip > 0;
            if self.tag == b'Z' && self.skip == 0 {
                // A ReadyForQuery without its status byte.
                self.dead = true;
                on(Backend::Malformed);
            }
        }
        !self.dead
    }
}

/// A byte stream whose traffic feeds an [`Observer`]; see the module docs. Below TLS it
/// stops observing once the server agrees to TLS (the observer above TLS takes over).
pub struct ObservedStream<S> {
    inner: S,
    reader: BackendParser,
    writer: FrontendParser,
    observer: Arc<Observer>,
    active: bool,
}

impl<S> ObservedStream<S> {
    pub(crate) fn new(inner: S, observer: Arc<Observer>, active: bool) -> Self {
        ObservedStream {
            inner,
            reader: BackendParser::new(),
            writer: FrontendParser::new(),
            observer,
            active,
        }
    }

    fn on_read(&mut self, data: &[u8]) {
        if !self.active {
            return;
        }
        let observer = &self.observer;
        let mut tls = false;
        let ok = self.reader.feed(data, |event| match event {
            Backend::Ready(status) => observer.on_ready(status),
            Backend::SslAnswer(b'N') => {}
            Backend::SslAnswer(b'S') => tls = true,
            Backend::SslAnswer(_) | Backend::Malformed => observer.lose(),
        });
        if tls {
            self.active = false;
        } else if !ok {
            self.active = false;
            observer.lose();
        }
    }

    fn on_write(&mut self, data: &[u8]) {
        if !self.active {
            return;
        }
        let (observer, reader) = (&self.observer, &mut self.reader);
        let ok = self.writer.feed(data, |event| {
            if event == Frontend::SslRequest {
                reader.expect_ssl_answer();
            }
            observer.on_frontend(event);
        });
        if !ok {
            self.active = false;
            observer.lose();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let this = &mut *self;
            this.on_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ObservedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if !self.active {
            // Below TLS: the observer above it speaks for what is unwritten.
            return result;
        }
        match &result {
            Poll::Ready(Ok(n)) => {
                let n = (*n).min(data.len());
                self.on_write(&data[..n]);
                self.observer.write_blocked.store(false, SeqCst);
            }
            Poll::Pending => self.observer.write_blocked.store(true, SeqCst),
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if !self.active {
            return result;
        }
        match &result {
            Poll::Pending => self.observer.write_blocked.store(true, SeqCst),
            Poll::Ready(Ok(())) => self.observer.write_blocked.store(false, SeqCst),
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tokio_postgres::tls::TlsStream + Unpin> tokio_postgres::tls::TlsStream
    for ObservedStream<S>
{
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        self.inner.channel_binding()
    }
}

/// Runs a connection task, telling its [`Observer`] when it is polled and woken.
pub(crate) struct Driven<F> {
    inner: Pin<Box<F>>,
    observer: Arc<Observer>,
    waker: Option<(Waker, Waker)>,
}

struct FlagWaker {
    observer: Arc<Observer>,
    inner: Waker,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.observer.woken.store(true, SeqCst);
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Driven<F> {
    pub(crate) fn new(inner: F, observer: Arc<Observer>) -> Self {
        Driven {
            inner: Box::pin(inner),
            observer,
            waker: None,
        }
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Reuse the flagging waker while the task's waker stays the same.
        let waker = match &this.waker {
            Some((task, flag)) if task.will_wake(cx.waker()) => flag.clone(),
            _ => {
                let flag = Waker::from(Arc::new(FlagWaker {
                    observer: this.observer.clone(),
                    inner: cx.waker().clone(),
                }));
                this.waker = Some((cx.waker().clone(), flag.clone()));
                flag
            }
        };
        this.observer.polls.fetch_add(1, SeqCst);
        this.observer.woken.store(false, SeqCst);
        let result = this.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if result.is_ready() {
            this.observer.finished.store(true, SeqCst);
        }
        this.observer.polls.fetch_add(1, SeqCst);
        this.observer.changed.notify_waiters();
        result
    }
}

/// A pooled PostgreSQL connection: a tokio-postgres [`Client`](tokio_postgres::Client)
/// (it derefs to one, so `conn.simple_query(..)` works through the pool's guard) that
/// also knows the server's transaction status without asking it.
pub struct PgConnection {
    client: tokio_postgres::Client,
    observer: Arc<Observer>,
    /// Where the socket went: where a cancel request for this session goes.
    peer: super::cancel::Peer,
}

impl PgConnection {
    pub(crate) fn new(
        client: tokio_postgres::Client,
        observer: Arc<Observer>,
        peer: super::cancel::Peer,
    ) -> Self {
        PgConnection {
            client,
            observer,
            peer,
        }
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    pub(crate) fn peer(&self) -> &super::cancel::Peer {
        &self.peer
    }

    /// The transaction status the server last reported, if it is current (no request
    /// queued or in flight); no I/O.
    pub fn transaction_status(&self) -> TransactionStatus {
        self.observer.judge()
    }

    /// The transaction status once nothing is queued or in flight: waits for the
    /// connection task and the server's answers, sends nothing. `Unknown` only if the
    /// byte stream could not be followed or the connection ended. Not bounded: wrap it
    /// in a timeout. (The pool's reset does not wait like this: it cancels a query the
    /// borrower abandoned, within `PgManager::cancel_timeout`.)
    pub async fn settled_transaction_status(&self) -> TransactionStatus {
        self.observer.settled().await
    }

    /// The byte stream could not be followed (the server sent malformed framing): the
    /// status will never be known again, so the manager closes the connection.
    pub(crate) fn stream_lost(&self) -> bool {
        self.observer.lost.load(SeqCst)
    }

    /// The tokio-postgres client.
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// The tokio-postgres client, mutably (e.g. for `Client::transaction`).
    pub fn client_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

impl std::ops::Deref for PgConnection {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection")
            .field("closed", &self.client.is_closed())
            .field("transaction_status", &self.transaction_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn backend_events(chunks: &[&[u8]]) -> Vec<Backend> {
        let mut p = BackendParser::new();
        let mut events = Vec::new();
        for c in chunks {
            p.feed(c, |e| events.push(e));
        }
        events
    }

    /// A server's answer to a simple query: several messages, then ReadyForQuery.
    fn answer(status: u8) -> Vec<u8> {
        let mut s = msg(
            b'T',
            b"\0\x01x\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        );
        s.extend(msg(b'D', b"\0\x01\0\0\0\x011"));
        s.extend(msg(b'C', b"SELECT 1\0"));
        s.extend(msg(b'Z', &[status]));
        s
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut bytes = answer(b'I');
        bytes.extend(answer(b'T'));
        bytes.extend(msg(b'Z', b"E"));
        assert_eq!(
            backend_events(&[&bytes]),
            vec![
                Backend::Ready(b'I'),
                Backend::Ready(b'T'),
                Backend::Ready(b'E')
            ]
        );
    }

    #[test]
    fn a_message_arriving_byte_by_byte() {
        let mut bytes = answer(b'T');
        bytes.extend(answer(b'I'));
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            backend_events(&chunks),
            vec![Backend::Ready(b'T'), Backend::Ready(b'I')]
        );
        // Every split point of two messages gives the same events.
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                backend_events(&[a, b]),
                vec![Backend::Ready(b'T'), Backend::Ready(b'I')],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_z_byte_inside_a_body_is_not_a_message() {
        // A DataRow whose payload looks like a ReadyForQuery.
        let fake = msg(b'Z', b"T");
        let mut bytes = msg(b'D', &fake);
        bytes.extend(msg(b'Z', b"I"));
        assert_eq!(backend_events(&[&bytes]), vec![Backend::Ready(b'I')]);
    }

    #[test]
    fn malformed_lengths_stop_the_parser_without_panicking() {
        assert_eq!(backend_events(&[b"Z\0\0\0\x03I"]), vec![Backend::Malformed]);
        assert_eq!(
            backend_events(&[b"Z\0\0\0\x04", b"I"]),
            vec![Backend::Malformed]
        );
        // A huge length is just skipped; nothing after it is misread.
        let mut p = BackendParser::new();
        assert!(p.feed(b"D\xff\xff\xff\xffZ\0\0\0\x05I", |_| panic!("no event")));
        // Any bytes at all: no panic.
        let mut p = BackendParser::new();
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for c in noise.chunks(7) {
            p.feed(c, |_| {});
        }
    }

    #[test]
    fn ssl_answer_then_plain_framing() {
        let mut p = BackendParser::new();
        p.expect_ssl_answer();
        let mut events = Vec::new();
        let mut bytes = vec![b'N'];
        bytes.extend(msg(b'R', &[0, 0, 0, 0]));
        bytes.extend(msg(b'Z', b"I"));
        for c in bytes.chunks(2) {
            p.feed(c, |e| events.push(e));
        }
        assert_eq!(events, vec![Backend::SslAnswer(b'N'), Backend::Ready(b'I')]);

        let mut p = BackendParser::new();
        p.expect_ssl_answer();
        let mut events = Vec::new();
        assert!(!p.feed(b"S\x16\x03\x01", |e| events.push(e)));
        assert_eq!(events, vec![Backend::SslAnswer(b'S')]);
    }

    fn frontend_count(chunks: &[&[u8]]) -> (u32, u32, bool) {
        let mut p = FrontendParser::new();
        let (mut ready, mut ssl, mut ok) = (0, 0, true);
        for c in chunks {
            ok &= p.feed(c, |e| match e {
                Frontend::Startup | Frontend::Message(b'Q' | b'S' | b'F') => ready += 1,
                Frontend::SslRequest => ssl += 1,
                Frontend::Message(_) => {}
            });
        }
        (ready, ssl, ok)
    }

    fn startup() -> Vec<u8> {
        let body = b"\0\x03\0\0user\0app\0\0";
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn frontend_counts_requests_that_get_a_ready_for_query() {
        let mut bytes = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]; // SSLRequest
        bytes.extend(startup());
        bytes.extend(msg(b'p', b"password\0"));
        bytes.extend(msg(b'Q', b"SELECT 1\0"));
        bytes.extend(msg(b'P', b"\0SELECT $1\0\0\0"));
        bytes.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        bytes.extend(msg(b'E', b"\0\0\0\0\0"));
        bytes.extend(msg(b'S', b""));
        bytes.extend(msg(b'X', b""));
        // startup + Q + S
        assert_eq!(frontend_count(&[&bytes]), (3, 1, true));
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frontend_count(&chunks), (3, 1, true));
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(frontend_count(&[a, b]), (3, 1, true), "cut at {cut}");
        }
    }

    #[test]
    fn frontend_garbage_is_reported_not_panicked_on() {
        assert!(!frontend_count(&[&[0, 0, 0, 2, 0, 0, 0, 0]]).2);
        let mut bytes = startup();
        bytes.extend(b"Q\0\0\0\x01");
        assert!(!frontend_count(&[&bytes]).2);
    }

    #[tokio::test]
    async fn settled_waits_for_the_answer_and_gives_up_when_the_connection_ends() {
        let o = Arc::new(Observer::default());
        o.on_frontend(Frontend::Startup);
        o.on_ready(b'I');
        o.on_frontend(Frontend::Message(b'Q'));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a request is in flight");
        o.on_ready(b'T');
        assert_eq!(waiter.await.unwrap(), TransactionStatus::InTransaction);

        o.on_frontend(Frontend::Message(b'Q'));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        o.finished.store(true, SeqCst);
        o.changed.notify_waiters();
        assert_eq!(waiter.await.unwrap(), TransactionStatus::Unknown);
    }

    #[test]
    fn judge_needs_every_request_answered_and_a_quiet_task() {
        let o = Observer::default();
        assert_eq!(o.judge(), TransactionStatus::Unknown, "before startup");
        o.on_frontend(Frontend::Startup);
        assert_eq!(o.judge(), TransactionStatus::Unknown);
        o.on_ready(b'I');
        assert_eq!(o.judge(), TransactionStatus::Idle);
        o.on_frontend(Frontend::Message(b'Q'));
        assert_eq!(o.judge(), TransactionStatus::Unknown, "in flight");
        o.on_ready(b'T');
        assert_eq!(o.judge(), TransactionStatus::InTransaction);
        o.on_frontend(Frontend::Message(b'Q'));
        o.on_ready(b'E');
        assert_eq!(o.judge(), TransactionStatus::Failed);
        // A dropped statement's Close + Sync cannot change the status: still Failed
        // while it is in flight. A Parse + Sync could (an error inside a transaction).
        o.on_frontend(Frontend::Message(b'C'));
        o.on_frontend(Frontend::Message(b'S'));
        assert_eq!(
            o.judge(),
            TransactionStatus::Failed,
            "Close + Sync in flight"
        );
        o.on_frontend(Frontend::Message(b'P'));
        o.on_frontend(Frontend::Message(b'S'));
        assert_eq!(
            o.judge(),
            TransactionStatus::Unknown,
            "Parse + Sync in flight"
        );
        o.on_ready(b'E');
        assert_eq!(o.judge(), TransactionStatus::Unknown, "one answer missing");
        o.on_ready(b'E');
        assert_eq!(o.judge(), TransactionStatus::Failed);
        o.woken.store(true, SeqCst);
        assert_eq!(o.judge(), TransactionStatus::Unknown, "a queued request");
        o.woken.store(false, SeqCst);
        o.polls.store(3, SeqCst);
        assert_eq!(o.judge(), TransactionStatus::Unknown, "task running");
        o.polls.store(4, SeqCst);
        o.write_blocked.store(true, SeqCst);
        assert_eq!(o.judge(), TransactionStatus::Unknown, "bytes unwritten");
        o.write_blocked.store(false, SeqCst);
        o.lose();
        assert_eq!(o.judge(), TransactionStatus::Unknown, "lost the thread");
    }
}
