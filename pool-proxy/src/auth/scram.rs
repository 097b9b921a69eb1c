//! SCRAM-SHA-256, the server's side, as PostgreSQL runs it (RFC 5802 and 7677 with the
//! choices of PostgreSQL's `src/backend/libpq/auth-scram.c`): read the
//! client-first-message, answer with the verifier's salt and iteration count and a nonce
//! made from the caller's randomness, check the client-final-message's proof against the
//! verifier's StoredKey in constant time, and prove the proxy knows the ServerKey.
//!
//! Channel binding is not offered (no SCRAM-SHA-256-PLUS): a client that insists on it
//! (gs2 flag `p`) is refused; `n` (the client cannot bind) and `y` (it could, but the server
//! offered none) are accepted, as PostgreSQL accepts them on a connection without TLS.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::client::Refusal;
use super::secret::ScramVerifier;

/// The one mechanism offered.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// The iteration count of verifiers the proxy computes itself (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The length of salts the proxy makes (PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`).
pub const SALT_LEN: usize = 16;

/// The server's share of the nonce, in random bytes before base64 (PostgreSQL's
/// `SCRAM_RAW_NONCE_LEN`).
pub const NONCE_LEN: usize = 18;

impl ScramVerifier {
    /// The verifier PostgreSQL stores for this password: the password is SASLprep'd first
    /// when it can be (PostgreSQL and libpq use it unprepared when SASLprep refuses it, so
    /// the proxy does too). An iteration count of 0 is taken as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let prepared = stringprep::saslprep(password).unwrap_or(password.into());
        let iterations = iterations.max(1);
        let salted = salted_password(prepared.as_bytes(), salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(hmac(&salted, b"Client Key")).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// PBKDF2-HMAC-SHA-256 for one block: RFC 5802's `Hi(password, salt, i)`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut previous: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = previous;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&previous);
        previous = mac.finalize().into_bytes().into();
        out.iter_mut().zip(previous).for_each(|(o, p)| *o ^= p);
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// One client's SCRAM exchange, from the SASLInitialResponse to the server-final-message.
pub(crate) struct ScramServer {
    user: String,
    verifier: ScramVerifier,
    /// Why the exchange will fail whatever the proof (an unknown user, a secret that cannot
    /// check SCRAM): it still runs to the end, so that the client cannot tell.
    doomed: Option<String>,
    /// The server's share of the nonce, base64.
    server_nonce: String,
    state: State,
}

enum State {
    /// Waiting for the SASLInitialResponse.
    Initial,
    /// The SASLInitialResponse carried no data: the client-first-message comes in a
    /// SASLResponse, after an empty challenge.
    ClientFirst,
    /// The server-first-message is sent: waiting for the client-final-message.
    ClientFinal {
        cbind_flag: u8,
        client_nonce: String,
        client_first_bare: Vec<u8>,
        server_first: String,
    },
}

/// What to send back after a client message.
pub(crate) enum Reply {
    /// AuthenticationSASLContinue's data; the exchange goes on.
    Continue(Vec<u8>),
    /// AuthenticationSASLFinal's data; the client is authenticated.
    Final(Vec<u8>),
}

impl ScramServer {
    /// An exchange checking against `verifier`, or doomed to fail for the reason given.
    /// `nonce` is the caller's randomness for the server's share of the nonce.
    pub(crate) fn new(
        user: &str,
        verifier: ScramVerifier,
        doomed: Option<String>,
        nonce: &[u8; NONCE_LEN],
    ) -> ScramServer {
        ScramServer {
            user: user.to_owned(),
            verifier,
            doomed,
            server_nonce: BASE64.encode(nonce),
            state: State::Initial,
        }
    }

    /// The body of the client's next 'p' message (SASLInitialResponse first, then
    /// SASLResponse).
    pub(crate) fn step(&mut self, body: &[u8]) -> Result<Reply, Refusal> {
        match std::mem::replace(&mut self.state, State::Initial) {
            State::Initial => match initial_response(body)? {
                Some(data) => self.client_first(data),
                None => {
                    self.state = State::ClientFirst;
                    Ok(Reply::Continue(Vec::new()))
                }
            },
            State::ClientFirst => self.client_first(body),
            State::ClientFinal {
                cbind_flag,
                client_nonce,
                client_first_bare,
                server_first,
            } => {
                let last = read_client_final(body, cbind_flag)?;
                let expected_nonce = format!("{client_nonce}{}", self.server_nonce);
                if last.nonce != expected_nonce.as_bytes() {
                    return Err(Refusal::protocol(
                        "invalid SCRAM response: the nonce does not match",
                    ));
                }
                let mut auth_message = client_first_bare;
                auth_message.push(b',');
                auth_message.extend_from_slice(server_first.as_bytes());
                auth_message.push(b',');
                auth_message.extend_from_slice(last.without_proof);
                let proven = self.proof_matches(&auth_message, &last.proof);
                if let Some(why) = &self.doomed {
                    return Err(Refusal::password(&self.user, why.clone()));
                }
                if !proven {
                    return Err(Refusal::password(
                        &self.user,
                        format!("password does not match for user \"{}\"", self.user),
                    ));
                }
                let signature = hmac(&self.verifier.server_key, &auth_message);
                Ok(Reply::Final(
                    format!("v={}", BASE64.encode(signature)).into_bytes(),
                ))
            }
        }
    }

    fn client_first(&mut self, data: &[u8]) -> Result<Reply, Refusal> {
        let first = read_client_first(data)?;
        let server_first = format!(
            "r={}{},s={},i={}",
            first.nonce,
            self.server_nonce,
            BASE64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = Reply::Continue(server_first.clone().into_bytes());
        self.state = State::ClientFinal {
            cbind_flag: first.cbind_flag,
            client_nonce: first.nonce.to_owned(),
            client_first_bare: first.bare.to_vec(),
            server_first,
        };
        Ok(reply)
    }

    /// ClientKey = proof XOR HMAC(StoredKey, AuthMessage); the proof is good when
    /// H(ClientKey) is the StoredKey. Compared in constant time.
    fn proof_matches(&self, auth_message: &[u8], proof: &[u8; 32]) -> bool {
        let signature = hmac(&self.verifier.stored_key, auth_message);
        let mut client_key = *proof;
        client_key
            .iter_mut()
            .zip(signature)
            .for_each(|(k, s)| *k ^= s);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        stored_key.ct_eq(&self.verifier.stored_key).into()
    }
}

/// SASLInitialResponse: the mechanism's name, then the initial response's length (-1 for
/// none) and bytes. The data, if any.
fn initial_response(body: &[u8]) -> Result<Option<&[u8]>, Refusal> {
    let malformed =
        |what: &str| Refusal::protocol(format!("malformed SASLInitialResponse: {what}"));
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed("the mechanism name is not NUL-terminated"))?;
    let (mechanism, rest) = (&body[..nul], &body[nul + 1..]);
    let [a, b, c, d, data @ ..] = rest else {
        return Err(malformed("the initial response's length is missing"));
    };
    if mechanism != MECHANISM.as_bytes() {
        return Err(Refusal::protocol(format!(
            "client selected an invalid SASL authentication mechanism (only {MECHANISM} is offered)"
        )));
    }
    match i32::from_be_bytes([*a, *b, *c, *d]) {
        -1 if data.is_empty() => Ok(None),
        -1 => Err(malformed("bytes follow an absent initial response")),
        len if usize::try_from(len) == Ok(data.len()) => Ok(Some(data)),
        len => Err(malformed(&format!(
            "the initial response's length says {len}, but {} bytes follow",
            data.len()
        ))),
    }
}

fn malformed(what: &str) -> Refusal {
    Refusal::protocol(format!("malformed SCRAM message: {what}"))
}

/// What the proxy keeps of a client-first-message.
struct ClientFirst<'a> {
    cbind_flag: u8,
    nonce: &'a str,
    /// The message after the gs2 header: part of the AuthMessage both sides sign.
    bare: &'a [u8],
}

/// `gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]`
fn read_client_first(data: &[u8]) -> Result<ClientFirst<'_>, Refusal> {
    check_text(data)?;
    let (cbind_flag, rest) = match data {
        [flag @ (b'n' | b'y'), b',', rest @ ..] => (*flag, rest),
        [b'n' | b'y', ..] => {
            return Err(malformed(
                "a comma is expected after the channel-binding flag",
            ))
        }
        [b'p', ..] => {
            return Err(malformed(
                "the client selected SCRAM-SHA-256 without channel binding, \
                 but the SCRAM message includes channel binding data",
            ))
        }
        _ => return Err(malformed("unexpected channel-binding flag")),
    };
    let bare = match rest {
        [b'a', ..] => {
            return Err(Refusal::unsupported(
                "client uses authorization identity, but it is not supported",
            ))
        }
        [b',', bare @ ..] => bare,
        _ => return Err(malformed("unexpected attribute in client-first-message")),
    };
    if bare.first() == Some(&b'm') {
        return Err(Refusal::unsupported(
            "client requires an unsupported SCRAM extension",
        ));
    }
    let mut attrs = Attrs::new(bare);
    // The user name is the startup packet's; PostgreSQL ignores this one (libpq sends "").
    attrs.expect(b'n')?;
    let nonce = attrs.expect(b'r')?;
    if nonce.is_empty() {
        return Err(malformed("the client nonce is empty"));
    }
    if !nonce
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(Refusal::protocol("non-printable characters in SCRAM nonce"));
    }
    while !attrs.at_end() {
        attrs.any()?;
    }
    Ok(ClientFirst {
        cbind_flag,
        nonce: std::str::from_utf8(nonce).expect("printable ASCII is UTF-8"),
        bare,
    })
}

/// What the proxy reads of a client-final-message.
struct ClientFinal<'a> {
    nonce: &'a [u8],
    proof: [u8; 32],
    /// The message up to the proof: the last part of the AuthMessage.
    without_proof: &'a [u8],
}

/// `channel-binding "," nonce ["," extensions] "," proof`
fn read_client_final(data: &[u8], cbind_flag: u8) -> Result<ClientFinal<'_>, Refusal> {
    check_text(data)?;
    let mut attrs = Attrs::new(data);
    let binding = attrs.expect(b'c')?;
    // Without channel binding the attribute is the gs2 header the client first sent,
    // base64: "n,," or "y,,".
    let expected: &[u8] = if cbind_flag == b'y' { b"eSws" } else { b"biws" };
    if binding != expected {
        return Err(Refusal::protocol(
            "unexpected SCRAM channel-binding attribute in client-final-message",
        ));
    }
    let nonce = attrs.expect(b'r')?;
    let (proof_at, proof) = loop {
        // Extensions are skipped until the proof, which comes last.
        let at = attrs.offset();
        if let (b'p', value) = attrs.any()? {
            break (at, value);
        }
    };
    let proof = BASE64
        .decode(proof)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| malformed("malformed proof in client-final-message"))?;
    if !attrs.at_end() {
        return Err(malformed(
            "garbage found at the end of client-final-message",
        ));
    }
    Ok(ClientFinal {
        nonce,
        proof,
        // `at` is just after the comma that precedes "p=": the channel binding and nonce
        // attributes were read before it, so it is at least 1.
        without_proof: &data[..proof_at - 1],
    })
}

/// A SCRAM message is text: PostgreSQL reads it as a C string, so an empty one or one with
/// a NUL inside is refused before any attribute is.
fn check_text(data: &[u8]) -> Result<(), Refusal> {
    if data.is_empty() {
        return Err(malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// `name=value` attributes separated by commas, read in order.
struct Attrs<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Attrs<'a> {
    fn new(data: &'a [u8]) -> Self {
        Attrs { data, at: 0 }
    }

    fn offset(&self) -> usize {
        self.at
    }

    fn at_end(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The value of the attribute `name`, which must come next.
    fn expect(&mut self, name: u8) -> Result<&'a [u8], Refusal> {
        match self.data.get(self.at) {
            Some(&found) if found == name => self.value(name),
            Some(&found) => Err(malformed(&format!(
                "expected attribute \"{}\" but found \"{}\"",
                char::from(name),
                char::from(found).escape_default()
            ))),
            None => Err(malformed(&format!(
                "expected attribute \"{}\" but found the end of the message",
                char::from(name)
            ))),
        }
    }

    /// Whatever attribute comes next: its name (a letter) and value.
    fn any(&mut self) -> Result<(u8, &'a [u8]), Refusal> {
        match self.data.get(self.at) {
            Some(&name) if name.is_ascii_alphabetic() => Ok((name, self.value(name)?)),
            Some(&found) => Err(malformed(&format!(
                "attribute expected, but found invalid character \"{}\"",
                char::from(found).escape_default()
            ))),
            None => Err(malformed(
                "attribute expected, but found the end of the message",
            )),
        }
    }

    /// After the name: `=`, then the value up to the next comma (consumed) or the end.
    fn value(&mut self, name: u8) -> Result<&'a [u8], Refusal> {
        if self.data.get(self.at + 1) != Some(&b'=') {
            return Err(malformed(&format!(
                "expected character \"=\" for attribute \"{}\"",
                char::from(name)
            )));
        }
        let start = self.at + 2;
        let end = self.data[start..]
            .iter()
            .position(|&b| b == b',')
            .map_or(self.data.len(), |i| start + i);
        self.at = end + 1;
        Ok(&self.data[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_from_a_password_matches_postgres_protocols() {
        // postgres-protocol's salt is random: read its salt and iterations back, and
        // compute the same verifier from them.
        let text = postgres_protocol::password::scram_sha_256(b"hunter2");
        let super::super::Secret::ScramSha256(theirs) = super::super::Secret::parse(&text).unwrap()
        else {
            panic!("not a verifier: {text}");
        };
        let ours = ScramVerifier::from_password("hunter2", &theirs.salt, theirs.iterations);
        assert!(ours == theirs, "the keys differ");
    }

    #[test]
    fn saslprep_applies_before_hashing() {
        // U+00AD SOFT HYPHEN maps to nothing, U+00A0 NO-BREAK SPACE to a space.
        let salt = [7u8; SALT_LEN];
        let prepared = ScramVerifier::from_password("pass word", &salt, 2);
        assert!(ScramVerifier::from_password("pa\u{ad}ss\u{a0}word", &salt, 2) == prepared);
        // A prohibited character (U+0007) makes SASLprep refuse: the password is used as
        // it is, so it differs from the same text without it.
        assert!(
            ScramVerifier::from_password("pass\u{7}word", &salt, 2)
                != ScramVerifier::from_password("password", &salt, 2)
        );
    }

    #[test]
    fn attributes_are_read_as_postgresql_reads_them() {
        let mut attrs = Attrs::new(b"n=,r=abc,x=1,");
        assert_eq!(attrs.expect(b'n').unwrap(), b"");
        assert_eq!(attrs.expect(b'r').unwrap(), b"abc");
        assert_eq!(attrs.any().unwrap(), (b'x', &b"1"[..]));
        assert!(attrs.at_end());
        assert!(Attrs::new(b"r").expect(b'r').is_err());
        assert!(Attrs::new(b"1=2").any().is_err());
        assert!(Attrs::new(b"").any().is_err());
    }
}
