//! Frames over one QUIC stream: how both sides send and receive heads, bodies, trailers and
//! upgraded bytes. No sockets are opened here; callers hand in the streams.

use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocol::{self, FrameHeader, FrameKind, ProtocolError, StreamCode, FRAME_HEADER_LEN};

/// Any error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much is read from the QUIC stream at a time; bounds what one stream buffers.
const READ_SIZE: usize = 64 * 1024;

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

/// Reads frames from a QUIC receive stream.
pub struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
    /// Bytes of the current data frame not yet handed out.
    data_left: usize,
    /// The body has ended (trailers or end frame seen).
    body_done: bool,
}

impl FrameReader {
    /// Wraps the receiving half of a tunnel stream.
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            data_left: 0,
            body_done: false,
        }
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
        let next = std::future::poll_fn(|cx| self.poll_next_frame(cx)).await?;
        match next {
            Some((header, payload)) if header.kind == kind => Ok(payload),
            Some((header, _)) => Err(ProtocolError::UnexpectedFrame {
                got: header.kind,
                expected: "a head",
            }
            .into()),
            None => Err(StreamError::Truncated("the head")),
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
                    match ready!(self.poll_fill(cx)) {
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

    /// Right after the head: whether the body is known to be empty from what was already read,
    /// the next frame being the end frame (then consumed). Lets a bodiless request be passed on as one, not as a body of
    /// unknown length.
    pub fn take_empty_body(&mut self) -> bool {
        if !self.body_done && self.data_left == 0 {
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
            if let Some(header) = FrameHeader::decode(&self.buf)? {
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
            if !ready!(self.poll_fill(cx))? {
                return Poll::Ready(if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(StreamError::Truncated("the end of a frame"))
                });
            }
        }
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, StreamError>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.recv),
            cx,
            &mut self.buf
        ))
        .map_err(StreamError::Read)?;
        Poll::Ready(Ok(read > 0))
    }

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
