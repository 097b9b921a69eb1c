//! The session driven with real protocol bytes: client messages written by
//! `postgres-protocol` (the codec tokio-postgres uses), server messages by small helpers
//! that follow the protocol documentation. Each test asserts the exact actions.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::statements;
use super::*;
use crate::protocol::backend::error_response;

const T0: Instant = Instant::ZERO;
const S1: ServerId = ServerId(1);
const S2: ServerId = ServerId(2);

// ---- client messages ----

fn q(sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::query(sql, &mut b).unwrap();
    b.to_vec()
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::parse(name, sql, [], &mut b).unwrap();
    b.to_vec()
}

/// A Bind of the unnamed statement.
fn bind() -> Vec<u8> {
    bind_to("")
}

fn execute() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::execute("", 0, &mut b).unwrap();
    b.to_vec()
}

fn sync() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::sync(&mut b);
    b.to_vec()
}

fn copy_data(data: &[u8]) -> Vec<u8> {
    let mut b = vec![b'd'];
    b.extend_from_slice(&(data.len() as u32 + 4).to_be_bytes());
    b.extend_from_slice(data);
    b
}

fn copy_done() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::copy_done(&mut b);
    b.to_vec()
}

fn copy_fail() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::copy_fail("cancelled", &mut b).unwrap();
    b.to_vec()
}

fn terminate() -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::terminate(&mut b);
    b.to_vec()
}

/// A Parse/Bind/Execute batch of the unnamed statement, with its Sync.
fn batch(sql: &str) -> Vec<u8> {
    [parse("", sql), bind(), execute(), sync()].concat()
}

// ---- server messages ----

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn rfq(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn cc(tag: &str) -> Vec<u8> {
    msg(b'C', format!("{tag}\0").as_bytes())
}

fn data_row() -> Vec<u8> {
    msg(b'D', &[0, 1, 0, 0, 0, 1, b'1'])
}

fn parse_complete() -> Vec<u8> {
    msg(b'1', &[])
}

fn bind_complete() -> Vec<u8> {
    msg(b'2', &[])
}

fn server_error(code: &str) -> Vec<u8> {
    msg(
        b'E',
        format!("SERROR\0VERROR\0C{code}\0Mboom\0\0").as_bytes(),
    )
}

fn copy_in_response() -> Vec<u8> {
    msg(b'G', &[0, 0, 1, 0, 0])
}

/// The answer to one `batch`: ParseComplete, BindComplete, a row, CommandComplete, RFQ.
fn batch_answer(status: u8) -> Vec<u8> {
    [
        parse_complete(),
        bind_complete(),
        data_row(),
        cc("SELECT 1"),
        rfq(status),
    ]
    .concat()
}

// ---- driving ----

fn session() -> ClientSession {
    ClientSession::new(SessionConfig::default())
}

fn with(policy: StatePolicy) -> ClientSession {
    ClientSession::new(SessionConfig {
        on_session_state: policy,
        ..SessionConfig::default()
    })
}

/// A session that does not track named statements (`max_prepared_statements` 0).
fn untracked(policy: StatePolicy) -> ClientSession {
    ClientSession::new(SessionConfig {
        on_session_state: policy,
        max_prepared_statements: 0,
        ..SessionConfig::default()
    })
}

fn drain(s: &mut ClientSession) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn client(s: &mut ClientSession, bytes: &[u8]) -> Vec<Action> {
    s.handle(T0, Input::ClientBytes(bytes)).unwrap();
    drain(s)
}

fn server(s: &mut ClientSession, bytes: &[u8]) -> Vec<Action> {
    s.handle(T0, Input::ServerBytes(bytes)).unwrap();
    drain(s)
}

fn grant(s: &mut ClientSession, id: ServerId) -> Vec<Action> {
    s.handle(T0, Input::ServerGranted(id, ServerStatements::default()))
        .unwrap();
    drain(s)
}

fn to_server(id: ServerId, bytes: Vec<u8>) -> Action {
    Action::SendToServer(id, bytes)
}

fn to_client(bytes: Vec<u8>) -> Action {
    Action::SendToClient(bytes)
}

fn fatal(code: &str, text: &str) -> Action {
    Action::SendToClient(error_response("FATAL", code, text))
}

/// A session holding S1 after `sql` was forwarded.
fn active_with(sql: &str) -> ClientSession {
    let mut s = session();
    assert_eq!(client(&mut s, &q(sql)), vec![Action::RequestServer]);
    assert_eq!(grant(&mut s, S1), vec![to_server(S1, q(sql))]);
    s
}

// ---- the release rule ----

#[test]
fn a_simple_query_round_trip_releases_the_server_at_ready_for_query_idle() {
    let mut s = active_with("SELECT 1");
    assert_eq!(s.unanswered(), 1);
    let answer = [data_row(), cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client(answer.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
    assert_eq!(s.server(), None);
    assert_eq!(s.unanswered(), 0);
}

#[test]
fn the_answer_split_anywhere_releases_only_when_the_last_byte_is_in() {
    let answer = [data_row(), cc("SELECT 1"), rfq(b'I')].concat();
    for split in 1..answer.len() {
        let mut s = active_with("SELECT 1");
        let first = server(&mut s, &answer[..split]);
        assert!(
            !first.iter().any(|a| matches!(a, Action::ReleaseServer(..))),
            "split {split}"
        );
        let second = server(&mut s, &answer[split..]);
        assert_eq!(
            second.last(),
            Some(&Action::ReleaseServer(
                S1,
                Release::Clean,
                ServerStatements::default()
            )),
            "split {split}"
        );
    }
}

#[test]
fn begin_commit_holds_the_server_until_the_idle_ready_for_query() {
    let mut s = active_with("BEGIN");
    let begun = [cc("BEGIN"), rfq(b'T')].concat();
    assert_eq!(server(&mut s, &begun), vec![to_client(begun.clone())]);
    assert_eq!(s.server(), Some(S1));
    // Inside the transaction the next query goes straight to the same server.
    assert_eq!(
        client(&mut s, &q("UPDATE t SET x = 1")),
        vec![to_server(S1, q("UPDATE t SET x = 1"))]
    );
    let updated = [cc("UPDATE 1"), rfq(b'T')].concat();
    assert_eq!(server(&mut s, &updated), vec![to_client(updated.clone())]);
    assert_eq!(
        client(&mut s, &q("COMMIT")),
        vec![to_server(S1, q("COMMIT"))]
    );
    let committed = [cc("COMMIT"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &committed),
        vec![
            to_client(committed.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn a_failed_transaction_holds_the_server_until_rollback() {
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    client(&mut s, &q("SELECT 1/0"));
    let failed = [server_error("22012"), rfq(b'E')].concat();
    assert_eq!(server(&mut s, &failed), vec![to_client(failed.clone())]);
    assert_eq!(s.server(), Some(S1));
    client(&mut s, &q("ROLLBACK"));
    let rolled = [cc("ROLLBACK"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &rolled),
        vec![
            to_client(rolled.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn pipelined_extended_batches_release_only_after_the_last_sync() {
    let mut s = session();
    let three = [batch("SELECT 1"), batch("SELECT 2"), batch("SELECT 3")].concat();
    assert_eq!(client(&mut s, &three), vec![Action::RequestServer]);
    assert_eq!(grant(&mut s, S1), vec![to_server(S1, three.clone())]);
    assert_eq!(s.unanswered(), 3);
    assert_eq!(
        server(&mut s, &batch_answer(b'I')),
        vec![to_client(batch_answer(b'I'))]
    );
    assert_eq!(
        server(&mut s, &batch_answer(b'I')),
        vec![to_client(batch_answer(b'I'))]
    );
    assert_eq!(s.unanswered(), 1);
    assert_eq!(
        server(&mut s, &batch_answer(b'I')),
        vec![
            to_client(batch_answer(b'I')),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn an_error_in_the_middle_of_a_pipeline_is_answered_at_its_sync_and_the_next_sync_still_counts() {
    let mut s = session();
    let two = [batch("SELECT 1/0"), batch("SELECT 2")].concat();
    client(&mut s, &two);
    grant(&mut s, S1);
    // The first batch fails: ErrorResponse, the server skips to its Sync, ReadyForQuery(I).
    let failed = [
        parse_complete(),
        bind_complete(),
        server_error("22012"),
        rfq(b'I'),
    ]
    .concat();
    assert_eq!(server(&mut s, &failed), vec![to_client(failed.clone())]);
    assert_eq!(s.server(), Some(S1), "the second Sync is still unanswered");
    assert_eq!(s.unanswered(), 1);
    assert_eq!(
        server(&mut s, &batch_answer(b'I')),
        vec![
            to_client(batch_answer(b'I')),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn an_open_batch_after_the_last_sync_keeps_the_server() {
    // Sync, then a Parse/Bind without Sync yet: ReadyForQuery(I) for the first must not
    // release the server the second batch is already on.
    let mut s = session();
    client(&mut s, &batch("SELECT 1"));
    grant(&mut s, S1);
    let open = [parse("", "SELECT 2"), bind()].concat();
    assert_eq!(client(&mut s, &open), vec![to_server(S1, open.clone())]);
    assert_eq!(
        server(&mut s, &batch_answer(b'I')),
        vec![to_client(batch_answer(b'I'))]
    );
    assert_eq!(s.server(), Some(S1));
    let rest = [execute(), sync()].concat();
    assert_eq!(client(&mut s, &rest), vec![to_server(S1, rest.clone())]);
    let answer = [parse_complete(), bind_complete(), cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client(answer.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn copy_from_stdin_holds_the_server_until_copy_done_and_ready_for_query() {
    let mut s = active_with("COPY t FROM STDIN");
    assert_eq!(
        server(&mut s, &copy_in_response()),
        vec![to_client(copy_in_response())]
    );
    let rows = [copy_data(b"1\n"), copy_data(b"2\n")].concat();
    assert_eq!(client(&mut s, &rows), vec![to_server(S1, rows.clone())]);
    assert_eq!(
        client(&mut s, &copy_done()),
        vec![to_server(S1, copy_done())]
    );
    assert_eq!(s.server(), Some(S1));
    let done = [cc("COPY 2"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &done),
        vec![
            to_client(done.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn copy_fail_ends_the_copy_and_the_error_and_ready_for_query_release() {
    let mut s = active_with("COPY t FROM STDIN");
    server(&mut s, &copy_in_response());
    client(&mut s, &copy_data(b"1\n"));
    assert_eq!(
        client(&mut s, &copy_fail()),
        vec![to_server(S1, copy_fail())]
    );
    let failed = [server_error("57014"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &failed),
        vec![
            to_client(failed.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn extended_copy_as_tokio_postgres_sends_it() {
    // tokio-postgres's copy_in: Bind, Execute, Sync up front (the server, in COPY-in mode,
    // ignores that Sync), then the data, CopyDone and a second Sync that is answered.
    let mut s = session();
    let start = [parse("", "COPY t FROM STDIN"), bind(), execute(), sync()].concat();
    client(&mut s, &start);
    grant(&mut s, S1);
    assert_eq!(s.unanswered(), 1);
    let began = [parse_complete(), bind_complete(), copy_in_response()].concat();
    assert_eq!(server(&mut s, &began), vec![to_client(began.clone())]);
    assert_eq!(
        s.unanswered(),
        0,
        "the Sync sent into COPY-in mode gets no answer"
    );
    assert_eq!(s.server(), Some(S1), "the COPY is still open");
    let end = [copy_data(b"1\n"), copy_done(), sync()].concat();
    assert_eq!(client(&mut s, &end), vec![to_server(S1, end.clone())]);
    let done = [cc("COPY 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &done),
        vec![
            to_client(done.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn extended_copy_with_everything_pipelined_counts_the_sync_after_copy_done() {
    // Bind, Execute, CopyData, CopyDone, Sync all at once: this Sync is read after the COPY
    // ended, so it is answered.
    let mut s = session();
    let all = [
        parse("", "COPY t FROM STDIN"),
        bind(),
        execute(),
        copy_data(b"1\n"),
        copy_done(),
        sync(),
    ]
    .concat();
    client(&mut s, &all);
    grant(&mut s, S1);
    let answer = [
        parse_complete(),
        bind_complete(),
        copy_in_response(),
        cc("COPY 1"),
        rfq(b'I'),
    ]
    .concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client(answer.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

// ---- no pipelined query on a server given away ----

#[test]
fn a_query_pipelined_before_the_ready_for_query_keeps_the_server() {
    let mut s = active_with("SELECT 1");
    assert_eq!(
        client(&mut s, &q("SELECT 2")),
        vec![to_server(S1, q("SELECT 2"))]
    );
    let first = [cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &first),
        vec![to_client(first.clone())],
        "SELECT 2 is in flight"
    );
    assert_eq!(
        server(&mut s, &first),
        vec![
            to_client(first.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn a_query_after_the_release_is_queued_for_a_new_server_never_sent_to_the_old_one() {
    let mut s = active_with("SELECT 1");
    // The second query's first bytes arrive before the answer; the rest after it.
    let second = q("SELECT 2");
    assert_eq!(client(&mut s, &second[..3]), vec![]);
    let answer = [cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client(answer.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
    assert_eq!(client(&mut s, &second[3..]), vec![Action::RequestServer]);
    assert_eq!(
        s.handle(T0, Input::ServerBytes(&rfq(b'I'))),
        Err(Misuse::NoServerHeld)
    );
    assert_eq!(grant(&mut s, S2), vec![to_server(S2, second)]);
}

// ---- session state ----

#[test]
fn set_outside_a_transaction_pins_the_client_once() {
    let mut s = active_with("SET search_path = app");
    let set = [cc("SET"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &set),
        vec![
            to_client(cc("SET")),
            Action::Pinned(PinReason::Set),
            to_client(rfq(b'I'))
        ]
    );
    assert_eq!(s.server(), Some(S1), "pinned: the server stays");
    assert_eq!(
        client(&mut s, &q("SET a = 1")),
        vec![to_server(S1, q("SET a = 1"))]
    );
    assert_eq!(
        server(&mut s, &set),
        vec![to_client(set.clone())],
        "reported once per client"
    );
    // When the client leaves, its server is reset before anyone else gets it.
    s.handle(T0, Input::ClientClosed).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            Action::ReleaseServer(S1, Release::Reset, ServerStatements::default()),
            Action::CloseClient
        ]
    );
}

#[test]
fn set_inside_a_transaction_does_not_pin() {
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    client(&mut s, &q("SET LOCAL statement_timeout = 1000"));
    server(&mut s, &[cc("SET"), rfq(b'T')].concat());
    client(&mut s, &q("COMMIT"));
    let committed = [cc("COMMIT"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &committed),
        vec![
            to_client(committed.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
    assert_eq!(s.pinned(), None);
}

#[test]
fn set_refused_answers_with_an_error_and_resets_the_server() {
    let mut s = with(StatePolicy::Refuse);
    client(&mut s, &q("SET search_path = app"));
    grant(&mut s, S1);
    let set = [cc("SET"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &set),
        vec![
            // CommandComplete went through; the ReadyForQuery is replaced by the error.
            to_client(cc("SET")),
            Action::Refused(PinReason::Set),
            fatal("0A000", &refusal(PinReason::Set)),
            Action::ReleaseServer(S1, Release::Reset, ServerStatements::default()),
            Action::CloseClient,
        ]
    );
    assert!(s.is_closed());
    assert_eq!(
        client(&mut s, &q("SELECT 1")),
        vec![],
        "nothing after the close"
    );
}

fn refusal(reason: PinReason) -> String {
    format!(
        "pool-proxy: {reason} changes session state, which transaction pooling cannot keep; \
         use it inside a transaction (SET LOCAL, unnamed statements) or connect to a \
         session-mode pool"
    )
}

#[test]
fn listen_and_prepare_pin() {
    for (sql, tag, reason) in [
        ("LISTEN ch", "LISTEN", PinReason::Listen),
        ("PREPARE p AS SELECT 1", "PREPARE", PinReason::Prepare),
    ] {
        let mut s = active_with(sql);
        let answer = [cc(tag), rfq(b'I')].concat();
        assert_eq!(
            server(&mut s, &answer),
            vec![
                to_client(cc(tag)),
                Action::Pinned(reason),
                to_client(rfq(b'I'))
            ]
        );
        assert_eq!(s.server(), Some(S1));
    }
}

#[test]
fn an_untracked_named_parse_pins() {
    let mut s = untracked(StatePolicy::Pin);
    let prepared = [parse("s1", "SELECT 1"), sync()].concat();
    assert_eq!(client(&mut s, &prepared), vec![Action::RequestServer]);
    assert_eq!(
        grant(&mut s, S1),
        vec![
            Action::Pinned(PinReason::NamedStatement),
            to_server(S1, prepared.clone())
        ]
    );
    let answer = [parse_complete(), rfq(b'I')].concat();
    assert_eq!(server(&mut s, &answer), vec![to_client(answer)]);
    assert_eq!(s.server(), Some(S1));
}

#[test]
fn an_untracked_named_parse_refused_is_never_forwarded() {
    let mut s = untracked(StatePolicy::Refuse);
    client(&mut s, &q("SELECT 1"));
    grant(&mut s, S1);
    server(&mut s, &[cc("SELECT 1"), rfq(b'T')].concat());
    // Inside a transaction (status T), nothing in flight: the server is rolled back.
    assert_eq!(
        client(&mut s, &[parse("s1", "SELECT 1"), sync()].concat()),
        vec![
            Action::Refused(PinReason::NamedStatement),
            fatal("0A000", &refusal(PinReason::NamedStatement)),
            Action::ReleaseServer(
                S1,
                Release::Rollback { reset: true },
                ServerStatements::default()
            ),
            Action::CloseClient,
        ]
    );
}

// ---- a client that leaves ----

#[test]
fn a_client_gone_mid_transaction_leaves_its_server_for_rollback_or_close() {
    for (policy, expected) in [
        (
            AbandonedTransactionPolicy::Rollback,
            Action::ReleaseServer(
                S1,
                Release::Rollback { reset: false },
                ServerStatements::default(),
            ),
        ),
        (
            AbandonedTransactionPolicy::Close,
            Action::CloseServer(S1, "its client left inside a transaction".into()),
        ),
    ] {
        let mut s = ClientSession::new(SessionConfig {
            on_abandoned_transaction: policy,
            ..SessionConfig::default()
        });
        client(&mut s, &q("BEGIN"));
        grant(&mut s, S1);
        server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
        assert_eq!(
            client(&mut s, &terminate()),
            vec![expected, Action::CloseClient]
        );
        assert!(s.is_closed());
        assert_eq!(
            s.handle(T0, Input::ServerBytes(&rfq(b'I'))),
            Err(Misuse::Closed)
        );
    }
}

#[test]
fn a_client_gone_with_a_request_in_flight_closes_the_server() {
    let mut s = active_with("SELECT pg_sleep(10)");
    s.handle(T0, Input::ClientClosed).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            Action::CloseServer(S1, "its client left with a request in flight".into()),
            Action::CloseClient
        ]
    );
}

#[test]
fn a_client_gone_while_waiting_withdraws_its_request() {
    let mut s = session();
    client(&mut s, &q("SELECT 1"));
    s.handle(T0, Input::ClientClosed).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![Action::WithdrawServerRequest, Action::CloseClient]
    );
    assert_eq!(
        s.handle(T0, Input::ServerGranted(S1, ServerStatements::default())),
        Err(Misuse::Closed)
    );
}

// ---- the pool and the server failing ----

#[test]
fn no_server_available_answers_with_the_pools_error() {
    let mut s = session();
    client(&mut s, &q("SELECT 1"));
    s.handle(
        T0,
        Input::ServerUnavailable {
            sqlstate: "53300",
            message: "pool-proxy: wait timed out",
        },
    )
    .unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            fatal("53300", "pool-proxy: wait timed out"),
            Action::CloseClient
        ]
    );
}

#[test]
fn a_lost_server_disconnects_its_client() {
    let mut s = active_with("SELECT 1");
    s.handle(T0, Input::ServerLost).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            fatal("08006", "pool-proxy: the server connection was lost"),
            Action::CloseClient
        ]
    );
}

/// A server's FATAL as PostgreSQL sends it when its backend is terminated.
fn server_goodbye() -> Vec<u8> {
    msg(
        b'E',
        b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0",
    )
}

#[test]
fn a_servers_goodbye_after_the_transaction_closes_it_and_spares_the_client() {
    // Read together with the ReadyForQuery that ended the transaction (a backend
    // terminated just after answering): not the client's session, not its error.
    let mut s = active_with("SELECT 1");
    let answer = [data_row(), cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &[answer.clone(), server_goodbye()].concat()),
        vec![
            to_client(answer),
            Action::CloseServer(
                S1,
                "it sent an error after its client's transaction had ended".into()
            ),
        ]
    );
    assert_eq!(s.server(), None);
    assert!(!s.is_closed());
    // The next transaction goes to another server.
    assert_eq!(client(&mut s, &q("SELECT 2")), vec![Action::RequestServer]);
    assert_eq!(grant(&mut s, S2), vec![to_server(S2, q("SELECT 2"))]);
}

#[test]
fn a_servers_goodbye_inside_a_transaction_or_a_pinned_session_reaches_the_client() {
    // Inside a transaction the session that ends holds the client's transaction.
    let mut s = active_with("BEGIN");
    let begun = [cc("BEGIN"), rfq(b'T')].concat();
    assert_eq!(
        server(&mut s, &[begun.clone(), server_goodbye()].concat()),
        vec![to_client([begun, server_goodbye()].concat())]
    );
    assert_eq!(s.server(), Some(S1));
    // A pinned client's session is its server's.
    let mut s = active_with("SET search_path = app");
    assert_eq!(
        server(&mut s, &[cc("SET"), rfq(b'I'), server_goodbye()].concat()),
        vec![
            to_client(cc("SET")),
            Action::Pinned(PinReason::Set),
            to_client([rfq(b'I'), server_goodbye()].concat())
        ]
    );
    // So is a request still unanswered.
    let mut s = active_with("SELECT pg_sleep(10)");
    assert_eq!(
        server(&mut s, &server_goodbye()),
        vec![to_client(server_goodbye())]
    );
}

#[test]
fn a_ready_for_query_nobody_asked_for_closes_the_server() {
    // The release is decided at the end of an input: a second ReadyForQuery in the same
    // read is still seen on the held server, and answers nothing.
    let what = "ReadyForQuery with no request outstanding";
    let mut s = active_with("SELECT 1");
    let two = [rfq(b'I'), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &two),
        vec![
            to_client(rfq(b'I')),
            Action::CloseServer(S1, format!("protocol violation: {what}")),
            fatal(
                "08P01",
                &format!("pool-proxy: the server broke the protocol: {what}")
            ),
            Action::CloseClient,
        ]
    );
    // On a session that still holds its server (a transaction), an extra one is a violation.
    let mut s = active_with("BEGIN");
    let extra = [rfq(b'T'), rfq(b'T')].concat();
    assert_eq!(
        server(&mut s, &extra),
        vec![
            to_client(rfq(b'T')),
            Action::CloseServer(S1, format!("protocol violation: {what}")),
            fatal(
                "08P01",
                &format!("pool-proxy: the server broke the protocol: {what}")
            ),
            Action::CloseClient,
        ]
    );
}

#[test]
fn the_servers_backend_key_data_is_not_forwarded() {
    let mut s = active_with("SELECT 1");
    let answer = [
        msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
        cc("SELECT 1"),
        rfq(b'I'),
    ]
    .concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client([cc("SELECT 1"), rfq(b'I')].concat()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

// ---- malformed input ----

#[test]
fn a_lying_length_gets_an_error_and_a_disconnect() {
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    assert_eq!(
        client(&mut s, &[b'Q', 0, 0, 0, 2]),
        vec![
            fatal(
                "08P01",
                "pool-proxy: protocol violation: message 'Q' has length 2, below the minimum of 4"
            ),
            Action::ReleaseServer(
                S1,
                Release::Rollback { reset: false },
                ServerStatements::default()
            ),
            Action::CloseClient,
        ]
    );
}

#[test]
fn an_oversized_message_gets_an_error_and_a_disconnect_before_its_body() {
    let mut s = ClientSession::new(SessionConfig {
        max_client_message_len: 1000,
        ..SessionConfig::default()
    });
    assert_eq!(
        client(&mut s, &[b'Q', 0, 1, 0, 0]),
        vec![
            fatal("08P01", "pool-proxy: protocol violation: message 'Q' has length 65536, over the limit of 1000 bytes"),
            Action::CloseClient,
        ]
    );
}

#[test]
fn a_body_that_does_not_fit_its_type_gets_an_error_and_a_disconnect() {
    let mut s = session();
    assert_eq!(
        client(&mut s, &msg(b'Q', b"no terminator")),
        vec![
            fatal("08P01", "pool-proxy: protocol violation: malformed message 'Q': the query is not one NUL-terminated UTF-8 string"),
            Action::CloseClient,
        ]
    );
    let mut s = session();
    assert_eq!(
        client(&mut s, &msg(b'p', b"secret\0")),
        vec![
            fatal(
                "08P01",
                "pool-proxy: protocol violation: unexpected message type 'p'"
            ),
            Action::CloseClient
        ]
    );
}

#[test]
fn too_much_queued_while_waiting_is_refused() {
    let mut s = ClientSession::new(SessionConfig {
        max_queued_bytes: 100,
        ..SessionConfig::default()
    });
    let big = q(&"x".repeat(200));
    assert_eq!(
        client(&mut s, &big),
        vec![
            Action::RequestServer,
            fatal(
                "54000",
                "pool-proxy: more than 100 bytes sent while waiting for a server"
            ),
            Action::WithdrawServerRequest,
            Action::CloseClient,
        ]
    );
}

#[test]
fn driver_misuse_is_an_error_and_changes_nothing() {
    let mut s = session();
    assert_eq!(
        s.handle(T0, Input::ServerGranted(S1, ServerStatements::default())),
        Err(Misuse::NotWaiting)
    );
    assert_eq!(s.handle(T0, Input::ServerLost), Err(Misuse::NoServerHeld));
    assert_eq!(
        s.handle(
            T0,
            Input::ServerUnavailable {
                sqlstate: "53300",
                message: "x"
            }
        ),
        Err(Misuse::NotWaiting)
    );
    assert_eq!(drain(&mut s), vec![]);
    client(&mut s, &q("SELECT 1"));
    grant(&mut s, S1);
    assert_eq!(
        s.handle(T0, Input::ServerGranted(S2, ServerStatements::default())),
        Err(Misuse::NotWaiting)
    );
    assert_eq!(s.server(), Some(S1));
}

#[test]
fn stray_flush_and_copy_messages_between_transactions_ask_for_no_server() {
    let mut s = session();
    let mut flush = BytesMut::new();
    frontend::flush(&mut flush);
    let stray = [flush.to_vec(), copy_data(b"late"), copy_done()].concat();
    assert_eq!(client(&mut s, &stray), vec![]);
    assert!(!s.is_waiting());
}

// ---- idle in transaction ----

fn at(secs: u64) -> Instant {
    T0 + std::time::Duration::from_secs(secs)
}

#[test]
fn a_client_idle_in_a_transaction_past_the_timeout_is_disconnected_and_rolled_back() {
    let mut s = ClientSession::new(SessionConfig {
        idle_transaction_timeout: Some(std::time::Duration::from_secs(10)),
        ..SessionConfig::default()
    });
    s.handle(at(0), Input::ClientBytes(&q("BEGIN"))).unwrap();
    s.handle(at(0), Input::ServerGranted(S1, ServerStatements::default()))
        .unwrap();
    assert_eq!(s.poll_timeout(), None, "BEGIN is in flight");
    s.handle(
        at(1),
        Input::ServerBytes(&[cc("BEGIN"), rfq(b'T')].concat()),
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), Some(at(11)));
    // Early: nothing.
    drain(&mut s);
    s.handle(at(5), Input::Timeout).unwrap();
    assert_eq!(drain(&mut s), vec![]);
    // A query stops the clock; its answer starts it again.
    s.handle(at(6), Input::ClientBytes(&q("SELECT 1"))).unwrap();
    assert_eq!(s.poll_timeout(), None);
    s.handle(
        at(7),
        Input::ServerBytes(&[cc("SELECT 1"), rfq(b'T')].concat()),
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), Some(at(17)));
    // Bytes of a message that is not whole do not restart it.
    let next = q("SELECT 2");
    s.handle(at(9), Input::ClientBytes(&next[..4])).unwrap();
    assert_eq!(s.poll_timeout(), Some(at(17)));
    drain(&mut s);
    s.handle(at(17) - std::time::Duration::from_nanos(1), Input::Timeout)
        .unwrap();
    assert_eq!(drain(&mut s), vec![], "one nanosecond early: nothing");
    s.handle(at(17), Input::Timeout).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            fatal(
                "25P03",
                "pool-proxy: terminating connection due to idle-in-transaction timeout"
            ),
            Action::ReleaseServer(
                S1,
                Release::Rollback { reset: false },
                ServerStatements::default()
            ),
            Action::CloseClient,
        ]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn no_idle_deadline_outside_a_transaction_or_when_disabled() {
    let mut s = ClientSession::new(SessionConfig {
        idle_transaction_timeout: Some(std::time::Duration::from_secs(10)),
        ..SessionConfig::default()
    });
    // Pinned and idle (status I): the client may think as long as it likes.
    client(&mut s, &q("SET a = 1"));
    grant(&mut s, S1);
    server(&mut s, &[cc("SET"), rfq(b'I')].concat());
    assert_eq!(s.server(), Some(S1));
    assert_eq!(s.poll_timeout(), None);
    s.handle(at(100), Input::Timeout).unwrap();
    assert_eq!(drain(&mut s), vec![]);
    // Disabled (the default): never, even inside a transaction.
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_server_error_during_copy_in_ends_it_and_the_clients_leftover_copy_messages_ask_for_nothing() {
    let mut s = active_with("COPY t FROM STDIN");
    server(&mut s, &copy_in_response());
    client(&mut s, &copy_data(b"not a number\n"));
    // The server rejects the data: the COPY is over on its side, the Query is answered.
    let failed = [server_error("22P02"), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &failed),
        vec![
            to_client(failed.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
    // The client had not noticed yet: its rest of the COPY goes nowhere.
    assert_eq!(
        client(&mut s, &[copy_data(b"2\n"), copy_done()].concat()),
        vec![]
    );
    assert!(!s.is_waiting());
}

#[test]
fn a_function_call_is_counted_like_a_query() {
    let mut s = session();
    let call = msg(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(client(&mut s, &call), vec![Action::RequestServer]);
    assert_eq!(grant(&mut s, S1), vec![to_server(S1, call)]);
    assert_eq!(s.unanswered(), 1);
    let answer = [msg(b'V', &[0, 0, 0, 1, b'1']), rfq(b'I')].concat();
    assert_eq!(
        server(&mut s, &answer),
        vec![
            to_client(answer.clone()),
            Action::ReleaseServer(S1, Release::Clean, ServerStatements::default())
        ]
    );
}

#[test]
fn a_sync_sent_inside_copy_in_after_the_copy_response_is_counted_conservatively() {
    // Bind, Execute, then (after CopyInResponse) a Sync inside COPY-in mode: the server
    // ignores it, but the session cannot tell it from a Sync sent after a server error it
    // has not read yet, so it counts it. Over-counting keeps the server (never a wrong
    // release); the client's server is closed when it leaves.
    let mut s = session();
    client(
        &mut s,
        &[parse("", "COPY t FROM STDIN"), bind(), execute()].concat(),
    );
    grant(&mut s, S1);
    server(
        &mut s,
        &[parse_complete(), bind_complete(), copy_in_response()].concat(),
    );
    client(
        &mut s,
        &[sync(), copy_data(b"1\n"), copy_done(), sync()].concat(),
    );
    assert_eq!(s.unanswered(), 2);
    let done = [cc("COPY 1"), rfq(b'I')].concat();
    assert_eq!(server(&mut s, &done), vec![to_client(done.clone())]);
    assert_eq!(s.server(), Some(S1));
    s.handle(T0, Input::ClientClosed).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            Action::CloseServer(S1, "its client left with a request in flight".into()),
            Action::CloseClient
        ]
    );
}

// ---- session pooling mode ----

fn session_mode() -> ClientSession {
    ClientSession::new(SessionConfig {
        pool_mode: PoolMode::Session,
        ..SessionConfig::default()
    })
}

#[test]
fn session_mode_keeps_the_server_between_transactions_and_resets_it_when_the_client_leaves() {
    let mut s = session_mode();
    assert_eq!(client(&mut s, &q("SELECT 1")), vec![Action::RequestServer]);
    assert_eq!(grant(&mut s, S1), vec![to_server(S1, q("SELECT 1"))]);
    let answer = [data_row(), cc("SELECT 1"), rfq(b'I')].concat();
    assert_eq!(server(&mut s, &answer), vec![to_client(answer.clone())]);
    assert_eq!(s.server(), Some(S1), "released at the end of a transaction");
    // The next query goes to the same server, with no new request.
    assert_eq!(
        client(&mut s, &q("SELECT 2")),
        vec![to_server(S1, q("SELECT 2"))]
    );
    assert_eq!(server(&mut s, &answer), vec![to_client(answer.clone())]);
    assert_eq!(
        client(&mut s, &terminate()),
        vec![
            Action::ReleaseServer(S1, Release::Reset, ServerStatements::default()),
            Action::CloseClient
        ]
    );
}

#[test]
fn session_mode_allows_session_state_without_pinning_or_refusing() {
    let mut s = ClientSession::new(SessionConfig {
        pool_mode: PoolMode::Session,
        on_session_state: StatePolicy::Refuse,
        ..SessionConfig::default()
    });
    client(&mut s, &q("SET search_path = x"));
    grant(&mut s, S1);
    let answer = [cc("SET"), rfq(b'I')].concat();
    assert_eq!(server(&mut s, &answer), vec![to_client(answer.clone())]);
    let named = [parse("s1", "SELECT 1"), sync()].concat();
    assert_eq!(client(&mut s, &named), vec![to_server(S1, named.clone())]);
    assert_eq!(s.pinned(), None);
    // Gone inside a transaction: rolled back and reset.
    server(&mut s, &[parse_complete(), rfq(b'I')].concat());
    client(&mut s, &q("BEGIN"));
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    s.handle(T0, Input::ClientClosed).unwrap();
    assert_eq!(
        drain(&mut s),
        vec![
            Action::ReleaseServer(
                S1,
                Release::Rollback { reset: true },
                ServerStatements::default()
            ),
            Action::CloseClient
        ]
    );
}

// ---- counters ----

#[test]
fn counters_count_requests_transactions_their_times_and_bytes() {
    let mut s = session();
    let t = |ms| T0 + Duration::from_millis(ms);
    s.handle(t(0), Input::ClientBytes(&q("BEGIN"))).unwrap();
    s.handle(t(1), Input::ServerGranted(S1, ServerStatements::default()))
        .unwrap();
    let begun = [cc("BEGIN"), rfq(b'T')].concat();
    s.handle(t(3), Input::ServerBytes(&begun)).unwrap();
    s.handle(t(10), Input::ClientBytes(&q("COMMIT"))).unwrap();
    let committed = [cc("COMMIT"), rfq(b'I')].concat();
    s.handle(t(14), Input::ServerBytes(&committed)).unwrap();
    assert_eq!(
        s.counters(),
        Counters {
            queries: 2,
            transactions: 1,
            // BEGIN forwarded at 1 ms, answered at 3; COMMIT forwarded at 10, answered at 14.
            query_time: Duration::from_millis(6),
            transaction_time: Duration::from_millis(13),
            received: (q("BEGIN").len() + q("COMMIT").len()) as u64,
            sent: (begun.len() + committed.len()) as u64,
            prepares: 0,
        }
    );
}

#[test]
fn between_transactions_is_false_only_inside_a_transaction_or_a_request() {
    let mut s = with(StatePolicy::Pin);
    assert!(s.between_transactions());
    client(&mut s, &q("BEGIN"));
    assert!(
        s.between_transactions(),
        "waiting: the transaction has not begun"
    );
    grant(&mut s, S1);
    assert!(!s.between_transactions(), "a request in flight");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    assert!(!s.between_transactions(), "inside a transaction");
    client(&mut s, &q("LISTEN x"));
    server(&mut s, &[cc("LISTEN"), rfq(b'T')].concat());
    client(&mut s, &q("COMMIT"));
    server(&mut s, &[cc("COMMIT"), rfq(b'I')].concat());
    assert_eq!(s.server(), Some(S1), "pinned");
    assert!(s.between_transactions(), "pinned, idle, quiet");
}

// ---- named statements in transaction mode (tracked) ----

fn bind_to(statement: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    let no_params: [Option<&[u8]>; 0] = [];
    frontend::bind(
        "",
        statement,
        None::<i16>,
        no_params,
        |_: Option<&[u8]>, _: &mut BytesMut| Ok(postgres_protocol::IsNull::Yes),
        None::<i16>,
        &mut b,
    )
    .map_err(|_| ())
    .unwrap();
    b.to_vec()
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::close(b'S', name, &mut b).unwrap();
    b.to_vec()
}

/// The statement a `parse(_, sql)` defines (no parameter types).
fn statement(sql: &str) -> Statement {
    let mut definition = sql.as_bytes().to_vec();
    definition.extend_from_slice(&[0, 0, 0]);
    Statement::new(&definition)
}

/// What the proxy sends to prepare `sql` on a server: a Close, then the Parse.
fn prepare_on_server(sql: &str) -> Vec<u8> {
    let st = statement(sql);
    let mut out = Vec::new();
    statements::write_close(&mut out, st.server_name());
    st.write_parse(&mut out);
    out
}

fn close_complete() -> Vec<u8> {
    msg(b'3', &[])
}

fn grant_with(s: &mut ClientSession, id: ServerId, on: ServerStatements) -> Vec<Action> {
    s.handle(T0, Input::ServerGranted(id, on)).unwrap();
    drain(s)
}

/// The record a released server carries back.
fn released_record(actions: &[Action]) -> ServerStatements {
    actions
        .iter()
        .find_map(|a| match a {
            Action::ReleaseServer(_, Release::Clean, on) => Some(on.clone()),
            _ => None,
        })
        .expect("the server was released clean")
}

fn names(on: &ServerStatements) -> Vec<String> {
    let mut names: Vec<String> = on.names().map(str::to_owned).collect();
    names.sort();
    names
}

/// The server's answer to `prepare_on_server`: CloseComplete, ParseComplete.
fn prepare_answer() -> Vec<u8> {
    [close_complete(), parse_complete()].concat()
}

/// Transaction 1 prepares `s1` on server 1 and runs it; returns server 1's record.
fn prepare_and_run(s: &mut ClientSession) -> ServerStatements {
    let sql = "SELECT 1";
    let batch = [parse("s1", sql), bind_to("s1"), execute(), sync()].concat();
    assert_eq!(client(s, &batch), vec![Action::RequestServer]);
    let st = statement(sql);
    let mut bind_renamed = Vec::new();
    crate::protocol::backend::write_message(
        &mut bind_renamed,
        b'B',
        &[
            &[0u8][..],
            st.server_name().as_bytes(),
            &[0],
            &bind_to("s1")[9..],
        ]
        .concat(),
    );
    assert_eq!(
        grant(s, S1),
        vec![to_server(
            S1,
            [prepare_on_server(sql), bind_renamed, execute(), sync()].concat()
        )],
        "the client's name never reaches the server; no pin"
    );
    let answer = [prepare_answer(), batch_answer(b'I')[5..].to_vec()].concat();
    let actions = server(s, &answer);
    assert_eq!(
        actions[0],
        to_client(batch_answer(b'I')),
        "the proxy's Close is answered to the proxy, not the client"
    );
    let record = released_record(&actions);
    assert_eq!(names(&record), vec![st.server_name().to_owned()]);
    assert_eq!(s.pinned(), None);
    record
}

#[test]
fn a_named_statement_is_prepared_again_on_the_next_server_hidden_from_the_client() {
    let mut s = session();
    prepare_and_run(&mut s);
    // Transaction 2 lands on server 2, which has never seen the statement.
    let again = [bind_to("s1"), execute(), sync()].concat();
    assert_eq!(client(&mut s, &again), vec![Action::RequestServer]);
    let sent = grant(&mut s, S2);
    let Action::SendToServer(S2, bytes) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert!(bytes.starts_with(&prepare_on_server("SELECT 1")));
    let answer = [prepare_answer(), batch_answer(b'I')[5..].to_vec()].concat();
    let actions = server(&mut s, &answer);
    assert_eq!(
        actions[0],
        to_client([bind_complete(), data_row(), cc("SELECT 1"), rfq(b'I')].concat()),
        "the hidden Close and Parse are answered to the proxy only"
    );
    assert_eq!(s.counters().prepares, 2);
}

#[test]
fn a_statement_the_server_has_is_not_parsed_again_and_the_proxy_answers_the_parse() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    // Another client (a new session) defines the same text under another name, on the
    // same server: the Parse is answered at once, and only the Bind goes (renamed).
    let mut other = session();
    assert_eq!(
        client(&mut other, &parse("mine", "SELECT 1")),
        vec![Action::RequestServer]
    );
    assert_eq!(
        grant_with(&mut other, S1, record),
        vec![to_client(parse_complete())]
    );
    // A Close of the client's name is answered by the proxy; the server keeps it.
    assert_eq!(
        client(&mut other, &[close_statement("mine"), sync()].concat()),
        vec![to_client(close_complete()), to_server(S1, sync())]
    );
    let actions = server(&mut other, &rfq(b'I'));
    assert_eq!(
        names(&released_record(&actions)),
        vec![statement("SELECT 1").server_name().to_owned()]
    );
    assert_eq!(other.statements(), 0);
}

#[test]
fn a_failed_parse_defines_nothing_and_its_error_names_the_clients_statement() {
    let mut s = session();
    let batch = [parse("bad", "SELEC 1"), bind_to("bad"), execute(), sync()].concat();
    client(&mut s, &batch);
    grant(&mut s, S1);
    let st = statement("SELEC 1");
    let error = msg(
        b'E',
        format!(
            "SERROR\0VERROR\0C42601\0Msyntax error in \"{}\"\0\0",
            st.server_name()
        )
        .as_bytes(),
    );
    let actions = server(&mut s, &[close_complete(), error, rfq(b'I')].concat());
    let renamed = msg(
        b'E',
        b"SERROR\0VERROR\0C42601\0Msyntax error in \"bad\"\0\0",
    );
    assert_eq!(actions[0], to_client([renamed, rfq(b'I')].concat()));
    assert_eq!(s.statements(), 0, "the failed Parse defined nothing");
    assert!(names(&released_record(&actions)).is_empty());
    // A Bind of the undefined name goes as it is: the server says it does not exist.
    client(&mut s, &[bind_to("bad"), sync()].concat());
    assert_eq!(
        grant(&mut s, S2),
        vec![to_server(S2, [bind_to("bad"), sync()].concat())]
    );
}

#[test]
fn an_error_earlier_in_the_batch_undoes_the_parse_and_close_after_it() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    // The failing Execute comes first; the server skips the Parse of `s2` (made by the
    // proxy: the server has it) and the Close of `s1` that follow.
    let batch = [
        parse("", "SELECT 1/0"),
        bind(),
        execute(),
        parse("s2", "SELECT 1"),
        close_statement("s1"),
        sync(),
    ]
    .concat();
    client(&mut s, &batch);
    grant_with(&mut s, S1, record);
    let actions = server(
        &mut s,
        &[
            parse_complete(),
            bind_complete(),
            server_error("22012"),
            rfq(b'I'),
        ]
        .concat(),
    );
    assert_eq!(
        actions[0],
        to_client(
            [
                parse_complete(),
                bind_complete(),
                server_error("22012"),
                rfq(b'I')
            ]
            .concat()
        ),
        "no ParseComplete or CloseComplete for messages the server skipped"
    );
    assert_eq!(s.statements(), 1, "s2 undefined again, s1 defined again");
    client(&mut s, &[bind_to("s2"), sync()].concat());
    let sent = grant(&mut s, S2);
    assert_eq!(sent, vec![to_server(S2, [bind_to("s2"), sync()].concat())]);
}

#[test]
fn a_name_defined_twice_fails_on_the_server_as_without_a_pooler() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    client(&mut s, &[parse("s1", "SELECT 2"), sync()].concat());
    let sent = grant_with(&mut s, S1, record);
    let st = statement("SELECT 1");
    let mut again = Vec::new();
    Statement::with_name(&st, b"SELECT 2\0\0\0").write_parse(&mut again);
    assert_eq!(sent, vec![to_server(S1, [again, sync()].concat())]);
    let error = msg(
        b'E',
        format!(
            "SERROR\0VERROR\0C42P05\0Mprepared statement \"{}\" already exists\0\0",
            st.server_name()
        )
        .as_bytes(),
    );
    let actions = server(&mut s, &[error, rfq(b'I')].concat());
    let expected = msg(
        b'E',
        b"SERROR\0VERROR\0C42P05\0Mprepared statement \"s1\" already exists\0\0",
    );
    assert_eq!(actions[0], to_client([expected, rfq(b'I')].concat()));
    assert_eq!(s.statements(), 1, "s1 keeps its first definition");
    assert_eq!(
        names(&released_record(&actions)),
        vec![st.server_name().to_owned()]
    );
}

#[test]
fn at_the_bound_the_least_recently_used_statement_is_closed() {
    let mut s = ClientSession::new(SessionConfig {
        max_prepared_statements: 1,
        ..SessionConfig::default()
    });
    let record = prepare_and_run(&mut s);
    client(&mut s, &[parse("s2", "SELECT 2"), sync()].concat());
    let sent = grant_with(&mut s, S1, record);
    let mut expected = Vec::new();
    statements::write_close(&mut expected, statement("SELECT 1").server_name());
    expected.extend(prepare_on_server("SELECT 2"));
    expected.extend(sync());
    assert_eq!(sent, vec![to_server(S1, expected)]);
    let actions = server(
        &mut s,
        &[
            close_complete(),
            close_complete(),
            parse_complete(),
            rfq(b'I'),
        ]
        .concat(),
    );
    assert_eq!(
        actions[0],
        to_client([parse_complete(), rfq(b'I')].concat())
    );
    assert_eq!(
        names(&released_record(&actions)),
        vec![statement("SELECT 2").server_name().to_owned()]
    );
}

#[test]
fn a_plan_that_changed_result_type_is_prepared_again_next_time() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    client(&mut s, &[bind_to("s1"), execute(), sync()].concat());
    grant_with(&mut s, S1, record);
    let actions = server(&mut s, &[server_error("0A000"), rfq(b'I')].concat());
    assert_eq!(
        actions[0],
        to_client([server_error("0A000"), rfq(b'I')].concat())
    );
    let record = released_record(&actions);
    assert!(
        names(&record).is_empty(),
        "the stale statement is forgotten"
    );
    client(&mut s, &[bind_to("s1"), sync()].concat());
    let sent = grant_with(&mut s, S1, record);
    let Action::SendToServer(S1, bytes) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert!(bytes.starts_with(&prepare_on_server("SELECT 1")));
}

#[test]
fn deallocate_all_forgets_the_servers_and_the_clients_statements() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    client(&mut s, &q("DEALLOCATE ALL"));
    grant_with(&mut s, S1, record);
    let actions = server(&mut s, &[cc("DEALLOCATE ALL"), rfq(b'I')].concat());
    assert!(names(&released_record(&actions)).is_empty());
    assert_eq!(s.statements(), 0);
}

#[test]
fn a_sync_ignored_in_copy_in_mode_is_owed_no_reply_by_the_tracker() {
    // As tokio-postgres's copy_in: Bind, Execute and Sync together, then the data, then
    // CopyDone and Sync. The first Sync is read in COPY-in mode and ignored.
    let mut s = session();
    let sql = "COPY t FROM STDIN";
    client(&mut s, &[parse("s1", sql), sync()].concat());
    grant(&mut s, S1);
    let actions = server(
        &mut s,
        &[close_complete(), parse_complete(), rfq(b'I')].concat(),
    );
    let record = released_record(&actions);
    client(&mut s, &[bind_to("s1"), execute(), sync()].concat());
    grant_with(&mut s, S1, record);
    server(&mut s, &[bind_complete(), copy_in_response()].concat());
    client(&mut s, &[copy_data(b"1\n"), copy_done(), sync()].concat());
    let actions = server(&mut s, &[cc("COPY 1"), rfq(b'I')].concat());
    assert_eq!(actions[0], to_client([cc("COPY 1"), rfq(b'I')].concat()));
    let record = released_record(&actions);
    // Nothing is owed any more: a Parse of a statement the server has is answered at once.
    client(&mut s, &parse("s2", sql));
    assert_eq!(
        grant_with(&mut s, S1, record),
        vec![to_client(parse_complete())]
    );
}

/// PostgreSQL's answer to a query in a failed transaction.
fn aborted() -> Vec<u8> {
    error_response(
        "ERROR",
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

#[test]
fn sql_deallocate_of_a_tracked_statement_between_transactions_is_answered_without_a_server() {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    assert_eq!(s.statements(), 1);
    assert_eq!(
        client(&mut s, &q("deallocate prepare S1;")),
        vec![to_client([cc("DEALLOCATE"), rfq(b'I')].concat())],
        "no server asked for, and its name never sent to one"
    );
    assert_eq!(s.statements(), 0);
    // The name is gone: a Bind of it goes as it is, for the server to refuse.
    client(&mut s, &[bind_to("s1"), execute(), sync()].concat());
    assert_eq!(
        grant_with(&mut s, S1, record),
        vec![to_server(S1, [bind_to("s1"), execute(), sync()].concat())]
    );
}

#[test]
fn sql_deallocate_of_another_name_or_inside_a_batch_goes_to_the_server() {
    let mut s = session();
    prepare_and_run(&mut s);
    // Not a statement of the client's (an SQL-level PREPARE, or a typo).
    assert_eq!(
        client(&mut s, &q("DEALLOCATE s2")),
        vec![Action::RequestServer]
    );
    assert_eq!(grant(&mut s, S1), vec![to_server(S1, q("DEALLOCATE s2"))]);
    server(&mut s, &[server_error("26000"), rfq(b'I')].concat());
    // After an unsynced extended message the server would skip it: not answered here.
    let pipeline = [bind_to(""), q("DEALLOCATE s1")].concat();
    assert_eq!(client(&mut s, &pipeline), vec![Action::RequestServer]);
    let sent = grant(&mut s, S2);
    assert_eq!(sent, vec![to_server(S2, pipeline)]);
    assert_eq!(s.statements(), 1);
}

/// A session holding S1 inside a transaction (after BEGIN), with `s1` defined.
fn in_a_transaction_with_s1() -> ClientSession {
    let mut s = session();
    let record = prepare_and_run(&mut s);
    client(&mut s, &q("BEGIN"));
    grant_with(&mut s, S1, record);
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    s
}

#[test]
fn sql_deallocate_inside_a_transaction_answers_with_its_status_after_what_is_owed() {
    let mut s = in_a_transaction_with_s1();
    // Idle in the transaction: answered at once, with its status.
    assert_eq!(
        client(&mut s, &q("DEALLOCATE s1")),
        vec![to_client([cc("DEALLOCATE"), rfq(b'T')].concat())]
    );
    assert_eq!(s.statements(), 0);
    // Pipelined behind a query the server still owes: answered after it, in order.
    client(&mut s, &parse("s2", "SELECT 2"));
    let pipeline = [sync(), q("SELECT 1"), q("DEALLOCATE s2")].concat();
    let sent = client(&mut s, &pipeline);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let Action::SendToServer(S1, bytes) = &sent[0] else {
        panic!("{sent:?}")
    };
    assert!(bytes.ends_with(&[sync(), q("SELECT 1")].concat()));
    assert_eq!(
        s.unanswered(),
        2,
        "the DEALLOCATE is owed by the proxy, not the server"
    );
    let answers = [
        prepare_answer(),
        rfq(b'T'),
        data_row(),
        cc("SELECT 1"),
        rfq(b'T'),
    ]
    .concat();
    assert_eq!(
        server(&mut s, &answers),
        vec![to_client(
            [
                parse_complete(),
                rfq(b'T'),
                data_row(),
                cc("SELECT 1"),
                rfq(b'T'),
                cc("DEALLOCATE"),
                rfq(b'T'),
            ]
            .concat()
        )]
    );
    assert_eq!(s.statements(), 0);
    assert_eq!(s.server(), Some(S1), "still inside the transaction");
}

#[test]
fn sql_deallocate_in_a_failed_transaction_is_refused_as_postgresql_refuses_it() {
    let mut s = in_a_transaction_with_s1();
    client(&mut s, &q("SELECT 1/0"));
    // Pipelined before the failure is known: decided when its turn comes.
    assert_eq!(client(&mut s, &q("DEALLOCATE s1")), vec![]);
    assert_eq!(
        server(&mut s, &[server_error("22012"), rfq(b'E')].concat()),
        vec![to_client(
            [server_error("22012"), rfq(b'E'), aborted(), rfq(b'E')].concat()
        )]
    );
    assert_eq!(s.statements(), 1, "the statement stays");
    // Known failed: refused at once.
    assert_eq!(
        client(&mut s, &q("DEALLOCATE s1")),
        vec![to_client([aborted(), rfq(b'E')].concat())]
    );
    assert_eq!(s.statements(), 1);
}

// ---- followed parameters ----

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// A command's answer that reports a parameter, ending its transaction.
fn reported(tag: &str, name: &str, value: &str) -> Vec<u8> {
    [cc(tag), parameter_status(name, value), rfq(b'I')].concat()
}

/// S1 went back clean, last, and nothing pinned the client.
fn assert_released_unpinned(s: &ClientSession, actions: &[Action]) {
    assert!(
        matches!(
            actions.last(),
            Some(Action::ReleaseServer(S1, Release::Clean, _))
        ),
        "{actions:?}"
    );
    assert_eq!(s.pinned(), None);
}

fn parameters_changed(actions: &[Action]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ParameterChanged { name, value } => Some((name.as_str(), value.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn followed_parameters_change_when_their_transaction_ends_with_their_last_value() {
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    client(&mut s, &q("SELECT set_config('TimeZone', 'X', false)"));
    let answer = [
        data_row(),
        cc("SELECT 1"),
        parameter_status("TimeZone", "X"),
        parameter_status("is_superuser", "on"),
        rfq(b'T'),
    ]
    .concat();
    let actions = server(&mut s, &answer);
    assert_eq!(
        parameters_changed(&actions),
        [],
        "not inside the transaction: it may still roll back"
    );
    assert_eq!(
        actions,
        vec![to_client(answer)],
        "the client sees its own reports"
    );
    client(&mut s, &q("SET LOCAL DateStyle = 'German'"));
    server(
        &mut s,
        &[
            cc("SET"),
            parameter_status("DateStyle", "German"),
            rfq(b'T'),
        ]
        .concat(),
    );
    client(&mut s, &q("COMMIT"));
    let actions = server(
        &mut s,
        &[
            cc("COMMIT"),
            parameter_status("DateStyle", "ISO"),
            rfq(b'I'),
        ]
        .concat(),
    );
    assert_eq!(
        parameters_changed(&actions),
        [("TimeZone", "X"), ("DateStyle", "ISO")],
        "followed ones only, each at its last value, before the server goes back"
    );
    assert_released_unpinned(&s, &actions);
}

#[test]
fn a_transaction_its_client_abandons_changes_no_parameter() {
    let mut s = active_with("BEGIN");
    server(&mut s, &[cc("BEGIN"), rfq(b'T')].concat());
    client(&mut s, &q("SET TimeZone = 'X'"));
    server(
        &mut s,
        &[cc("SET"), parameter_status("TimeZone", "X"), rfq(b'T')].concat(),
    );
    s.handle(T0, Input::ClientClosed).unwrap();
    let actions = drain(&mut s);
    assert_eq!(parameters_changed(&actions), []);
    assert!(matches!(
        actions[0],
        Action::ReleaseServer(S1, Release::Rollback { .. }, _)
    ));
}

#[test]
fn a_set_of_a_followed_parameter_alone_is_followed_not_pinned() {
    let mut s = active_with("SET TimeZone = 'Asia/Tokyo'");
    let actions = server(&mut s, &reported("SET", "TimeZone", "Asia/Tokyo"));
    assert_eq!(parameters_changed(&actions), [("TimeZone", "Asia/Tokyo")]);
    assert_released_unpinned(&s, &actions);
    // With a second statement, which may set anything: pinned.
    let both = q("SET TimeZone = 'UTC'; SET work_mem = '1GB'");
    assert_eq!(client(&mut s, &both), vec![Action::RequestServer]);
    grant(&mut s, S2);
    let actions = server(
        &mut s,
        &[
            cc("SET"),
            parameter_status("TimeZone", "UTC"),
            cc("SET"),
            rfq(b'I'),
        ]
        .concat(),
    );
    assert!(
        actions.contains(&Action::Pinned(PinReason::Set)),
        "{actions:?}"
    );
    assert_eq!(s.pinned(), Some(PinReason::Set));
}

#[test]
fn a_clients_discard_all_discards_the_settings_not_follows_the_defaults_it_reports() {
    let mut s = active_with("DISCARD ALL");
    let actions = server(&mut s, &reported("DISCARD ALL", "application_name", ""));
    assert_eq!(parameters_changed(&actions), []);
    assert_eq!(actions[1], Action::SettingsDiscarded, "{actions:?}");
    assert_eq!(s.pinned(), None);
}
