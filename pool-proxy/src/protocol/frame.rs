//! Framing without decoding: split a byte stream into whole protocol messages.
//!
//! After startup every message in either direction is a 1-byte tag and a 4-byte big-endian
//! length that counts itself but not the tag. Before it, the client sends untagged packets:
//! a 4-byte length (counting itself) and a 4-byte code (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest). Both framers are incremental: bytes may arrive split
//! anywhere, and a frame comes out only once it is whole. A header that cannot be right (a
//! length below 4, above the configured maximum) is a [`FrameError`], never a panic; a
//! length that promises more bytes than ever arrive is the driver's timeout to catch.

use std::fmt;

/// The tag and length header of a message after startup.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const DEFAULT_MAX_STARTUP_LEN: u32 = 10_000;

/// The default limit on one message, client or server side: large enough for big queries
/// and COPY rows, small enough that one client cannot make the proxy buffer a gigabyte.
pub const DEFAULT_MAX_MESSAGE_LEN: u32 = 16 * 1024 * 1024;

/// Startup-phase codes (the 4 bytes after the length).
pub const PROTOCOL_3_0: u32 = 196_608;
/// `SSLRequest`'s code.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `GSSENCRequest`'s code.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `CancelRequest`'s code.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// What is wrong with a header. Each names the tag (as a character) and the length read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A tagged message whose length is below 4 (it must count its own 4 bytes).
    LengthTooShort { tag: u8, len: u32 },
    /// A tagged message longer than the configured maximum.
    MessageTooLong { tag: u8, len: u32, max: u32 },
    /// A startup packet shorter than its length and code (8 bytes).
    StartupTooShort { len: u32 },
    /// A startup packet longer than the configured maximum.
    StartupTooLong { len: u32, max: u32 },
    /// A startup packet with a code this proxy does not know (for example protocol 2.0).
    UnknownStartupCode { code: u32 },
    /// A startup packet whose body does not match its code (an SSLRequest of 12 bytes, a
    /// StartupMessage whose parameters are not NUL-terminated pairs, ...).
    MalformedStartup { code: u32, what: &'static str },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthTooShort { tag, len } => write!(
                f,
                "message '{}' has length {len}, below the minimum of 4",
                char::from(*tag).escape_default()
            ),
            Self::MessageTooLong { tag, len, max } => write!(
                f,
                "message '{}' has length {len}, over the limit of {max} bytes",
                char::from(*tag).escape_default()
            ),
            Self::StartupTooShort { len } => {
                write!(f, "startup packet has length {len}, below the minimum of 8")
            }
            Self::StartupTooLong { len, max } => {
                write!(
                    f,
                    "startup packet has length {len}, over the limit of {max} bytes"
                )
            }
            Self::UnknownStartupCode { code } => {
                write!(
                    f,
                    "startup packet has unsupported code {code} (protocol {}.{})",
                    code >> 16,
                    code & 0xffff
                )
            }
            Self::MalformedStartup { code, what } => {
                write!(f, "startup packet with code {code} is malformed: {what}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// One whole tagged message: the tag and all its bytes, header included, ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The body, after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The whole message, header included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the frame, giving its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Buffers bytes of one direction and yields whole tagged messages.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
    max_len: u32,
}

impl Framer {
    /// A framer refusing messages whose length field is above `max_len`.
    pub fn new(max_len: u32) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_len: max_len.max(4),
        }
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The bytes not taken as messages yet: what another reader goes on from.
    pub fn into_remaining(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }

    /// The next whole message, `None` until one is whole, or what is wrong with the next
    /// header. The header is checked as soon as its 5 bytes are in, so an oversized
    /// message is refused before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = &self.buf[self.start..];
        let Some(header) = rest.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if len < 4 {
            return Err(FrameError::LengthTooShort { tag, len });
        }
        if len > self.max_len {
            return Err(FrameError::MessageTooLong {
                tag,
                len,
                max: self.max_len,
            });
        }
        // len <= max_len <= u32::MAX, and 1 + u32::MAX fits a usize on 64-bit and 32-bit
        // alike only through u64: compute in u64 and compare.
        let total = u64::from(len) + 1;
        if (rest.len() as u64) < total {
            return Ok(None);
        }
        let total = total as usize;
        let bytes = rest[..total].to_vec();
        self.start += total;
        Ok(Some(Frame { bytes }))
    }
}

/// An untagged startup-phase packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage (protocol 3.x): the parameters (`user`, `database`, ...), in order.
    Startup {
        protocol: u32,
        params: Vec<(String, String)>,
    },
    /// SSLRequest: answer `S` and start TLS, or `N`.
    SslRequest,
    /// GSSENCRequest: answer `N`.
    GssEncRequest,
    /// CancelRequest: the key the proxy issued to some client.
    CancelRequest { process_id: u32, secret_key: u32 },
}

/// Buffers the client's bytes before startup and yields its startup-phase packets.
#[derive(Debug, Clone)]
pub struct StartupFramer {
    buf: Vec<u8>,
    max_len: u32,
}

impl StartupFramer {
    /// A framer refusing startup packets longer than `max_len` (PostgreSQL: 10,000).
    pub fn new(max_len: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_len: max_len.max(8),
        }
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are buffered past the packets taken so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes after the packets taken so far: after an SSLRequest answered `N` the
    /// client's StartupMessage follows in the same stream; after a StartupMessage these are
    /// the first tagged messages, for a [`Framer`].
    pub fn into_remaining(self) -> Vec<u8> {
        self.buf
    }

    /// The next whole startup packet, `None` until one is whole, or what is wrong with it.
    pub fn next_packet(&mut self) -> Result<Option<StartupPacket>, FrameError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if len < 8 {
            return Err(FrameError::StartupTooShort { len });
        }
        if len > self.max_len {
            return Err(FrameError::StartupTooLong {
                len,
                max: self.max_len,
            });
        }
        let len = len as usize;
        if self.buf.len() < len {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buf.drain(..len).collect();
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        decode_startup(code, &packet[8..]).map(Some)
    }
}

fn decode_startup(code: u32, body: &[u8]) -> Result<StartupPacket, FrameError> {
    let malformed = |what| FrameError::MalformedStartup { code, what };
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if !body.is_empty() {
                return Err(malformed("a request of 8 bytes carries a body"));
            }
            Ok(if code == SSL_REQUEST_CODE {
                StartupPacket::SslRequest
            } else {
                StartupPacket::GssEncRequest
            })
        }
        CANCEL_REQUEST_CODE => {
            let [a, b, c, d, e, f, g, h] = body else {
                return Err(malformed("a cancel request is 16 bytes"));
            };
            Ok(StartupPacket::CancelRequest {
                process_id: u32::from_be_bytes([*a, *b, *c, *d]),
                secret_key: u32::from_be_bytes([*e, *f, *g, *h]),
            })
        }
        _ if code >> 16 == 3 => {
            // name\0value\0 ... name\0value\0 \0
            let Some((&0, mut rest)) = body.split_last() else {
                return Err(malformed("the parameter list does not end with a NUL"));
            };
            let mut params = Vec::new();
            while !rest.is_empty() {
                let Some((name, after)) = super::take_cstr(rest) else {
                    return Err(malformed("a parameter is not NUL-terminated"));
                };
                let Some((value, after)) = super::take_cstr(after) else {
                    return Err(malformed("a parameter name has no value"));
                };
                if name.is_empty() {
                    return Err(malformed("a parameter name is empty"));
                }
                params.push((name.to_owned(), value.to_owned()));
                rest = after;
            }
            Ok(StartupPacket::Startup {
                protocol: code,
                params,
            })
        }
        _ => Err(FrameError::UnknownStartupCode { code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;

    fn all_frames(framer: &mut Framer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame().unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_split() {
        let mut buf = BytesMut::new();
        frontend::query("SELECT 1", &mut buf).unwrap();
        frontend::sync(&mut buf);
        frontend::query("SELECT 2", &mut buf).unwrap();
        let stream = buf.to_vec();
        for split in 0..=stream.len() {
            let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
            framer.push(&stream[..split]);
            let mut frames = all_frames(&mut framer);
            framer.push(&stream[split..]);
            frames.extend(all_frames(&mut framer));
            let tags: Vec<u8> = frames.iter().map(Frame::tag).collect();
            assert_eq!(tags, b"QSQ", "split at {split}");
            assert_eq!(frames.concat_bytes(), stream);
            assert_eq!(framer.buffered(), 0);
        }
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }
    impl Concat for Vec<Frame> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|f| f.bytes().to_vec()).collect()
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut buf = BytesMut::new();
        frontend::parse("", "SELECT $1", [23], &mut buf).unwrap();
        frontend::sync(&mut buf);
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        let mut frames = Vec::new();
        for b in buf.iter() {
            framer.push(&[*b]);
            frames.extend(all_frames(&mut framer));
        }
        assert_eq!(frames.iter().map(Frame::tag).collect::<Vec<_>>(), b"PS");
    }

    #[test]
    fn a_length_below_four_is_an_error() {
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        framer.push(&[b'Q', 0, 0, 0, 3]);
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::LengthTooShort { tag: b'Q', len: 3 })
        );
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header() {
        let mut framer = Framer::new(1024);
        framer.push(&[b'd', 0, 0, 4, 1]);
        let err = framer.next_frame().unwrap_err();
        assert_eq!(
            err,
            FrameError::MessageTooLong {
                tag: b'd',
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(
            err.to_string(),
            "message 'd' has length 1025, over the limit of 1024 bytes"
        );
        let mut framer = Framer::new(DEFAULT_MAX_MESSAGE_LEN);
        framer.push(&[b'Q', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            framer.next_frame(),
            Err(FrameError::MessageTooLong { .. })
        ));
    }

    fn startup_packets(bytes: &[u8]) -> Result<Vec<StartupPacket>, FrameError> {
        let mut framer = StartupFramer::new(DEFAULT_MAX_STARTUP_LEN);
        framer.push(bytes);
        let mut out = Vec::new();
        while let Some(p) = framer.next_packet()? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn startup_phase_packets() {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        frontend::startup_message([("user", "app"), ("database", "db")], &mut buf).unwrap();
        frontend::cancel_request(42, 7, &mut buf);
        let mut gss = vec![0, 0, 0, 8];
        gss.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
        buf.extend_from_slice(&gss);
        assert_eq!(
            startup_packets(&buf).unwrap(),
            vec![
                StartupPacket::SslRequest,
                StartupPacket::Startup {
                    protocol: PROTOCOL_3_0,
                    params: vec![
                        ("user".into(), "app".into()),
                        ("database".into(), "db".into())
                    ],
                },
                StartupPacket::CancelRequest {
                    process_id: 42,
                    secret_key: 7
                },
                StartupPacket::GssEncRequest,
            ]
        );
    }

    #[test]
    fn startup_limits_and_lies() {
        // Over PostgreSQL's 10,000-byte limit.
        let mut big = 20_000u32.to_be_bytes().to_vec();
        big.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert_eq!(
            startup_packets(&big),
            Err(FrameError::StartupTooLong {
                len: 20_000,
                max: 10_000
            })
        );
        // A length below the header.
        assert_eq!(
            startup_packets(&[0, 0, 0, 5, 1]),
            Err(FrameError::StartupTooShort { len: 5 })
        );
        // An SSLRequest whose length claims a body.
        let mut lie = 12u32.to_be_bytes().to_vec();
        lie.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        lie.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            startup_packets(&lie),
            Err(FrameError::MalformedStartup { .. })
        ));
        // Protocol 2.0.
        let mut v2 = 8u32.to_be_bytes().to_vec();
        v2.extend_from_slice(&(2u32 << 16).to_be_bytes());
        assert_eq!(
            startup_packets(&v2),
            Err(FrameError::UnknownStartupCode { code: 2 << 16 })
        );
        // A parameter name without a value.
        let mut odd = 14u32.to_be_bytes().to_vec();
        odd.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        odd.extend_from_slice(b"user\0\0");
        assert!(matches!(
            startup_packets(&odd),
            Err(FrameError::MalformedStartup { .. })
        ));
    }

    #[test]
    fn startup_packet_decoder_never_panics_on_short_bodies() {
        for len in 8u32..40 {
            for code in [
                PROTOCOL_3_0,
                SSL_REQUEST_CODE,
                GSSENC_REQUEST_CODE,
                CANCEL_REQUEST_CODE,
            ] {
                let mut p = len.to_be_bytes().to_vec();
                p.extend_from_slice(&code.to_be_bytes());
                p.resize(len as usize, b'a');
                let _ = startup_packets(&p);
                p.iter_mut().skip(8).step_by(3).for_each(|b| *b = 0);
                let _ = startup_packets(&p);
            }
        }
    }
}
