//! The hard faults: `kill -9` of the postmaster (and the restart after it, which must clear
//! what the dead server left) and freezing every server process with SIGSTOP.

use std::time::{Duration, Instant};

use pg_harness::{PgCluster, PgOptions};
use tokio::time::timeout;
use tokio_postgres::{Client, NoTls};

async fn connect_url(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn select_one(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

async fn backend_pid(client: &Client) -> u32 {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0);
    u32::try_from(pid).expect("a positive pid")
}

/// The state letter from `/proc/<pid>/stat` (read here independently of the harness),
/// `None` once the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn is_dead(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z'))
}

/// After `kill -9` of the postmaster an idle backend exits, a busy one runs on (and would
/// block a restart: its shared memory is still attached), and the postmaster is a zombie
/// for a while (its lock files name a pid that still exists). `start_again`,
/// `restart_fast` and `stop` all work regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_hard_then_start_again_clears_what_the_dead_server_left() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let idle = connect_url(&cluster.url()).await.expect("connect");
    assert_eq!(select_one(&idle).await.unwrap(), 1);
    let busy = connect_url(&cluster.url()).await.expect("connect");
    let busy_pid = backend_pid(&busy).await;
    let busy_query =
        tokio::spawn(async move { busy.batch_execute("DO $$BEGIN LOOP END LOOP; END$$").await });
    let admin = cluster.admin();
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {busy_pid} AND state = 'active'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.query_i64(&active).await.unwrap() != 1 {
        assert!(Instant::now() < deadline, "the busy loop never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let postmaster = cluster.server_pids()[0];
    cluster.kill_hard_async().await.expect("kill -9");
    assert!(
        is_dead(postmaster),
        "postmaster {postmaster}: {:?}",
        state(postmaster)
    );
    assert!(!cluster.is_running());
    assert!(cluster.server_pids().is_empty());
    let err = timeout(Duration::from_secs(5), select_one(&idle))
        .await
        .expect("an idle backend notices its postmaster's death at once")
        .expect_err("its connection is gone");
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    assert!(!is_dead(busy_pid), "a backend busy computing runs on");
    connect_url(&cluster.url())
        .await
        .expect_err("nothing listens any more");
    let err = cluster
        .kill_hard_async()
        .await
        .expect_err("no server to kill");
    assert!(err.to_string().contains("not running"), "{err}");

    let started = Instant::now();
    cluster
        .start_again_async()
        .await
        .expect("start again after kill -9");
    eprintln!("start_again after kill -9: {:?}", started.elapsed());
    assert!(is_dead(busy_pid), "the leftover backend was cleared away");
    let after = connect_url(&cluster.url()).await.expect("connect again");
    assert_eq!(select_one(&after).await.unwrap(), 1);
    let busy_result = timeout(Duration::from_secs(5), busy_query)
        .await
        .expect("the busy query ends with its backend")
        .unwrap();
    assert!(busy_result.is_err(), "{busy_result:?}");

    // The other ways back after a hard kill.
    cluster.kill_hard_async().await.expect("kill -9 again");
    cluster
        .restart_fast_async()
        .await
        .expect("restart after kill -9");
    let c = connect_url(&cluster.url()).await.expect("connect");
    assert_eq!(select_one(&c).await.unwrap(), 1);
    cluster.kill_hard().expect("blocking kill -9");
    cluster.stop_async().await.expect("stop after kill -9");
    assert!(!cluster.is_running());
    cluster.start_again().expect("blocking start again");
    let c = connect_url(&cluster.url()).await.expect("connect");
    assert_eq!(select_one(&c).await.unwrap(), 1);
}

/// `freeze` stops the postmaster and every backend (state `T`): an open connection's
/// query waits, a new connect gets no answer. `thaw` resumes all of it, and what waited
/// completes. A frozen cluster still stops when dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stops_every_server_process_until_thaw() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start cluster");
    let client = connect_url(&cluster.url()).await.expect("connect");
    let backend = backend_pid(&client).await;
    let pids = cluster.server_pids();
    assert!(pids.contains(&backend), "{backend} not in {pids:?}");
    assert!(
        pids.len() >= 4,
        "postmaster, auxiliaries, a backend: {pids:?}"
    );

    cluster.freeze_async().await.expect("freeze");
    // A process listed before the freeze may have exited just as it was taken (a
    // short-lived auxiliary): a zombie under a frozen postmaster cannot run either.
    // The connection's own backend must be stopped.
    for &p in &pids {
        let s = state(p);
        assert!(
            matches!(s, Some('T' | 'Z') | None),
            "process {p} of {pids:?}: {s:?}"
        );
    }
    assert_eq!(state(backend), Some('T'), "the connection's backend");
    let pending = tokio::spawn(async move {
        let r = select_one(&client).await;
        (client, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "a query waits while the server is frozen"
    );
    let hung = timeout(Duration::from_millis(300), connect_url(&cluster.url())).await;
    assert!(hung.is_err(), "a connect waits while the server is frozen");
    cluster
        .freeze()
        .expect("freezing a frozen server is harmless");

    cluster.thaw_async().await.expect("thaw");
    for &p in &pids {
        assert_ne!(state(p), Some('T'), "process {p} of {pids:?}");
    }
    let (client, r) = timeout(Duration::from_secs(5), pending)
        .await
        .expect("the waiting query completes after thaw")
        .unwrap();
    assert_eq!(r.expect("its answer"), 1);
    assert_eq!(select_one(&client).await.unwrap(), 1);
    let fresh = connect_url(&cluster.url())
        .await
        .expect("connect after thaw");
    assert_eq!(select_one(&fresh).await.unwrap(), 1);
    cluster
        .thaw()
        .expect("thawing a running server is harmless");

    // A test that fails while the server is frozen still gets its cluster stopped.
    cluster.freeze().expect("freeze again");
    let pids = cluster.server_pids();
    let started = Instant::now();
    drop(cluster);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "dropping a frozen cluster took {took:?}"
    );
    // A backend told to quit may still be on its way out for a moment after `pg_ctl stop`
    // returns (seen once, under CPU load); gone it must be, and soon.
    let gone = Instant::now() + Duration::from_secs(5);
    for &p in &pids {
        while !is_dead(p) && Instant::now() < gone {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(is_dead(p), "process {p} survived the drop: {:?}", state(p));
    }
}
