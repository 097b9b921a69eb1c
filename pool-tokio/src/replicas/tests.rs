//! The set over fake members on tokio's paused clock: routing, benching, fallback,
//! probes, read-your-writes and the errors' texts. The real-PostgreSQL tests (streaming
//! replication) are in the repository's `tests/pg_replicas.rs`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pool_core::{ErrorClass, Verdict};
use pool_router::{BenchReason, Fallback, Probe, RouterConfig, State};

use super::*;

/// A fake server: up or down, primary or standby, behind or not.
#[derive(Default)]
struct Server {
    down: AtomicBool,
    standby: AtomicBool,
    /// Replay lag in ms plus one; 0 = not behind.
    behind: AtomicU64,
    refuses_writes: AtomicBool,
}

struct Fake {
    member: usize,
    server: Arc<Server>,
}

const NOT_WRITABLE: &str = "database does not allow writes";

impl Manager for Fake {
    type Connection = usize;
    type Error = io::Error;

    async fn connect(&self) -> Result<usize, io::Error> {
        if self.server.down.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("member {} refused the connection", self.member),
            ));
        }
        if self.server.refuses_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other(NOT_WRITABLE));
        }
        Ok(self.member)
    }

    fn classify(&self, e: &io::Error) -> ErrorClass {
        if e.to_string().contains(NOT_WRITABLE) {
            ErrorClass::Fatal
        } else {
            ErrorClass::Transient
        }
    }

    async fn check(&self, _: &mut usize) -> Result<(), io::Error> {
        Ok(())
    }

    fn is_broken(&self, _: &mut usize) -> Verdict {
        if self.server.down.load(Ordering::SeqCst) {
            Verdict::Broken
        } else {
            Verdict::Reusable
        }
    }

    fn target(&self) -> crate::Target {
        crate::Target {
            system: None,
            address: Some(format!("10.0.0.{}", self.member + 1)),
            port: Some(5432),
        }
    }
}

impl ReplicaProbe for Fake {
    async fn probe(&self, _: &mut usize) -> Result<Probe, io::Error> {
        if self.server.down.load(Ordering::SeqCst) {
            return Err(io::Error::other("server closed the connection"));
        }
        Ok(if self.server.standby.load(Ordering::SeqCst) {
            Probe::Standby {
                behind: match self.server.behind.load(Ordering::SeqCst) {
                    0 => None,
                    ms => Some(Duration::from_millis(ms - 1)),
                },
            }
        } else {
            Probe::Primary
        })
    }

    fn refuses_writes(&self, e: &ConnectError) -> bool {
        e.message.contains(NOT_WRITABLE)
    }
}

struct Fixture {
    set: ReplicaSet<Fake>,
    servers: Vec<Arc<Server>>,
}

fn fixture(replicas: usize, routing: RouterConfig) -> Fixture {
    let servers: Vec<Arc<Server>> = (0..=replicas)
        .map(|_| Arc::new(Server::default()))
        .collect();
    for s in &servers[1..] {
        s.standby.store(true, Ordering::SeqCst);
    }
    let pool = |member: usize| {
        Pool::builder(Fake {
            member,
            server: servers[member].clone(),
        })
        .name(format!("test.member-{member}"))
        .max_size(2)
        .acquire_timeout(Duration::from_secs(3))
        .backoff_base(Duration::from_millis(50))
        .backoff_max(Duration::from_millis(200))
        .seed(member as u64)
        .build()
        .unwrap()
    };
    let mut b = ReplicaSet::builder(pool(0)).name("test").routing(routing);
    for m in 1..=replicas {
        b = b.replica(pool(m));
    }
    Fixture {
        set: b.build().unwrap(),
        servers,
    }
}

fn fast() -> RouterConfig {
    RouterConfig {
        replica_wait: Duration::from_millis(200),
        probe_interval: Duration::from_millis(100),
        bench_base: Duration::from_millis(100),
        bench_max: Duration::from_millis(400),
        ..RouterConfig::default()
    }
}

/// Which member served `n` reads, each held and released in turn.
async fn readers(set: &ReplicaSet<Fake>, n: usize) -> Vec<usize> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(*set.read().await.unwrap());
    }
    got
}

#[tokio::test(start_paused = true)]
async fn reads_spread_over_replicas_and_writes_go_to_the_primary() {
    let f = fixture(2, fast());
    let got = readers(&f.set, 6).await;
    assert!(got.iter().all(|m| *m != 0), "{got:?}");
    assert!(got.contains(&1) && got.contains(&2), "spread: {got:?}");
    assert_eq!(*f.set.write().await.unwrap(), 0);
    let members = f.set.members();
    assert_eq!(
        members[1].member.counters.reads + members[2].member.counters.reads,
        6
    );
    assert_eq!(members[0].member.counters.writes, 1);
    assert_eq!(members[1].pool, "test.member-1");
    assert!(f.set.can_read() && f.set.can_write());
}

#[tokio::test(start_paused = true)]
async fn a_dead_replica_is_benched_and_reads_move_then_come_back() {
    let f = fixture(2, fast());
    readers(&f.set, 4).await;
    f.servers[1].down.store(true, Ordering::SeqCst);
    // Every read is still served, by replica-2 once replica-1 is found dead.
    let started = tokio::time::Instant::now();
    let got = readers(&f.set, 10).await;
    assert!(got.iter().all(|m| *m == 1 || *m == 2));
    assert!(
        started.elapsed() <= Duration::from_millis(400),
        "at most one replica_wait lost: {:?}",
        started.elapsed()
    );
    assert!(got[2..].iter().all(|m| *m == 2), "{got:?}");
    let m1 = &f.set.members()[1].member;
    assert!(
        matches!(&m1.state, State::Benched { reason: BenchReason::Unreachable { error, .. }, .. } if error.contains("member 1 refused")),
        "{:?}",
        m1.state
    );
    // Back: a probe finds it, and reads return to it.
    f.servers[1].down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(f.set.members()[1].member.state.in_service());
    assert!(readers(&f.set, 4).await.contains(&1));
}

#[tokio::test(start_paused = true)]
async fn with_every_replica_down_reads_fall_back_or_fail_naming_each() {
    let f = fixture(2, fast());
    for s in &f.servers[1..] {
        s.down.store(true, Ordering::SeqCst);
    }
    assert_eq!(*f.set.read().await.unwrap(), 0, "fell back to the primary");
    assert!(f.set.members()[0].member.counters.fallback_reads >= 1);

    let never = fixture(
        2,
        RouterConfig {
            fallback: Fallback::Never,
            ..fast()
        },
    );
    for s in &never.servers[1..] {
        s.down.store(true, Ordering::SeqCst);
    }
    let started = tokio::time::Instant::now();
    let e = never.set.read().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(
        text.starts_with("no replica could serve the read"),
        "{text}"
    );
    assert!(text.contains("(fallback to the primary: never)"), "{text}");
    assert!(text.contains("replica-1 at 10.0.0.2:5432"), "{text}");
    assert!(text.contains("replica-2 at 10.0.0.3:5432"), "{text}");
    assert!(text.contains("member 1 refused the connection"), "{text}");
    assert!(text.contains("member 2 refused the connection"), "{text}");
    assert!(!never.set.can_read());
}

#[tokio::test(start_paused = true)]
async fn a_read_timeout_names_each_replicas_counts() {
    let f = fixture(
        1,
        RouterConfig {
            fallback: Fallback::Never,
            ..fast()
        },
    );
    let _a = f.set.read().await.unwrap();
    let _b = f.set.read().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), f.set.read())
        .await
        .expect("bounded by the read timeout")
        .unwrap_err();
    assert!(err.is_timeout());
    let text = err.to_string();
    assert!(text.contains("within 3s"), "{text}");
    assert!(
        text.contains(
            "replica-1 at 10.0.0.2:5432: no connection in time (size 2/2: 0 idle, 2 leased"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lagging_replica_is_benched_until_it_catches_up() {
    let f = fixture(
        2,
        RouterConfig {
            max_replica_lag: Some(Duration::from_millis(300)),
            ..fast()
        },
    );
    f.servers[1].behind.store(10_001, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m1 = f.set.members()[1].member.clone();
    assert!(
        matches!(
            m1.state,
            State::Benched {
                reason: BenchReason::Lagging { .. },
                ..
            }
        ),
        "{m1:?}"
    );
    assert!(readers(&f.set, 6).await.iter().all(|m| *m == 2));
    f.servers[1].behind.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.set.members()[1].member.state.in_service());
    assert_eq!(f.set.members()[1].member.lag, Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_primary_in_recovery_refuses_writes_at_once() {
    let f = fixture(1, fast());
    assert!(f.set.write().await.is_ok());
    // Demoted: the next probe finds it in recovery.
    f.servers[0].standby.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = f.set.write().await.unwrap_err();
    assert!(matches!(e, ReplicaError::NotPrimary { error: None, .. }));
    let text = e.to_string();
    assert!(
        text.starts_with("primary at 10.0.0.1:5432 does not take writes: in recovery"),
        "{text}"
    );
    assert!(!f.set.can_write());
    f.servers[0].standby.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.set.write().await.is_ok());

    // A primary whose connects say it does not take writes: reported as such, fast.
    let g = fixture(0, fast());
    g.servers[0].refuses_writes.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let e = g.set.write().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    let text = e.to_string();
    assert!(
        text.starts_with("primary at 10.0.0.1:5432 does not take writes: its server does not take writes (in recovery, or read-only)"),
        "{text}"
    );
    assert!(text.contains(NOT_WRITABLE), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_session_reads_its_writes_from_the_primary() {
    let f = fixture(
        1,
        RouterConfig {
            read_your_writes: Some(Duration::from_millis(500)),
            ..fast()
        },
    );
    let session = f.set.session();
    assert_eq!(*session.read().await.unwrap(), 1, "no write yet");
    drop(session.write().await.unwrap());
    assert_eq!(*session.read().await.unwrap(), 0, "within the window");
    assert_eq!(
        *f.set.read().await.unwrap(),
        1,
        "other callers are not affected"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*session.read().await.unwrap(), 1, "after the window");
}

#[tokio::test(start_paused = true)]
async fn closing_the_set_closes_every_member() {
    let f = fixture(2, fast());
    readers(&f.set, 2).await;
    assert_eq!(f.set.close(Duration::from_secs(1)).await, 0);
    assert!(f.set.is_closed());
    assert!(f.set.replicas().iter().all(Pool::is_closed) && f.set.primary().is_closed());
    assert!(matches!(f.set.read().await, Err(ReplicaError::Closed)));
    assert!(matches!(f.set.write().await, Err(ReplicaError::Closed)));
}

#[test]
fn building_outside_a_runtime_or_with_bad_routing_names_the_problem() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        Pool::builder(Fake {
            member: 0,
            server: Arc::default(),
        })
        .build()
        .unwrap()
    });
    let e = ReplicaSet::builder(pool.clone())
        .routing(RouterConfig {
            replica_wait: Duration::ZERO,
            ..RouterConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("`replica_wait`"), "{e}");
    let e = ReplicaSet::builder(pool).build().unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn urls_make_one_pool_per_member() {
    use crate::postgres::PgManager;
    use tokio_postgres::config::TargetSessionAttrs;
    let set = ReplicaSet::from_urls(
        "shop",
        "postgresql://app:pw@db1:5432/shop?connection_limit=4",
        &["postgresql://app:pw@db2:5433/shop?connection_limit=9"],
        |b, role| match role {
            pool_router::Role::Primary => b.acquire_timeout(Duration::from_secs(2)),
            pool_router::Role::Replica => b,
        },
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(set.primary().name(), "shop.primary");
    assert_eq!(set.primary().config().max_size, 4);
    assert_eq!(
        set.primary().config().acquire_timeout,
        Duration::from_secs(2)
    );
    assert!(set.primary().manager().expects_primary());
    assert_eq!(
        set.primary().manager().config().get_target_session_attrs(),
        TargetSessionAttrs::ReadWrite
    );
    assert_eq!(set.replicas()[0].name(), "shop.replica-1");
    assert_eq!(set.replicas()[0].config().max_size, 9);
    assert!(!set.replicas()[0].manager().expects_primary());
    assert_eq!(set.members()[1].member.address.as_ref(), "db2:5433");

    // One multi-host URL: the primary over every host, a replica per host.
    let set = ReplicaSet::from_url(
        "shop",
        "postgresql://app:pw@db1:5432,db2:5433,db3/shop?target_session_attrs=read-write",
        |b, _| b,
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(set.replicas().len(), 3);
    assert_eq!(set.primary().manager().config().get_hosts().len(), 3);
    for (r, ports) in set.replicas().iter().zip([&[5432][..], &[5433], &[]]) {
        let c = r.manager().config();
        assert_eq!(c.get_hosts().len(), 1);
        assert_eq!(c.get_ports(), ports);
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::Any);
    }
    let one = ReplicaSet::from_url("x", "postgresql://app:pw@db1/shop", |b, _| b)
        .unwrap()
        .build()
        .unwrap();
    assert!(one.replicas().is_empty());

    // Errors name the member and never the password.
    let e = ReplicaSet::from_url(
        "x",
        "postgresql://app:s3cr3t@db1,db2/shop?target_session_attrs=read-only",
        |b, _| b,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("primary URL: `target_session_attrs`"), "{e}");
    let e = ReplicaSet::from_urls(
        "x",
        "postgresql://app:s3cr3t@db1/shop",
        &["postgresql://app:s3cr3t@db2/shop?connection_limt=3"],
        |b, _| b,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "replica-1 URL: unknown connection URL parameter `connection_limt`"
    );
    let _: Option<PgManager> = None;
}
