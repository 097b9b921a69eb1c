//! The server's messages, decoded only where they change the session's state:
//! ReadyForQuery (its transaction status), ErrorResponse / NoticeResponse (SQLSTATE,
//! severity and message), CommandComplete (the tag), ParameterStatus, BackendKeyData and
//! the COPY responses, and the Authentication requests a login answers (`server`).
//! Everything else (RowDescription, DataRow, ParseComplete, ...) is forwarded by its tag
//! alone.

use std::fmt;

use super::frame::Frame;
use super::take_cstr;

/// The transaction status a ReadyForQuery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (only ROLLBACK is accepted).
    Failed,
}

/// A server message as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// 'Z'.
    ReadyForQuery(TransactionStatus),
    /// 'E': `severity` is the non-localized one (`V`) when present, else `S`; `message`
    /// is the primary message (`M`).
    ErrorResponse {
        severity: String,
        sqlstate: String,
        message: String,
    },
    /// 'N'.
    NoticeResponse,
    /// 'C': the command tag, e.g. `SELECT 1`, `SET`, `CREATE TABLE`.
    CommandComplete { tag: String },
    /// 'S'.
    ParameterStatus { name: String, value: String },
    /// 'K'.
    BackendKeyData { process_id: u32, secret_key: u32 },
    /// 'G'.
    CopyInResponse,
    /// 'H'.
    CopyOutResponse,
    /// 'W'.
    CopyBothResponse,
    /// 'R': what the server asks of a client logging in.
    Authentication(Authentication),
    /// Any other tag: forwarded as it is.
    Other(u8),
}

/// A server message whose body does not fit its type: the server (or the link) is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessageError {
    /// The message's tag.
    pub tag: u8,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for ServerMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed server message '{}': {}",
            char::from(self.tag).escape_default(),
            self.what
        )
    }
}

impl std::error::Error for ServerMessageError {}

impl ServerMessage {
    /// Decodes the parts of a whole server frame the session needs.
    pub fn classify(frame: &Frame) -> Result<Self, ServerMessageError> {
        let tag = frame.tag();
        let body = frame.body();
        let err = |what| ServerMessageError { tag, what };
        match tag {
            b'Z' => match body {
                [b'I'] => Ok(Self::ReadyForQuery(TransactionStatus::Idle)),
                [b'T'] => Ok(Self::ReadyForQuery(TransactionStatus::InTransaction)),
                [b'E'] => Ok(Self::ReadyForQuery(TransactionStatus::Failed)),
                [_] => Err(err("unknown transaction status")),
                _ => Err(err("ReadyForQuery carries exactly one byte")),
            },
            b'E' => {
                let fields = fields(body).ok_or_else(|| err("fields are not NUL-terminated"))?;
                let get = |code| {
                    fields
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map(|(_, v)| v.to_string())
                };
                Ok(Self::ErrorResponse {
                    severity: get(b'V').or_else(|| get(b'S')).unwrap_or_default(),
                    sqlstate: get(b'C').unwrap_or_default(),
                    message: get(b'M').unwrap_or_default(),
                })
            }
            b'N' => {
                fields(body).ok_or_else(|| err("fields are not NUL-terminated"))?;
                Ok(Self::NoticeResponse)
            }
            b'C' => match take_cstr(body) {
                Some((tag, [])) => Ok(Self::CommandComplete {
                    tag: tag.to_owned(),
                }),
                _ => Err(err("the command tag is not one NUL-terminated string")),
            },
            b'S' => match take_cstr(body).and_then(|(n, rest)| Some((n, take_cstr(rest)?))) {
                Some((name, (value, []))) => Ok(Self::ParameterStatus {
                    name: name.to_owned(),
                    value: value.to_owned(),
                }),
                _ => Err(err("name and value are not NUL-terminated strings")),
            },
            b'K' => match body {
                [a, b, c, d, e, f, g, h] => Ok(Self::BackendKeyData {
                    process_id: u32::from_be_bytes([*a, *b, *c, *d]),
                    secret_key: u32::from_be_bytes([*e, *f, *g, *h]),
                }),
                _ => Err(err("BackendKeyData is 8 bytes")),
            },
            b'G' | b'H' | b'W' => {
                // Overall format (1 byte), column count (2), a 2-byte format per column.
                let [_, hi, lo, formats @ ..] = body else {
                    return Err(err("a COPY response has a format and a column count"));
                };
                if formats.len() != 2 * usize::from(u16::from_be_bytes([*hi, *lo])) {
                    return Err(err(
                        "a COPY response's column count does not match its length",
                    ));
                }
                Ok(match tag {
                    b'G' => Self::CopyInResponse,
                    b'H' => Self::CopyOutResponse,
                    _ => Self::CopyBothResponse,
                })
            }
            b'R' => Authentication::parse(body)
                .map(Self::Authentication)
                .map_err(err),
            other => Ok(Self::Other(other)),
        }
    }
}

/// An Authentication request ('R'), as a client logging in answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// 0: logged in.
    Ok,
    /// 3: send the password as it is.
    CleartextPassword,
    /// 5: send `md5(md5(password + user) + salt)`.
    Md5Password { salt: [u8; 4] },
    /// 10: start SASL with one of these mechanisms (e.g. `SCRAM-SHA-256`).
    Sasl { mechanisms: Vec<String> },
    /// 11: the server's next SASL message.
    SaslContinue(Vec<u8>),
    /// 12: the server's last SASL message (its signature).
    SaslFinal(Vec<u8>),
    /// Any other method (2 Kerberos V5, 6 SCM credentials, 7 and 8 GSSAPI, 9 SSPI): its code.
    Other(u32),
}

impl Authentication {
    /// A name for the method a request code asks for, for errors.
    pub fn method_name(code: u32) -> &'static str {
        match code {
            0 => "none",
            2 => "Kerberos V5",
            3 => "cleartext password",
            5 => "MD5",
            6 => "SCM credentials",
            7 | 8 => "GSSAPI",
            9 => "SSPI",
            10..=12 => "SASL",
            _ => "unknown",
        }
    }

    fn parse(body: &[u8]) -> Result<Self, &'static str> {
        let [a, b, c, d, rest @ ..] = body else {
            return Err("an Authentication request starts with a 4-byte code");
        };
        match (u32::from_be_bytes([*a, *b, *c, *d]), rest) {
            (0, []) => Ok(Self::Ok),
            (3, []) => Ok(Self::CleartextPassword),
            (5, [a, b, c, d]) => Ok(Self::Md5Password {
                salt: [*a, *b, *c, *d],
            }),
            (5, _) => Err("an MD5 request carries a 4-byte salt"),
            (10, mut list) => {
                // NUL-terminated names, then an empty one.
                let mut mechanisms = Vec::new();
                loop {
                    match take_cstr(list) {
                        Some(("", [])) => return Ok(Self::Sasl { mechanisms }),
                        Some(("", _)) | None => {
                            return Err("SASL mechanisms are not a NUL-terminated list")
                        }
                        Some((name, rest)) => {
                            mechanisms.push(name.to_owned());
                            list = rest;
                        }
                    }
                }
            }
            (11, data) => Ok(Self::SaslContinue(data.to_vec())),
            (12, data) => Ok(Self::SaslFinal(data.to_vec())),
            (0 | 3, _) => Err("this Authentication request has no body"),
            (code, _) => Ok(Self::Other(code)),
        }
    }
}

/// The (code, value) fields of an ErrorResponse or NoticeResponse.
fn fields(mut body: &[u8]) -> Option<Vec<(u8, &str)>> {
    let mut out = Vec::new();
    loop {
        let (&code, rest) = body.split_first()?;
        if code == 0 {
            return rest.is_empty().then_some(out);
        }
        let (value, rest) = take_cstr(rest)?;
        out.push((code, value));
        body = rest;
    }
}

/// Appends one whole message the proxy writes itself: its tag, its length, its body. The
/// one place the proxy frames a message.
pub fn write_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends a ReadyForQuery with this transaction status.
pub fn ready_for_query(out: &mut Vec<u8>, status: TransactionStatus) {
    let byte = match status {
        TransactionStatus::Idle => b'I',
        TransactionStatus::InTransaction => b'T',
        TransactionStatus::Failed => b'E',
    };
    write_message(out, b'Z', &[byte]);
}

/// Appends a CommandComplete with this tag (`SHOW`, `PAUSE`, `DEALLOCATE`, ...).
pub fn command_complete(out: &mut Vec<u8>, tag: &str) {
    let mut body = Vec::with_capacity(tag.len() + 1);
    body.extend_from_slice(tag.as_bytes());
    body.push(0);
    write_message(out, b'C', &body);
}

/// Writes an ErrorResponse from the proxy itself: severity, SQLSTATE and message.
pub fn error_response(severity: &str, sqlstate: &str, message: &str) -> Vec<u8> {
    report(b'E', severity, sqlstate, message)
}

/// Writes a NoticeResponse from the proxy itself (severity `NOTICE`): what the admin
/// console's RELOAD says it could not apply.
pub fn notice_response(sqlstate: &str, message: &str) -> Vec<u8> {
    report(b'N', "NOTICE", sqlstate, message)
}

/// An ErrorResponse or NoticeResponse: the same fields.
fn report(tag: u8, severity: &str, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        body.push(code);
        // A NUL inside a field would end it early; the proxy's own texts contain none, and
        // a caller's text is cut at its first NUL rather than corrupting the frame.
        body.extend_from_slice(value.split('\0').next().unwrap_or_default().as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = Vec::new();
    write_message(&mut msg, tag, &body);
    msg
}

/// AuthenticationOk: the client is in.
pub fn authentication_ok() -> Vec<u8> {
    authentication(0, &[])
}

/// AuthenticationMD5Password with its 4-byte salt.
pub fn authentication_md5_password(salt: [u8; 4]) -> Vec<u8> {
    authentication(5, &salt)
}

/// AuthenticationSASL offering these mechanisms, in order of preference.
pub fn authentication_sasl(mechanisms: &[&str]) -> Vec<u8> {
    let mut data = Vec::new();
    for mechanism in mechanisms {
        data.extend_from_slice(mechanism.as_bytes());
        data.push(0);
    }
    data.push(0);
    authentication(10, &data)
}

/// AuthenticationSASLContinue carrying the mechanism's challenge.
pub fn authentication_sasl_continue(data: &[u8]) -> Vec<u8> {
    authentication(11, data)
}

/// AuthenticationSASLFinal carrying the mechanism's outcome (SCRAM's server signature).
pub fn authentication_sasl_final(data: &[u8]) -> Vec<u8> {
    authentication(12, data)
}

/// An Authentication message ('R'): its request code and the code's data.
fn authentication(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    let mut msg = Vec::new();
    write_message(&mut msg, b'R', &body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Framer, DEFAULT_MAX_MESSAGE_LEN};
    use postgres_protocol::message::backend::Message;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        bytes.extend_from_slice(body);
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        framer.push(&bytes);
        framer.next_frame().unwrap().unwrap()
    }

    #[test]
    fn decodes_what_changes_state() {
        use ServerMessage::*;
        assert_eq!(
            ServerMessage::classify(&frame(b'Z', b"T")),
            Ok(ReadyForQuery(TransactionStatus::InTransaction))
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'C', b"SELECT 1\0")),
            Ok(CommandComplete {
                tag: "SELECT 1".into()
            })
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'S', b"TimeZone\0UTC\0")),
            Ok(ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'K', &[0, 0, 0, 1, 0, 0, 0, 2])),
            Ok(BackendKeyData {
                process_id: 1,
                secret_key: 2
            })
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'G', &[0, 0, 1, 0, 0])),
            Ok(CopyInResponse)
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'H', &[0, 0, 0])),
            Ok(CopyOutResponse)
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'D', b"whatever")),
            Ok(Other(b'D'))
        );
        assert_eq!(
            ServerMessage::classify(&frame(b'E', b"SERROR\0VERROR\0C42601\0Msyntax\0\0")),
            Ok(ErrorResponse {
                severity: "ERROR".into(),
                sqlstate: "42601".into(),
                message: "syntax".into()
            })
        );
    }

    #[test]
    fn decodes_authentication_requests() {
        use Authentication::*;
        let auth = |body: &[u8]| ServerMessage::classify(&frame(b'R', body));
        let ok = |a| Result::<_, ServerMessageError>::Ok(ServerMessage::Authentication(a));
        assert_eq!(auth(&[0, 0, 0, 0]), ok(Ok));
        assert_eq!(auth(&[0, 0, 0, 3]), ok(CleartextPassword));
        assert_eq!(
            auth(&[0, 0, 0, 5, 1, 2, 3, 4]),
            ok(Md5Password { salt: [1, 2, 3, 4] })
        );
        assert_eq!(
            auth(b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            ok(Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            })
        );
        assert_eq!(
            auth(b"\0\0\0\x0br=abc"),
            ok(SaslContinue(b"r=abc".to_vec()))
        );
        assert_eq!(auth(b"\0\0\0\x0cv=xyz"), ok(SaslFinal(b"v=xyz".to_vec())));
        assert_eq!(auth(&[0, 0, 0, 7]), ok(Other(7)));
        assert_eq!(Authentication::method_name(7), "GSSAPI");
        for body in [
            &b"\0\0\0"[..],
            &[0, 0, 0, 5, 1, 2, 3],
            &[0, 0, 0, 0, 9],
            b"\0\0\0\x0aSCRAM-SHA-256\0",
            b"\0\0\0\x0aSCRAM-SHA-256",
        ] {
            assert!(auth(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn malformed_server_messages_are_errors() {
        for (tag, body) in [
            (b'Z', &b"X"[..]),
            (b'Z', b"II"),
            (b'E', b"SERROR"),
            (b'C', b"SELECT"),
            (b'S', b"a\0"),
            (b'K', b"1234"),
            (b'G', &[0, 0, 2, 0, 0]),
            (b'N', b"x\0extra"),
        ] {
            assert!(
                ServerMessage::classify(&frame(tag, body)).is_err(),
                "{}",
                tag as char
            );
        }
    }

    #[test]
    fn the_proxys_error_response_parses_with_postgres_protocol() {
        let bytes = error_response("FATAL", "08P01", "bad\0message");
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        assert!(matches!(
            Message::parse(&mut buf),
            Ok(Some(Message::ErrorResponse(_)))
        ));
        assert!(buf.is_empty());
        assert_eq!(
            ServerMessage::classify(&frame(b'E', &bytes[5..])),
            Ok(ServerMessage::ErrorResponse {
                severity: "FATAL".into(),
                sqlstate: "08P01".into(),
                message: "bad".into()
            })
        );
        assert!(bytes.ends_with(b"Mbad\0\0"));
    }

    #[test]
    fn the_proxys_authentication_requests_parse_with_postgres_protocol() {
        let parse = |bytes: Vec<u8>| {
            let mut buf = bytes::BytesMut::from(&bytes[..]);
            let message = Message::parse(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            message
        };
        assert!(matches!(
            parse(authentication_ok()),
            Message::AuthenticationOk
        ));
        let Message::AuthenticationMd5Password(md5) = parse(authentication_md5_password(*b"salt"))
        else {
            panic!("not AuthenticationMD5Password");
        };
        assert_eq!(md5.salt(), *b"salt");
        let Message::AuthenticationSasl(sasl) = parse(authentication_sasl(&["SCRAM-SHA-256", "X"]))
        else {
            panic!("not AuthenticationSASL");
        };
        use fallible_iterator::FallibleIterator as _;
        let offered: Vec<String> = sasl
            .mechanisms()
            .map(|m| Ok(m.to_owned()))
            .collect()
            .unwrap();
        assert_eq!(offered, ["SCRAM-SHA-256", "X"]);
        let Message::AuthenticationSaslContinue(more) =
            parse(authentication_sasl_continue(b"r=abc"))
        else {
            panic!("not AuthenticationSASLContinue");
        };
        assert_eq!(more.data(), b"r=abc");
        let Message::AuthenticationSaslFinal(last) = parse(authentication_sasl_final(b"v=xyz"))
        else {
            panic!("not AuthenticationSASLFinal");
        };
        assert_eq!(last.data(), b"v=xyz");
    }
}
