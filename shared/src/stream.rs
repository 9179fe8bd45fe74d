//! Frames over one QUIC stream: how both sides send and receive heads, bodies, trailers and
//! upgraded bytes. No sockets are opened here; callers hand in the streams.

use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocol::{
    self, FrameHeader, FrameKind, ProtocolError, StreamCode, FRAME_HEADER_LEN, MAX_HEAD_LEN,
};

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

/// Writes frames to a QUIC send stream.
pub struct FrameWriter {
    send: SendStream,
    buf: BytesMut,
}

impl FrameWriter {
    /// Wraps the sending half of a tunnel stream.
    pub fn new(send: SendStream) -> Self {
        Self {
            send,
            buf: BytesMut::new(),
        }
    }

    /// Sends a request head.
    pub async fn write_request_head(
        &mut self,
        parts: &http::request::Parts,
    ) -> Result<(), StreamError> {
        protocol::put_request_head(&mut self.buf, parts);
        self.flush().await
    }

    /// Sends a response head.
    pub async fn write_response_head(
        &mut self,
        parts: &http::response::Parts,
    ) -> Result<(), StreamError> {
        protocol::put_response_head(&mut self.buf, parts);
        self.flush().await
    }

    /// Sends a request head and the end of its (empty) body in one write, for requests without
    /// a body and upgrade requests: the peer gets both at once.
    pub async fn write_request_head_and_end(
        &mut self,
        parts: &http::request::Parts,
    ) -> Result<(), StreamError> {
        protocol::put_request_head(&mut self.buf, parts);
        self.write_end().await
    }

    /// Sends a response: its head, then `body` as [`write_body`](Self::write_body) does. The head
    /// goes out in one write with the first body frame when that frame is ready at once (as a
    /// small or empty body is), on its own otherwise, so a slow body never holds the head back.
    /// Returns the number of body bytes sent.
    pub async fn write_response<B>(
        &mut self,
        parts: &http::response::Parts,
        body: B,
    ) -> Result<u64, StreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        protocol::put_response_head(&mut self.buf, parts);
        self.write_body(body).await
    }

    /// Sends an end-of-body frame without a body, as upgrade requests have.
    pub async fn write_end(&mut self) -> Result<(), StreamError> {
        protocol::put_end(&mut self.buf);
        self.flush().await
    }

    /// Streams `body` as data frames followed by trailers or an end frame. Each chunk is handed
    /// to QUIC without a copy, and the next one is polled only once QUIC has taken it, so a slow
    /// reader slows the writer down instead of filling memory. The end frame goes out with the
    /// last chunk when the body knows it has ended. If the body fails, the stream is reset so the
    /// peer sees a cancelled request, not a complete one.
    /// Returns the number of body bytes sent.
    pub async fn write_body<B>(&mut self, body: B) -> Result<u64, StreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut body = pin!(body);
        let mut sent = 0;
        loop {
            // Bytes already buffered (a head) wait for the next frame only if it is ready now.
            let ready_now = std::future::poll_fn(|cx| {
                Poll::Ready(match body.as_mut().poll_frame(cx) {
                    Poll::Ready(frame) => Some(frame),
                    Poll::Pending => None,
                })
            });
            let frame = match ready_now.await {
                Some(frame) => frame,
                None => {
                    if !self.buf.is_empty() {
                        self.flush().await?;
                    }
                    body.frame().await
                }
            };
            let frame = match frame {
                None => return self.write_end().await.map(|()| sent),
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    self.cancel();
                    return Err(StreamError::Body(error.into()));
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    let header = FrameHeader {
                        kind: FrameKind::Data,
                        len: data.len() as u32,
                    };
                    self.buf.extend_from_slice(&header.encode());
                    let header = self.buf.split().freeze();
                    sent += data.len() as u64;
                    if body.is_end_stream() {
                        protocol::put_end(&mut self.buf);
                        let end = self.buf.split().freeze();
                        self.send.write_all_chunks(&mut [header, data, end]).await?;
                        return Ok(sent);
                    }
                    self.send.write_all_chunks(&mut [header, data]).await?;
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        protocol::put_trailers(&mut self.buf, &trailers);
                        return self.flush().await.map(|()| sent);
                    }
                }
            }
        }
    }

    /// Resets the stream: the peer sees the message as cancelled.
    pub fn cancel(&mut self) {
        let _ = self.send.reset(StreamCode::Cancelled.into());
    }

    /// Finishes the stream after the last frame.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }

    /// Resolves when the peer stops reading this stream (it cancelled the message).
    pub async fn stopped(&mut self) {
        let _ = self.send.stopped().await;
    }

    /// The send stream, for the raw bytes of an upgraded connection.
    pub fn into_send_stream(self) -> SendStream {
        self.send
    }

    async fn flush(&mut self) -> Result<(), StreamError> {
        let bytes = self.buf.split().freeze();
        self.send.write_chunk(bytes).await?;
        Ok(())
    }
}

/// Reads frames from a tunnel stream (a QUIC receive stream, or any byte stream in tests).
///
/// A head is read exactly: its frame header, then its payload, and not a byte further, so
/// whatever the peer sends after it stays in the stream, under QUIC's flow control, until a body
/// is asked for; a peer cannot make the reader hold more than one head outside flow control.
/// Heads (and trailers) over [`max_head_len`](Self::max_head_len) are refused before their
/// payload is read. Bodies are read [`READ_SIZE`] at a time and handed out without a copy.
pub struct FrameReader<R = RecvStream> {
    recv: R,
    buf: BytesMut,
    /// Bytes of the current data frame not yet handed out.
    data_left: usize,
    /// The body has ended (trailers or end frame seen).
    body_done: bool,
    /// The largest head or trailers frame accepted.
    max_head_len: usize,
    /// A read error met while looking ahead, reported by the next read.
    deferred: Option<StreamError>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps the receiving half of a tunnel stream; heads up to [`MAX_HEAD_LEN`] are accepted.
    pub fn new(recv: R) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            data_left: 0,
            body_done: false,
            max_head_len: MAX_HEAD_LEN,
            deferred: None,
        }
    }

    /// Accepts heads and trailers of at most `max` bytes of payload (never more than
    /// [`MAX_HEAD_LEN`]); a larger one fails with [`ProtocolError::HeadTooLarge`].
    pub fn max_head_len(mut self, max: usize) -> Self {
        self.max_head_len = max.min(MAX_HEAD_LEN);
        self
    }

    /// Reads a request head.
    pub async fn read_request_head(&mut self) -> Result<Request<()>, StreamError> {
        let payload = self.read_head(FrameKind::RequestHead).await?;
        Ok(protocol::decode_request_head(payload)?)
    }

    /// Reads a response head.
    pub async fn read_response_head(&mut self) -> Result<Response<()>, StreamError> {
        let payload = self.read_head(FrameKind::ResponseHead).await?;
        Ok(protocol::decode_response_head(payload)?)
    }

    async fn read_head(&mut self, kind: FrameKind) -> Result<Bytes, StreamError> {
        std::future::poll_fn(|cx| self.poll_head(cx, kind)).await
    }

    /// Reads a head frame of `kind`, asking the stream for exactly the bytes still missing.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        kind: FrameKind,
    ) -> Poll<Result<Bytes, StreamError>> {
        loop {
            let missing = match self.decode_header()? {
                None => FRAME_HEADER_LEN - self.buf.len(),
                Some(header) if header.kind != kind => {
                    let error = ProtocolError::UnexpectedFrame {
                        got: header.kind,
                        expected: "a head",
                    };
                    return Poll::Ready(Err(error.into()));
                }
                Some(header) => {
                    let frame_len = FRAME_HEADER_LEN + header.len as usize;
                    if self.buf.len() >= frame_len {
                        self.buf.advance(FRAME_HEADER_LEN);
                        return Poll::Ready(Ok(self.buf.split_to(header.len as usize).freeze()));
                    }
                    frame_len - self.buf.len()
                }
            };
            if !ready!(self.poll_fill(cx, missing))? {
                return Poll::Ready(Err(StreamError::Truncated("the head")));
            }
        }
    }

    /// Decodes the frame header at the start of the buffer, if it is all there, refusing a head
    /// or trailers frame over the reader's limit (however far over).
    fn decode_header(&self) -> Result<Option<FrameHeader>, ProtocolError> {
        let too_large = |len| ProtocolError::HeadTooLarge {
            len,
            max: self.max_head_len,
        };
        match FrameHeader::decode(&self.buf) {
            Ok(Some(header))
                if header.kind != FrameKind::Data && header.len as usize > self.max_head_len =>
            {
                Err(too_large(header.len))
            }
            Err(ProtocolError::FrameTooLarge(len)) => Err(too_large(len)),
            other => other,
        }
    }

    /// Reads the next body frame; `None` once the body has ended.
    pub fn poll_body_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        loop {
            if self.body_done {
                return Poll::Ready(None);
            }
            if self.data_left > 0 {
                if self.buf.is_empty() {
                    match ready!(self.poll_fill(cx, READ_SIZE)) {
                        Ok(true) => continue,
                        Ok(false) => {
                            return Poll::Ready(Some(Err(StreamError::Truncated(
                                "the end of the body",
                            ))))
                        }
                        Err(error) => return Poll::Ready(Some(Err(error))),
                    }
                }
                let len = self.data_left.min(self.buf.len());
                self.data_left -= len;
                return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(len).freeze()))));
            }
            let (header, payload) = match ready!(self.poll_next_frame(cx)) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Poll::Ready(Some(Err(StreamError::Truncated("the end of the body"))))
                }
                Err(error) => return Poll::Ready(Some(Err(error))),
            };
            match header.kind {
                FrameKind::Data => self.data_left = header.len as usize,
                FrameKind::End => self.body_done = true,
                FrameKind::Trailers => {
                    self.body_done = true;
                    let trailers: Result<HeaderMap, _> = protocol::decode_trailers(payload);
                    return Poll::Ready(Some(trailers.map(Frame::trailers).map_err(Into::into)));
                }
                got => {
                    let error = ProtocolError::UnexpectedFrame {
                        got,
                        expected: "a body frame",
                    };
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    /// Right after the head: whether the body is known to be empty from what has already
    /// arrived, the next frame being the end frame (then consumed). Looks at most one frame
    /// header ahead and never waits. Lets a bodiless request be passed on as one, not as a body
    /// of unknown length.
    pub fn take_empty_body(&mut self) -> bool {
        if !self.body_done && self.data_left == 0 {
            if self.buf.len() < FRAME_HEADER_LEN && self.deferred.is_none() {
                let missing = FRAME_HEADER_LEN - self.buf.len();
                if let Poll::Ready(Err(error)) =
                    self.poll_fill(&mut Context::from_waker(Waker::noop()), missing)
                {
                    self.deferred = Some(error);
                }
            }
            if let Ok(Some(FrameHeader {
                kind: FrameKind::End,
                ..
            })) = FrameHeader::decode(&self.buf)
            {
                self.buf.advance(FRAME_HEADER_LEN);
                self.body_done = true;
            }
        }
        self.body_done
    }

    /// Reads the body to its end frame, discarding it: for upgrade requests, which have none.
    pub async fn skip_body(&mut self) -> Result<(), StreamError> {
        while let Some(frame) = std::future::poll_fn(|cx| self.poll_body_frame(cx)).await {
            frame?;
        }
        Ok(())
    }

    /// The next frame: its header and, except for data frames (whose payload is streamed), its
    /// whole payload. `Ok(None)` on a clean end of stream between frames.
    fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(FrameHeader, Bytes)>, StreamError>> {
        loop {
            if let Some(header) = self.decode_header()? {
                let payload_len = match header.kind {
                    FrameKind::Data => 0,
                    _ => header.len as usize,
                };
                if self.buf.len() >= FRAME_HEADER_LEN + payload_len {
                    self.buf.advance(FRAME_HEADER_LEN);
                    let payload = self.buf.split_to(payload_len).freeze();
                    return Poll::Ready(Ok(Some((header, payload))));
                }
            }
            if !ready!(self.poll_fill(cx, READ_SIZE))? {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(StreamError::Truncated("the end of a frame"))
                });
            }
        }
    }

    /// Reads up to `limit` more bytes into the buffer; `false` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<bool, StreamError>> {
        if let Some(error) = self.deferred.take() {
            return Poll::Ready(Err(error));
        }
        if self.buf.capacity() - self.buf.len() < limit.min(READ_SIZE / 4) {
            // Room for a whole common head at once: its frame header is read first, and the
            // payload would otherwise grow (reallocate) the buffer right after.
            self.buf.reserve(limit.clamp(HEAD_ROOM, READ_SIZE));
        }
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.recv),
            cx,
            &mut (&mut self.buf).limit(limit)
        ))
        .map_err(StreamError::Read)?;
        Poll::Ready(Ok(read > 0))
    }
}

impl FrameReader<RecvStream> {
    /// Tells the peer to stop sending: the message is no longer wanted.
    pub fn cancel(&mut self) {
        let _ = self.recv.stop(StreamCode::Cancelled.into());
    }

    /// The body as an [`http_body::Body`].
    pub fn into_body(self) -> TunnelBody {
        TunnelBody { reader: self }
    }

    /// After a `101` exchange: the stream as a byte pipe, starting with any bytes already read.
    pub fn into_io(self, send: SendStream) -> TunnelIo {
        TunnelIo {
            leftover: self.buf.freeze(),
            recv: self.recv,
            send,
        }
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
    use http::StatusCode;

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
