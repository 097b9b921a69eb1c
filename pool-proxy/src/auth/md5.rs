//! MD5 challenge and response, as PostgreSQL runs it: the server sends a 4-byte salt, the
//! client answers `md5` followed by the hex of md5(hex(md5(password || user)) || salt). The
//! stored MD5 hash is md5(password || user) already, so either an MD5 secret or the
//! password itself can check the answer; a SCRAM verifier cannot (and is asked for SCRAM).

use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq as _;

use super::client::Refusal;
use super::secret::Secret;

/// One client's MD5 challenge.
pub(crate) struct Md5Challenge {
    user: String,
    salt: [u8; 4],
    /// The answer that proves the password, or why no answer can (an unknown user: the
    /// challenge is still sent, so that the client cannot tell).
    expected: Result<[u8; 35], String>,
}

impl Md5Challenge {
    /// A challenge with this salt for a user with this secret (`None`: no such user).
    /// `secret` must not be a SCRAM verifier; the caller asks for SCRAM then.
    pub(crate) fn new(user: &str, secret: Option<&Secret>, salt: [u8; 4]) -> Md5Challenge {
        let stored = match secret {
            Some(Secret::Md5(hex)) => Ok(*hex),
            Some(Secret::Password(password)) => {
                Ok(hex(md5(&[password.as_bytes(), user.as_bytes()])))
            }
            Some(Secret::ScramSha256(_)) => Err(format!(
                "user \"{user}\" has a SCRAM-SHA-256 verifier, which cannot check an MD5 answer"
            )),
            None => Err(format!("user \"{user}\" does not exist")),
        };
        let expected = stored.map(|stored| {
            let mut answer = [0u8; 35];
            answer[..3].copy_from_slice(b"md5");
            answer[3..].copy_from_slice(&hex(md5(&[&stored, &salt])));
            answer
        });
        Md5Challenge {
            user: user.to_owned(),
            salt,
            expected,
        }
    }

    /// The salt to send in AuthenticationMD5Password.
    pub(crate) fn salt(&self) -> [u8; 4] {
        self.salt
    }

    /// Checks a PasswordMessage's body: one NUL-terminated string. Compared in constant
    /// time.
    pub(crate) fn check(&self, body: &[u8]) -> Result<(), Refusal> {
        let Some((&0, answer)) = body.split_last() else {
            return Err(Refusal::protocol("invalid password packet size"));
        };
        if answer.contains(&0) {
            return Err(Refusal::protocol("invalid password packet size"));
        }
        if answer.is_empty() {
            return Err(Refusal::password_with_message(
                "empty password returned by client",
                format!("user \"{}\" sent an empty password", self.user),
            ));
        }
        match &self.expected {
            Err(why) => Err(Refusal::password(&self.user, why.clone())),
            Ok(expected) if bool::from(expected[..].ct_eq(answer)) => Ok(()),
            Ok(_) => Err(Refusal::password(
                &self.user,
                format!("password does not match for user \"{}\"", self.user),
            )),
        }
    }
}

/// MD5 of the parts, one after the other.
fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut digest = Md5::new();
    parts.iter().for_each(|part| digest.update(part));
    digest.finalize().into()
}

/// The lower-case hex of an MD5 digest.
fn hex(digest: [u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_what_postgres_protocol_writes() {
        let text = postgres_protocol::password::md5(b"hunter2", "alice");
        let stored = hex(md5(&[b"hunter2", b"alice"]));
        assert_eq!(text.as_bytes()[3..], stored);
    }
}
