//! The serverless fleet example (examples/serverless-fleet), reduced: 60 instances of 2
//! requests each, every request on a new connection, against a PostgreSQL with
//! `max_connections = 20`. Straight to PostgreSQL some requests are refused with 53300
//! ("too many clients"); through this package's binary with a pool of 10, every request is
//! served and PostgreSQL never sees more than 10 client connections.

use std::path::Path;
use std::time::Duration;

use serverless_fleet::{Demo, FleetOptions};

const POOL: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_exhausts_postgres_directly_and_not_through_the_proxy() {
    let demo = Demo {
        max_connections: 20,
        pool_size: POOL,
        fleet: FleetOptions {
            instances: 60,
            requests_per_instance: 2,
            // Long enough that 60 instances starting together overlap far past the 17
            // connections the fleet's user may hold.
            work: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
        },
    };
    let comparison = serverless_fleet::run(Path::new(env!("CARGO_BIN_EXE_pool-proxy")), &demo)
        .await
        .expect("the cluster and the proxy start");
    let table = comparison.table();
    eprintln!("{table}");
    let (direct, proxied) = (&comparison.direct, &comparison.proxied);
    let requests = 60 * 2;

    assert_eq!(direct.fleet.ok + direct.fleet.failed, requests, "{table}");
    assert!(direct.fleet.errors_with("53300") > 0, "{table}");
    assert!(
        direct.server.peak <= i64::from(comparison.user_limit),
        "{table}"
    );

    assert_eq!(proxied.fleet.ok, requests, "{table}");
    assert!(proxied.fleet.errors.is_empty(), "{table}");
    assert!(
        (1..=i64::from(POOL)).contains(&proxied.server.peak),
        "peak {} of a pool of {POOL}\n{table}",
        proxied.server.peak
    );
    assert!(table.contains("53300 x"), "{table}");
}
