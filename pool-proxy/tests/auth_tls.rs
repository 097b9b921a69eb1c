//! Client authentication and TLS through the real proxy, with psql and tokio-postgres:
//! SCRAM-SHA-256 (the default) and md5 logins, wrong passwords and unknown users answered
//! with PostgreSQL's own SQLSTATE and text (compared with what the cluster itself says),
//! TLS offered and required, and GSSENCRequest refused with `N`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::wire::{self, Reply};
use common::{connect, sqlstate, value, Setup, TestProxy, USER};

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files in a scratch
/// directory: (directory, certificate, key).
fn certificate() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    (dir, cert_path, key_path)
}

fn tls_settings(cert: &Path, key: &Path) -> String {
    format!(
        "client_tls_cert_file = {:?}\nclient_tls_key_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// SCRAM-SHA-256 (the default) with TLS offered (a certificate and key given, so
/// `client_tls_sslmode` is `prefer`): psql logs in over TLS verifying the proxy's
/// certificate (`sslmode=verify-full`), and in plaintext when it asks for none;
/// tokio-postgres logs in; a wrong password and an unknown user get 28P01 with the very
/// text PostgreSQL gives for each; psql with `gssencmode=prefer` connects, and a raw
/// GSSENCRequest gets `N` and the login goes on on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_logins_and_failures_match_postgresql_and_tls_is_offered() {
    let (dir, cert, key) = certificate();
    let proxy = TestProxy::start(Setup::default().settings(&tls_settings(&cert, &key))).await;

    // psql over TLS, the proxy's certificate verified against the one written above.
    let out = run(conninfo(&proxy)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &cert))
    .await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("SSL connection (protocol: TLSv1."),
        "{stdout}"
    );
    // In plaintext when it asks for none (prefer lets it).
    let out = run(conninfo(&proxy).env("PGSSLMODE", "disable")).await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("You are connected") && !stdout.contains("SSL"),
        "{stdout}"
    );
    // libpq sends a GSSENCRequest only when it holds Kerberos credentials: this shows
    // that asking for it does no harm; the raw request below shows the answer.
    let out = run(conninfo(&proxy)
        .env("PGGSSENCMODE", "prefer")
        .env("PGSSLMODE", "disable"))
    .await;
    succeeded(&out);

    let client = proxy.connect().await;
    assert_eq!(value(&client, "SELECT current_user").await, USER.0);

    // Failures, side by side with the cluster's own answer to the same attempt.
    for (user, password) in [(USER.0, "wrong password"), ("nobody", "any password")] {
        let ours = connect(&proxy.config_as(user, password, "pool_test"))
            .await
            .expect_err("refused by the proxy");
        let mut direct = proxy.cluster.config();
        direct.user(user).password(password);
        let theirs = connect(&direct).await.expect_err("refused by PostgreSQL");
        assert_eq!(sqlstate(&ours).as_deref(), Some("28P01"), "{ours}");
        let (ours, theirs) = (ours.as_db_error().unwrap(), theirs.as_db_error().unwrap());
        assert_eq!(
            (ours.severity(), ours.code(), ours.message()),
            (theirs.severity(), theirs.code(), theirs.message())
        );
        assert_eq!(
            ours.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    let mut psql = conninfo(&proxy);
    psql.env("PGPASSWORD", "wrong password");
    let out = run(&mut psql).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("FATAL:  password authentication failed for user \"pool_test\""),
        "{}",
        text(&out.stderr)
    );

    // GSSENCRequest: `N`, then the startup goes on (AuthenticationSASL).
    let mut raw = TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(&wire::request(wire::GSSENC_REQUEST))
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut answer))
        .await
        .expect("an answer to GSSENCRequest")
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.write_all(&wire::startup(&[
        ("user", USER.0),
        ("database", "pool_test"),
    ]))
    .await
    .unwrap();
    match wire::next_reply(&mut raw, Duration::from_secs(5)).await {
        Reply::Other(b'R') => {}
        other => panic!("after GSSENCRequest and a startup: {other:?}"),
    }

    // A shutdown lets that client, still logging in, go at once, with a reason.
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a client in the middle of its login held the shutdown for {:?}",
        started.elapsed()
    );
    match wire::next_reply(&mut raw, Duration::from_secs(5)).await {
        Reply::Error { code, .. } => assert_eq!(code, "57P03"),
        other => panic!("a client logging in at shutdown got {other:?}"),
    }
    drop(dir);
}

/// auth_type = "md5": psql and tokio-postgres log in with the users file's password; a
/// wrong one gets PostgreSQL's 28P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_logins_work_and_a_wrong_password_is_refused() {
    let proxy = TestProxy::start(Setup::default().settings("auth_type = \"md5\"")).await;
    let out = run(proxy
        .psql()
        .args(["-A", "-t", "-c", "SELECT 'md5 ' || current_user"]))
    .await;
    assert_eq!(succeeded(&out).trim(), "md5 pool_test");
    let client = proxy.connect().await;
    assert_eq!(value(&client, "SELECT 1").await, "1");
    let wrong = connect(&proxy.config_as(USER.0, "nope", "pool_test"))
        .await
        .expect_err("a wrong md5 password is refused");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");
    assert_eq!(
        wrong.as_db_error().unwrap().message(),
        "password authentication failed for user \"pool_test\""
    );
    let mut psql = proxy.psql();
    psql.args(["-c", "SELECT 1"]).env("PGPASSWORD", "nope");
    let out = run(&mut psql).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("password authentication failed for user \"pool_test\""),
        "{}",
        text(&out.stderr)
    );
    proxy.shutdown().await;
}

/// client_tls_sslmode = "require": a plaintext client (psql `sslmode=disable`,
/// tokio-postgres without TLS) is refused with a message saying TLS is required; psql with
/// `sslmode=require` gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plaintext_clients_and_serves_tls_ones() {
    let (dir, cert, key) = certificate();
    let proxy = TestProxy::start(
        Setup::default()
            .settings(&tls_settings(&cert, &key))
            .settings("client_tls_sslmode = \"require\""),
    )
    .await;
    let out = run(conninfo(&proxy).env("PGSSLMODE", "disable")).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FATAL:  pool-proxy: SSL required"),
        "{stderr}"
    );

    let refused = connect(&proxy.config())
        .await
        .expect_err("plaintext refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28000"), "{refused}");

    let out = run(conninfo(&proxy).env("PGSSLMODE", "require")).await;
    let stdout = succeeded(&out);
    assert!(stdout.contains("SSL connection"), "{stdout}");
    drop(dir);
    proxy.shutdown().await;
}

/// psql printing `\conninfo` through the proxy.
fn conninfo(proxy: &TestProxy) -> Command {
    let mut psql = proxy.psql();
    psql.args(["-c", "\\conninfo"]);
    psql
}

/// Runs a client program off the runtime's threads (the proxy runs on them).
async fn run(command: &mut Command) -> Output {
    let mut command = std::mem::replace(command, Command::new("true"));
    tokio::task::spawn_blocking(move || command.output().expect("the program runs"))
        .await
        .unwrap()
}

/// Asserts the program succeeded; its stdout.
fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
