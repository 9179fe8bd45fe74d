//! Writing a message's frames to a QUIC send stream.

use std::pin::pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use quinn::SendStream;

use super::{BoxError, StreamError};
use crate::protocol::{self, FrameHeader, FrameKind, StreamCode};

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
