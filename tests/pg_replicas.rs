#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! `ReplicaSet` against real streaming replication on loopback: a primary and hot
//! standbys made with `pg_basebackup -R` (pg-harness), each on its own port. Reads run on
//! standbys and are spread over them, writes on the primary; a killed standby's reads
//! move and come back after it restarts; a standby whose replay is paused is benched past
//! `max_replica_lag` and returns after the replay resumes; read-your-writes sees its own
//! insert; a write to a server in recovery is reported as such.

mod pg_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_common::*;
use pg_harness::{PgCluster, PgOptions};
use pool_tokio::{
    BenchReason, Fallback, MemberState, PgManager, ReplicaError, ReplicaSet, RouterConfig,
};

type Set = ReplicaSet<PgManager>;

/// One read under load: when it was asked, how long its borrow waited, and the port it
/// ran on (or what failed).
type ReadLog = (Instant, Duration, Result<u16, String>);

/// A primary and `standbys` hot standbys following it.
async fn replicated(standbys: usize) -> (PgCluster, Vec<PgCluster>) {
    let primary = PgCluster::start_async(PgOptions::default().replication())
        .await
        .expect("start primary");
    let mut list = Vec::new();
    for _ in 0..standbys {
        list.push(primary.start_standby_async().await.expect("start standby"));
    }
    (primary, list)
}

/// Fast probes and benches, so each test takes a few seconds.
fn fast(fallback: Fallback) -> RouterConfig {
    RouterConfig {
        fallback,
        replica_wait: Duration::from_millis(300),
        probe_interval: Duration::from_millis(100),
        bench_base: Duration::from_millis(200),
        bench_max: Duration::from_millis(800),
        ..RouterConfig::default()
    }
}

fn set_over(app: &str, primary: &PgCluster, standbys: &[PgCluster], routing: RouterConfig) -> Set {
    let extra = "&connection_limit=4&pool_timeout=5&connect_timeout=2";
    let replicas: Vec<String> = standbys
        .iter()
        .map(|s| url_for(&s.url(), app, extra))
        .collect();
    let refs: Vec<&str> = replicas.iter().map(String::as_str).collect();
    ReplicaSet::from_urls(app, &url_for(&primary.url(), app, extra), &refs, |b, _| {
        b.seed(7)
    })
    .expect("valid URLs")
    .routing(routing)
    .build()
    .expect("valid set")
}

/// Where a connection runs: (the server's port, whether it is in recovery).
async fn where_(c: &tokio_postgres::Client) -> (u16, bool) {
    let row = c
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .expect("where");
    (row.get::<_, i32>(0) as u16, row.get(1))
}

/// Polls `cond` on the set's members for at most `limit`; panics naming `what` and the
/// members otherwise. Returns how long it took.
async fn wait_members(
    set: &Set,
    limit: Duration,
    what: &str,
    cond: impl Fn(&[pool_tokio::MemberStatus]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let members = set.members();
        if cond(&members) {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let list: Vec<String> = members.iter().map(ToString::to_string).collect();
            panic!(
                "{what}: not within {limit:?}; members: {}",
                list.join(" | ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_on_standbys_spread_over_them_and_writes_on_the_primary() {
    let _watchdog = watchdog("reads_run_on_standbys", Duration::from_secs(60));
    let (primary, standbys) = replicated(2).await;
    let set = set_over("rr-spread", &primary, &standbys, fast(Fallback::Never));

    let w = within(Duration::from_secs(10), "write", set.write())
        .await
        .expect("write");
    assert_eq!(where_(&w).await, (primary.port(), false));
    w.batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1)")
        .await
        .unwrap();
    drop(w);
    for s in &standbys {
        s.admin()
            .wait_for_replay(&primary.admin(), Duration::from_secs(10))
            .await
            .unwrap();
    }

    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..20 {
        let r = within(Duration::from_secs(10), "read", set.read())
            .await
            .expect("read");
        let (port, in_recovery) = where_(&r).await;
        assert!(in_recovery, "a read ran on {port}, which is not a standby");
        let n: i64 = r
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "the standby has the primary's row");
        *seen.entry(port).or_default() += 1;
    }
    let ports: Vec<u16> = standbys.iter().map(PgCluster::port).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), {
        let mut p = ports.clone();
        p.sort();
        p
    });
    assert!(seen.values().all(|n| *n >= 5), "reads spread: {seen:?}");
    // A write refused by the standby's server: reads really are read-only there.
    let r = set.read().await.unwrap();
    let e = r
        .batch_execute("INSERT INTO items VALUES (2)")
        .await
        .unwrap_err();
    assert!(pg_message(&e).starts_with("25006"), "{}", pg_message(&e));
    drop(r);
    let members = set.members();
    assert_eq!(members[0].member.counters.writes, 1);
    assert_eq!(members[0].member.counters.fallback_reads, 0);
    assert_eq!(members[0].pool, "rr-spread.primary");
    assert_eq!(members[1].pool, "rr-spread.replica-1");
    set.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_standby_moves_its_reads_and_they_come_back_after_it_restarts() {
    let _watchdog = watchdog("a_killed_standby", Duration::from_secs(60));
    let (primary, standbys) = replicated(2).await;
    let set = set_over(
        "rr-kill",
        &primary,
        &standbys,
        fast(Fallback::After(Duration::from_secs(1))),
    );
    let (a, b) = (standbys[0].port(), standbys[1].port());

    // Read load: 4 tasks reading in a loop, noting where each read ran and how long its
    // borrow waited.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<ReadLog>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (set, stop, log) = (set.clone(), stop.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let outcome = match set.read().await {
                    Ok(c) => {
                        let waited = asked.elapsed();
                        match c.query_one("SELECT inet_server_port()", &[]).await {
                            Ok(row) => (waited, Ok(row.get::<_, i32>(0) as u16)),
                            // Its server died under it: an in-flight query, not a borrow.
                            Err(e) => (waited, Err(format!("query: {}", pg_message(&e)))),
                        }
                    }
                    Err(e) => (asked.elapsed(), Err(format!("read: {e}"))),
                };
                lock(&log).push((asked, outcome.0, outcome.1));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    standbys[0].stop_immediate_async().await.unwrap();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let benched = matches!(
        set.members()[1].member.state,
        MemberState::Benched {
            reason: BenchReason::Unreachable { .. },
            ..
        }
    );
    assert!(benched, "{}", set.members()[1]);
    // Reads may go back to it as soon as it accepts connections, which is before
    // `start_again` returns: "while it was down" ends when the restart begins.
    let restarting = Instant::now();
    standbys[0].start_again_async().await.unwrap();
    let restarted = Instant::now();
    // Reads come back to it once a probe reaches it.
    let back = within(
        Duration::from_secs(10),
        "reads back on the restarted standby",
        async {
            loop {
                let c = set.read().await.unwrap();
                if where_(&c).await.0 == a {
                    return restarted.elapsed();
                }
                drop(c);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        within(Duration::from_secs(10), "reader", t).await.unwrap();
    }

    let log = lock(&log).clone();
    // No borrow failed; none waited longer than one replica_wait (plus scheduling).
    let failed_borrows: Vec<_> = log
        .iter()
        .filter(|(_, _, r)| matches!(r, Err(e) if e.starts_with("read:")))
        .collect();
    assert!(failed_borrows.is_empty(), "{failed_borrows:?}");
    let slowest = log.iter().map(|(_, w, _)| *w).max().unwrap();
    assert!(
        slowest < Duration::from_millis(800),
        "slowest borrow {slowest:?}"
    );
    // Reads asked once the standby was down (and a replica_wait later) ran elsewhere.
    let after: Vec<_> = log
        .iter()
        .filter(|(asked, _, _)| {
            *asked > stopped + Duration::from_millis(300) && *asked < restarting
        })
        .collect();
    assert!(after.len() > 20, "{} reads while it was down", after.len());
    assert!(
        after.iter().all(|(_, _, r)| matches!(r, Ok(p) if *p != a)),
        "{:?}",
        after
            .iter()
            .filter(|(_, _, r)| !matches!(r, Ok(p) if *p != a))
            .collect::<Vec<_>>()
    );
    assert!(after.iter().any(|(_, _, r)| *r == Ok(b)));
    let in_flight_errors = log.iter().filter(|(_, _, r)| r.is_err()).count();
    eprintln!(
        "killed at +0 ms (stop took {:?}); {} reads while it was down, slowest borrow {slowest:?}, {in_flight_errors} in-flight queries lost, back {back:?} after its restart",
        stopped - killed,
        after.len()
    );
    set.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_is_benched_past_max_replica_lag_and_resumes() {
    let _watchdog = watchdog("a_paused_standby", Duration::from_secs(60));
    let (primary, standbys) = replicated(1).await;
    let max_lag = Duration::from_millis(500);
    let set = set_over(
        "rr-lag",
        &primary,
        &standbys,
        RouterConfig {
            max_replica_lag: Some(max_lag),
            ..fast(Fallback::After(Duration::from_millis(500)))
        },
    );
    let w = set.write().await.unwrap();
    w.batch_execute("CREATE TABLE ticks (at timestamptz)")
        .await
        .unwrap();
    drop(w);
    // The primary keeps writing.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (set, stop) = (set.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let w = set.write().await.expect("write");
                w.batch_execute("INSERT INTO ticks VALUES (now())")
                    .await
                    .unwrap();
                drop(w);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_members(
        &set,
        Duration::from_secs(5),
        "standby in service, measured",
        |m| m[1].member.state.in_service() && m[1].member.lag.is_some(),
    )
    .await;
    standbys[0]
        .admin()
        .wait_for_replay(&primary.admin(), Duration::from_secs(10))
        .await
        .unwrap();
    let r = set.read().await.unwrap();
    assert!(where_(&r).await.1, "reads on the standby while it keeps up");
    drop(r);

    standbys[0].admin().pause_replay().await.unwrap();
    let paused = Instant::now();
    let took = wait_members(&set, Duration::from_secs(5), "benched for lag", |m| {
        matches!(
            m[1].member.state,
            MemberState::Benched {
                reason: BenchReason::Lagging { .. },
                ..
            }
        )
    })
    .await;
    let lag = set.members()[1].member.lag.unwrap();
    assert!(lag > max_lag, "benched at a lag of {lag:?}");
    assert!(took >= max_lag, "not before it lagged: {took:?}");
    // Reads fall back to the primary while it is benched.
    for _ in 0..5 {
        let r = set.read().await.unwrap();
        assert_eq!(where_(&r).await, (primary.port(), false));
    }
    assert!(set.members()[0].member.counters.fallback_reads >= 5);

    standbys[0].admin().resume_replay().await.unwrap();
    let resumed = Instant::now();
    wait_members(&set, Duration::from_secs(5), "back in service", |m| {
        m[1].member.state.in_service()
    })
    .await;
    let r = set.read().await.unwrap();
    assert_eq!(where_(&r).await, (standbys[0].port(), true));
    drop(r);
    eprintln!(
        "benched {took:?} after the pause (lag {lag:?}); back {:?} after the resume (paused for {:?})",
        resumed.elapsed(),
        resumed - paused
    );
    stop.store(true, Ordering::SeqCst);
    within(Duration::from_secs(10), "writer", writer)
        .await
        .unwrap();
    set.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_its_own_insert() {
    let _watchdog = watchdog("read_your_writes", Duration::from_secs(60));
    let (primary, standbys) = replicated(1).await;
    let set = set_over(
        "rr-ryw",
        &primary,
        &standbys,
        RouterConfig {
            read_your_writes: Some(Duration::from_secs(2)),
            ..fast(Fallback::Never)
        },
    );
    let w = set.write().await.unwrap();
    w.batch_execute("CREATE TABLE notes (body text)")
        .await
        .unwrap();
    drop(w);
    standbys[0]
        .admin()
        .wait_for_replay(&primary.admin(), Duration::from_secs(10))
        .await
        .unwrap();
    // The standby stops replaying: what is written now is not there.
    standbys[0].admin().pause_replay().await.unwrap();

    let session = set.session();
    let w = session.write().await.unwrap();
    w.batch_execute("INSERT INTO notes VALUES ('mine')")
        .await
        .unwrap();
    drop(w);
    let count = "SELECT count(*) FROM notes WHERE body = 'mine'";
    let mine = session.read().await.unwrap();
    assert!(!where_(&mine).await.1, "the session reads from the primary");
    let n: i64 = mine.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "read-your-writes sees its own insert");
    drop(mine);
    // Another caller reads from the standby, which has not replayed it.
    let other = set.read().await.unwrap();
    assert_eq!(where_(&other).await, (standbys[0].port(), true));
    let n: i64 = other.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the paused standby does not have it yet");
    drop(other);
    standbys[0].admin().resume_replay().await.unwrap();
    set.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_recovery_is_reported_when_a_write_expects_the_primary() {
    let _watchdog = watchdog("a_server_in_recovery", Duration::from_secs(60));
    let (primary, standbys) = replicated(1).await;
    let standby = &standbys[0];

    // The "primary" URL names a standby (a demoted primary, a stale DNS name).
    let url = url_for(&standby.url(), "rr-demoted", "&connect_timeout=2");
    let set = ReplicaSet::from_urls("rr-demoted", &url, &[], |b, _| b)
        .unwrap()
        .build()
        .unwrap();
    let started = Instant::now();
    let e = within(Duration::from_secs(10), "write", set.write())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, ReplicaError::NotPrimary { .. }), "{e:?}");
    // Found by the pool's connect (target_session_attrs=read-write refused) or by the
    // monitor's first probe, whichever came first; both say so.
    let text = e.to_string();
    assert!(text.contains("does not take writes"), "{text}");
    assert!(
        text.contains("database does not allow writes") || text.contains("in recovery"),
        "{text}"
    );
    assert!(!text.contains(&primary.options().password), "{text}");
    // The primary's pool itself fails fast (a fatal connect error), naming the reason.
    let started = Instant::now();
    let pool_error = set.primary().get().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(pool_error, pool_tokio::PoolError::Connect { .. }),
        "{pool_error:?}"
    );
    assert!(
        pool_error
            .to_string()
            .contains("database does not allow writes"),
        "{pool_error}"
    );
    // The probe finds it in recovery: writes are refused by the router itself, at once,
    // every time (never retried forever).
    wait_members(
        &set,
        Duration::from_secs(5),
        "primary benched in recovery",
        |m| {
            matches!(
                m[0].member.state,
                MemberState::Benched {
                    reason: BenchReason::InRecovery,
                    ..
                }
            )
        },
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let text = set.write().await.unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(text.contains("does not take writes: in recovery"), "{text}");
    }
    let text = set.write().await.unwrap_err().to_string();
    assert!(text.contains("does not take writes: in recovery"), "{text}");
    set.close(Duration::from_secs(1)).await;

    // A multi-host URL: writes find the host that takes them, reads the other.
    let hosts = format!(
        "postgresql://pool_test:pool_test_pw@127.0.0.1:{},127.0.0.1:{}/pool_test",
        standby.port(),
        primary.port()
    );
    let set = ReplicaSet::from_url(
        "rr-multi",
        &url_for(&hosts, "rr-multi", "&connect_timeout=2"),
        |b, _| b,
    )
    .unwrap()
    .routing(fast(Fallback::Never))
    .build()
    .unwrap();
    let w = set.write().await.unwrap();
    assert_eq!(where_(&w).await, (primary.port(), false));
    drop(w);
    wait_members(
        &set,
        Duration::from_secs(5),
        "the primary's host benched as a replica",
        |m| {
            matches!(
                m[2].member.state,
                MemberState::Benched {
                    reason: BenchReason::NotStandby,
                    ..
                }
            ) && m[1].member.state.in_service()
        },
    )
    .await;
    for _ in 0..5 {
        let r = set.read().await.unwrap();
        assert_eq!(where_(&r).await, (standby.port(), true));
    }
    set.close(Duration::from_secs(1)).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
