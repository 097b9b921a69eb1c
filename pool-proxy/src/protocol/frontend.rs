//! The client's messages, classified: what each one means for the session (does it expect
//! an answer, does it open or continue an extended-protocol batch, does it change session
//! state). Only Query and Parse are looked inside; the rest are known by their tag.

use std::fmt;

use super::frame::Frame;
use super::take_cstr;

/// A client message as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// 'Q': a simple query; answered by one ReadyForQuery.
    Query,
    /// 'P': Parse; `named` when the statement name is not empty (it outlives the
    /// transaction, so it is session state).
    Parse { named: bool },
    /// 'B': Bind.
    Bind,
    /// 'D': Describe.
    Describe,
    /// 'E': Execute.
    Execute,
    /// 'C': Close (of a statement or portal).
    Close,
    /// 'S': Sync, the end of an extended-protocol batch; answered by one ReadyForQuery.
    Sync,
    /// 'H': Flush; asks for pending output, expects no ReadyForQuery.
    Flush,
    /// 'd': CopyData.
    CopyData,
    /// 'c': CopyDone.
    CopyDone,
    /// 'f': CopyFail.
    CopyFail,
    /// 'F': FunctionCall; answered by one ReadyForQuery.
    FunctionCall,
    /// 'X': Terminate.
    Terminate,
}

/// Why a client message cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessageError {
    /// A tag that is not a client message after startup (a password message out of turn,
    /// a byte of garbage, ...).
    UnknownTag(u8),
    /// A known message whose body does not fit its type.
    Malformed { tag: u8, what: &'static str },
}

impl fmt::Display for ClientMessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTag(tag) => {
                write!(
                    f,
                    "unexpected message type '{}'",
                    char::from(*tag).escape_default()
                )
            }
            Self::Malformed { tag, what } => write!(
                f,
                "malformed message '{}': {what}",
                char::from(*tag).escape_default()
            ),
        }
    }
}

impl std::error::Error for ClientMessageError {}

impl ClientMessage {
    /// Classifies a whole client frame.
    pub fn classify(frame: &Frame) -> Result<Self, ClientMessageError> {
        let tag = frame.tag();
        let body = frame.body();
        let malformed = |what| ClientMessageError::Malformed { tag, what };
        let empty = |msg: Self| {
            if body.is_empty() {
                Ok(msg)
            } else {
                Err(malformed("this message has no body"))
            }
        };
        match tag {
            b'Q' => match take_cstr(body) {
                Some((_, [])) => Ok(Self::Query),
                _ => Err(malformed(
                    "the query is not one NUL-terminated UTF-8 string",
                )),
            },
            b'P' => match take_cstr(body) {
                Some((name, rest)) if take_cstr(rest).is_some() => Ok(Self::Parse {
                    named: !name.is_empty(),
                }),
                _ => Err(malformed(
                    "the statement name and query are not NUL-terminated",
                )),
            },
            b'B' => Ok(Self::Bind),
            b'D' => Ok(Self::Describe),
            b'E' => Ok(Self::Execute),
            b'C' => Ok(Self::Close),
            b'S' => empty(Self::Sync),
            b'H' => empty(Self::Flush),
            b'd' => Ok(Self::CopyData),
            b'c' => empty(Self::CopyDone),
            b'f' => Ok(Self::CopyFail),
            b'F' => Ok(Self::FunctionCall),
            b'X' => empty(Self::Terminate),
            other => Err(ClientMessageError::UnknownTag(other)),
        }
    }

    /// Whether the server answers this message with a ReadyForQuery of its own.
    pub fn expects_ready_for_query(&self) -> bool {
        matches!(self, Self::Query | Self::Sync | Self::FunctionCall)
    }

    /// Whether this message is part of an extended-protocol batch that only a Sync ends
    /// (Flush is not: it asks for output and leaves nothing pending on the server).
    pub fn in_extended_batch(&self) -> bool {
        matches!(
            self,
            Self::Parse { .. } | Self::Bind | Self::Describe | Self::Execute | Self::Close
        )
    }

    /// Whether this is COPY-in traffic (data, its end, or its abort).
    pub fn is_copy(&self) -> bool {
        matches!(self, Self::CopyData | Self::CopyDone | Self::CopyFail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Framer, DEFAULT_MAX_MESSAGE_LEN};
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;

    fn classify_all(bytes: &[u8]) -> Vec<Result<ClientMessage, ClientMessageError>> {
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        framer.push(bytes);
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame().unwrap() {
            out.push(ClientMessage::classify(&frame));
        }
        out
    }

    #[test]
    fn every_client_message_tokio_postgres_writes() {
        let mut b = BytesMut::new();
        frontend::query("SELECT 1", &mut b).unwrap();
        frontend::parse("", "SELECT $1", [23], &mut b).unwrap();
        frontend::parse("s1", "SELECT 1", [], &mut b).unwrap();
        frontend::bind(
            "",
            "s1",
            Some(0),
            [Some(&b"1"[..])],
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            Some(0),
            &mut b,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::describe(b'P', "", &mut b).unwrap();
        frontend::execute("", 0, &mut b).unwrap();
        frontend::close(b'S', "s1", &mut b).unwrap();
        frontend::sync(&mut b);
        frontend::flush(&mut b);
        frontend::copy_done(&mut b);
        frontend::copy_fail("no", &mut b).unwrap();
        frontend::terminate(&mut b);
        use ClientMessage::*;
        let expected = [
            Query,
            Parse { named: false },
            Parse { named: true },
            Bind,
            Describe,
            Execute,
            Close,
            Sync,
            Flush,
            CopyDone,
            CopyFail,
            Terminate,
        ];
        let got: Vec<_> = classify_all(&b).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn malformed_and_unknown() {
        // A query without its NUL; a Sync with a body; a password message out of turn.
        let bytes = [
            &[b'Q', 0, 0, 0, 5, b'x'][..],
            &[b'S', 0, 0, 0, 5, 0],
            &[b'p', 0, 0, 0, 4],
            &[b'P', 0, 0, 0, 5, 0],
        ]
        .concat();
        let got = classify_all(&bytes);
        assert!(matches!(
            got[0],
            Err(ClientMessageError::Malformed { tag: b'Q', .. })
        ));
        assert!(matches!(
            got[1],
            Err(ClientMessageError::Malformed { tag: b'S', .. })
        ));
        assert_eq!(got[2], Err(ClientMessageError::UnknownTag(b'p')));
        assert!(matches!(
            got[3],
            Err(ClientMessageError::Malformed { tag: b'P', .. })
        ));
        assert_eq!(
            got[2].clone().unwrap_err().to_string(),
            "unexpected message type 'p'"
        );
    }
}
