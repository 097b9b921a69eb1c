//! Fuzz target `proxy_auth`: client messages fed to `pool_proxy::auth::ClientAuth`, for
//! any method, user and secret. Messages come raw (arbitrary bytes, or an arbitrary body
//! under a correct header) or well-formed, built by an honest SCRAM or MD5 client inside
//! the harness (its own HMAC, SHA-256 and MD5, not the proxy's) that knows the password,
//! or a wrong one, and may tamper with the nonce, the channel binding or the proof.
//!
//! Checked after every step:
//! - no panic; every step's bytes are whole server messages: `Send` one Authentication
//!   request, `Done` ending in AuthenticationOk (after AuthenticationSASLFinal for SCRAM),
//!   `Failed` one FATAL ErrorResponse;
//! - exactly one `Done` or `Failed`, then nothing else: later calls return `Send` with no
//!   bytes and change nothing; `failure()` is set exactly when `Failed` was returned;
//! - `Done` only for a client that knew the password: trust, or the last message was the
//!   honest client's answer with the right password, for a user whose secret can check it;
//! - an honest, untampered answer in its turn ends the exchange as it must: `Done` with the
//!   right password and a secret that can check it, else `Failed` with 28P01; and the
//!   client accepts the SCRAM server signature.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use libfuzzer_sys::fuzz_target;
use md5::{Digest as _, Md5};
use pool_proxy::auth::{AuthMethod, ClientAuth, ScramVerifier, Secret, Step};
use sha2::Sha256;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Scram,
    Md5,
    Trust,
}

#[derive(Arbitrary, Debug)]
enum SecretKind {
    Unknown,
    Password,
    Md5,
    /// A verifier with few iterations, so that runs stay fast.
    Verifier {
        iterations: u8,
        salt: [u8; 4],
    },
}

/// How the client-first-message departs from an honest one.
#[derive(Arbitrary, Debug)]
enum FirstTamper {
    /// Sent as a SASLResponse (no mechanism, no length).
    NotInitial,
    /// SCRAM-SHA-256-PLUS asked for.
    Plus,
    /// Another gs2 flag: `p` (channel binding demanded), anything else.
    Flag(u8),
    /// An extension after the nonce (arbitrary bytes, not always an attribute).
    Extension(Vec<u8>),
}

/// How the client-final-message departs from an honest one.
#[derive(Arbitrary, Debug)]
enum FinalTamper {
    /// Channel binding data for this gs2 flag instead of the one first sent.
    Binding(u8),
    /// The echoed nonce with one byte changed (at this index, to this byte).
    NonceByte(u8, u8),
    /// Another nonce altogether.
    Nonce(Vec<u8>),
    /// One bit of the proof flipped.
    ProofBit(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Bytes as they are, header or not.
    Raw(Vec<u8>),
    /// An arbitrary body under a correct header.
    Framed { tag: u8, body: Vec<u8> },
    /// SASLInitialResponse with a client-first-message (gs2 flag `y` or `n`).
    ClientFirst {
        y: bool,
        nonce: Vec<u8>,
        tamper: Option<FirstTamper>,
    },
    /// SASLInitialResponse without an initial response (length -1).
    NoInitialResponse,
    /// SASLResponse with a client-final-message proving the right password or a wrong one.
    ClientFinal {
        right_password: bool,
        tamper: Option<FinalTamper>,
    },
    /// PasswordMessage with the MD5 answer for the right password or a wrong one.
    Md5Answer { right_password: bool },
}

#[derive(Arbitrary, Debug)]
struct Case {
    method: Method,
    user: u8,
    password: Vec<u8>,
    secret: SecretKind,
    random: [u8; 32],
    ops: Vec<Op>,
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn sasl_initial(mechanism: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    match data {
        Some(data) => {
            body.extend_from_slice(&(data.len() as i32).to_be_bytes());
            body.extend_from_slice(data);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    message(b'p', &body)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 5802's Hi(), written here again so that the oracle does not share the proxy's code.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut previous = hmac(password, &block);
    let mut out = previous;
    for _ in 1..iterations {
        previous = hmac(password, &previous);
        out.iter_mut().zip(previous).for_each(|(o, p)| *o ^= p);
    }
    out
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut digest = Md5::new();
    parts.iter().for_each(|p| digest.update(p));
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits whole server messages; panics on anything else.
fn server_messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "a partial header: {bytes:?}");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert!(
            len >= 4 && bytes.len() > len,
            "a partial message: {bytes:?}"
        );
        out.push((bytes[0], bytes[5..len + 1].to_vec()));
        bytes = &bytes[len + 1..];
    }
    out
}

/// The code and data of an Authentication message.
fn authentication(msg: &(u8, Vec<u8>)) -> (u32, Vec<u8>) {
    assert_eq!(msg.0, b'R', "not an Authentication message");
    assert!(msg.1.len() >= 4);
    let code = u32::from_be_bytes([msg.1[0], msg.1[1], msg.1[2], msg.1[3]]);
    (code, msg.1[4..].to_vec())
}

/// The severity and SQLSTATE of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut severity = String::new();
    let mut code = String::new();
    let mut rest = body;
    while let [field, tail @ ..] = rest {
        if *field == 0 {
            assert!(tail.is_empty(), "bytes after the fields");
            return (severity, code);
        }
        let nul = tail
            .iter()
            .position(|&b| b == 0)
            .expect("a NUL-terminated field");
        let value = String::from_utf8(tail[..nul].to_vec()).expect("UTF-8");
        match field {
            b'V' => severity = value,
            b'C' => code = value,
            _ => {}
        }
        rest = &tail[nul + 1..];
    }
    panic!("unterminated ErrorResponse");
}

/// What the honest client remembers of the SCRAM exchange.
struct Scram {
    gs2_flag: u8,
    client_first_bare: Vec<u8>,
    /// Set when the server-first-message came back.
    server_first: Option<String>,
}

fuzz_target!(|case: Case| {
    let user = format!("user{}", case.user % 4);
    // "Pw#" marks the password: it must never show in a failure.
    let letters: String = case
        .password
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .take(12)
        .collect();
    let password = format!("Pw#{letters}");
    let wrong = format!("{password}!");
    let secret = match case.secret {
        SecretKind::Unknown => None,
        SecretKind::Password => Some(Secret::Password(password.clone())),
        SecretKind::Md5 => Some(Secret::Md5(
            md5_hex(&[password.as_bytes(), user.as_bytes()])
                .into_bytes()
                .try_into()
                .unwrap(),
        )),
        SecretKind::Verifier { iterations, salt } => Some(Secret::ScramSha256(
            ScramVerifier::from_password(&password, &salt, u32::from(iterations % 8) + 1),
        )),
    };
    let method = match case.method {
        Method::Scram => AuthMethod::ScramSha256,
        Method::Md5 => AuthMethod::Md5,
        Method::Trust => AuthMethod::Trust,
    };
    let (mut auth, first) = ClientAuth::start(method, &user, secret.as_ref(), case.random);

    // Which exchange the proxy chose, from its first message.
    let mut over = false;
    let mut scram: Option<Scram> = None;
    let mut md5_salt: Option<[u8; 4]> = None;
    match &first {
        Step::Done(bytes) => {
            assert_eq!(method, AuthMethod::Trust, "Done without a question");
            assert_eq!(server_messages(bytes), [(b'R', vec![0, 0, 0, 0])]);
            over = true;
        }
        Step::Send(bytes) => {
            let msgs = server_messages(bytes);
            assert_eq!(msgs.len(), 1);
            match authentication(&msgs[0]) {
                (10, data) => {
                    assert_eq!(data, b"SCRAM-SHA-256\0\0");
                    scram = Some(Scram {
                        gs2_flag: b'n',
                        client_first_bare: Vec::new(),
                        server_first: None,
                    });
                }
                (5, data) => {
                    assert_eq!(method, AuthMethod::Md5);
                    assert!(!matches!(secret, Some(Secret::ScramSha256(_))));
                    md5_salt = Some(data.try_into().expect("a 4-byte salt"));
                }
                (code, _) => panic!("unexpected first request {code}"),
            }
        }
        Step::Failed(_) => panic!("failed before the client said anything"),
    }
    assert_eq!(auth.failure(), None);
    // Can the secret check this exchange's proof?
    let checkable = match (&secret, md5_salt.is_some()) {
        (None, _) => false,
        (Some(Secret::Md5(_)), false) => false,
        _ => true,
    };
    let mut failure_seen: Option<String> = None;

    for op in case.ops.iter().take(16) {
        // What this message is, to the oracle: None for anything but an honest answer in
        // its turn; Some(right) for one.
        let mut honest_answer: Option<bool> = None;
        // A proof the client could check the server's signature against.
        let mut expected_signature: Option<[u8; 32]> = None;
        let mut awaiting_server_first = false;
        let bytes = match op {
            Op::Raw(bytes) => bytes.clone(),
            Op::Framed { tag, body } => message(*tag, body),
            Op::NoInitialResponse => sasl_initial("SCRAM-SHA-256", None),
            Op::ClientFirst { y, nonce, tamper } => {
                let mut flag = if *y { b'y' } else { b'n' };
                if let Some(FirstTamper::Flag(other)) = tamper {
                    flag = *other;
                }
                let nonce: String = nonce
                    .iter()
                    .map(|b| char::from(0x21 + b % 0x5e))
                    .filter(|&c| c != ',')
                    .take(24)
                    .collect();
                let mut bare = format!("n=,r={nonce}");
                if let Some(FirstTamper::Extension(ext)) = tamper {
                    bare.push(',');
                    bare.push_str(&String::from_utf8_lossy(ext));
                }
                let gs2 = if flag == b'p' {
                    "p=tls-server-end-point,,".to_owned()
                } else {
                    format!("{},,", char::from(flag))
                };
                let data = format!("{gs2}{bare}");
                if let Some(s) = scram.as_mut() {
                    s.gs2_flag = flag;
                    s.client_first_bare = bare.into_bytes();
                    s.server_first = None;
                    awaiting_server_first = true;
                }
                match tamper {
                    Some(FirstTamper::NotInitial) => message(b'p', data.as_bytes()),
                    Some(FirstTamper::Plus) => {
                        sasl_initial("SCRAM-SHA-256-PLUS", Some(data.as_bytes()))
                    }
                    _ => sasl_initial("SCRAM-SHA-256", Some(data.as_bytes())),
                }
            }
            Op::ClientFinal {
                right_password,
                tamper,
            } => {
                let (flag, bare, server_first) = match &scram {
                    Some(s) => (
                        s.gs2_flag,
                        s.client_first_bare.clone(),
                        s.server_first.clone(),
                    ),
                    None => (b'n', Vec::new(), None),
                };
                let server_nonce = server_first
                    .as_deref()
                    .and_then(|f| f.split(',').next())
                    .and_then(|r| r.strip_prefix("r="))
                    .unwrap_or("")
                    .to_owned();
                let binding_flag = match tamper {
                    Some(FinalTamper::Binding(other)) => *other,
                    _ => flag,
                };
                let mut r = server_nonce.clone().into_bytes();
                match tamper {
                    Some(FinalTamper::NonceByte(at, to)) if !r.is_empty() => {
                        let at = usize::from(*at) % r.len();
                        r[at] = *to;
                    }
                    Some(FinalTamper::Nonce(other)) => r = other.clone(),
                    _ => {}
                }
                let binding = BASE64.encode(format!("{},,", char::from(binding_flag)));
                let mut without_proof = format!("c={binding},r=").into_bytes();
                without_proof.extend_from_slice(&r);
                // The proof, when the salt and iterations are known.
                let mut proof = [0u8; 32];
                if let Some(first) = &server_first {
                    let mut salt = Vec::new();
                    let mut iterations = 1;
                    for attr in first.split(',') {
                        if let Some(s) = attr.strip_prefix("s=") {
                            salt = BASE64.decode(s).unwrap();
                        }
                        if let Some(i) = attr.strip_prefix("i=") {
                            iterations = i.parse().unwrap();
                        }
                    }
                    let pw = if *right_password { &password } else { &wrong };
                    let salted = salted_password(pw.as_bytes(), &salt, iterations);
                    let client_key = hmac(&salted, b"Client Key");
                    let stored_key: [u8; 32] = <Sha256 as sha2::Digest>::digest(client_key).into();
                    let mut auth_message = bare.clone();
                    auth_message.push(b',');
                    auth_message.extend_from_slice(first.as_bytes());
                    auth_message.push(b',');
                    auth_message.extend_from_slice(&without_proof);
                    let signature = hmac(&stored_key, &auth_message);
                    proof = client_key;
                    proof.iter_mut().zip(signature).for_each(|(p, s)| *p ^= s);
                    // A tamper that changed nothing leaves the answer honest.
                    let honest = binding_flag == flag
                        && r == server_nonce.as_bytes()
                        && !matches!(tamper, Some(FinalTamper::ProofBit(_)));
                    if honest {
                        honest_answer = Some(*right_password);
                        expected_signature =
                            Some(hmac(&hmac(&salted, b"Server Key"), &auth_message));
                    }
                }
                if let Some(FinalTamper::ProofBit(bit)) = tamper {
                    proof[usize::from(*bit / 8) % 32] ^= 1 << (*bit % 8);
                }
                let mut data = without_proof;
                data.extend_from_slice(format!(",p={}", BASE64.encode(proof)).as_bytes());
                message(b'p', &data)
            }
            Op::Md5Answer { right_password } => {
                let pw = if *right_password { &password } else { &wrong };
                let salt = md5_salt.unwrap_or_default();
                let inner = md5_hex(&[pw.as_bytes(), user.as_bytes()]);
                let answer = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt]));
                if md5_salt.is_some() {
                    honest_answer = Some(*right_password);
                }
                let mut body = answer.into_bytes();
                body.push(0);
                message(b'p', &body)
            }
        };
        let step = auth.handle(&bytes);
        if over {
            assert_eq!(step, Step::Send(Vec::new()), "a step after the end");
            assert_eq!(auth.failure(), failure_seen.as_deref());
            continue;
        }
        // An honest SCRAM answer is in its turn once the harness has seen the
        // server-first-message (any other message after it ends the exchange); an MD5
        // answer always is.
        let in_turn = scram
            .as_ref()
            .map_or(md5_salt.is_some(), |s| s.server_first.is_some());
        let expected = honest_answer.filter(|_| in_turn);
        match step {
            Step::Send(bytes) => {
                assert_eq!(expected, None, "an honest answer did not end the exchange");
                let msgs = server_messages(&bytes);
                assert_eq!(msgs.len(), 1, "Send carries one message");
                let (code, data) = authentication(&msgs[0]);
                assert_eq!(code, 11, "only SCRAM continues");
                let s = scram.as_mut().expect("SCRAM continues only SCRAM");
                if data.is_empty() {
                    // The empty challenge after a SASLInitialResponse without data.
                    assert!(s.server_first.is_none());
                } else {
                    let text = String::from_utf8(data).expect("a UTF-8 server-first-message");
                    assert!(text.starts_with("r="), "{text}");
                    if awaiting_server_first {
                        s.server_first = Some(text);
                    }
                }
                assert_eq!(auth.failure(), None);
            }
            Step::Done(bytes) => {
                over = true;
                assert!(checkable, "Done for a secret that cannot check the proof");
                assert_eq!(
                    expected,
                    Some(true),
                    "Done for a client that did not prove the password: {op:?}"
                );
                let msgs = server_messages(&bytes);
                assert_eq!(msgs.last(), Some(&(b'R', vec![0, 0, 0, 0])));
                if let Some(signature) = expected_signature {
                    assert_eq!(msgs.len(), 2);
                    let (code, data) = authentication(&msgs[0]);
                    assert_eq!(code, 12);
                    assert_eq!(data, format!("v={}", BASE64.encode(signature)).into_bytes());
                } else {
                    assert_eq!(msgs.len(), 1);
                }
                assert_eq!(auth.failure(), None);
            }
            Step::Failed(bytes) => {
                over = true;
                let msgs = server_messages(&bytes);
                assert_eq!(msgs.len(), 1);
                assert_eq!(msgs[0].0, b'E');
                let (severity, code) = error_fields(&msgs[0].1);
                assert_eq!(severity, "FATAL");
                assert!(
                    ["08P01", "0A000", "28P01"].contains(&code.as_str()),
                    "{code}"
                );
                if let Some(right) = expected {
                    assert!(
                        !(right && checkable),
                        "the right password was refused: {code}"
                    );
                    assert_eq!(code, "28P01");
                }
                let failure = auth.failure().expect("failure() after Failed").to_owned();
                assert!(
                    !failure.contains("Pw#"),
                    "the password in a failure: {failure}"
                );
                failure_seen = Some(failure);
            }
        }
    }
});
