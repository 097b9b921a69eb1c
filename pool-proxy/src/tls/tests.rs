//! The configuration read from files rcgen wrote, used for a real TLS handshake over a
//! loopback socket; and each bad file named in its error.

use std::path::{Path, PathBuf};

use rcgen::{generate_simple_self_signed, CertifiedKey};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A self-signed certificate for `localhost` and its key, written as PEM files.
struct Files {
    dir: tempfile::TempDir,
    cert: CertifiedKey,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let cert = generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = Files { dir, cert };
        files.write("cert.pem", &files.cert.cert.pem());
        files.write("key.pem", &files.cert.key_pair.serialize_pem());
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn client_config(files: &Files, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(files.cert.cert.der().clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Accepts one client with `server` and echoes what it reads, reversed, while a client
/// trusting the certificate connects: the bytes the client reads back prove that both
/// ends derived the same keys. Returns the ALPN protocol the client ended up with.
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Option<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        buf.reverse();
        tls.write_all(&buf).await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"olleh");
    serving.await.unwrap();
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn a_client_trusting_the_certificate_completes_a_handshake() {
    let files = Files::new();
    let server = server_config(&files.path("cert.pem"), &files.path("key.pem")).unwrap();
    // libpq 17 asks for ALPN "postgresql"; older clients and tokio-postgres ask for none.
    let alpn = handshake(server.clone(), client_config(&files, &[ALPN_POSTGRESQL])).await;
    assert_eq!(alpn.as_deref(), Some(ALPN_POSTGRESQL));
    assert_eq!(handshake(server, client_config(&files, &[])).await, None);
}

fn error(cert: &Path, key: &Path) -> String {
    match server_config(cert, key) {
        Ok(_) => panic!("{} and {} accepted", cert.display(), key.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn bad_files_are_named_with_what_is_wrong() {
    let files = Files::new();
    let cert = files.path("cert.pem");
    let key = files.path("key.pem");
    let missing = files.path("missing.pem");
    let garbage = files.write("garbage.pem", "this is not a certificate\n");
    let der = files.path("cert.der");
    std::fs::write(&der, files.cert.cert.der()).unwrap();
    let broken = files.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let other = generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_key = files.write("other-key.pem", &other.key_pair.serialize_pem());

    let cases = [
        (&missing, &key, &missing, "cannot read"),
        (&cert, &missing, &missing, "cannot read"),
        (&garbage, &key, &garbage, "is not PEM"),
        (&der, &key, &der, "is not PEM"),
        (&broken, &key, &broken, "is not PEM"),
        (&cert, &garbage, &garbage, "is not PEM"),
        // The files swapped: PEM, but not of the kind expected.
        (&key, &cert, &key, "no certificate"),
        (&cert, &cert, &cert, "no private key"),
        (
            &cert,
            &other_key,
            &other_key,
            "does not match the certificate",
        ),
    ];
    for (cert, key, named, says) in cases {
        let text = error(cert, key);
        assert!(
            text.contains(&named.display().to_string()) && text.contains(says),
            "{} / {}: {text}",
            cert.display(),
            key.display()
        );
    }
    // The key's bytes never appear in an error about it.
    let key_pem = files.cert.key_pair.serialize_pem();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!error(&cert, &other_key).contains(body));
}
