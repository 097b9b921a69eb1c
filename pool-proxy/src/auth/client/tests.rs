//! The proxy's side of authentication driven by the client side tokio-postgres uses
//! (postgres-protocol's `ScramSha256` and `md5_hash`), with secrets postgres-protocol
//! writes; every reply is parsed by postgres-protocol's backend codec.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::*;

const RANDOM: [u8; 32] = *b"0123456789abcdefghijklmnopqrstuv";
const PASSWORD: &str = "hunter2";

/// A server message, as postgres-protocol reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Sasl(Vec<String>),
    Continue(Vec<u8>),
    Final(Vec<u8>),
    Ok,
    Md5([u8; 4]),
    Error {
        severity: String,
        code: String,
        message: String,
    },
}

/// Every message in `bytes`, which must be whole messages and nothing else.
fn replies(bytes: &[u8]) -> Vec<Reply> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let message = Message::parse(&mut buf)
            .expect("a valid server message")
            .expect("a whole server message");
        out.push(match message {
            Message::AuthenticationSasl(body) => Reply::Sasl(
                body.mechanisms()
                    .map(|m| Ok(m.to_owned()))
                    .collect()
                    .unwrap(),
            ),
            Message::AuthenticationSaslContinue(body) => Reply::Continue(body.data().to_vec()),
            Message::AuthenticationSaslFinal(body) => Reply::Final(body.data().to_vec()),
            Message::AuthenticationOk => Reply::Ok,
            Message::AuthenticationMd5Password(body) => Reply::Md5(body.salt()),
            Message::ErrorResponse(body) => {
                let fields: Vec<(u8, String)> = body
                    .fields()
                    .map(|f| {
                        Ok((
                            f.type_(),
                            String::from_utf8(f.value_bytes().to_vec()).unwrap(),
                        ))
                    })
                    .collect()
                    .unwrap();
                let get = |code| {
                    fields
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map(|(_, v)| v.clone())
                        .unwrap()
                };
                Reply::Error {
                    severity: get(b'V'),
                    code: get(b'C'),
                    message: get(b'M'),
                }
            }
            _ => panic!("unexpected server message"),
        });
    }
    out
}

fn one(bytes: &[u8]) -> Reply {
    let mut all = replies(bytes);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response(mechanism, data, &mut buf).unwrap();
    buf.to_vec()
}

fn sasl_response(data: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frontend::sasl_response(data, &mut buf).unwrap();
    buf.to_vec()
}

fn password_message(text: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frontend::password_message(text.as_bytes(), &mut buf).unwrap();
    buf.to_vec()
}

fn verifier(password: &str) -> Secret {
    Secret::parse(&postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    ))
    .unwrap()
}

fn md5_secret(password: &str, user: &str) -> Secret {
    Secret::parse(&postgres_protocol::password::md5(password.as_bytes(), user)).unwrap()
}

/// Expects `Failed` with this SQLSTATE; the message.
fn failed(step: Step, code: &str) -> String {
    let Step::Failed(bytes) = step else {
        panic!("expected Failed, got {step:?}");
    };
    match one(&bytes) {
        Reply::Error {
            severity,
            code: got,
            message,
        } => {
            assert_eq!(severity, "FATAL");
            assert_eq!(got, code, "{message}");
            message
        }
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

fn wrong_password(user: &str) -> String {
    format!("password authentication failed for user \"{user}\"")
}

/// What a whole SCRAM exchange came to.
struct Scram {
    /// Every step the proxy returned, `start`'s first.
    steps: Vec<Step>,
    /// The server-first-message.
    server_first: Option<Vec<u8>>,
    /// The client's verdict on the server's signature, if one came.
    finish: Option<std::io::Result<()>>,
    auth: ClientAuth,
}

/// Drives a whole SCRAM exchange with postgres-protocol's client.
fn scram(
    method: AuthMethod,
    user: &str,
    secret: Option<&Secret>,
    password: &str,
    binding: ChannelBinding,
    random: [u8; 32],
) -> Scram {
    let (mut auth, step) = ClientAuth::start(method, user, secret, random);
    let Step::Send(bytes) = &step else {
        panic!("expected AuthenticationSASL, got {step:?}");
    };
    assert_eq!(one(bytes), Reply::Sasl(vec!["SCRAM-SHA-256".into()]));
    let mut steps = vec![step];
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let step = auth.handle(&sasl_initial("SCRAM-SHA-256", client.message()));
    let Step::Send(bytes) = &step else {
        steps.push(step);
        return Scram {
            steps,
            server_first: None,
            finish: None,
            auth,
        };
    };
    let Reply::Continue(server_first) = one(bytes) else {
        panic!("expected AuthenticationSASLContinue");
    };
    steps.push(step);
    client
        .update(&server_first)
        .expect("the client accepts the server-first-message");
    let step = auth.handle(&sasl_response(client.message()));
    let finish = match &step {
        Step::Done(bytes) => {
            let all = replies(bytes);
            let [Reply::Final(data), Reply::Ok] = &all[..] else {
                panic!("expected AuthenticationSASLFinal then AuthenticationOk: {all:?}");
            };
            Some(client.finish(data))
        }
        _ => None,
    };
    steps.push(step);
    Scram {
        steps,
        server_first: Some(server_first),
        finish,
        auth,
    }
}

/// The salt and iteration count of a server-first-message.
fn salt_and_iterations(server_first: &[u8]) -> (Vec<u8>, u32) {
    let text = std::str::from_utf8(server_first).unwrap();
    let mut salt = None;
    let mut iterations = None;
    for attr in text.split(',') {
        if let Some(s) = attr.strip_prefix("s=") {
            salt = Some(BASE64.decode(s).unwrap());
        }
        if let Some(i) = attr.strip_prefix("i=") {
            iterations = Some(i.parse().unwrap());
        }
    }
    (salt.unwrap(), iterations.unwrap())
}

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

#[test]
fn scram_with_a_verifier_logs_in_and_the_client_accepts_the_server_signature() {
    let secret = verifier(PASSWORD);
    for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let run = scram(
            AuthMethod::ScramSha256,
            "alice",
            Some(&secret),
            PASSWORD,
            binding,
            RANDOM,
        );
        assert!(matches!(run.steps[2], Step::Done(_)), "{:?}", run.steps[2]);
        run.finish
            .unwrap()
            .expect("the client checks the server signature");
        assert_eq!(run.auth.failure(), None);
        // The nonce is the client's followed by the caller's randomness, base64.
        let server_first = String::from_utf8(run.server_first.unwrap()).unwrap();
        let nonce = server_first.split(',').next().unwrap();
        assert!(nonce.ends_with(&BASE64.encode(&RANDOM[..18])), "{nonce}");
    }
}

#[test]
fn a_server_signature_from_another_verifier_is_refused_by_the_client() {
    // The client's `finish` really checks the signature: a verifier with the same salt and
    // iterations and the right StoredKey but another ServerKey logs the client in on the
    // proxy's side, and the client refuses the proxy.
    let Secret::ScramSha256(mut forged) = verifier(PASSWORD) else {
        unreachable!()
    };
    forged.server_key[0] ^= 1;
    let run = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&Secret::ScramSha256(forged)),
        PASSWORD,
        ChannelBinding::unsupported(),
        RANDOM,
    );
    assert!(run.finish.unwrap().is_err());
}

#[test]
fn scram_with_a_password_secret_computes_a_verifier_with_saslprep() {
    // U+00AD SOFT HYPHEN is mapped to nothing by SASLprep: on both sides, or neither.
    let secret = Secret::Password("hun\u{ad}ter2".into());
    let run = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&secret),
        "hunter2",
        ChannelBinding::unsupported(),
        RANDOM,
    );
    run.finish.unwrap().unwrap();
    let (salt, iterations) = salt_and_iterations(&run.server_first.unwrap());
    assert_eq!((salt.len(), iterations), (16, 4096));
}

#[test]
fn a_wrong_password_fails_with_postgresqls_text() {
    for secret in [verifier(PASSWORD), Secret::Password(PASSWORD.into())] {
        let mut run = scram(
            AuthMethod::ScramSha256,
            "alice",
            Some(&secret),
            "hunter3",
            ChannelBinding::unsupported(),
            RANDOM,
        );
        assert_eq!(run.steps.len(), 3);
        let last = run.steps.pop().unwrap();
        assert_eq!(failed(last, "28P01"), wrong_password("alice"));
        let why = run.auth.failure().unwrap();
        assert!(
            why.contains("does not match") && !why.contains("hunter"),
            "{why}"
        );
    }
}

#[test]
fn an_unknown_user_gets_the_same_exchange_and_error_as_a_wrong_password() {
    let secret = verifier(PASSWORD);
    let known = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&secret),
        "wrong",
        ChannelBinding::unsupported(),
        RANDOM,
    );
    let unknown = scram(
        AuthMethod::ScramSha256,
        "alice",
        None,
        PASSWORD,
        ChannelBinding::unsupported(),
        RANDOM,
    );
    assert_eq!(known.steps.len(), unknown.steps.len());
    assert_eq!(known.steps[0], unknown.steps[0]);
    // The same error, byte for byte.
    assert_eq!(known.steps[2], unknown.steps[2]);
    failed(unknown.steps[2].clone(), "28P01");
    // A salt and iteration count shaped like a stored verifier's.
    let (salt, iterations) = salt_and_iterations(unknown.server_first.as_ref().unwrap());
    let (known_salt, known_iterations) = salt_and_iterations(known.server_first.as_ref().unwrap());
    assert_eq!(
        (salt.len(), iterations),
        (known_salt.len(), known_iterations)
    );
    assert!(unknown.auth.failure().unwrap().contains("does not exist"));
}

#[test]
fn with_a_salt_key_the_salts_of_users_without_one_stay_the_same() {
    let salt_of = |secret: Option<&Secret>, random: [u8; 32], key: Option<&[u8; 32]>| {
        let (mut auth, _) = match key {
            Some(key) => ClientAuth::start_with_salt_key(
                AuthMethod::ScramSha256,
                "alice",
                secret,
                random,
                key,
            ),
            None => ClientAuth::start(AuthMethod::ScramSha256, "alice", secret, random),
        };
        let client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let Step::Send(bytes) = auth.handle(&sasl_initial("SCRAM-SHA-256", client.message()))
        else {
            panic!("no server-first-message");
        };
        let Reply::Continue(server_first) = one(&bytes) else {
            panic!("no server-first-message");
        };
        salt_and_iterations(&server_first).0
    };
    let other = [9u8; 32];
    let key = [42u8; 32];
    let password = Secret::Password(PASSWORD.into());
    for secret in [None, Some(&password)] {
        assert_eq!(
            salt_of(secret, RANDOM, Some(&key)),
            salt_of(secret, other, Some(&key))
        );
        assert_ne!(salt_of(secret, RANDOM, None), salt_of(secret, other, None));
    }
}

#[test]
fn the_exchange_is_deterministic_given_the_randomness() {
    let secret = Secret::Password(PASSWORD.into());
    let server_first = |random| {
        scram(
            AuthMethod::ScramSha256,
            "alice",
            Some(&secret),
            PASSWORD,
            ChannelBinding::unsupported(),
            random,
        )
        .server_first
        .unwrap()
    };
    // The client's nonce differs each time: compare what follows it.
    let tail = |first: Vec<u8>| {
        let text = String::from_utf8(first).unwrap();
        let (nonce, rest) = text.split_once(',').unwrap();
        (nonce[nonce.len() - 24..].to_owned(), rest.to_owned())
    };
    assert_eq!(tail(server_first(RANDOM)), tail(server_first(RANDOM)));
    assert_ne!(tail(server_first(RANDOM)), tail(server_first([1; 32])));
}

#[test]
fn an_md5_secret_asked_for_scram_runs_the_exchange_and_fails_at_its_end() {
    let secret = md5_secret(PASSWORD, "alice");
    let mut run = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&secret),
        PASSWORD,
        ChannelBinding::unsupported(),
        RANDOM,
    );
    assert_eq!(run.steps.len(), 3);
    assert_eq!(
        failed(run.steps.pop().unwrap(), "28P01"),
        wrong_password("alice")
    );
    let why = run.auth.failure().unwrap();
    assert!(why.contains("MD5 secret"), "{why}");
}

#[test]
fn md5_asks_users_with_a_scram_verifier_for_scram() {
    let secret = verifier(PASSWORD);
    let run = scram(
        AuthMethod::Md5,
        "alice",
        Some(&secret),
        PASSWORD,
        ChannelBinding::unsupported(),
        RANDOM,
    );
    run.finish.unwrap().unwrap();
}

/// Drives an MD5 exchange with postgres-protocol's `md5_hash`.
fn md5(user: &str, secret: Option<&Secret>, password: &str) -> (ClientAuth, Vec<Step>) {
    let (mut auth, step) = ClientAuth::start(AuthMethod::Md5, user, secret, RANDOM);
    let Step::Send(bytes) = &step else {
        panic!("expected AuthenticationMD5Password, got {step:?}");
    };
    let Reply::Md5(salt) = one(bytes) else {
        panic!("expected AuthenticationMD5Password");
    };
    assert_eq!(salt, RANDOM[..4]);
    let answer = md5_hash(user.as_bytes(), password.as_bytes(), salt);
    let last = auth.handle(&password_message(&answer));
    (auth, vec![step, last])
}

#[test]
fn md5_logs_in_with_an_md5_secret_or_a_password() {
    for secret in [
        md5_secret(PASSWORD, "alice"),
        Secret::Password(PASSWORD.into()),
    ] {
        let (auth, steps) = md5("alice", Some(&secret), PASSWORD);
        assert_eq!(steps[1], Step::Done(authentication_ok()));
        assert_eq!(auth.failure(), None);
    }
}

#[test]
fn md5_with_a_wrong_password_or_an_unknown_user_fails_the_same_way() {
    let secret = md5_secret(PASSWORD, "alice");
    let (known_auth, mut known) = md5("alice", Some(&secret), "wrong");
    let (unknown_auth, mut unknown) = md5("alice", None, PASSWORD);
    assert_eq!(known, unknown);
    assert_eq!(
        failed(known.pop().unwrap(), "28P01"),
        wrong_password("alice")
    );
    assert_eq!(
        failed(unknown.pop().unwrap(), "28P01"),
        wrong_password("alice")
    );
    assert!(known_auth.failure().unwrap().contains("does not match"));
    assert!(unknown_auth.failure().unwrap().contains("does not exist"));
    // The MD5 hash of another user's name does not log this one in.
    let (_, steps) = md5("bob", Some(&secret), PASSWORD);
    assert_eq!(failed(steps[1].clone(), "28P01"), wrong_password("bob"));
}

#[test]
fn malformed_md5_answers_are_refused() {
    let secret = md5_secret(PASSWORD, "alice");
    let start = || ClientAuth::start(AuthMethod::Md5, "alice", Some(&secret), RANDOM).0;
    assert_eq!(
        failed(start().handle(&password_message("")), "28P01"),
        "empty password returned by client"
    );
    let mut body = b"md5abc\0def\0".to_vec();
    let mut message = vec![b'p'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.append(&mut body);
    assert!(failed(start().handle(&message), "08P01").contains("password packet"));
    let mut query = BytesMut::new();
    frontend::query("SELECT 1", &mut query).unwrap();
    assert_eq!(
        failed(start().handle(&query), "08P01"),
        "expected password response, got message type 'Q'"
    );
}

#[test]
fn trust_is_done_at_once() {
    let (mut auth, step) = ClientAuth::start(AuthMethod::Trust, "anyone", None, RANDOM);
    assert_eq!(step, Step::Done(authentication_ok()));
    assert_eq!(auth.handle(&password_message("x")), Step::Send(Vec::new()));
    assert_eq!(auth.failure(), None);
}

#[test]
fn after_done_or_failed_nothing_more_happens() {
    let secret = verifier(PASSWORD);
    let mut done = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&secret),
        PASSWORD,
        ChannelBinding::unsupported(),
        RANDOM,
    );
    assert_eq!(
        done.auth.handle(&sasl_response(b"x")),
        Step::Send(Vec::new())
    );
    let (mut failed_auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "a", None, RANDOM);
    failed(failed_auth.handle(b"garbage"), "08P01");
    let why = failed_auth.failure().unwrap().to_owned();
    assert_eq!(failed_auth.handle(b"more"), Step::Send(Vec::new()));
    assert_eq!(failed_auth.failure(), Some(why.as_str()));
}

/// A SCRAM exchange up to the server-first-message, with this client-first-message; the
/// server-first's nonce.
fn after_client_first(client_first: &[u8]) -> (ClientAuth, String) {
    let secret = verifier(PASSWORD);
    let (mut auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
    let Step::Send(bytes) = auth.handle(&sasl_initial("SCRAM-SHA-256", client_first)) else {
        panic!("client-first refused");
    };
    let Reply::Continue(server_first) = one(&bytes) else {
        panic!("no server-first-message");
    };
    let text = String::from_utf8(server_first).unwrap();
    let nonce = text.split(',').next().unwrap().strip_prefix("r=").unwrap();
    (auth, nonce.to_owned())
}

#[test]
fn a_tampered_nonce_is_refused() {
    let secret = verifier(PASSWORD);
    let (mut auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
    let mut client = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let Step::Send(bytes) = auth.handle(&sasl_initial("SCRAM-SHA-256", client.message())) else {
        panic!("client-first refused");
    };
    let Reply::Continue(server_first) = one(&bytes) else {
        panic!("no server-first-message");
    };
    client.update(&server_first).unwrap();
    // The client signs what it was sent; change one character of the nonce it echoes.
    let mut last = client.message().to_vec();
    let at = last.windows(2).position(|w| w == b"r=").unwrap() + 30;
    last[at] = if last[at] == b'A' { b'B' } else { b'A' };
    let message = failed(auth.handle(&sasl_response(&last)), "08P01");
    assert!(message.contains("nonce does not match"), "{message}");
}

#[test]
fn a_client_first_message_without_an_initial_response_gets_an_empty_challenge() {
    let secret = verifier(PASSWORD);
    let (mut auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
    // SASLInitialResponse with a length of -1: no initial response.
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(-1i32).to_be_bytes());
    let mut message = vec![b'p'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    let Step::Send(bytes) = auth.handle(&message) else {
        panic!("refused");
    };
    assert_eq!(one(&bytes), Reply::Continue(Vec::new()));
    let mut client = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let Step::Send(bytes) = auth.handle(&sasl_response(client.message())) else {
        panic!("client-first refused");
    };
    let Reply::Continue(server_first) = one(&bytes) else {
        panic!("no server-first-message");
    };
    client.update(&server_first).unwrap();
    let Step::Done(bytes) = auth.handle(&sasl_response(client.message())) else {
        panic!("not logged in");
    };
    let Reply::Final(data) = replies(&bytes).remove(0) else {
        panic!("no AuthenticationSASLFinal");
    };
    client.finish(&data).unwrap();
}

#[test]
fn channel_binding_demanded_by_the_client_is_refused() {
    let secret = verifier(PASSWORD);
    let (mut auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
    let client = ScramSha256::new(
        PASSWORD.as_bytes(),
        ChannelBinding::tls_server_end_point(vec![1; 32]),
    );
    let message = failed(
        auth.handle(&sasl_initial("SCRAM-SHA-256", client.message())),
        "08P01",
    );
    assert!(message.contains("channel binding"), "{message}");
    let (mut auth, _) = ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
    let message = failed(
        auth.handle(&sasl_initial("SCRAM-SHA-256-PLUS", client.message())),
        "08P01",
    );
    assert!(
        message.contains("invalid SASL authentication mechanism"),
        "{message}"
    );
}

#[test]
fn malformed_client_first_messages_are_refused_naming_what_is_wrong() {
    let secret = verifier(PASSWORD);
    for (client_first, code, says) in [
        (&b""[..], "08P01", "empty"),
        (b"n,,n=,r=abc\0", "08P01", "NUL"),
        (b"x,,n=,r=abc", "08P01", "channel-binding flag"),
        (b"n;,n=,r=abc", "08P01", "comma"),
        (b"n,a=bob,n=,r=abc", "0A000", "authorization identity"),
        (b"n,x,n=,r=abc", "08P01", "unexpected attribute"),
        (b"n,,m=ext,n=,r=abc", "0A000", "extension"),
        (b"n,,r=abc", "08P01", "expected attribute \"n\""),
        (b"n,,n=,x=abc", "08P01", "expected attribute \"r\""),
        (
            b"n,,n=",
            "08P01",
            "expected attribute \"r\" but found the end",
        ),
        (b"n,,n=,r", "08P01", "\"=\""),
        (b"n,,n=,r=", "08P01", "nonce is empty"),
        (b"n,,n=,r=ab\x7fc", "08P01", "non-printable"),
        (b"n,,n=,r=abc,1=2", "08P01", "invalid character"),
    ] {
        let (mut auth, _) =
            ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM);
        let message = failed(
            auth.handle(&sasl_initial("SCRAM-SHA-256", client_first)),
            code,
        );
        assert!(
            message.contains(says),
            "{:?}: {message}",
            String::from_utf8_lossy(client_first)
        );
        assert_eq!(auth.failure(), Some(message.as_str()));
    }
    // Extensions after the nonce are ignored, as PostgreSQL ignores them.
    after_client_first(b"n,,n=ignored,r=abc,x=1,y=2");
}

#[test]
fn malformed_client_final_messages_are_refused_naming_what_is_wrong() {
    let proof = BASE64.encode([0u8; 32]);
    for (template, says) in [
        ("c=biws,r={n}", "attribute expected, but found the end"),
        ("c=eSws,r={n},p={p}", "channel-binding"),
        ("r={n},c=biws,p={p}", "expected attribute \"c\""),
        ("c=biws,r={n},p=AAAA", "malformed proof"),
        ("c=biws,r={n},p={p},x=1", "garbage"),
        ("c=biws,r={n}x,p={p}", "nonce does not match"),
        ("c=biws,r=,p={p}", "nonce does not match"),
    ] {
        let (mut auth, nonce) = after_client_first(b"n,,n=,r=abc");
        let last = template.replace("{n}", &nonce).replace("{p}", &proof);
        let message = failed(auth.handle(&sasl_response(last.as_bytes())), "08P01");
        assert!(message.contains(says), "{last}: {message}");
    }
    // Extensions before the proof are skipped (and signed): a wrong proof after them is a
    // wrong password, not a protocol error.
    let (mut auth, nonce) = after_client_first(b"y,,n=,r=abc");
    let last = format!("c=eSws,r={nonce},x=1,p={proof}");
    assert_eq!(
        failed(auth.handle(&sasl_response(last.as_bytes())), "28P01"),
        wrong_password("alice")
    );
}

#[test]
fn messages_that_are_not_sasl_responses_are_refused() {
    let secret = verifier(PASSWORD);
    let start = || ClientAuth::start(AuthMethod::ScramSha256, "alice", Some(&secret), RANDOM).0;
    let mut query = BytesMut::new();
    frontend::query("SELECT 1", &mut query).unwrap();
    assert_eq!(
        failed(start().handle(&query), "08P01"),
        "expected SASL response, got message type 'Q'"
    );
    assert!(failed(start().handle(b"p\0\0"), "08P01").contains("not a whole message"));
    assert!(failed(start().handle(b"p\0\0\0\x09abcd"), "08P01").contains("length says 9"));
    for body in [
        &b"SCRAM-SHA-256"[..],
        b"SCRAM-SHA-256\0\0\0",
        b"SCRAM-SHA-256\0\0\0\0\x05ab",
    ] {
        let mut message = vec![b'p'];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(body);
        let text = failed(start().handle(&message), "08P01");
        assert!(text.contains("malformed SASLInitialResponse"), "{text}");
    }
}

#[test]
fn garbage_never_panics_and_always_ends_in_one_failure() {
    let secret = verifier(PASSWORD);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let len = (next() % 64) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 && garbage.len() >= 5 {
            // A plausible header, so the body is looked at.
            garbage[0] = b'p';
            garbage[1..5].copy_from_slice(&(len as u32 - 1).to_be_bytes());
        }
        let method = [AuthMethod::ScramSha256, AuthMethod::Md5][(next() % 2) as usize];
        let (mut auth, _) = ClientAuth::start(method, "alice", Some(&secret), RANDOM);
        match auth.handle(&garbage) {
            Step::Failed(bytes) => {
                assert!(matches!(one(&bytes), Reply::Error { .. }));
                assert!(auth.failure().is_some());
            }
            Step::Send(bytes) => assert!(!bytes.is_empty()),
            Step::Done(_) => panic!("garbage logged in: {garbage:?}"),
        }
    }
}

#[test]
fn debug_and_failure_never_show_the_secret() {
    let secret = Secret::Password(PASSWORD.into());
    let run = scram(
        AuthMethod::ScramSha256,
        "alice",
        Some(&secret),
        "wrong",
        ChannelBinding::unsupported(),
        RANDOM,
    );
    let shown = format!("{:?} {:?}", run.auth, run.auth.failure());
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("alice"));
    let (auth, _) = ClientAuth::start(AuthMethod::Md5, "alice", Some(&secret), RANDOM);
    assert!(!format!("{auth:?}").contains(PASSWORD));
}
