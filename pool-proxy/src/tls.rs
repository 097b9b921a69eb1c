//! TLS towards clients: the rustls server configuration (ring provider) that the driver
//! hands to `tokio_rustls::TlsAcceptor` after answering a client's SSLRequest with `S`,
//! read from a certificate chain and a private key in PEM files (PgBouncer's
//! `client_tls_cert_file` and `client_tls_key_file`, PostgreSQL's `ssl_cert_file` and
//! `ssl_key_file`). Every error names the file and what is wrong with it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The ALPN protocol name PostgreSQL 17 gives TLS connections. Offered so that a client
/// that asks for it (libpq 17 does) gets it; a client that asks for none is served as well.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why the client-facing TLS configuration could not be built.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read (it does not exist, or cannot be opened).
    Read { file: PathBuf, source: io::Error },
    /// A file is not PEM, or its PEM is broken.
    NotPem { file: PathBuf, what: String },
    /// The certificate file is PEM but holds no certificate.
    NoCertificate { file: PathBuf },
    /// The key file is PEM but holds no private key rustls can read.
    NoKey { file: PathBuf },
    /// The private key is not the one of the (first) certificate.
    KeyMismatch {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// rustls refused the certificate or the key for another reason (an unsupported key
    /// type, a certificate it cannot parse).
    Rejected {
        cert_file: PathBuf,
        key_file: PathBuf,
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { file, source } => write!(f, "cannot read {}: {source}", file.display()),
            Self::NotPem { file, what } => write!(f, "{} is not PEM: {what}", file.display()),
            Self::NoCertificate { file } => write!(
                f,
                "no certificate in {} (expected a -----BEGIN CERTIFICATE----- section)",
                file.display()
            ),
            Self::NoKey { file } => write!(
                f,
                "no private key in {} (expected an unencrypted PKCS#8, PKCS#1 or SEC1 key)",
                file.display()
            ),
            Self::KeyMismatch {
                cert_file,
                key_file,
            } => write!(
                f,
                "the private key in {} does not match the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
            Self::Rejected {
                cert_file,
                key_file,
                source,
            } => write!(
                f,
                "the certificate in {} and key in {} are not usable: {source}",
                cert_file.display(),
                key_file.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Rejected { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The server configuration for clients' TLS: the certificate chain in `cert_file` (the
/// server's certificate first), the key in `key_file`, TLS 1.2 and 1.3, no client
/// certificates.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_pem(cert_file, |pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert_file.to_owned(),
        });
    }
    let key = read_pem(key_file, |pem| match PrivateKeyDer::from_pem_slice(pem) {
        Err(pem::Error::NoItemsFound) => Ok(None),
        other => other.map(Some),
    })?
    .ok_or_else(|| TlsError::NoKey {
        file: key_file.to_owned(),
    })?;
    let rejected = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert_file: cert_file.to_owned(),
                key_file: key_file.to_owned(),
            }
        }
        source => TlsError::Rejected {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            source,
        },
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(rejected)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

/// Reads `file` and parses its PEM with `parse`. A file with no PEM section at all is
/// "not PEM" (a DER file, the wrong file); one whose sections are of other kinds is left
/// to the caller ("no certificate", "no key").
fn read_pem<T>(
    file: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, pem::Error>,
) -> Result<T, TlsError> {
    let bytes = std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_owned(),
        source,
    })?;
    let not_pem = |what: String| TlsError::NotPem {
        file: file.to_owned(),
        what,
    };
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(not_pem("it has no -----BEGIN ...----- section".into()));
    }
    parse(&bytes).map_err(|error| not_pem(error.to_string()))
}

#[cfg(test)]
mod tests;
