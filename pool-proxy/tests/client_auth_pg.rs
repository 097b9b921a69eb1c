//! Client authentication against what a real PostgreSQL 15 stores and says: verifiers and
//! MD5 hashes read from `pg_authid`, checked by `ClientAuth` while real clients log in
//! (postgres-protocol's SCRAM client, and tokio-postgres over a loopback socket to a
//! minimal server that runs `ClientAuth` and then says ReadyForQuery); and the errors a
//! client gets from the proxy compared with the ones the real server gives it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use pg_harness::{PgCluster, PgOptions};
use pool_proxy::auth::{AuthMethod, ClientAuth, ScramVerifier, Secret, Step};
use pool_proxy::protocol::frame::{
    Framer, StartupFramer, StartupPacket, DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_STARTUP_LEN,
};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(30);
/// A password that SASLprep changes: U+00A0 NO-BREAK SPACE becomes a space.
const PREPPED_PASSWORD: &str = "caf\u{e9} au\u{a0}lait";
const MD5_PASSWORD: &str = "md5-hunter2";

/// Roles created on the cluster, and their `pg_authid.rolpassword` as the proxy reads it.
async fn roles(cluster: &PgCluster) -> HashMap<String, Secret> {
    let admin = cluster.admin().client().await.expect("admin connection");
    admin
        .batch_execute(&format!(
            "CREATE ROLE scram_user LOGIN PASSWORD '{PREPPED_PASSWORD}';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD '{MD5_PASSWORD}';
             RESET password_encryption;"
        ))
        .await
        .expect("roles created");
    let rows = admin
        .query(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL",
            &[],
        )
        .await
        .expect("pg_authid read");
    rows.iter()
        .map(|row| {
            let name: String = row.get(0);
            let stored: String = row.get(1);
            let secret = Secret::parse(&stored)
                .unwrap_or_else(|e| panic!("{name}'s rolpassword not read: {e}"));
            (name, secret)
        })
        .collect()
}

/// One reply from the proxy, parsed as a client parses it.
fn parse(bytes: &[u8]) -> Vec<Message> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(Message::parse(&mut buf).unwrap().unwrap());
    }
    out
}

/// A SCRAM exchange with postgres-protocol's client against `secret`; whether the proxy
/// let the client in and the client accepted the proxy's signature.
fn scram_login(secret: &Secret, password: &str) -> bool {
    let (mut auth, _) =
        ClientAuth::start(AuthMethod::ScramSha256, "scram_user", Some(secret), [3; 32]);
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", client.message(), &mut buf).unwrap();
    let Step::Send(bytes) = auth.handle(&buf) else {
        panic!("client-first refused: {:?}", auth.failure());
    };
    let [Message::AuthenticationSaslContinue(server_first)] = &parse(&bytes)[..] else {
        panic!("no server-first-message");
    };
    client.update(server_first.data()).unwrap();
    let mut buf = BytesMut::new();
    frontend::sasl_response(client.message(), &mut buf).unwrap();
    match auth.handle(&buf) {
        Step::Done(bytes) => {
            let [Message::AuthenticationSaslFinal(last), Message::AuthenticationOk] =
                &parse(&bytes)[..]
            else {
                panic!("expected AuthenticationSASLFinal and AuthenticationOk");
            };
            client
                .finish(last.data())
                .expect("the client accepts the server signature");
            true
        }
        Step::Failed(_) => false,
        Step::Send(_) => panic!("a third round trip"),
    }
}

/// Accepts one client and plays a server that only authenticates: startup, `ClientAuth`,
/// then ReadyForQuery (or the error). The proxy's log line, if it failed.
async fn serve_one(
    listener: TcpListener,
    method: AuthMethod,
    secrets: HashMap<String, Secret>,
) -> Option<String> {
    let (mut tcp, _) = listener.accept().await.unwrap();
    let mut startup = StartupFramer::new(DEFAULT_MAX_STARTUP_LEN);
    let user = loop {
        match startup.next_packet().unwrap() {
            Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                tcp.write_all(b"N").await.unwrap();
            }
            Some(StartupPacket::Startup { params, .. }) => {
                break params.into_iter().find(|(k, _)| k == "user").unwrap().1;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "client left during startup");
                startup.push(&buf[..n]);
            }
        }
    };
    let (mut auth, mut step) = ClientAuth::start(method, &user, secrets.get(&user), [5; 32]);
    let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
    framer.push(&startup.into_remaining());
    loop {
        match step {
            Step::Send(bytes) => tcp.write_all(&bytes).await.unwrap(),
            Step::Done(mut bytes) => {
                bytes.extend_from_slice(b"Z\0\0\0\x05I");
                tcp.write_all(&bytes).await.unwrap();
                // Wait for the client to go (Terminate, then EOF).
                let _ = tcp.read(&mut [0u8; 64]).await;
                return None;
            }
            Step::Failed(bytes) => {
                tcp.write_all(&bytes).await.unwrap();
                return Some(auth.failure().unwrap().to_owned());
            }
        }
        let frame = loop {
            if let Some(frame) = framer.next_frame().unwrap() {
                break frame;
            }
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "client left during authentication");
            framer.push(&buf[..n]);
        };
        step = auth.handle(frame.bytes());
    }
}

/// tokio-postgres logging in to `port`: Ok, or the SQLSTATE and message it was given.
async fn connect(port: u16, user: &str, password: &str) -> Result<(), (String, String)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("pool_test")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let connecting = config.connect(tokio_postgres::NoTls);
    match tokio::time::timeout(LIMIT, connecting)
        .await
        .expect("connect hung")
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e}"));
            Err((db.code().code().to_owned(), db.message().to_owned()))
        }
    }
}

/// tokio-postgres logging in to the minimal server: its verdict and the proxy's log line.
async fn connect_via_proxy(
    method: AuthMethod,
    secrets: &HashMap<String, Secret>,
    user: &str,
    password: &str,
) -> (Result<(), (String, String)>, Option<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve_one(listener, method, secrets.clone()));
    let verdict = connect(port, user, password).await;
    let log = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    (verdict, log)
}

#[tokio::test]
async fn secrets_written_by_postgresql_check_real_clients_as_postgresql_does() {
    // md5_user gets md5, everyone else scram-sha-256: the methods the proxy uses below.
    let options = PgOptions::default().hba([
        "host all md5_user 127.0.0.1/32 md5",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]);
    let cluster = PgCluster::start(options).expect("a PostgreSQL cluster");
    let secrets = roles(&cluster).await;
    let Some(Secret::ScramSha256(stored)) = secrets.get("scram_user") else {
        panic!(
            "scram_user has no SCRAM verifier: {:?}",
            secrets.get("scram_user")
        );
    };
    assert!(matches!(secrets.get("md5_user"), Some(Secret::Md5(_))));

    // PostgreSQL's verifier is the proxy's, computed from the same password and salt:
    // SASLprep and the key derivation agree.
    let ours = ScramVerifier::from_password(PREPPED_PASSWORD, &stored.salt, stored.iterations);
    assert!(
        &ours == stored,
        "the proxy derives another verifier than PostgreSQL"
    );

    // postgres-protocol's client against PostgreSQL's verifier: the password as typed, or
    // as SASLprep makes it (a plain space), logs in; another does not.
    let secret = &secrets["scram_user"];
    assert!(scram_login(secret, PREPPED_PASSWORD));
    assert!(scram_login(secret, "caf\u{e9} au lait"));
    assert!(!scram_login(secret, "cafe au lait"));

    // tokio-postgres over a socket, to the proxy and to PostgreSQL itself: the same
    // outcome, and for every failure the same SQLSTATE and message.
    let port = cluster.port();
    for (method, user, password) in [
        (AuthMethod::ScramSha256, "scram_user", PREPPED_PASSWORD),
        (AuthMethod::ScramSha256, "scram_user", "wrong"),
        (AuthMethod::ScramSha256, "nobody", "whatever"),
        (AuthMethod::Md5, "md5_user", MD5_PASSWORD),
        (AuthMethod::Md5, "md5_user", "wrong"),
        (AuthMethod::Md5, "scram_user", PREPPED_PASSWORD),
    ] {
        let (proxy, log) = connect_via_proxy(method, &secrets, user, password).await;
        let real = connect(port, user, password).await;
        let what = format!("{method} {user}/{password}");
        assert_eq!(proxy, real, "{what}: the proxy and PostgreSQL differ");
        assert_eq!(log.is_some(), real.is_err(), "{what}: {log:?}");
    }
}
