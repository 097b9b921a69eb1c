//! Test certificates made with rcgen at test time (no `openssl` command needed): a CA,
//! leaf certificates it signs, and a self-signed snakeoil-like server certificate; and
//! the `PgTls` that gives a pg-harness cluster a server certificate.

use pg_harness::PgTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, as PEM text.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// This certificate as a cluster's server certificate (`ssl = on`), trusting client
    /// certificates from `client_ca_pem` if given.
    pub fn server_tls(self, client_ca_pem: Option<String>) -> PgTls {
        PgTls {
            cert_pem: self.cert_pem,
            key_pem: self.key_pem,
            ca_pem: client_ca_pem,
        }
    }
}

/// A test certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// The CA's own certificate, as PEM text.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// A self-signed CA named `name`.
pub fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// A certificate signed by `ca` for `common_name`, the subject alternative names `sans`
/// (DNS names or IP addresses) and one extended key usage.
pub fn leaf(ca: &Ca, common_name: &str, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Issued {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A server certificate signed by `ca` for `localhost` and `127.0.0.1`.
pub fn localhost_server(ca: &Ca) -> Issued {
    leaf(
        ca,
        "localhost",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// Like Debian's snakeoil certificate: self-signed, and marked as a CA.
pub fn snakeoil() -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    Issued {
        cert_pem: params.self_signed(&key).unwrap().pem(),
        key_pem: key.serialize_pem(),
    }
}
