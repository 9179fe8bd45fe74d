//! Frames over one QUIC stream: how both sides send and receive heads, bodies, trailers and
//! upgraded bytes. No sockets are opened here; callers hand in the streams.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod reader;
mod writer;

pub use reader::FrameReader;
pub use writer::FrameWriter;

use crate::protocol::ProtocolError;

/// Any error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much is read from the QUIC stream at a time while a body streams; bounds what one stream
/// buffers outside QUIC's flow control. Heads are read exactly, never ahead (see [`FrameReader`]).
const READ_SIZE: usize = 64 * 1024;

/// The least a read makes room for: a common request or response head, frame header included.
const HEAD_ROOM: usize = 1024;

/// Why a tunnel stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading failed, e.g. the peer reset the stream or the connection was lost.
    #[error("reading from the tunnel failed: {0}")]
    Read(#[source] io::Error),
    /// Writing failed, e.g. the peer stopped the stream or the connection was lost.
    #[error("writing to the tunnel failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer broke the protocol.
    #[error("tunnel protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer finished the stream in the middle of a message.
    #[error("the tunnel stream ended before {0}")]
    Truncated(&'static str),
    /// The body being sent failed.
    #[error("the body being forwarded failed: {0}")]
    Body(#[source] BoxError),
}

impl StreamError {
    /// Whether the peer stopped reading (STOP_SENDING): it wants no more of this message.
    pub fn is_stopped(&self) -> bool {
        matches!(self, Self::Write(quinn::WriteError::Stopped(_)))
    }
}

/// A body arriving over a tunnel stream. Dropping it before its end cancels the stream, so the
/// peer stops producing it.
pub struct TunnelBody {
    reader: FrameReader,
}

impl Body for TunnelBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        self.reader.poll_body_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.reader.body_done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for TunnelBody {
    fn drop(&mut self) {
        if !self.reader.body_done {
            self.reader.cancel();
        }
    }
}

/// An upgraded connection carried by a tunnel stream: raw bytes both ways.
pub struct TunnelIo {
    leftover: Bytes,
    recv: RecvStream,
    send: SendStream,
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let len = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover.split_to(len));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

/// Reads the peer's [`Hello`](crate::protocol::Hello) from the control stream.
pub async fn read_hello(recv: &mut RecvStream) -> Result<crate::protocol::Hello, StreamError> {
    const MAX_HELLO_LEN: usize = 7 + 255;
    let mut buf = Vec::with_capacity(MAX_HELLO_LEN);
    let mut chunk = [0; MAX_HELLO_LEN];
    loop {
        if let Some(hello) = crate::protocol::Hello::decode(&buf)? {
            return Ok(hello);
        }
        let room = MAX_HELLO_LEN - buf.len();
        match recv.read(&mut chunk[..room]).await {
            Ok(Some(read)) => buf.extend_from_slice(&chunk[..read]),
            Ok(None) => return Err(StreamError::Truncated("the hello")),
            Err(error) => return Err(StreamError::Read(error.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, FrameHeader, FrameKind, FRAME_HEADER_LEN, MAX_HEAD_LEN};
    use bytes::BytesMut;
    use http::{HeaderMap, Response, StatusCode};

    /// What a [`CountingStream`] does once its bytes are taken.
    #[derive(Clone, Copy)]
    enum Then {
        /// Ends.
        Ends,
        /// Has nothing more yet (and never wakes the reader).
        Waits,
        /// Fails once, then ends, as a reset QUIC stream does.
        Fails,
    }

    /// A byte stream that counts what the reader pulled from it and hands out at most what each
    /// read asks for.
    struct CountingStream {
        bytes: Bytes,
        pulled: usize,
        then: Then,
    }

    impl AsyncRead for CountingStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.bytes.is_empty() {
                match self.then {
                    Then::Ends => {}
                    // Never woken: only readers that do not wait may meet this.
                    Then::Waits => return Poll::Pending,
                    Then::Fails => {
                        // Once, then ended, as a reset QUIC stream reads.
                        self.then = Then::Ends;
                        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                    }
                }
            }
            let len = self.bytes.len().min(buf.remaining());
            let chunk = self.bytes.split_to(len);
            buf.put_slice(&chunk);
            self.pulled += len;
            Poll::Ready(Ok(()))
        }
    }

    fn reader(bytes: BytesMut, then: Then) -> FrameReader<CountingStream> {
        FrameReader::new(CountingStream {
            bytes: bytes.freeze(),
            pulled: 0,
            then,
        })
    }

    /// A response head frame with one header of `value_len` bytes; returns its encoded length.
    fn put_head(buf: &mut BytesMut, value_len: usize) -> usize {
        let (head, ()) = Response::builder()
            .status(StatusCode::CREATED)
            .header("x-big", "v".repeat(value_len))
            .body(())
            .expect("response")
            .into_parts();
        let start = buf.len();
        protocol::put_response_head(buf, &head);
        buf.len() - start
    }

    fn put_data(buf: &mut BytesMut, len: usize) {
        let header = FrameHeader {
            kind: FrameKind::Data,
            len: len as u32,
        };
        buf.extend_from_slice(&header.encode());
        buf.extend(std::iter::repeat_n(7u8, len));
    }

    #[tokio::test]
    async fn a_head_is_read_exactly_leaving_the_body_in_the_stream() {
        const BODY: usize = 1024 * 1024;
        let mut wire = BytesMut::new();
        let head_len = put_head(&mut wire, 100);
        put_data(&mut wire, BODY);
        protocol::put_end(&mut wire);
        let mut reader = reader(wire, Then::Ends);

        let head = reader.read_response_head().await.expect("head");
        assert_eq!(head.status(), StatusCode::CREATED);
        assert_eq!(head.headers()["x-big"].len(), 100);
        assert_eq!(
            reader.recv.pulled, head_len,
            "only the head left the stream; the body stays under flow control"
        );
        assert!(reader.buf.is_empty());

        // The body then streams in reads of up to READ_SIZE, every byte intact.
        let mut body = 0;
        while let Some(frame) = std::future::poll_fn(|cx| reader.poll_body_frame(cx)).await {
            let data = frame.expect("body frame").into_data().expect("data");
            assert!(data.len() <= READ_SIZE);
            assert!(data.iter().all(|&b| b == 7));
            body += data.len();
        }
        assert_eq!(body, BODY);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_before_its_payload_is_read() {
        let mut wire = BytesMut::new();
        let head_len = put_head(&mut wire, 4096);
        let mut reader = reader(wire, Then::Ends).max_head_len(1024);
        let error = reader.read_response_head().await.expect_err("too large");
        assert!(
            matches!(
                error,
                StreamError::Protocol(ProtocolError::HeadTooLarge { len, max: 1024 })
                    if len as usize == head_len - FRAME_HEADER_LEN
            ),
            "{error}"
        );
        assert_eq!(
            reader.recv.pulled, FRAME_HEADER_LEN,
            "only the frame header"
        );
    }

    #[tokio::test]
    async fn a_head_claiming_more_than_any_reader_accepts_is_too_large_too() {
        let header = FrameHeader {
            kind: FrameKind::ResponseHead,
            len: u32::MAX,
        };
        let mut reader = reader(BytesMut::from(&header.encode()[..]), Then::Ends);
        let error = reader.read_response_head().await.expect_err("too large");
        assert!(
            matches!(
                error,
                StreamError::Protocol(ProtocolError::HeadTooLarge {
                    len: u32::MAX,
                    max: MAX_HEAD_LEN
                })
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn trailers_over_the_limit_fail_the_body() {
        let mut wire = BytesMut::new();
        put_head(&mut wire, 0);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", "t".repeat(2048).parse().expect("value"));
        protocol::put_trailers(&mut wire, &trailers);
        let mut reader = reader(wire, Then::Ends).max_head_len(1024);
        reader.read_response_head().await.expect("head");
        let frame = std::future::poll_fn(|cx| reader.poll_body_frame(cx)).await;
        assert!(
            matches!(
                frame,
                Some(Err(StreamError::Protocol(
                    ProtocolError::HeadTooLarge { .. }
                )))
            ),
            "{frame:?}"
        );
    }

    #[tokio::test]
    async fn an_empty_body_is_seen_without_waiting_and_a_pending_one_is_not_waited_for() {
        let mut wire = BytesMut::new();
        let head_len = put_head(&mut wire, 10);
        protocol::put_end(&mut wire);
        let mut ended = reader(wire, Then::Waits);
        ended.read_response_head().await.expect("head");
        assert!(ended.take_empty_body(), "the end frame had arrived");
        assert_eq!(ended.recv.pulled, head_len + FRAME_HEADER_LEN);

        // Nothing after the head yet: not known to be empty, and the call returns at once.
        let mut wire = BytesMut::new();
        put_head(&mut wire, 10);
        let mut waiting = reader(wire, Then::Waits);
        waiting.read_response_head().await.expect("head");
        assert!(!waiting.take_empty_body());

        // A data frame next: not empty, and the body still reads from its first byte.
        let mut wire = BytesMut::new();
        put_head(&mut wire, 10);
        put_data(&mut wire, 3);
        protocol::put_end(&mut wire);
        let mut with_body = reader(wire, Then::Ends);
        with_body.read_response_head().await.expect("head");
        assert!(!with_body.take_empty_body());
        let frame = std::future::poll_fn(|cx| with_body.poll_body_frame(cx)).await;
        let data = frame
            .expect("a frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert_eq!(&data[..], &[7, 7, 7]);
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_head_is_truncated() {
        let mut wire = BytesMut::new();
        put_head(&mut wire, 10);
        wire.truncate(wire.len() - 1);
        let error = reader(wire, Then::Ends)
            .read_response_head()
            .await
            .expect_err("truncated");
        assert!(matches!(error, StreamError::Truncated(_)), "{error}");
    }

    #[tokio::test]
    async fn a_failure_met_while_looking_ahead_is_reported_by_the_body() {
        let mut wire = BytesMut::new();
        put_head(&mut wire, 10);
        let mut reader = reader(wire, Then::Fails);
        reader.read_response_head().await.expect("head");
        assert!(
            !reader.take_empty_body(),
            "a failed stream is no empty body"
        );
        let frame = std::future::poll_fn(|cx| reader.poll_body_frame(cx)).await;
        assert!(
            matches!(frame, Some(Err(StreamError::Read(_)))),
            "the failure, not a clean end: {frame:?}"
        );
    }
}
