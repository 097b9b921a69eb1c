//! Proves the real-PostgreSQL harness works: clusters, limits, auth, restarts, PgBouncer
//! and the fault-injecting proxy. Each test owns its cluster, so they run in parallel.

use std::time::Duration;

use pg_harness::{Backends, FaultProxy, HarnessError, PgBouncer, PgCluster, PgOptions};
use tokio::time::timeout;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_url(url: &str) -> Result<Client, tokio_postgres::Error> {
    connect(&url.parse().expect("valid url")).await
}

/// The server's message for a database error, else the error itself.
fn message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => err.to_string(),
    }
}

async fn select_one(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

#[tokio::test]
async fn cluster_runs_queries_and_admin_sees_and_terminates_backends() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    assert!(cluster
        .url()
        .starts_with("postgresql://pool_test:pool_test_pw@127.0.0.1:"));
    assert!(cluster
        .url()
        .ends_with(&format!(":{}/pool_test", cluster.port())));

    let client = connect_url(&cluster.url()).await.expect("connect by url");
    assert_eq!(select_one(&client).await.unwrap(), 1);
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pool_test");
    assert_eq!(row.get::<_, String>(1), "pool_test");

    let mut config = cluster.config();
    config.application_name("harness-app");
    let tagged = connect(&config).await.expect("connect by config");
    let admin = cluster.admin();
    assert_eq!(admin.count(&Backends::app("harness-app")).await.unwrap(), 1);
    assert_eq!(admin.count(&Backends::user("pool_test")).await.unwrap(), 2);
    assert_eq!(admin.count(&Backends::AllClients).await.unwrap(), 2);
    assert_eq!(
        admin
            .pids(&Backends::app("harness-app"))
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        admin
            .terminate(&Backends::app("harness-app"))
            .await
            .unwrap(),
        1
    );
    admin
        .wait_for_count(&Backends::app("harness-app"), 0, Duration::from_secs(10))
        .await
        .unwrap();
    let err = select_one(&tagged).await.expect_err("terminated backend");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        "unexpected error after pg_terminate_backend: {err}"
    );
    // The untagged connection is unaffected.
    assert_eq!(select_one(&client).await.unwrap(), 1);
}

#[tokio::test]
async fn max_connections_is_enforced() {
    let cluster = PgCluster::start(
        PgOptions::default()
            .max_connections(6)
            .superuser_reserved_connections(2),
    )
    .expect("start cluster");
    assert_eq!(cluster.user_connection_limit(), 4);

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_url(&cluster.url()).await.expect("within the limit"));
    }
    // The test user is out of slots; the rest are reserved for superusers.
    let err = connect_url(&cluster.url())
        .await
        .expect_err("over the user limit");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");

    // The harness's admin still gets in, and fills the server completely...
    let admin = cluster.admin();
    let a1 = admin.client().await.expect("reserved slot 1");
    let a2 = admin.client().await.expect("reserved slot 2");
    // ...after which nobody does: "sorry, too many clients already".
    let err = connect_url(&cluster.url())
        .await
        .expect_err("server is full");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");
    assert!(message(&err).contains("too many clients"), "{err:?}");

    drop((a1, a2));
    drop(held.pop());
    // A freed slot is usable again (backend exit is asynchronous: retry briefly).
    let reconnected = async {
        loop {
            match connect_url(&cluster.url()).await {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    };
    let c = timeout(Duration::from_secs(10), reconnected)
        .await
        .expect("slot freed");
    assert_eq!(select_one(&c).await.unwrap(), 1);
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let mut config = cluster.config();
    config.password("not-the-password");
    let err = connect(&config).await.expect_err("wrong password");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
    assert!(
        message(&err).contains("password authentication failed"),
        "{err:?}"
    );
}

#[tokio::test]
async fn restart_fast_and_stop_start_again() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let port = cluster.port();
    let before = connect_url(&cluster.url()).await.unwrap();
    assert_eq!(select_one(&before).await.unwrap(), 1);

    cluster.restart_fast_async().await.expect("restart");
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    // The old connection was closed by the fast shutdown...
    let err = select_one(&before)
        .await
        .expect_err("old connection is dead");
    assert!(
        err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN),
        "{err}"
    );
    // ...and new ones work.
    let after = connect_url(&cluster.url()).await.expect("reconnect");
    assert_eq!(select_one(&after).await.unwrap(), 1);

    cluster.stop_async().await.expect("stop");
    assert!(!cluster.is_running());
    let err = connect_url(&cluster.url())
        .await
        .expect_err("server is down");
    assert!(err.code().is_none(), "expected an I/O error, got {err}");

    cluster.start_again_async().await.expect("start again");
    let again = connect_url(&cluster.url()).await.expect("connect again");
    assert_eq!(select_one(&again).await.unwrap(), 1);

    // The blocking variant works too.
    cluster.restart_fast().expect("blocking restart");
    let last = connect_url(&cluster.url()).await.unwrap();
    assert_eq!(select_one(&last).await.unwrap(), 1);
}

#[tokio::test]
async fn pgbouncer_transaction_mode_forwards_queries() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let bouncer = PgBouncer::start(&cluster, "transaction", 2).expect("start pgbouncer");
    assert_ne!(bouncer.port(), cluster.port());

    // Many clients, few server connections: the external-pooler story.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            connect_url(&bouncer.url())
                .await
                .expect("connect through pgbouncer"),
        );
    }
    let queries = clients.iter().enumerate().map(|(i, c)| async move {
        // Named prepared statements do not survive transaction pooling; these don't use one.
        let rows = c
            .simple_query(&format!("SELECT {i} + 1, pg_sleep(0.05)"))
            .await?;
        let typed = c
            .query_typed(
                "SELECT $1::int4 * 2",
                &[(&(i as i32), tokio_postgres::types::Type::INT4)],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((rows.len(), typed[0].get::<_, i32>(0)))
    });
    for (i, r) in futures::future::join_all(queries)
        .await
        .into_iter()
        .enumerate()
    {
        let (n, doubled) = r.unwrap_or_else(|e| panic!("query {i} through pgbouncer: {e}"));
        assert!(n >= 1);
        assert_eq!(doubled, 2 * i as i32);
    }
    let servers = cluster
        .admin()
        .count(&Backends::user("pool_test"))
        .await
        .unwrap();
    assert!(
        (1..=2).contains(&servers),
        "8 clients should share at most default_pool_size=2 server connections, saw {servers}"
    );

    // Its admin console answers too.
    let console = connect_url(&bouncer.admin_url()).await.expect("console");
    let pools = console
        .simple_query("SHOW POOLS")
        .await
        .expect("SHOW POOLS");
    assert!(!pools.is_empty());
}

#[tokio::test]
async fn proxy_blackhole_hangs_and_resume_restores() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let proxy = FaultProxy::start(cluster.addr())
        .await
        .expect("start proxy");
    let url = cluster.url_on_port(proxy.port());
    let client = connect_url(&url).await.expect("connect through proxy");
    assert_eq!(select_one(&client).await.unwrap(), 1);
    assert_eq!(proxy.active_connections(), 1);

    proxy.blackhole();
    let pending = tokio::spawn(async move {
        let r = client.simple_query("SELECT 42").await.map(|m| m.len());
        (client, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "query must hang while blackholed");
    // A new connection hangs too (it never reaches the server).
    let hung = timeout(Duration::from_millis(300), connect_url(&url)).await;
    assert!(hung.is_err(), "connect must hang while blackholed");

    proxy.resume();
    let (client, r) = timeout(Duration::from_secs(10), pending)
        .await
        .expect("query completes after resume")
        .unwrap();
    assert!(r.expect("query result") >= 1);
    assert_eq!(select_one(&client).await.unwrap(), 1);

    // kill_all resets live connections; the next query fails instead of hanging.
    proxy.kill_all();
    let err = timeout(Duration::from_secs(10), select_one(&client))
        .await
        .expect("fails promptly")
        .expect_err("connection was reset");
    assert!(err.code().is_none(), "expected an I/O error, got {err}");

    // refuse_new: connection attempts fail fast; then recover.
    proxy.refuse_new(true);
    let refused = timeout(Duration::from_secs(10), connect_url(&url))
        .await
        .expect("fails promptly");
    assert!(refused.is_err());
    proxy.refuse_new(false);
    let fresh = connect_url(&url).await.expect("accepted again");
    assert_eq!(select_one(&fresh).await.unwrap(), 1);

    // Dropping the proxy ends its tasks and closes what it carried.
    drop(proxy);
    let err = timeout(Duration::from_secs(10), select_one(&fresh))
        .await
        .expect("fails promptly")
        .expect_err("proxy is gone");
    assert!(err.code().is_none(), "expected an I/O error, got {err}");
}

#[tokio::test]
async fn shared_or_start_gives_a_usable_database() {
    let target = PgCluster::shared_or_start(PgOptions::default()).expect("database");
    if std::env::var_os("DATABASE_URL").is_none() {
        assert!(target.cluster().is_some());
    }
    let client = connect(&target.config()).await.expect("connect");
    assert_eq!(select_one(&client).await.unwrap(), 1);
    assert!(target.admin().count(&Backends::AllClients).await.unwrap() >= 1);
}

#[test]
fn not_installed_error_names_the_package() {
    let err = HarnessError::NotInstalled {
        what: "initdb".into(),
        install: "apt-get install -y postgresql",
    };
    assert!(err
        .to_string()
        .contains("install it with `apt-get install -y postgresql`"));
}

#[test]
fn dropping_a_cluster_removes_it() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let dir = cluster.socket_dir().parent().unwrap().to_path_buf();
    let port = cluster.port();
    assert!(dir.exists());
    drop(cluster);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening on {port}"
    );
}

#[test]
fn a_panicking_test_still_removes_its_cluster() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
        *seen.lock().unwrap() = Some((
            cluster.socket_dir().parent().unwrap().to_path_buf(),
            cluster.port(),
        ));
        panic!("deliberate panic with a live cluster");
    });
    assert!(result.is_err());
    let (dir, port) = seen.lock().unwrap().take().expect("cluster started");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening on {port}"
    );
}

/// Streaming replication on loopback: a standby on its own port answers reads, is in
/// recovery, refuses writes, follows the primary, falls behind while its replay is
/// paused and catches up when resumed; promoted, it takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_follows_its_primary_and_can_be_paused_and_promoted() {
    let started = std::time::Instant::now();
    let primary = PgCluster::start_async(PgOptions::default().replication())
        .await
        .expect("start primary");
    let standby = primary.start_standby_async().await.expect("start standby");
    assert_ne!(standby.port(), primary.port());
    assert!(!primary.admin().in_recovery().await.unwrap());
    assert!(standby.admin().in_recovery().await.unwrap());

    let writer = connect_url(&primary.url()).await.unwrap();
    writer
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    standby
        .admin()
        .wait_for_replay(&primary.admin(), Duration::from_secs(10))
        .await
        .unwrap();
    // The test user logs in on the standby with the same URL shape.
    let reader = connect_url(&standby.url())
        .await
        .expect("the role is replicated");
    let n: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let e = reader
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));

    // Paused: the primary's rows do not appear until the replay resumes.
    standby.admin().pause_replay().await.unwrap();
    writer
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    assert!(standby
        .admin()
        .wait_for_replay(&primary.admin(), Duration::from_millis(300))
        .await
        .is_err());
    standby.admin().resume_replay().await.unwrap();
    standby
        .admin()
        .wait_for_replay(&primary.admin(), Duration::from_secs(10))
        .await
        .unwrap();
    let n: i64 = reader
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // Promoted: it takes writes.
    standby.promote_async().await.unwrap();
    assert!(!standby.admin().in_recovery().await.unwrap());
    let promoted = connect_url(&standby.url()).await.unwrap();
    promoted
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
