//! Reading a message's frames from a tunnel stream, heads exactly and bodies a bounded chunk at
//! a time.

use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncRead;

use super::{StreamError, TunnelBody, TunnelIo, HEAD_ROOM, READ_SIZE};
use crate::protocol::{
    self, FrameHeader, FrameKind, ProtocolError, StreamCode, FRAME_HEADER_LEN, MAX_HEAD_LEN,
};

/// Reads frames from a tunnel stream (a QUIC receive stream, or any byte stream in tests).
///
/// A head is read exactly: its frame header, then its payload, and not a byte further, so
/// whatever the peer sends after it stays in the stream, under QUIC's flow control, until a body
/// is asked for; a peer cannot make the reader hold more than one head outside flow control.
/// Heads (and trailers) over [`max_head_len`](Self::max_head_len) are refused before their
/// payload is read. Bodies are read [`READ_SIZE`] at a time and handed out without a copy.
pub struct FrameReader<R = RecvStream> {
    pub(super) recv: R,
    pub(super) buf: BytesMut,
    /// Bytes of the current data frame not yet handed out.
    data_left: usize,
    /// The body has ended (trailers or end frame seen).
    pub(super) body_done: bool,
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
