//! Lingering close. When the proxy closes a connection first — after an error answer (400, 408,
//! 413, 431), a timeout or a `Connection: close` — the client may still be sending: bytes that
//! arrive at a closed socket make the kernel answer with a reset, and a reset destroys what the
//! client has not yet read, the answer included. So, like NGINX's `lingering_close`, the proxy
//! half-closes instead, then reads and discards what still comes, for a bounded time and size.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::limits::ConnectionPermit;

/// Longest a closed connection lingers (NGINX's `lingering_timeout`).
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Most bytes read and discarded while lingering: more than a client can have in flight to the
/// proxy's bounded socket buffers.
pub const LINGER_BYTES: usize = 1024 * 1024;

/// A client connection that lingers when the proxy closes it first. It keeps the connection's
/// permit until the lingering ends, so lingering connections count against the cap.
pub struct Lingering {
    stream: Option<TcpStream>,
    permit: Option<ConnectionPermit>,
    peer_closed: bool,
}

impl Lingering {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream, permit: ConnectionPermit) -> Self {
        Self {
            stream: Some(stream),
            permit: Some(permit),
            peer_closed: false,
        }
    }

    /// Ready once the client has sent something (or closed).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream
            .as_ref()
            .expect("taken only on drop")
            .poll_read_ready(cx)
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("taken only on drop"))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let had_room = buf.remaining() > 0;
        if ready!(poll_read_len(self.stream(), cx, buf))? == 0 && had_room {
            self.peer_closed = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// Polls `reader` into `buf`, returning how many bytes it read (0 at the end of the stream when
/// `buf` had room).
pub(crate) fn poll_read_len<R: AsyncRead + ?Sized>(
    reader: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<usize>> {
    let before = buf.filled().len();
    ready!(reader.poll_read(cx, buf))?;
    Poll::Ready(Ok(buf.filled().len() - before))
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(stream), false) = (self.stream.take(), self.peer_closed) else {
            return;
        };
        let permit = self.permit.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                linger(stream).await;
                drop(permit);
            });
        }
    }
}

/// Half-closes `stream` (what was written goes out, then a FIN) and discards what the client
/// still sends until it closes, [`LINGER_BYTES`] are read or [`LINGER_TIME`] has passed.
async fn linger(mut stream: TcpStream) {
    // An error here means the side was already shut down (or the peer is gone, which the read
    // then says).
    let _ = stream.shutdown().await;
    let mut discard = [0u8; 4096];
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut discard)).await {
            Ok(Ok(read)) if read > 0 => drained += read,
            _ => return,
        }
    }
}
