//! The proxy's own exchanges with a server (its login, check and reset queries): whole
//! messages read with the crate's [`Framer`] and classified with [`ServerMessage`], the
//! one framing reader of the protocol module; requests written with postgres-protocol.

use std::io;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connection::ServerConnection;
use super::error::ServerError;
use crate::protocol::backend::{ServerMessage, TransactionStatus};
use crate::protocol::frame::{Framer, DEFAULT_MAX_MESSAGE_LEN};

/// Reads whole server messages for one exchange. Whatever is buffered past the exchange's
/// last ReadyForQuery is unsolicited: [`Reader::finish`] refuses it, as
/// `ServerConnection::liveness` would.
pub(crate) struct Reader {
    framer: Framer,
    buf: Vec<u8>,
}

impl Reader {
    pub(crate) fn new() -> Self {
        Reader {
            framer: Framer::new(DEFAULT_MAX_MESSAGE_LEN),
            buf: vec![0; 8192],
        }
    }

    /// The next whole message, classified. The end of the stream is an I/O error
    /// (`UnexpectedEof`).
    pub(crate) async fn next(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> Result<ServerMessage, ServerError> {
        loop {
            let frame = self
                .framer
                .next_frame()
                .map_err(|e| ServerError::Protocol(e.to_string()))?;
            if let Some(frame) = frame {
                return ServerMessage::classify(&frame)
                    .map_err(|e| ServerError::Protocol(e.to_string()));
            }
            let n = stream.read(&mut self.buf).await?;
            if n == 0 {
                return Err(ServerError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    /// The exchange is over: nothing may follow its last message.
    pub(crate) fn finish(self) -> Result<(), ServerError> {
        match self.framer.buffered() {
            0 => Ok(()),
            n => Err(ServerError::Protocol(format!(
                "{n} unsolicited bytes after ReadyForQuery"
            ))),
        }
    }
}

/// Write a whole request.
pub(crate) async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// The server's ErrorResponse as an error.
pub(crate) fn refused(severity: String, sqlstate: String, message: String) -> ServerError {
    ServerError::Server {
        severity,
        sqlstate,
        message,
    }
}

/// Run `query` as one simple Query and read every answer up to its ReadyForQuery, which
/// must say idle. An ErrorResponse is the error, returned once its ReadyForQuery is read,
/// so the connection is left at a message boundary and still usable.
pub(crate) async fn run_to_idle(
    conn: &mut ServerConnection,
    query: &str,
) -> Result<(), ServerError> {
    let mut buf = BytesMut::new();
    frontend::query(query, &mut buf)
        .map_err(|_| ServerError::Config(format!("query {query:?} contains a NUL byte")))?;
    send(conn, &buf).await?;
    let mut reader = Reader::new();
    let mut failed = None;
    loop {
        match reader.next(conn).await? {
            ServerMessage::ReadyForQuery(status) => {
                reader.finish()?;
                return match (failed, status) {
                    (Some(error), _) => Err(error),
                    (None, TransactionStatus::Idle) => Ok(()),
                    (None, status) => Err(ServerError::NotIdle {
                        query: query.to_owned(),
                        status,
                    }),
                };
            }
            ServerMessage::ErrorResponse {
                severity,
                sqlstate,
                message,
            } => {
                failed.get_or_insert(refused(severity, sqlstate, message));
            }
            ServerMessage::CopyInResponse | ServerMessage::CopyBothResponse => {
                return Err(ServerError::Protocol(format!(
                    "{query:?} started a COPY that waits for data"
                )))
            }
            other @ (ServerMessage::Authentication(_) | ServerMessage::BackendKeyData { .. }) => {
                return Err(ServerError::unexpected("the answer to a query", other))
            }
            // Rows, the command tag, notices, parameter changes, COPY out data.
            ServerMessage::CommandComplete { .. }
            | ServerMessage::NoticeResponse
            | ServerMessage::ParameterStatus { .. }
            | ServerMessage::CopyOutResponse
            | ServerMessage::Other(_) => {}
        }
    }
}
