//! Raw protocol over a plain socket, for tests that misbehave on purpose or look at what a
//! client library hides: startup packets written by hand, and the proxy's answers read
//! message by message.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Protocol 3.0's code in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 196_608;
/// GSSENCRequest's code.
pub const GSSENC_REQUEST: u32 = 80_877_104;

/// A StartupMessage for protocol 3.0 with these parameters.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// An untagged 8-byte request (SSLRequest, GSSENCRequest): its length and code.
pub fn request(code: u32) -> Vec<u8> {
    let mut packet = 8u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&code.to_be_bytes());
    packet
}

/// What the proxy sent, one message at a time.
pub enum Reply {
    /// An ErrorResponse: its severity, SQLSTATE and message.
    Error {
        severity: String,
        code: String,
        message: String,
    },
    /// Any other message, by its tag.
    Other(u8),
    /// The proxy closed the connection (end of stream, or a reset).
    Closed,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Error {
                severity,
                code,
                message,
            } => write!(f, "{severity} {code}: {message}"),
            Reply::Other(tag) => write!(f, "message {:?}", *tag as char),
            Reply::Closed => f.write_str("closed"),
        }
    }
}

/// Reads the next whole message (or the end of the stream), up to `limit`; panics when
/// nothing comes within it (the proxy left the client hanging).
pub async fn next_reply(stream: &mut TcpStream, limit: Duration) -> Reply {
    tokio::time::timeout(limit, read_reply(stream))
        .await
        .unwrap_or_else(|_| panic!("the proxy sent nothing within {limit:?}"))
}

async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut header = [0u8; 5];
    if stream.read_exact(&mut header).await.is_err() {
        return Reply::Closed;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut bytes = BytesMut::from(&header[..]);
    bytes.resize(1 + len, 0);
    if stream.read_exact(&mut bytes[5..]).await.is_err() {
        return Reply::Closed;
    }
    match Message::parse(&mut bytes) {
        Ok(Some(Message::ErrorResponse(body))) => {
            let (mut severity, mut code, mut message) = Default::default();
            let mut fields = body.fields();
            while let Ok(Some(field)) = fields.next() {
                let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                match field.type_() {
                    b'S' => severity = value,
                    b'C' => code = value,
                    b'M' => message = value,
                    _ => {}
                }
            }
            Reply::Error {
                severity,
                code,
                message,
            }
        }
        _ => Reply::Other(header[0]),
    }
}

/// A client speaking the protocol by hand, logged in without a password (`trust`).
pub struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    /// Logs in as `user` to `database` at `addr`, and reads up to the first ReadyForQuery.
    pub async fn login(addr: std::net::SocketAddr, user: &str, database: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&startup(&[("user", user), ("database", database)]))
            .await
            .unwrap();
        let mut client = RawClient { stream };
        for reply in client.until_ready().await {
            assert!(!matches!(reply, Reply::Error { .. }), "login: {reply:?}");
        }
        client
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Every reply up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        loop {
            let reply = next_reply(&mut self.stream, Duration::from_secs(10)).await;
            let done = matches!(reply, Reply::Other(b'Z') | Reply::Closed);
            replies.push(reply);
            if done {
                return replies;
            }
        }
    }
}
