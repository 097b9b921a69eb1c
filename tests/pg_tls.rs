#![cfg(not(any(feature = "loom", feature = "shuttle")))]
//! TLS against a real PostgreSQL with `ssl = on`: each `sslmode`, `sslrootcert`, the host
//! name check, and client certificates required by `pg_hba.conf`. The certificates are
//! made at test time with rcgen (`pg_common::certs`): a test CA, a server certificate it
//! signs for 127.0.0.1 and localhost, a client certificate, and a self-signed
//! snakeoil-like server certificate; the servers accept TLS connections only
//! (`hostssl`). Two clusters, one per test, started in parallel.

mod pg_common;

use std::path::PathBuf;
use std::time::Duration;

use pg_common::certs::{leaf, localhost_server, new_ca, snakeoil};
use pg_common::*;
use pg_harness::{PgCluster, PgOptions};
use pool_tokio::{Manager, PgManager};
use rcgen::ExtendedKeyUsagePurpose;

const LIMIT: Duration = Duration::from_secs(30);
/// The role that logs in with a client certificate (`cert` in pg_hba.conf).
const CERT_USER: &str = "tls_cert_user";

/// The error and all its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn manager(url: &str) -> PgManager {
    PgManager::from_url_with_env(url, |_| None)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .0
}

/// Connect with the manager; on success, whether the session is encrypted (the server's
/// own view, `pg_stat_ssl`).
async fn connect(url: &str) -> Result<bool, String> {
    let m = manager(url);
    let client = within(LIMIT, url, m.connect())
        .await
        .map_err(|e| format!("{}{}", chain(&e), db_detail(&e)))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    Ok(row.get(0))
}

fn db_detail(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|db| format!(" [{}: {}]", db.code().code(), db.message()))
        .unwrap_or_default()
}

async fn connects_encrypted(url: &str) {
    match connect(url).await {
        Ok(ssl) => assert!(ssl, "{url}: connected, but not over TLS"),
        Err(e) => panic!("{url}: {e}"),
    }
}

async fn fails(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("{url}: connected, but should have failed"),
        Err(e) => {
            eprintln!("{url}: {e}");
            e
        }
    }
}

struct Tls {
    cluster: PgCluster,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Tls {
    fn url(&self, query: &str) -> String {
        format!("{}?application_name=pool-tls&{query}", self.cluster.url())
    }

    fn url_as(&self, host: &str, user: &str, query: &str) -> String {
        let o = self.cluster.options();
        format!(
            "postgresql://{user}:{}@{host}:{}/{}?hostaddr=127.0.0.1&{query}",
            o.password,
            self.cluster.port(),
            o.database
        )
    }
}

/// A server with a certificate from a test CA, that trusts that CA's client certificates,
/// and accepts TLS connections only: `cert` for one role, scram-sha-256 for the rest.
async fn ca_signed_cluster() -> Tls {
    let ca = new_ca("pool-suite test CA");
    let server = localhost_server(&ca);
    let client = leaf(&ca, CERT_USER, &[], ExtendedKeyUsagePurpose::ClientAuth);
    let other = new_ca("some other CA");
    let opts = PgOptions::default()
        .tls(server.server_tls(Some(ca.pem())))
        .hba([
            format!("hostssl all {CERT_USER} 127.0.0.1/32 cert"),
            "hostssl all all 127.0.0.1/32 scram-sha-256".to_string(),
        ]);
    let cluster = PgCluster::start_async(opts)
        .await
        .expect("start PostgreSQL with TLS");
    cluster
        .admin()
        .execute(&format!("CREATE ROLE {CERT_USER} LOGIN"))
        .await
        .expect("create the certificate role");
    Tls {
        ca_file: cluster.write_file("ca.crt", &ca.pem()).unwrap(),
        other_ca_file: cluster.write_file("other.crt", &other.pem()).unwrap(),
        client_cert: cluster.write_file("client.crt", &client.cert_pem).unwrap(),
        client_key: cluster.write_file("client.key", &client.key_pem).unwrap(),
        cluster,
    }
}

/// Every mode against a server whose certificate a private CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_private_ca() {
    let _watchdog = watchdog("sslmodes_against_a_private_ca", Duration::from_secs(120));
    let t = ca_signed_cluster().await;
    let ca = t.ca_file.display();

    // disable: the server's own refusal (hostssl only).
    let e = fails(&t.url("sslmode=disable")).await;
    assert!(
        e.contains("no pg_hba.conf entry") && e.contains("no encryption"),
        "{e}"
    );

    // The default (prefer), allow and require encrypt without checking the certificate,
    // whose CA nobody trusts here.
    connects_encrypted(&t.url("")).await;
    connects_encrypted(&t.url("sslmode=allow")).await;
    connects_encrypted(&t.url("sslmode=require")).await;
    // Prisma's way of saying the same.
    connects_encrypted(&t.url("sslmode=require&sslaccept=accept_invalid_certs")).await;

    // verify-ca: with the CA it connects; against the default roots it fails, saying why.
    connects_encrypted(&t.url(&format!("sslmode=verify-ca&sslrootcert={ca}"))).await;
    let e = fails(&t.url("sslmode=verify-ca")).await;
    assert!(
        e.contains("does not lead to a trusted root") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(e.contains("sslmode=verify-ca"), "{e}");

    // libpq's rule: a root certificate makes require check the chain.
    let other = t.other_ca_file.display();
    connects_encrypted(&t.url(&format!("sslmode=require&sslrootcert={ca}"))).await;
    let e = fails(&t.url(&format!("sslmode=require&sslrootcert={other}"))).await;
    assert!(e.contains("does not lead to a trusted root"), "{e}");

    // verify-full: the right name connects (a DNS name and the IP address), a wrong one
    // fails naming the mismatch. hostaddr keeps the TCP target at 127.0.0.1.
    let user = &t.cluster.options().user;
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    connects_encrypted(&t.url_as("localhost", user, &full)).await;
    connects_encrypted(&t.url_as("127.0.0.1", user, &full)).await;
    let e = fails(&t.url_as("wrong.example", user, &full)).await;
    assert!(
        e.contains("not valid for name") && e.contains("wrong.example"),
        "{e}"
    );
    // Prisma's strict is verify-full.
    let e = fails(&t.url_as(
        "wrong.example",
        user,
        &format!("sslaccept=strict&sslrootcert={ca}"),
    ))
    .await;
    assert!(e.contains("not valid for name"), "{e}");

    // A client certificate required by pg_hba.conf (`cert`): with it the role logs in
    // without a password, without it the server refuses.
    let cert = format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        t.client_cert.display(),
        t.client_key.display()
    );
    connects_encrypted(&t.url_as("localhost", CERT_USER, &cert)).await;
    let e = fails(&t.url_as("localhost", CERT_USER, &full)).await;
    assert!(e.contains("certificate"), "{e}");
}

/// A self-signed certificate marked as a CA (Debian's snakeoil): what `psql
/// sslmode=require` accepts, and what failed with `CaUsedAsEndEntity` in every mode
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_certificate() {
    let _watchdog = watchdog("a_self_signed_server_certificate", Duration::from_secs(120));
    let cert = snakeoil();
    let cert_pem = cert.cert_pem.clone();
    let opts = PgOptions::default()
        .tls(cert.server_tls(None))
        .hba(["hostssl all all 127.0.0.1/32 scram-sha-256"]);
    let cluster = PgCluster::start_async(opts)
        .await
        .expect("start PostgreSQL with TLS");
    let url = |q: &str| format!("{}?{q}", cluster.url());

    connects_encrypted(&url("")).await;
    connects_encrypted(&url("sslmode=prefer")).await;
    connects_encrypted(&url("sslmode=require")).await;
    let e = fails(&url("sslmode=verify-ca")).await;
    assert!(e.contains("does not lead to a trusted root"), "{e}");
    let e = fails(&url("sslmode=verify-full")).await;
    assert!(e.contains("does not lead to a trusted root"), "{e}");
    let e = fails(&url("sslmode=disable")).await;
    assert!(e.contains("no encryption"), "{e}");

    // The certificate itself as the root: trusted as libpq (OpenSSL) trusts it, and the
    // host name is still checked.
    let root = cluster.write_file("snakeoil.crt", &cert_pem).unwrap();
    let root = root.display();
    connects_encrypted(&url(&format!("sslmode=verify-ca&sslrootcert={root}"))).await;
    connects_encrypted(&url(&format!("sslmode=verify-full&sslrootcert={root}"))).await;
    let o = cluster.options();
    let e = fails(&format!(
        "postgresql://{}:{}@wrong.example:{}/{}?hostaddr=127.0.0.1&sslmode=verify-full\
         &sslrootcert={root}",
        o.user,
        o.password,
        cluster.port(),
        o.database
    ))
    .await;
    assert!(e.contains("not valid for name"), "{e}");

    // Through the pool, with the URL a managed database hands out.
    let pool = pool_with(&url("sslmode=require&connection_limit=2"), |b| b);
    let client = within(LIMIT, "get over TLS", pool.get())
        .await
        .expect("get over TLS");
    assert_eq!(select(&client, 7).await.unwrap(), 7);
    drop(client);
    pool.close(Duration::from_secs(5)).await;
}
