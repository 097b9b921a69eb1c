//! A client's authentication, the proxy playing the PostgreSQL server: which exchange a
//! user gets ([`AuthMethod`] and the user's [`Secret`], by PostgreSQL's rules), and the
//! exchange as a sans-IO state machine. The driver writes what each [`Step`] carries and
//! feeds the client's next whole message back; randomness comes from the caller, so an
//! exchange is deterministic under test.
//!
//! A user who does not exist, or whose secret cannot check the method's proof, gets the
//! same exchange as any other user and fails only at its end, with the same error as a
//! wrong password: the client cannot learn which users exist.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::md5::Md5Challenge;
use super::scram::{self, Reply, ScramServer};
use super::{AuthMethod, ScramVerifier, Secret};
use crate::protocol::backend::{
    authentication_md5_password, authentication_ok, authentication_sasl,
    authentication_sasl_continue, authentication_sasl_final, error_response,
};
use crate::protocol::frame::HEADER_LEN;

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes to the client, then wait for its next message.
    Send(Vec<u8>),
    /// Write these bytes (AuthenticationSASLFinal if SCRAM, then AuthenticationOk): the
    /// client is authenticated.
    Done(Vec<u8>),
    /// Write this ErrorResponse (FATAL), then disconnect; [`ClientAuth::failure`] says why.
    Failed(Vec<u8>),
}

/// One client's authentication exchange.
pub struct ClientAuth {
    user: String,
    phase: Phase,
    failure: Option<String>,
}

enum Phase {
    Scram(Box<ScramServer>),
    Md5(Md5Challenge),
    /// Done or Failed was returned: nothing more happens.
    Over,
}

/// Why an exchange failed: what the client is told, and what the proxy's log says (the
/// two differ only where telling the client would reveal whether the user exists).
#[derive(Debug)]
pub(crate) struct Refusal {
    sqlstate: &'static str,
    message: String,
    log: String,
}

impl Refusal {
    /// `08P01`: the client broke the protocol.
    pub(crate) fn protocol(message: impl Into<String>) -> Refusal {
        let message = message.into();
        Refusal {
            sqlstate: "08P01",
            log: message.clone(),
            message,
        }
    }

    /// `0A000`: the client wants a SCRAM feature the proxy (like PostgreSQL) lacks.
    pub(crate) fn unsupported(message: &str) -> Refusal {
        Refusal {
            sqlstate: "0A000",
            message: message.to_owned(),
            log: message.to_owned(),
        }
    }

    /// `28P01` with PostgreSQL's text, whatever the reason (`log`).
    pub(crate) fn password(user: &str, log: String) -> Refusal {
        Refusal::password_with_message(
            &format!("password authentication failed for user \"{user}\""),
            log,
        )
    }

    /// `28P01` with another text (PostgreSQL's own for an empty MD5 answer).
    pub(crate) fn password_with_message(message: &str, log: String) -> Refusal {
        Refusal {
            sqlstate: "28P01",
            message: message.to_owned(),
            log,
        }
    }
}

/// Labels that keep the values derived from one input apart.
const USER_SALT: &[u8] = b"pool-proxy user salt";
const MOCK_KEYS: &[u8] = b"pool-proxy mock keys";

impl ClientAuth {
    /// Starts authenticating `user` (the startup packet's), whose secret is `secret`
    /// (`None`: no such user). `random`: the caller's randomness (SCRAM nonce, MD5 salt),
    /// so the exchange is deterministic under test; fresh for every client.
    ///
    /// Users without a stored salt (no such user, a password secret asked for SCRAM) get
    /// one derived from `random`, so it changes from one connection to the next; see
    /// [`ClientAuth::start_with_salt_key`] for salts that stay the same.
    pub fn start(
        method: AuthMethod,
        user: &str,
        secret: Option<&Secret>,
        random: [u8; 32],
    ) -> (ClientAuth, Step) {
        ClientAuth::start_with_salt_key(method, user, secret, random, &random)
    }

    /// [`ClientAuth::start`], with the salts of users who have no stored one (no such
    /// user, a password secret asked for SCRAM, an MD5 secret asked for SCRAM) derived
    /// from `salt_key` and the user name, as PostgreSQL derives its mock salt: with a key
    /// that lives as long as the proxy, the same user gets the same salt every time, as a
    /// user with a stored verifier does, so salts do not tell which users exist.
    pub fn start_with_salt_key(
        method: AuthMethod,
        user: &str,
        secret: Option<&Secret>,
        random: [u8; 32],
        salt_key: &[u8; 32],
    ) -> (ClientAuth, Step) {
        let mut auth = ClientAuth {
            user: user.to_owned(),
            phase: Phase::Over,
            failure: None,
        };
        let step = match (method, secret) {
            (AuthMethod::Trust, _) => Step::Done(authentication_ok()),
            // PostgreSQL's rule: md5 is asked of users who have an MD5 hash; a user with a
            // SCRAM verifier is asked for SCRAM. The proxy also checks MD5 with a password,
            // and asks an unknown user for MD5, as it asks most users under this method.
            (AuthMethod::Md5, Some(Secret::Md5(_) | Secret::Password(_)) | None) => {
                let challenge =
                    Md5Challenge::new(user, secret, [random[0], random[1], random[2], random[3]]);
                let request = authentication_md5_password(challenge.salt());
                auth.phase = Phase::Md5(challenge);
                Step::Send(request)
            }
            (AuthMethod::Md5 | AuthMethod::ScramSha256, _) => {
                let (verifier, doomed) = scram_verifier(user, secret, &random, salt_key);
                let mut nonce = [0u8; scram::NONCE_LEN];
                nonce.copy_from_slice(&random[..scram::NONCE_LEN]);
                auth.phase =
                    Phase::Scram(Box::new(ScramServer::new(user, verifier, doomed, &nonce)));
                Step::Send(authentication_sasl(&[scram::MECHANISM]))
            }
        };
        (auth, step)
    }

    /// One whole client message (tag 'p', length, body), as
    /// [`crate::protocol::frame::Framer`] yields it. After Done or Failed it changes
    /// nothing and returns `Send` with no bytes (the driver should not call it then).
    pub fn handle(&mut self, message: &[u8]) -> Step {
        let outcome = match &mut self.phase {
            Phase::Over => return Step::Send(Vec::new()),
            Phase::Scram(exchange) => body(message, "SASL response")
                .and_then(|body| exchange.step(body))
                .map(|reply| match reply {
                    Reply::Continue(data) => Step::Send(authentication_sasl_continue(&data)),
                    Reply::Final(data) => {
                        let mut bytes = authentication_sasl_final(&data);
                        bytes.extend_from_slice(&authentication_ok());
                        Step::Done(bytes)
                    }
                }),
            Phase::Md5(challenge) => body(message, "password response")
                .and_then(|body| challenge.check(body))
                .map(|()| Step::Done(authentication_ok())),
        };
        match outcome {
            Ok(Step::Send(bytes)) => Step::Send(bytes),
            Ok(done) => {
                self.phase = Phase::Over;
                done
            }
            Err(refusal) => {
                self.phase = Phase::Over;
                self.failure = Some(refusal.log);
                Step::Failed(error_response("FATAL", refusal.sqlstate, &refusal.message))
            }
        }
    }

    /// Why the exchange failed, for the proxy's log (never a secret), once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The user being authenticated.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("user", &self.user)
            .field(
                "phase",
                &match self.phase {
                    Phase::Scram(_) => "scram-sha-256",
                    Phase::Md5(_) => "md5",
                    Phase::Over => "over",
                },
            )
            .field("failure", &self.failure)
            .finish()
    }
}

/// The verifier a SCRAM exchange checks against, and why it is doomed if it is.
fn scram_verifier(
    user: &str,
    secret: Option<&Secret>,
    random: &[u8; 32],
    salt_key: &[u8; 32],
) -> (ScramVerifier, Option<String>) {
    let salt = || -> Vec<u8> {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(USER_SALT)
            .chain_update(salt_key)
            .chain_update(user)
            .finalize()
            .into();
        digest[..scram::SALT_LEN].to_vec()
    };
    let mock = |why: String| {
        // Keys no proof can match (and the doom is checked anyway): derived from the
        // connection's randomness, never from anything stored.
        let keys: [u8; 32] = Sha256::new()
            .chain_update(MOCK_KEYS)
            .chain_update(random)
            .finalize()
            .into();
        let verifier = ScramVerifier {
            iterations: scram::DEFAULT_ITERATIONS,
            salt: salt(),
            stored_key: keys,
            server_key: keys,
        };
        (verifier, Some(why))
    };
    match secret {
        Some(Secret::ScramSha256(verifier)) => (verifier.clone(), None),
        Some(Secret::Password(password)) => (
            ScramVerifier::from_password(password, &salt(), scram::DEFAULT_ITERATIONS),
            None,
        ),
        Some(Secret::Md5(_)) => mock(format!(
            "user \"{user}\" has an MD5 secret, which cannot check a SCRAM-SHA-256 proof \
             (store a SCRAM verifier or the password, or use auth_type md5)"
        )),
        None => mock(format!("user \"{user}\" does not exist")),
    }
}

/// The body of a whole client message that must be a 'p' (`expected` names what PostgreSQL
/// calls it).
fn body<'a>(message: &'a [u8], expected: &str) -> Result<&'a [u8], Refusal> {
    let Some(header) = message.get(..HEADER_LEN) else {
        return Err(Refusal::protocol(format!(
            "expected {expected}, got {} bytes, not a whole message",
            message.len()
        )));
    };
    if header[0] != b'p' {
        return Err(Refusal::protocol(format!(
            "expected {expected}, got message type '{}'",
            char::from(header[0]).escape_default()
        )));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if u64::from(len) + 1 != message.len() as u64 {
        return Err(Refusal::protocol(format!(
            "malformed {expected}: its length says {len}, but {} bytes follow the tag",
            message.len() - 1
        )));
    }
    Ok(&message[HEADER_LEN..])
}

#[cfg(test)]
mod tests;
