//! TLS for [`PgManager`](super::PgManager): libpq's `sslmode`s over rustls (ring provider).
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (the default) | if the server offers TLS, else in clear | no (see below) |
//! | `require` | always | no (see below) |
//! | `verify-ca` | always | chain against the trusted roots |
//! | `verify-full` | always | chain and host name |
//!
//! "Not checked" is libpq's meaning: the session is encrypted, the handshake's signatures
//! are verified (so the server holds the key of the certificate it sent), but any
//! certificate is accepted, so a private CA, a self-signed or Debian's snakeoil certificate
//! connects, as with `psql "...?sslmode=require"`. `allow` is treated as `prefer` (TLS
//! first, clear text if the server has no TLS; libpq tries clear text first).
//!
//! As in libpq, a root certificate given with `sslrootcert` (or `PGSSLROOTCERT`) turns
//! `allow`, `prefer` and `require` into `verify-ca`: the chain is checked against it. Unlike
//! libpq, `~/.postgresql/root.crt` is not looked for; name the file.
//!
//! The trusted roots: the PEM file `sslrootcert` names; `sslrootcert=system`, the
//! operating system's store (`rustls-native-certs`; as in libpq 16, it makes `verify-full`
//! the default mode and refuses weaker ones); with no `sslrootcert`, the Mozilla roots
//! (`webpki-roots`) plus the operating system's store. A client certificate (for
//! `pg_hba.conf`'s `cert` method or `clientcert=verify-*`) is `sslcert` plus `sslkey`, both
//! PEM, the key unencrypted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Treated as [`SslMode::Prefer`].
    Allow,
    /// TLS if the server offers it; the certificate is not checked. libpq's default.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, and the server's certificate chain must lead to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in order of strength.
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The mode's name in a URL (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Parse a URL's `sslmode` value.
    pub fn parse(s: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether it may go without.
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as D;
        match self {
            SslMode::Disable => D::Disable,
            SslMode::Allow | SslMode::Prefer => D::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => D::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the trusted roots come from (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

/// A client certificate chain and its key, both PEM files (`sslcert`, `sslkey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate (and any intermediates), PEM.
    pub cert: PathBuf,
    /// The unencrypted private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

/// What a TLS connection checks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Nothing but the handshake's signatures (libpq's `require`).
    None,
    /// The chain leads to a trusted root (`verify-ca`).
    Chain,
    /// The chain, and the host name (`verify-full`).
    ChainAndHostName,
}

/// The TLS part of a connection's configuration. [`TlsSettings::connector`] turns it into
/// the rustls connector the manager connects with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`.
    pub root_cert: Option<RootCerts>,
    /// `sslcert` and `sslkey`.
    pub client_cert: Option<ClientCert>,
}

/// TLS settings that cannot be used: names the parameter and says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    /// The URL parameter at fault (`sslrootcert`, `sslcert`, `sslkey`, `sslmode`).
    pub parameter: &'static str,
    /// Why.
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid TLS parameter `{}`: {}",
            self.parameter, self.reason
        )
    }
}

impl std::error::Error for TlsError {}

fn tls_error(parameter: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError {
        parameter,
        reason: reason.into(),
    }
}

impl TlsSettings {
    /// Settings for `mode` with no root or client certificate.
    pub fn new(mode: SslMode) -> TlsSettings {
        TlsSettings {
            mode,
            ..TlsSettings::default()
        }
    }

    /// What is checked of the server's certificate; `None` without TLS. A root certificate
    /// given with `allow`, `prefer` or `require` means `verify-ca`, as in libpq.
    pub fn verification(&self) -> Option<Verification> {
        match self.mode {
            SslMode::Disable => None,
            SslMode::Allow | SslMode::Prefer | SslMode::Require => {
                Some(if self.root_cert.is_some() {
                    Verification::Chain
                } else {
                    Verification::None
                })
            }
            SslMode::VerifyCa => Some(Verification::Chain),
            SslMode::VerifyFull => Some(Verification::ChainAndHostName),
        }
    }

    /// The rustls connector for these settings (`None` for `disable`). Reads the
    /// certificate files now, so a missing or malformed one is reported before any connect.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, TlsError> {
        self.client_config().map(|c| c.map(MakeRustlsConnect::new))
    }

    /// The rustls client configuration for these settings (`None` for `disable`).
    pub fn client_config(&self) -> Result<Option<rustls::ClientConfig>, TlsError> {
        let Some(verification) = self.verification() else {
            return Ok(None);
        };
        if self.root_cert == Some(RootCerts::System) && self.mode != SslMode::VerifyFull {
            return Err(tls_error(
                "sslmode",
                format!(
                    "`sslmode={}` is too weak for `sslrootcert=system`: use verify-full (as \
                     libpq requires), or name a root certificate file",
                    self.mode
                ),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match verification {
            Verification::None => Arc::new(Verifier {
                check: Check::Nothing,
                provider: provider.clone(),
                mode: self.mode,
                roots_from: String::new(),
                pinned: Vec::new(),
            }),
            Verification::Chain | Verification::ChainAndHostName => {
                let (roots, roots_from, pinned) = self.roots()?;
                let roots = Arc::new(roots);
                let check = if verification == Verification::Chain {
                    Check::Chain(roots)
                } else {
                    let inner =
                        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                            .build()
                            .map_err(|e| tls_error("sslrootcert", e.to_string()))?;
                    Check::Full(inner)
                };
                Arc::new(Verifier {
                    check,
                    provider: provider.clone(),
                    mode: self.mode,
                    roots_from,
                    pinned,
                })
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("sslmode", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let certs = read_certs(&c.cert).map_err(|r| tls_error("sslcert", r))?;
                let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| {
                    tls_error(
                        "sslkey",
                        format!(
                            "no usable private key in {}: {e} (PEM, unencrypted: PKCS#8, \
                             PKCS#1 or SEC1)",
                            c.key.display()
                        ),
                    )
                })?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    tls_error(
                        "sslkey",
                        format!(
                            "{} does not fit the certificate in {}: {e}",
                            c.key.display(),
                            c.cert.display()
                        ),
                    )
                })?
            }
        };
        Ok(Some(config))
    }

    /// The trusted roots, a description of where they came from (for errors), and the
    /// certificates of the `sslrootcert` file (a server presenting one of them as its own
    /// certificate is trusted, as OpenSSL trusts a self-signed certificate given as root).
    fn roots(&self) -> Result<(RootCertStore, String, Vec<CertificateDer<'static>>), TlsError> {
        let mut pinned = Vec::new();
        let mut roots = RootCertStore::empty();
        let from = match &self.root_cert {
            Some(RootCerts::File(path)) => {
                let certs = read_certs(path).map_err(|r| tls_error("sslrootcert", r))?;
                pinned.clone_from(&certs);
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(
                        "sslrootcert",
                        format!("no usable certificate in {}", path.display()),
                    ));
                }
                format!("the roots in sslrootcert={}", path.display())
            }
            Some(RootCerts::System) => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    return Err(tls_error(
                        "sslrootcert",
                        format!(
                            "`system`: no certificate found in the operating system's trust \
                             store{}",
                            native
                                .errors
                                .first()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                "the operating system's roots (sslrootcert=system)".to_string()
            }
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                "the Mozilla and operating system roots (no sslrootcert given)".to_string()
            }
        };
        Ok((roots, from, pinned))
    }
}

/// Every certificate in a PEM file; an error says which file and why.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in {}",
            path.display()
        ));
    }
    Ok(certs)
}

enum Check {
    /// libpq's `require`: any certificate.
    Nothing,
    /// `verify-ca`: the chain, not the name.
    Chain(Arc<RootCertStore>),
    /// `verify-full`: rustls's own verifier.
    Full(Arc<WebPkiServerVerifier>),
}

/// The server certificate verifier for every mode. The handshake's signatures are always
/// verified with the provider's algorithms; what is checked of the certificate depends on
/// the mode.
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
    mode: SslMode,
    roots_from: String,
    /// The certificates of the `sslrootcert` file.
    pinned: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("mode", &self.mode)
            .field("roots", &self.roots_from)
            .finish()
    }
}

/// A certificate error with what was checked and against what, so the message says why.
/// (Returned as `rustls::Error::Other`: rustls shows a `CertificateError::Other` with
/// `Debug`, which would bury the explanation in type names.)
struct Explained {
    error: rustls::Error,
    mode: SslMode,
    roots_from: String,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate chain does not lead to a trusted root ({}); \
             sslmode={} checked it against {}; give the server's CA with sslrootcert=FILE, \
             or use sslmode=require to encrypt without checking",
            self.error, self.mode, self.roots_from
        )
    }
}

impl fmt::Debug for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Explained {}

impl Verifier {
    fn explain(&self, error: rustls::Error) -> rustls::Error {
        match error {
            // The host name check names the expected and presented names already.
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => error,
            rustls::Error::InvalidCertificate(_) => {
                rustls::Error::Other(rustls::OtherError(Arc::new(Explained {
                    error,
                    mode: self.mode,
                    roots_from: self.roots_from.clone(),
                })))
            }
            other => other,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // A self-signed server certificate given as the root (Debian's snakeoil, a
        // self-hosted server): webpki refuses a CA certificate as the end entity
        // (`CaUsedAsEndEntity`) even when it is the trust anchor, OpenSSL (libpq) accepts
        // it. Trust it as given; verify-full still checks the name. Its validity period is
        // not checked on this path.
        if !matches!(self.check, Check::Nothing)
            && intermediates.is_empty()
            && self
                .pinned
                .iter()
                .any(|c| c.as_ref() == end_entity.as_ref())
        {
            if matches!(self.check, Check::Full(_)) {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        match &self.check {
            Check::Nothing => Ok(ServerCertVerified::assertion()),
            Check::Chain(roots) => {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )
                .map_err(|e| self.explain(e))?;
                Ok(ServerCertVerified::assertion())
            }
            Check::Full(inner) => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| self.explain(e)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_map_onto_the_driver() {
        use tokio_postgres::config::SslMode as D;
        for mode in SslMode::ALL {
            assert_eq!(SslMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SslMode::parse("Require"), None);
        assert_eq!(SslMode::Allow.driver_mode(), D::Prefer);
        assert_eq!(SslMode::VerifyCa.driver_mode(), D::Require);
        assert_eq!(SslMode::Disable.driver_mode(), D::Disable);
    }

    #[test]
    fn a_root_certificate_makes_require_verify_ca() {
        let with_root = |mode| TlsSettings {
            mode,
            root_cert: Some(RootCerts::File("/ca.pem".into())),
            client_cert: None,
        };
        assert_eq!(
            TlsSettings::new(SslMode::Require).verification(),
            Some(Verification::None)
        );
        assert_eq!(
            with_root(SslMode::Require).verification(),
            Some(Verification::Chain)
        );
        assert_eq!(
            with_root(SslMode::Prefer).verification(),
            Some(Verification::Chain)
        );
        assert_eq!(
            with_root(SslMode::VerifyFull).verification(),
            Some(Verification::ChainAndHostName)
        );
        assert_eq!(with_root(SslMode::Disable).verification(), None);
    }

    #[test]
    fn file_errors_name_the_parameter_and_the_file() {
        let e = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCerts::File("/nonexistent/ca.pem".into())),
            client_cert: None,
        }
        .client_config()
        .unwrap_err();
        assert_eq!(e.parameter, "sslrootcert");
        assert!(e.reason.contains("/nonexistent/ca.pem"), "{e}");
        let e = TlsSettings {
            mode: SslMode::Require,
            root_cert: None,
            client_cert: Some(ClientCert {
                cert: "/nonexistent/client.crt".into(),
                key: "/nonexistent/client.key".into(),
            }),
        }
        .client_config()
        .unwrap_err();
        assert_eq!(e.parameter, "sslcert");
        let e = TlsSettings {
            mode: SslMode::Require,
            root_cert: Some(RootCerts::System),
            client_cert: None,
        }
        .client_config()
        .unwrap_err();
        assert_eq!(e.parameter, "sslmode");
        assert!(e.reason.contains("verify-full"), "{e}");
    }

    #[test]
    fn every_mode_but_disable_builds_a_connector() {
        for mode in SslMode::ALL {
            let c = TlsSettings::new(mode).connector().unwrap();
            assert_eq!(c.is_some(), mode != SslMode::Disable, "{mode}");
        }
    }
}
