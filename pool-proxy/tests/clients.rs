//! Real clients through the real proxy to a real PostgreSQL.

mod common;

use common::{Setup, TestProxy};

/// psql and tokio-postgres get answers through the proxy, and the admin console and
/// pg_stat_activity agree on the servers it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_are_served_and_show_pools_agrees_with_the_server() {
    let proxy = TestProxy::start(Setup::default().settings("default_pool_size = 3")).await;
    let out = proxy
        .psql()
        .args(["-A", "-t", "-c", "SELECT 40 + 2, current_user"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42|pool_test");

    let client = proxy.connect().await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    let pools = proxy.show("POOLS").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    let pool = &pools[0];
    assert_eq!(
        (pool["database"].as_str(), pool["user"].as_str()),
        ("pool_test", "pool_test")
    );
    let servers: i64 = ["sv_active", "sv_idle", "sv_tested", "sv_login"]
        .iter()
        .map(|c| pool[*c].parse::<i64>().unwrap())
        .sum();
    assert_eq!(servers, proxy.server_backends().await, "{pool:?}");
    proxy.shutdown().await;
}
