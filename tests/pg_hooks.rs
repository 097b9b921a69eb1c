#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The pool's hooks, `PgManager::init_sql` / `configure`, and `Pool::health` against a
//! real PostgreSQL, observed through the pool and in the server's `pg_stat_activity`.

mod pg_common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_common::*;
use pg_harness::Backends;
use pool_tokio::{CloseReason, PgManager, Pool, PoolError, Verdict};

/// The server process behind a connection, found once by `after_connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pid(i32);

/// `after_connect` sets the session up once per connection: `SHOW search_path` through
/// the pool sees it on every borrow, and what it stored in the extensions (the backend's
/// pid) belongs to the connection the borrower holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_connect_sets_search_path_on_every_new_connection() {
    let _watchdog = watchdog("after_connect_sets_search_path", Duration::from_secs(60));
    let cluster = cluster(10);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let pool = pool_with(
        &url_for(&cluster.url(), "hooks-after-connect", "&connection_limit=2"),
        |b| {
            b.after_connect(move |client, ext| {
                let r = r.clone();
                Box::pin(async move {
                    client
                        .batch_execute("SET search_path TO app, public")
                        .await?;
                    ext.insert(Pid(backend_pid(client).await));
                    r.fetch_add(1, SeqCst);
                    Ok(())
                })
            })
        },
    );
    for _ in 0..6 {
        let (a, b) = futures::join!(pool.get(), pool.get());
        for client in [a.unwrap(), b.unwrap()] {
            assert_eq!(show(&client, "search_path").await, "app, public");
            let pid = backend_pid(&client).await;
            assert_eq!(client.extensions().get::<Pid>(), Some(&Pid(pid)));
        }
    }
    assert_eq!(runs.load(SeqCst), 2, "once per connection");
}

/// An `after_connect` the server rejects fails the connect with the server's reason
/// (named as the hook's), and the connection it opened is closed on the server too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_after_connect_closes_the_server_connection() {
    let _watchdog = watchdog("a_failing_after_connect", Duration::from_secs(60));
    let cluster = cluster(10);
    let app = "hooks-after-connect-fails";
    let pool = pool_with(&url_for(&cluster.url(), app, ""), |b| {
        b.after_connect(|client, _| {
            Box::pin(async move { client.batch_execute("SET statement_timeout = 'soon'").await })
        })
    });
    let err = match within(
        Duration::from_secs(20),
        "failing get",
        pool.get_timeout(Duration::from_secs(2)),
    )
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("a failing after_connect cannot lend a connection"),
    };
    let last = match &err {
        PoolError::Timeout {
            last_connect_error, ..
        } => last_connect_error.clone(),
        PoolError::Connect { error, .. } => Some(error.clone()),
        other => panic!("unexpected {other}"),
    };
    let last = last.expect("the hook's error");
    assert!(last.message.starts_with("after_connect: "), "{last:?}");
    assert!(last.message.contains("statement_timeout"), "{last:?}");
    cluster
        .admin()
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
}

/// `PgManager::init_sql` runs once per new connection; `configure` changes the
/// tokio-postgres configuration while the URL's pool options still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_sql_and_configure_keep_the_url_pool_options() {
    let _watchdog = watchdog("init_sql_and_configure", Duration::from_secs(60));
    let cluster = cluster(10);
    let url = url_for(
        &cluster.url(),
        "hooks-init-sql",
        "&connection_limit=3&pool_timeout=7",
    );
    let (manager, options) = PgManager::from_url(&url).unwrap();
    let manager = manager
        .init_sql("SET statement_timeout = '1234ms'; SET search_path TO audit")
        .configure(|c| {
            c.options("-c work_mem=8MB");
        });
    let pool = Pool::builder(manager).options(options).build().unwrap();
    assert_eq!(pool.config().max_size, 3);
    assert_eq!(pool.config().acquire_timeout, Duration::from_secs(7));
    for _ in 0..3 {
        let client = pool.get().await.unwrap();
        assert_eq!(show(&client, "statement_timeout").await, "1234ms");
        assert_eq!(show(&client, "search_path").await, "audit");
        assert_eq!(show(&client, "work_mem").await, "8MB");
    }
    // A failing init SQL fails the connect with the server's reason.
    let (manager, options) = PgManager::from_url(&url).unwrap();
    let manager = manager.init_sql("SELECT * FROM no_such_table");
    let pool = Pool::builder(manager).options(options).build().unwrap();
    let err = pool
        .get_timeout(Duration::from_secs(1))
        .await
        .map(|_| ())
        .unwrap_err();
    let text = std::error::Error::source(&err)
        .map(|e| pg_message(e.downcast_ref::<tokio_postgres::Error>().unwrap()))
        .unwrap_or_else(|| err.to_string());
    assert!(text.contains("no_such_table"), "{text}");
}

/// `before_acquire` refuses a connection at checkout (here: one used twice already) and
/// the borrower gets another server connection; the refused one is closed on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_acquire_retires_connections_at_checkout() {
    let _watchdog = watchdog("before_acquire_retires", Duration::from_secs(60));
    let cluster = cluster(10);
    let app = "hooks-before-acquire";
    let pool = pool_with(&url_for(&cluster.url(), app, "&connection_limit=1"), |b| {
        b.before_acquire(|_, ext| {
            let uses = ext.get_or_insert_with(|| 0u32);
            *uses += 1;
            *uses <= 2
        })
    });
    let mut pids = Vec::new();
    for _ in 0..5 {
        let client = pool.get().await.unwrap();
        pids.push(backend_pid(&client).await);
        drop(client);
        // Judged when an idle connection is lent: let its reset (ROLLBACK) finish.
        wait_until(&pool, Duration::from_secs(10), "idle again", |p| {
            p.status().idle == 1
        })
        .await;
    }
    // New, then judged twice and kept, then refused: a new one, judged twice...
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert_eq!(pids[3], pids[4]);
    assert_eq!(pool.metrics().stats.closes(CloseReason::CheckFailed), 1);
    cluster
        .admin()
        .wait_for_count(&Backends::app(app), 1, Duration::from_secs(10))
        .await
        .unwrap();
}

/// `after_release` judges a returned connection: `Broken` closes it on the server and
/// the next borrower gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_release_can_close_a_returned_connection() {
    let _watchdog = watchdog("after_release_can_close", Duration::from_secs(60));
    let cluster = cluster(10);
    let app = "hooks-after-release";
    /// Set by a borrower that changed session state it cannot undo.
    struct Tainted;
    let pool = pool_with(&url_for(&cluster.url(), app, "&connection_limit=1"), |b| {
        b.after_release(|_, ext| {
            if ext.get::<Tainted>().is_some() {
                Verdict::Broken
            } else {
                Verdict::Reusable
            }
        })
    });
    let mut client = pool.get().await.unwrap();
    let first = backend_pid(&client).await;
    client
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    client.extensions_mut().insert(Tainted);
    drop(client);
    let client = pool.get().await.unwrap();
    let second = backend_pid(&client).await;
    assert_ne!(first, second, "the tainted connection was closed");
    drop(client);
    let client = pool.get().await.unwrap();
    assert_eq!(backend_pid(&client).await, second, "a clean one is kept");
    assert_eq!(pool.metrics().stats.closes(CloseReason::Broken), 1);
    cluster
        .admin()
        .wait_for_count(&Backends::app(app), 1, Duration::from_secs(10))
        .await
        .unwrap();
}

/// `on_create` / `on_close` count the server connections: what they report open matches
/// `pg_stat_activity`, and after `close()` every created connection was reported closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_create_and_on_close_match_the_servers_count() {
    let _watchdog = watchdog("on_create_and_on_close", Duration::from_secs(60));
    let cluster = cluster(10);
    let app = "hooks-counters";
    let open = Arc::new(Mutex::new((0i64, 0i64, Vec::new())));
    let (created, closed) = (open.clone(), open.clone());
    let pool = pool_with(&url_for(&cluster.url(), app, "&connection_limit=3"), |b| {
        b.on_create(move |_| created.lock().unwrap().0 += 1)
            .on_close(move |_, reason| {
                let mut c = closed.lock().unwrap();
                c.1 += 1;
                c.2.push(reason);
            })
    });
    let clients = futures::future::join_all((0..3).map(|_| pool.get())).await;
    let clients: Vec<_> = clients.into_iter().map(Result::unwrap).collect();
    let admin = cluster.admin();
    let (c, d, _) = open.lock().unwrap().clone();
    assert_eq!(c - d, admin.count(&Backends::app(app)).await.unwrap());
    assert_eq!(c, 3);
    drop(clients);
    wait_until(&pool, Duration::from_secs(10), "3 idle", |p| {
        p.status().idle == 3
    })
    .await;
    pool.close(Duration::from_secs(5)).await;
    admin
        .wait_for_count(&Backends::app(app), 0, Duration::from_secs(10))
        .await
        .unwrap();
    let (c, d, reasons) = open.lock().unwrap().clone();
    assert_eq!((c, d), (3, 3));
    assert!(
        reasons.iter().all(|r| *r == CloseReason::PoolClosed),
        "{reasons:?}"
    );
}

/// `health()` for a readiness probe: ready against a live server; against a port nobody
/// listens on, not ready, naming the refused connect and how long ago it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_last_connect_error() {
    let _watchdog = watchdog(
        "health_names_the_last_connect_error",
        Duration::from_secs(60),
    );
    let cluster = cluster(10);
    let pool = pool_with(&url_for(&cluster.url(), "hooks-health", ""), |b| b);
    drop(pool.get().await.unwrap());
    assert!(pool.health().can_serve(), "{}", pool.health());
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = url_for(
        &cluster.url_on_port(closed_port),
        "hooks-health-down",
        "&min_idle=1",
    );
    let down = pool_with(&url, |b| b);
    wait_until(&down, Duration::from_secs(10), "a failed connect", |p| {
        p.health().last_connect_error.is_some()
    })
    .await;
    let health = down.health();
    assert!(!health.can_serve(), "{health}");
    let text = health.to_string();
    assert!(text.contains("ago: "), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(
        !text.contains("secret") && !text.contains("password="),
        "{text}"
    );
}
