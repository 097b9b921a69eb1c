//! The proxy's server connections against a real PostgreSQL (pg-harness clusters): logins
//! with each authentication method, the errors of logins that cannot succeed, a pool-tokio
//! pool over `ServerManager` (queries over the raw stream, abandoned transactions and
//! session state cleaned before the next borrower, a terminated server replaced at
//! checkout), cancellation and the check query.
//!
//! Answers are read here with a decoder of the test's own (`Answer`), not the crate's
//! framing, so a framing bug cannot hide itself.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pg_harness::{Backends, PgCluster, PgOptions};
use pool_proxy::server::{
    cancel, BackendKey, Liveness, ServerConnection, ServerError, ServerManager, Upstream,
};
use pool_proxy::Release;
use pool_tokio::{ErrorClass, Manager, Pool};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MD5_USER: &str = "md5_user";
const PLAIN_USER: &str = "plain_user";
const TRUST_USER: &str = "trust_user";
/// In `pg_hba.conf` as `trust`, but no such role exists.
const GHOST_USER: &str = "ghost_user";
const PASSWORD: &str = "s3cr3t-Pw";

/// A cluster whose roles log in over TCP with each method: `pool_test` with
/// scram-sha-256, `md5_user` with md5 (its password stored as an MD5 hash),
/// `plain_user` with a cleartext password, `trust_user` with none.
fn cluster() -> PgCluster {
    let cluster = PgCluster::start(PgOptions::default().max_connections(20).hba([
        format!("host all {MD5_USER} 127.0.0.1/32 md5"),
        format!("host all {PLAIN_USER} 127.0.0.1/32 password"),
        format!("host all {TRUST_USER},{GHOST_USER} 127.0.0.1/32 trust"),
        "host all all 127.0.0.1/32 scram-sha-256".into(),
    ]))
    .expect("start PostgreSQL (scripts/install-deps.sh installs it)");
    let mut psql = cluster.psql();
    psql.args(["-c", "SET password_encryption = 'md5'"])
        .args([
            "-c",
            &format!("CREATE ROLE {MD5_USER} LOGIN PASSWORD '{PASSWORD}'"),
        ])
        .args([
            "-c",
            &format!("CREATE ROLE {PLAIN_USER} LOGIN PASSWORD '{PASSWORD}'"),
        ])
        .args(["-c", &format!("CREATE ROLE {TRUST_USER} LOGIN")]);
    let out = psql.output().expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster
}

/// The test user's upstream (scram-sha-256), tagged with `application_name = app`.
fn upstream(cluster: &PgCluster, app: &str) -> Upstream {
    let url = format!("{}?sslmode=disable&application_name={app}", cluster.url());
    Upstream::from_url(&url).expect("valid upstream URL").0
}

fn pool(upstream: Upstream, max_size: usize) -> Pool<ServerManager> {
    Pool::builder(ServerManager::new(upstream))
        .max_size(max_size)
        .acquire_timeout(Duration::from_secs(10))
        // No checks: what is judged at checkout is `is_broken`'s alone.
        .check_after_idle(None)
        .build()
        .expect("valid pool")
}

/// A simple query's answer, decoded by hand from the wire.
#[derive(Debug, Default)]
struct Answer {
    rows: Vec<Vec<Option<String>>>,
    /// SQLSTATE and message of an ErrorResponse.
    error: Option<(String, String)>,
    /// ReadyForQuery's status byte.
    status: u8,
}

impl Answer {
    fn value(&self) -> &str {
        assert!(self.error.is_none(), "{self:?}");
        self.rows[0][0].as_deref().expect("not NULL")
    }
}

async fn send_query(w: &mut (impl AsyncWrite + Unpin), sql: &str) {
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf).unwrap();
    w.write_all(&buf).await.unwrap();
}

/// Reads messages up to ReadyForQuery.
async fn read_answer(r: &mut (impl AsyncRead + Unpin)) -> Answer {
    let mut answer = Answer::default();
    loop {
        let mut header = [0u8; 5];
        r.read_exact(&mut header).await.expect("a message header");
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        r.read_exact(&mut body).await.expect("a message body");
        match header[0] {
            b'D' => {
                let columns = i16::from_be_bytes([body[0], body[1]]);
                let mut at = 2;
                let mut row = Vec::new();
                for _ in 0..columns {
                    let n = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    if n < 0 {
                        row.push(None);
                    } else {
                        let n = n as usize;
                        row.push(Some(String::from_utf8(body[at..at + n].to_vec()).unwrap()));
                        at += n;
                    }
                }
                answer.rows.push(row);
            }
            b'E' => {
                let mut code = String::new();
                let mut message = String::new();
                for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
                    let value = String::from_utf8_lossy(&field[1..]).into_owned();
                    match field[0] {
                        b'C' => code = value,
                        b'M' => message = value,
                        _ => {}
                    }
                }
                answer.error = Some((code, message));
            }
            b'Z' => {
                answer.status = body[0];
                return answer;
            }
            _ => {}
        }
    }
}

async fn query(conn: &mut ServerConnection, sql: &str) -> Answer {
    send_query(conn, sql).await;
    read_answer(conn).await
}

async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done after {limit:?}"))
}

/// Logs in as `user` with `password` over TCP: the server's startup report, its key, and
/// which method the server's log says authenticated it.
async fn login_as(cluster: &PgCluster, user: &str, password: Option<&str>) -> ServerConnection {
    let upstream = upstream(cluster, &format!("login-{user}"))
        .with_login(user, password.map(|p| p.as_bytes().to_vec()));
    let mut conn = within(
        Duration::from_secs(10),
        "login",
        ServerManager::new(upstream).connect(),
    )
    .await
    .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    assert_eq!(conn.parameter("session_authorization"), Some(user));
    assert_eq!(
        conn.parameter("application_name"),
        Some(format!("login-{user}").as_str())
    );
    assert!(conn
        .parameter("server_version")
        .is_some_and(|v| v.starts_with("15")));
    assert_eq!(conn.parameter("server_encoding"), Some("UTF8"));
    // The key is the backend's own.
    assert_ne!(conn.key.pid, 0);
    let pid = query(
        &mut conn,
        "SELECT pg_backend_pid()::text, current_user::text",
    )
    .await;
    assert_eq!(pid.value(), conn.key.pid.to_string());
    assert_eq!(pid.rows[0][1].as_deref(), Some(user));
    assert_eq!(pid.status, b'I');
    conn
}

fn log_has(cluster: &PgCluster, needle: &str) -> bool {
    std::fs::read_to_string(cluster.log_path())
        .unwrap_or_default()
        .contains(needle)
}

#[tokio::test]
async fn logs_in_with_scram_md5_cleartext_and_trust() {
    let cluster = cluster();
    // The MD5 role's password is stored as an MD5 hash, so `md5` in pg_hba.conf really
    // challenges with MD5 (with a SCRAM verifier the server would switch to SCRAM).
    let stored = cluster
        .admin()
        .query_i64(&format!(
            "SELECT count(*) FROM pg_authid WHERE rolname = '{MD5_USER}' AND rolpassword LIKE 'md5%'"
        ))
        .await
        .unwrap();
    assert_eq!(stored, 1);

    let conn = login_as(&cluster, "pool_test", Some("pool_test_pw")).await;
    let parameters: Vec<&str> = conn.parameters.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "server_version",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "integer_datetimes",
    ] {
        assert!(parameters.contains(&name), "{name} in {parameters:?}");
    }
    login_as(&cluster, MD5_USER, Some(PASSWORD)).await;
    login_as(&cluster, PLAIN_USER, Some(PASSWORD)).await;
    login_as(&cluster, TRUST_USER, None).await;
    // PostgreSQL logs which method authenticated each (trust logs no identity).
    for (user, method) in [
        ("pool_test", "scram-sha-256"),
        (MD5_USER, "md5"),
        (PLAIN_USER, "password"),
    ] {
        let line = format!("identity=\"{user}\" method={method}");
        assert!(
            log_has(&cluster, &line),
            "{line} in\n{}",
            cluster.log_tail(40)
        );
    }
}

#[tokio::test]
async fn logins_that_cannot_succeed_are_fatal_and_never_show_the_password() {
    let cluster = cluster();
    let fail = |upstream: Upstream| async move {
        let manager = ServerManager::new(upstream);
        let e = within(Duration::from_secs(10), "failed login", manager.connect())
            .await
            .expect_err("the login fails");
        assert_eq!(manager.classify(&e), ErrorClass::Fatal, "{e}");
        e
    };
    let wrong = "wr0ng-Secret";
    let as_user = |user: &str, password: Option<&str>| {
        upstream(&cluster, "fail").with_login(user, password.map(|p| p.as_bytes().to_vec()))
    };
    for user in ["pool_test", MD5_USER, PLAIN_USER] {
        let e = fail(as_user(user, Some(wrong))).await;
        assert_eq!(e.sqlstate(), Some("28P01"), "{user}: {e}");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("password authentication failed"), "{shown}");
        assert!(!shown.contains(wrong), "{shown}");
    }
    // A role that does not exist (trusted, so the server says so rather than failing a
    // mock password check).
    let e = fail(as_user(GHOST_USER, None)).await;
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    // No password for a server that asks for one.
    let e = fail(as_user("pool_test", None)).await;
    assert!(matches!(e, ServerError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("requires a password"), "{e}");
    // An unknown database; its URL carries the password, which the error does not show.
    let url = cluster.url();
    let base = &url[..url.rfind('/').unwrap()];
    let (no_db, _) = Upstream::from_url(&format!("{base}/no_such_db?sslmode=disable")).unwrap();
    let e = fail(no_db).await;
    assert_eq!(e.sqlstate(), Some("3D000"), "{e}");
    assert!(!format!("{e} {e:?}").contains("pool_test_pw"), "{e:?}");

    // Through a pool: a fatal connect fails the waiter at once, not at its timeout.
    let pool = pool(
        upstream(&cluster, "fail").with_login("pool_test", Some(wrong.as_bytes().to_vec())),
        2,
    );
    let started = Instant::now();
    let e = within(Duration::from_secs(10), "pool get", pool.get())
        .await
        .expect_err("wrong password");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = format!("{e} {e:?}");
    assert!(text.contains("28P01"), "{text}");
    assert!(!text.contains(wrong), "{text}");
}

#[tokio::test]
async fn a_pool_lends_servers_whose_stream_answers_queries() {
    let cluster = cluster();
    let pool = pool(upstream(&cluster, "lend"), 2);
    let mut a = pool.get().await.unwrap();
    let mut b = pool.get().await.unwrap();
    assert_ne!(a.key.pid, b.key.pid);
    for conn in [&mut a, &mut b] {
        // Writing and reading at once, on borrowed halves.
        let (mut r, mut w) = conn.split();
        let (_, answer) = tokio::join!(send_query(&mut w, "SELECT 40 + 2"), read_answer(&mut r));
        assert_eq!(answer.value(), "42");
        assert_eq!(answer.status, b'I');
    }
    let pids = [a.key.pid.to_string(), b.key.pid.to_string()];
    drop((a, b));
    // Returned clean, lent again as they are.
    let mut again = pool.get().await.unwrap();
    assert!(again.pending.is_none());
    let answer = query(&mut again, "SELECT pg_backend_pid()").await;
    assert!(
        pids.contains(&answer.value().to_string()),
        "{answer:?} not in {pids:?}"
    );
    assert_eq!(answer.status, b'I');
}

#[tokio::test]
async fn abandoned_transactions_and_session_state_are_cleaned_before_the_next_borrower() {
    let cluster = cluster();
    // One server, so the next borrower gets the same one.
    let pool = pool(upstream(&cluster, "clean"), 1);

    let mut conn = pool.get().await.unwrap();
    let pid = conn.key.pid;
    let answer = query(&mut conn, "BEGIN; CREATE TABLE abandoned (x int)").await;
    assert_eq!((answer.error, answer.status), (None, b'T'));
    conn.pending = Some(Release::Rollback { reset: false });
    drop(conn);

    let mut conn = pool.get().await.unwrap();
    assert_eq!(conn.key.pid, pid, "the same server");
    assert_eq!(conn.pending, None);
    let answer = query(&mut conn, "SELECT to_regclass('abandoned') IS NULL").await;
    assert_eq!((answer.value(), answer.status), ("t", b'I'));

    // A failed transaction, with session state: ROLLBACK, then DISCARD ALL.
    let answer = query(&mut conn, "SET work_mem = '77MB'; BEGIN; SELECT 1/0").await;
    assert_eq!(answer.error.as_ref().map(|e| e.0.as_str()), Some("22012"));
    assert_eq!(answer.status, b'E');
    conn.pending = Some(Release::Rollback { reset: true });
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(conn.key.pid, pid);
    let answer = query(&mut conn, "SHOW work_mem").await;
    assert_eq!((answer.value(), answer.status), ("4MB", b'I'));

    // Session state alone: the reset query.
    let answer = query(&mut conn, "SET work_mem = '77MB'").await;
    assert_eq!(answer.status, b'I');
    conn.pending = Some(Release::Reset);
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(conn.key.pid, pid);
    assert_eq!(query(&mut conn, "SHOW work_mem").await.value(), "4MB");

    // Without `pending`, nothing is cleaned: the state is still there (so the checks
    // above saw the reset's work, not a new server's defaults).
    query(&mut conn, "SET work_mem = '77MB'").await;
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(conn.key.pid, pid);
    assert_eq!(query(&mut conn, "SHOW work_mem").await.value(), "77MB");
}

#[tokio::test]
async fn a_server_terminated_while_idle_is_broken_at_checkout_and_replaced() {
    let cluster = cluster();
    let admin = cluster.admin();
    let app = Backends::app("terminated");
    let pool = pool(upstream(&cluster, "terminated"), 2);
    let conn = pool.get().await.unwrap();
    let old = conn.key.pid;
    drop(conn);
    assert_eq!(admin.terminate(&app).await.unwrap(), 1);
    admin
        .wait_for_count(&app, 0, Duration::from_secs(5))
        .await
        .unwrap();

    let mut conn = within(Duration::from_secs(10), "get after terminate", pool.get())
        .await
        .unwrap();
    assert_ne!(conn.key.pid, old, "a fresh server");
    let answer = query(&mut conn, "SELECT pg_backend_pid()").await;
    assert_eq!(answer.value(), conn.key.pid.to_string());
    assert_eq!(pool.status().total, 1, "{:?}", pool.status());
}

#[tokio::test]
async fn a_terminated_server_has_unsolicited_bytes_and_fails_its_check() {
    let cluster = cluster();
    let admin = cluster.admin();
    let app = Backends::app("probe");
    let manager = ServerManager::new(upstream(&cluster, "probe"));
    let mut conn = manager.connect().await.unwrap();
    assert_eq!(conn.liveness(), Liveness::Quiet);
    manager
        .check(&mut conn)
        .await
        .expect("a live server passes its check");
    assert_eq!(
        conn.liveness(),
        Liveness::Quiet,
        "the check read its whole answer"
    );

    // Inside a transaction, the check fails: the server is not idle.
    assert_eq!(query(&mut conn, "BEGIN").await.status, b'T');
    let e = manager.check(&mut conn).await.unwrap_err();
    assert!(matches!(e, ServerError::NotIdle { .. }), "{e:?}");
    assert_eq!(query(&mut conn, "ROLLBACK").await.status, b'I');

    admin.terminate(&app).await.unwrap();
    admin
        .wait_for_count(&app, 0, Duration::from_secs(5))
        .await
        .unwrap();
    // PostgreSQL's FATAL 57P01 is waiting on the socket.
    assert_eq!(conn.liveness(), Liveness::Unsolicited);
    assert!(manager.check(&mut conn).await.is_err());

    // Close says goodbye: the server is gone at once.
    let conn = manager.connect().await.unwrap();
    assert_eq!(admin.count(&app).await.unwrap(), 1);
    within(Duration::from_secs(2), "close", manager.close(conn)).await;
    admin
        .wait_for_count(&app, 0, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn cancel_stops_a_running_query() {
    let cluster = cluster();
    let manager = ServerManager::new(upstream(&cluster, "cancel"));
    let mut conn = manager.connect().await.unwrap();

    send_query(&mut conn, "SELECT pg_sleep(10)").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    within(
        Duration::from_secs(1),
        "cancel",
        cancel(&conn.cancel_addr, conn.key),
    )
    .await
    .unwrap();
    let answer = within(
        Duration::from_secs(1),
        "the cancelled answer",
        read_answer(&mut conn),
    )
    .await;
    assert_eq!(
        answer.error.as_ref().map(|e| e.0.as_str()),
        Some("57014"),
        "{answer:?}"
    );
    assert_eq!(answer.status, b'I');
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A wrong secret cancels nothing.
    send_query(&mut conn, "SELECT pg_sleep(0.5)").await;
    let wrong = BackendKey {
        secret: conn.key.secret.wrapping_add(1),
        ..conn.key
    };
    cancel(&conn.cancel_addr, wrong).await.unwrap();
    let answer = read_answer(&mut conn).await;
    assert_eq!((answer.error, answer.status), (None, b'I'));
}

#[tokio::test]
async fn connects_and_cancels_over_a_unix_socket() {
    let cluster = cluster();
    let url = format!(
        "postgresql://pool_test@/pool_test?host={}&port={}&application_name=unix",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let (upstream, _) = Upstream::from_url(&url).unwrap();
    let manager = ServerManager::new(upstream);
    let mut conn = manager
        .connect()
        .await
        .expect("trusted over the Unix socket");
    assert!(
        matches!(&conn.cancel_addr, pool_proxy::server::CancelAddr::Unix(p) if p.starts_with(cluster.socket_dir())),
        "{:?}",
        conn.cancel_addr
    );
    assert_eq!(conn.liveness(), Liveness::Quiet);
    send_query(&mut conn, "SELECT pg_sleep(10)").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel(&conn.cancel_addr, conn.key).await.unwrap();
    let answer = within(
        Duration::from_secs(1),
        "the cancelled answer",
        read_answer(&mut conn),
    )
    .await;
    assert_eq!(answer.error.map(|e| e.0), Some("57014".into()));
    manager.check(&mut conn).await.unwrap();
}
