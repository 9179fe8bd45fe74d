//! The tunnel's wire format: version handshake and the frames of an intercepted request.
//!
//! # Connection
//! The laptop dials the proxy over QUIC with mutual TLS. ALPN offers [`ALPN`] (which carries the
//! protocol's major version) and [`ALPN_HELLO_ONLY`]. A proxy of the same major version picks the
//! former; any other proxy picks the latter, and the one thing both sides can still do is the
//! hello exchange, whose layout never changes: the laptop opens a bidirectional control stream and
//! writes its [`Hello`]; the proxy answers with its own. Each side checks
//! [`Hello::check_compatible`], so a version mismatch is reported with both versions.
//!
//! # Streams
//! The proxy opens one bidirectional stream per intercepted request (or upgraded connection).
//! Each direction carries frames, `kind: u8 | length: u32 BE | payload`:
//!
//! * proxy → laptop: [`FrameKind::RequestHead`], [`FrameKind::Data`]*, then [`FrameKind::Trailers`]
//!   or [`FrameKind::End`];
//! * laptop → proxy: [`FrameKind::ResponseHead`], [`FrameKind::Data`]*, then
//!   [`FrameKind::Trailers`] or [`FrameKind::End`];
//! * after a `101 Switching Protocols` response head (which has no body frames), both directions
//!   carry the upgraded connection's raw bytes until the stream is finished.
//!
//! Either side cancels a request by resetting or stopping the stream with [`StreamCode::Cancelled`].
//!
//! # Signals
//! Outside requests, the proxy tells the laptop things on unidirectional streams: notices for
//! the developer (since minor version 1) and that it is draining (since 2); see the `signal` module.
//!
//! # Compatible change
//! A change that an older peer cannot ignore bumps the major version (and so the ALPN). New frame
//! kinds and new optional fields take a minor version bump and are sent only to peers whose
//! [`Hello`] announces that minor version or later; frame kinds are numbered in order, new ones last.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

mod head;

pub use head::{
    decode_request_head, decode_response_head, decode_trailers, put_end, put_request_head,
    put_response_head, put_trailers,
};

/// The version of this wire protocol.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };

/// ALPN of this protocol's major version.
pub const ALPN: &[u8] = b"cz-tunnel/1";

/// ALPN on which only the [`Hello`] exchange is spoken: lets peers of different major versions
/// tell each other their versions instead of failing the TLS handshake without a word.
pub const ALPN_HELLO_ONLY: &[u8] = b"cz-tunnel";

/// The TLS server name the proxy's session certificate is issued for and the laptop verifies.
pub const SERVER_NAME: &str = "cz-proxy";

/// The largest head or trailers frame accepted; protects both sides from unbounded buffering.
pub const MAX_HEAD_LEN: usize = 1024 * 1024;

/// The longest request method a request head carries: its length is one byte on the wire.
/// Registered methods are at most 17 bytes (`UPDATEREDIRECTREF`); the proxy answers longer ones
/// with 400 itself, since a wider length field would take a new major version.
pub const MAX_METHOD_LEN: usize = u8::MAX as usize;

/// Length of a frame header: kind and payload length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Codes carried by QUIC stream resets and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamCode {
    /// The request was abandoned by whoever sent it (the cluster client or the local app).
    Cancelled = 1,
    /// A peer sent something this protocol does not allow.
    ProtocolViolation = 2,
}

impl From<StreamCode> for quinn::VarInt {
    fn from(code: StreamCode) -> Self {
        quinn::VarInt::from_u32(code as u32)
    }
}

/// Codes carried by QUIC connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly shutdown of either side.
    Shutdown = 0,
    /// The peers speak incompatible protocol versions.
    VersionMismatch = 1,
    /// A newer connection of the same session took this one's place.
    Replaced = 2,
    /// The peer broke the protocol.
    ProtocolViolation = 3,
}

impl From<CloseCode> for quinn::VarInt {
    fn from(code: CloseCode) -> Self {
        quinn::VarInt::from_u32(code as u32)
    }
}

/// A protocol version: peers with the same major version interoperate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Which side sent a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `cz-proxy`, in the cluster.
    Proxy,
    /// `czctl`, on the laptop.
    Client,
}

/// The first message on a tunnel connection, from each side. Its layout never changes:
/// `"CZ" | major: u16 | minor: u16 | software length: u8 | software version (UTF-8)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The wire protocol version the sender speaks.
    pub protocol: ProtocolVersion,
    /// The sender's software version, e.g. `0.1.0`, for messages to users.
    pub software: String,
}

const HELLO_MAGIC: &[u8; 2] = b"CZ";

/// Both sides' versions, when they cannot talk to each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version mismatch: proxy {} (tunnel protocol {}), client {} (tunnel protocol {}); use a czctl of the same version as the proxy image, or a proxy image of czctl's version", proxy.software, proxy.protocol, client.software, client.protocol)]
pub struct VersionMismatch {
    /// What the proxy said.
    pub proxy: Hello,
    /// What the client said.
    pub client: Hello,
}

impl Hello {
    /// This build's hello, naming the sending program's version.
    pub fn new(software: &str) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
        }
    }

    /// Encodes the hello; a software version longer than 255 bytes is cut.
    pub fn encode(&self) -> Bytes {
        let software = &self.software.as_bytes()[..self.software.len().min(255)];
        let mut buf = BytesMut::with_capacity(7 + software.len());
        buf.put_slice(HELLO_MAGIC);
        buf.put_u16(self.protocol.major);
        buf.put_u16(self.protocol.minor);
        buf.put_u8(software.len() as u8);
        buf.put_slice(software);
        buf.freeze()
    }

    /// Decodes a complete hello; `Ok(None)` if `buf` holds only part of one.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, ProtocolError> {
        if buf.len() >= 2 && &buf[..2] != HELLO_MAGIC {
            return Err(ProtocolError::NotATunnelPeer);
        }
        if buf.len() < 7 {
            return Ok(None);
        }
        let len = buf[6] as usize;
        let Some(software) = buf.get(7..7 + len) else {
            return Ok(None);
        };
        let software =
            std::str::from_utf8(software).map_err(|_| ProtocolError::Malformed("hello version"))?;
        Ok(Some(Self {
            protocol: ProtocolVersion {
                major: u16::from_be_bytes([buf[2], buf[3]]),
                minor: u16::from_be_bytes([buf[4], buf[5]]),
            },
            software: software.to_owned(),
        }))
    }

    /// Whether the sender of `self`, on `side`, can talk to the sender of `peer`.
    pub fn check_compatible(&self, side: Side, peer: &Hello) -> Result<(), VersionMismatch> {
        if self.protocol.major == peer.protocol.major {
            return Ok(());
        }
        let (proxy, client) = match side {
            Side::Proxy => (self.clone(), peer.clone()),
            Side::Client => (peer.clone(), self.clone()),
        };
        Err(VersionMismatch { proxy, client })
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Method, URI, version and headers of the request (proxy → laptop).
    RequestHead = 1,
    /// Status, version and headers of the response (laptop → proxy).
    ResponseHead = 2,
    /// A piece of the body.
    Data = 3,
    /// Trailers; ends the body.
    Trailers = 4,
    /// Ends a body without trailers.
    End = 5,
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtocolError;

    fn try_from(kind: u8) -> Result<Self, Self::Error> {
        Ok(match kind {
            1 => Self::RequestHead,
            2 => Self::ResponseHead,
            3 => Self::Data,
            4 => Self::Trailers,
            5 => Self::End,
            other => return Err(ProtocolError::UnknownFrame(other)),
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload is.
    pub kind: FrameKind,
    /// Payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(self) -> [u8; FRAME_HEADER_LEN] {
        let len = self.len.to_be_bytes();
        [self.kind as u8, len[0], len[1], len[2], len[3]]
    }

    /// Decodes a header from the start of `buf`; `Ok(None)` if fewer than five bytes are there.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, ProtocolError> {
        let Some(bytes) = buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let header = Self {
            kind: FrameKind::try_from(bytes[0])?,
            len: u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        };
        if header.kind != FrameKind::Data && header.len as usize > MAX_HEAD_LEN {
            return Err(ProtocolError::FrameTooLarge(header.len));
        }
        Ok(Some(header))
    }
}

/// The peer broke the wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The peer's first bytes are not a hello.
    #[error("the peer is not a cz tunnel endpoint")]
    NotATunnelPeer,
    /// A frame kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownFrame(u8),
    /// A head or trailers frame larger than [`MAX_HEAD_LEN`].
    #[error("frame of {0} bytes is larger than allowed")]
    FrameTooLarge(u32),
    /// A head or trailers frame larger than the reader accepts (the frame reader's limit, which
    /// its owner sets below [`MAX_HEAD_LEN`]); its payload is not read.
    #[error("a head of {len} bytes, more than the {max} bytes accepted")]
    HeadTooLarge {
        /// The head's length.
        len: u32,
        /// The largest accepted.
        max: usize,
    },
    /// A frame that may not come at this point of the stream.
    #[error("unexpected {got:?} frame, expected {expected}")]
    UnexpectedFrame {
        /// What came.
        got: FrameKind,
        /// What was allowed.
        expected: &'static str,
    },
    /// A field that does not decode.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use http::header::{HeaderMap, HeaderValue};
    use http::{Request, Response, StatusCode, Version};

    fn split_frame(mut buf: BytesMut) -> (FrameHeader, Bytes) {
        let header = FrameHeader::decode(&buf).expect("valid").expect("complete");
        buf.advance(FRAME_HEADER_LEN);
        assert_eq!(buf.len(), header.len as usize, "payload length");
        (header, buf.freeze())
    }

    fn sample_request() -> Request<()> {
        Request::builder()
            .method("PATCH")
            .uri("http://svc.ns:8080/a/b?q=1&r=%20")
            .version(Version::HTTP_2)
            .header("x-c6o-intercept", "yes")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .expect("valid request")
    }

    #[test]
    fn request_head_round_trips() {
        let (parts, ()) = sample_request().into_parts();
        let mut buf = BytesMut::new();
        put_request_head(&mut buf, &parts);
        let (header, payload) = split_frame(buf);
        assert_eq!(header.kind, FrameKind::RequestHead);
        let decoded = decode_request_head(payload).expect("decodes");
        assert_eq!(decoded.method(), parts.method);
        assert_eq!(decoded.uri(), &parts.uri);
        assert_eq!(decoded.version(), parts.version);
        assert_eq!(decoded.headers(), &parts.headers);
    }

    #[test]
    fn the_longest_method_round_trips() {
        let method = "M".repeat(MAX_METHOD_LEN);
        let (parts, ()) = Request::builder()
            .method(method.as_str())
            .uri("/x")
            .body(())
            .expect("request")
            .into_parts();
        let mut buf = BytesMut::new();
        put_request_head(&mut buf, &parts);
        let (_, payload) = split_frame(buf);
        let decoded = decode_request_head(payload).expect("decodes");
        assert_eq!(decoded.method().as_str(), method);
        assert_eq!(decoded.uri(), "/x");
    }

    #[test]
    fn response_head_and_trailers_round_trip() {
        let response = Response::builder()
            .status(418)
            .header("content-type", "application/grpc")
            .body(())
            .expect("valid response");
        let (parts, ()) = response.into_parts();
        let mut buf = BytesMut::new();
        put_response_head(&mut buf, &parts);
        let (header, payload) = split_frame(buf);
        assert_eq!(header.kind, FrameKind::ResponseHead);
        let decoded = decode_response_head(payload).expect("decodes");
        assert_eq!(decoded.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(decoded.headers(), &parts.headers);

        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut buf = BytesMut::new();
        put_trailers(&mut buf, &trailers);
        let (header, payload) = split_frame(buf);
        assert_eq!(header.kind, FrameKind::Trailers);
        assert_eq!(decode_trailers(payload).expect("decodes"), trailers);
    }

    #[test]
    fn partial_frame_header_waits_for_more() {
        let encoded = FrameHeader {
            kind: FrameKind::Data,
            len: 70_000,
        }
        .encode();
        for cut in 0..FRAME_HEADER_LEN {
            assert_eq!(FrameHeader::decode(&encoded[..cut]), Ok(None));
        }
        assert_eq!(
            FrameHeader::decode(&encoded),
            Ok(Some(FrameHeader {
                kind: FrameKind::Data,
                len: 70_000
            }))
        );
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert_eq!(
            FrameHeader::decode(&[9, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownFrame(9))
        );
        assert_eq!(
            FrameHeader::decode(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::FrameTooLarge(u32::MAX))
        );
        let (parts, ()) = sample_request().into_parts();
        let mut buf = BytesMut::new();
        put_request_head(&mut buf, &parts);
        let (_, payload) = split_frame(buf);
        // Every truncation of a valid head is an error, never a panic.
        for cut in 0..payload.len() {
            assert!(
                decode_request_head(payload.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = BytesMut::from(&payload[..]);
        padded.put_u8(0);
        assert!(decode_request_head(padded.freeze()).is_err());
        // A huge header count in a tiny payload must not allocate for it.
        assert!(decode_trailers(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).is_err());
    }

    #[test]
    fn hello_round_trips_and_waits_for_all_of_it() {
        let hello = Hello::new("1.2.3");
        let encoded = hello.encode();
        for cut in 0..encoded.len() {
            assert_eq!(Hello::decode(&encoded[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(Hello::decode(&encoded), Ok(Some(hello)));
        assert_eq!(
            Hello::decode(b"GET / HTTP/1.1"),
            Err(ProtocolError::NotATunnelPeer)
        );
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let client = Hello::new("0.1.0");
        let proxy = Hello {
            protocol: ProtocolVersion { major: 2, minor: 0 },
            software: "0.9.0".into(),
        };
        let minor = Hello {
            protocol: ProtocolVersion { major: 1, minor: 7 },
            software: "0.2.0".into(),
        };
        assert!(client.check_compatible(Side::Client, &minor).is_ok());
        let err = client
            .check_compatible(Side::Client, &proxy)
            .expect_err("majors differ");
        assert_eq!(err.proxy, proxy);
        assert!(
            err.to_string().starts_with("version mismatch: proxy 0.9.0"),
            "{err}"
        );
        assert!(err.to_string().contains("client 0.1.0"), "{err}");
        assert_eq!(proxy.check_compatible(Side::Proxy, &client), Err(err));
    }
}
