#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! The default reset over TLS, against a real PostgreSQL with `ssl = on` and a
//! certificate from a CA made for the test (rcgen, pg_common::certs): the socket
//! carries ciphertext, so the transaction status must be read above TLS. If it were read
//! off the raw socket, the status would be unknown after every query and each idle
//! return would go through a reset.

mod pg_common;

use std::sync::Arc;
use std::time::Duration;

use pg_common::certs::{localhost_server, new_ca};
use pg_common::*;
use pg_harness::{PgCluster, PgOptions};
use pool_tokio::{PgManager, Pool, TransactionStatus};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[tokio::test(flavor = "current_thread")]
async fn auto_reset_reads_the_status_above_tls() {
    let _watchdog = watchdog(
        "auto_reset_reads_the_status_above_tls",
        Duration::from_secs(120),
    );
    let ca = new_ca("pool-test-ca");
    let cluster = PgCluster::start(
        PgOptions::default()
            .max_connections(10)
            .tls(localhost_server(&ca).server_tls(None))
            .setting("log_statement", "'all'"),
    )
    .expect("start PostgreSQL with ssl = on");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!(
        "{}?application_name=reset-tls&sslmode=require",
        cluster.url()
    );
    let (manager, options) = PgManager::from_url(&url).unwrap();
    let pool = Pool::builder(manager.with_tls_config(tls))
        .options(options)
        .max_size(1)
        .build()
        .unwrap();

    {
        let c = pool.get().await.expect("a TLS connection");
        assert_eq!(
            one(
                &c,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            .await,
            "t",
            "the session is encrypted"
        );
        assert_eq!(c.transaction_status(), TransactionStatus::Idle);
        c.batch_execute("CREATE TABLE reset_probe (x int)")
            .await
            .unwrap();
    }
    for i in 0..50 {
        let c = pool.get().await.unwrap();
        assert_eq!(select(&c, i).await.unwrap(), i);
        assert_eq!(c.transaction_status(), TransactionStatus::Idle);
    }
    assert_eq!(pool.metrics().stats.resets_started, 0);

    {
        let c = pool.get().await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO reset_probe VALUES (1)")
            .await
            .unwrap();
        assert_eq!(c.transaction_status(), TransactionStatus::InTransaction);
    }
    let c = pool.get().await.unwrap();
    assert_eq!(one(&c, "SELECT now() = statement_timestamp()").await, "t");
    assert_eq!(one(&c, "SELECT count(*) FROM reset_probe").await, "0");
    drop(c);
    let m = pool.metrics();
    assert_eq!(m.stats.resets_started, 1, "{m:?}");
    assert_eq!(m.stats.connects_ok, 1, "{m:?}");
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("statement: ROLLBACK"))
            .count(),
        1
    );
    assert!(!log.contains("there is no transaction in progress"));

    // A query abandoned mid-flight is cancelled over TLS too (the cancel request is sent
    // with the session's `sslmode=require`): the next borrower is served at once, on the
    // same connection.
    let request = async {
        let c = pool.get().await.unwrap();
        c.simple_query("SELECT pg_sleep(5)").await.map(drop)
    };
    assert!(tokio::time::timeout(Duration::from_millis(100), request)
        .await
        .is_err());
    let dropped = std::time::Instant::now();
    let c = within(Duration::from_secs(10), "get", pool.get())
        .await
        .unwrap();
    assert_eq!(select(&c, 1).await.unwrap(), 1);
    let waited = dropped.elapsed();
    assert!(waited < Duration::from_millis(500), "waited {waited:?}");
    assert_eq!(
        pool.metrics().stats.connects_ok,
        1,
        "cancelled, not replaced"
    );
}
