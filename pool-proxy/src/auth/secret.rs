//! A user's credential as the proxy keeps it, in the forms PgBouncer's `auth_file` and
//! PostgreSQL's `pg_authid.rolpassword` use: a SCRAM-SHA-256 verifier, an MD5 hash, or
//! the password itself. Only the password itself can also log in to a server; a verifier
//! or a hash can only check a client.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// A user's credential. Its `Debug` says which form it is and never what it holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself.
    Password(String),
    /// A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`).
    ScramSha256(ScramVerifier),
    /// An MD5 hash: `md5` followed by the 32 hex digits of md5(password || user).
    Md5([u8; 32]),
}

/// A SCRAM-SHA-256 verifier, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// Why a secret could not be read. It names what is wrong, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(pub &'static str);

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SecretError {}

impl Secret {
    /// Reads a secret as `pg_authid.rolpassword` writes it: `SCRAM-SHA-256$...` is a
    /// verifier, `md5` and 32 hex digits a hash, anything else the password itself
    /// (PostgreSQL's own rule, so a verifier copied from `pg_authid` works as it is).
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        if let Some(rest) = text.strip_prefix("SCRAM-SHA-256$") {
            return ScramVerifier::parse(rest).map(Secret::ScramSha256);
        }
        if let Some(hex) = text.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let mut digits = [0u8; 32];
                digits.copy_from_slice(&hex.to_ascii_lowercase().into_bytes());
                return Ok(Secret::Md5(digits));
            }
        }
        if text.is_empty() {
            return Err(SecretError("the password is empty"));
        }
        Ok(Secret::Password(text.to_owned()))
    }

    /// The password, when this secret is one: what logging in to a server needs.
    pub fn password(&self) -> Option<&str> {
        match self {
            Secret::Password(password) => Some(password),
            _ => None,
        }
    }
}

impl ScramVerifier {
    /// `<iterations>:<salt>$<StoredKey>:<ServerKey>`, the part after `SCRAM-SHA-256$`.
    fn parse(text: &str) -> Result<ScramVerifier, SecretError> {
        const SHAPE: &str = "a SCRAM-SHA-256 verifier must read \
                             SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let (params, keys) = text.split_once('$').ok_or(SecretError(SHAPE))?;
        let (iterations, salt) = params.split_once(':').ok_or(SecretError(SHAPE))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(SecretError(SHAPE))?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(SecretError(
                "the SCRAM-SHA-256 verifier's iteration count is not a positive number",
            ))?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|salt| !salt.is_empty())
            .ok_or(SecretError(
                "the SCRAM-SHA-256 verifier's salt is not base64",
            ))?;
        let key = |text: &str, what| {
            BASE64
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or(SecretError(what))
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(
                stored_key,
                "the SCRAM-SHA-256 verifier's StoredKey is not 32 bytes of base64",
            )?,
            server_key: key(
                server_key,
                "the SCRAM-SHA-256 verifier's ServerKey is not 32 bytes of base64",
            )?,
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Secret::Password(<redacted>)",
            Secret::ScramSha256(_) => "Secret::ScramSha256(<redacted>)",
            Secret::Md5(_) => "Secret::Md5(<redacted>)",
        })
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_written_by_postgres_protocol_is_read_back() {
        let text = postgres_protocol::password::scram_sha_256(b"hunter2");
        let Secret::ScramSha256(verifier) = Secret::parse(&text).unwrap() else {
            panic!("not read as a verifier: {text}");
        };
        assert_eq!(verifier.iterations, 4096);
        assert_eq!(verifier.salt.len(), 16);
    }

    #[test]
    fn an_md5_hash_is_read_as_one_and_anything_else_as_a_password() {
        let text = postgres_protocol::password::md5(b"hunter2", "alice");
        assert!(matches!(Secret::parse(&text), Ok(Secret::Md5(_))));
        assert_eq!(
            Secret::parse("md5-not-a-hash").unwrap().password(),
            Some("md5-not-a-hash")
        );
        assert_eq!(
            Secret::parse("hunter2").unwrap().password(),
            Some("hunter2")
        );
    }

    #[test]
    fn broken_verifiers_say_what_is_wrong() {
        for (text, says) in [
            ("SCRAM-SHA-256$4096", "must read"),
            ("SCRAM-SHA-256$x:c2FsdA==$a:b", "iteration count"),
            ("SCRAM-SHA-256$4096:***$a:b", "salt"),
            ("SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=", "StoredKey"),
        ] {
            let error = Secret::parse(text).unwrap_err();
            assert!(error.0.contains(says), "{text}: {error}");
        }
        assert!(Secret::parse("").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        for text in [
            "hunter2".to_owned(),
            postgres_protocol::password::md5(b"hunter2", "alice"),
            postgres_protocol::password::scram_sha_256(b"hunter2"),
        ] {
            let secret = Secret::parse(&text).unwrap();
            let shown = format!("{secret:?}");
            let body = text.rsplit(['$', ':']).next().unwrap();
            assert!(
                !shown.contains("hunter2") && !shown.contains(body),
                "{shown}"
            );
        }
    }
}
