//! A client socket that hyper can give back while the connection idles ("parked"): hyper's
//! buffers and state are dropped, the socket waits for the client's next bytes, and a fresh hyper
//! connection takes it up again with the bytes the last one had read but not used.
//!
//! The wrapper tells its owner what hyper last waited for (so that it parks only a connection
//! that waits for the client, with nothing left to write) and makes hyper's closing shutdown a
//! no-op while parking, so that the client sees nothing of it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::linger::Lingering;

/// What the socket last saw, and whether it is being parked; shared by the socket (inside hyper)
/// and the connection that owns it.
#[derive(Debug, Default)]
pub struct IoSignals {
    read_blocked: AtomicBool,
    write_blocked: AtomicBool,
    parking: AtomicBool,
}

impl IoSignals {
    /// Whether hyper waits for the client and has nothing left to write: its last read found no
    /// data and its last write was taken whole.
    pub fn waits_for_client(&self) -> bool {
        self.read_blocked.load(Ordering::Relaxed) && !self.write_blocked.load(Ordering::Relaxed)
    }

    /// While `parking`, hyper's shutdown of the socket does nothing.
    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    fn record<T>(flag: &AtomicBool, poll: &Poll<T>) {
        flag.store(poll.is_pending(), Ordering::Relaxed);
    }
}

/// A client connection's socket, with the bytes a parked hyper connection had read but not used
/// replayed first.
pub struct ParkableIo {
    stream: Lingering,
    unread: Bytes,
    signals: Arc<IoSignals>,
}

impl ParkableIo {
    /// Wraps an accepted connection.
    pub fn new(stream: Lingering) -> Self {
        Self {
            stream,
            unread: Bytes::new(),
            signals: Arc::default(),
        }
    }

    /// The signals this socket gives.
    pub fn signals(&self) -> Arc<IoSignals> {
        self.signals.clone()
    }

    /// Keeps `bytes`, read from the client but not used, to be read first. Copied, so that the
    /// buffer they came from (hyper's read buffer) is freed.
    pub fn unread(&mut self, bytes: &[u8]) {
        debug_assert!(self.unread.is_empty(), "unread bytes are replayed first");
        self.unread = Bytes::copy_from_slice(bytes);
    }

    /// Ready once the client has sent something (or closed). Registers no waiter of its own:
    /// a parked connection's task keeps no room for one.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    /// Ready for a new hyper connection: nothing seen yet.
    pub fn reset_signals(&self) {
        self.signals.read_blocked.store(false, Ordering::Relaxed);
        self.signals.write_blocked.store(false, Ordering::Relaxed);
    }
}

impl AsyncRead for ParkableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let len = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..len]);
            self.unread.advance(len);
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        IoSignals::record(&this.signals.read_blocked, &poll);
        poll
    }
}

impl AsyncWrite for ParkableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        IoSignals::record(&this.signals.write_blocked, &poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        IoSignals::record(&this.signals.write_blocked, &poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.signals.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::limits::ConnectionLimit;
    use crate::metrics::{Listener, Metrics};

    /// A parkable accepted connection and its client.
    async fn connected() -> (ParkableIo, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let permit = ConnectionLimit::new(Listener::Http, 1, &Metrics::new())
            .admit()
            .expect("a place");
        (ParkableIo::new(Lingering::new(accepted, permit)), client)
    }

    #[tokio::test]
    async fn unread_bytes_are_read_before_the_socket() {
        let (mut io, mut client) = connected().await;
        io.unread(b"GET / HT");
        client.write_all(b"TP/1.1\r\n").await.expect("send");
        let mut read = vec![0u8; 16];
        let mut filled = 0;
        while filled < read.len() {
            filled += io.read(&mut read[filled..]).await.expect("read");
        }
        assert_eq!(read, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_read_that_finds_no_data_means_waiting_for_the_client() {
        let (mut io, mut client) = connected().await;
        let signals = io.signals();
        assert!(!signals.waits_for_client(), "nothing read yet");
        let mut buf = [0u8; 8];
        let waited = tokio::time::timeout(Duration::from_millis(50), io.read(&mut buf)).await;
        assert!(waited.is_err(), "the client sent nothing");
        assert!(signals.waits_for_client());
        client.write_all(b"x").await.expect("send");
        assert_eq!(io.read(&mut buf).await.expect("read"), 1);
        assert!(!signals.waits_for_client(), "the read brought data");
        io.reset_signals();
        assert!(!signals.waits_for_client());
    }

    #[tokio::test]
    async fn shutdown_while_parking_leaves_the_connection_open() {
        let (mut io, mut client) = connected().await;
        let signals = io.signals();
        signals.set_parking(true);
        io.shutdown().await.expect("shutdown");
        io.write_all(b"still open").await.expect("write");
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"still open");
        signals.set_parking(false);
        io.shutdown().await.expect("shutdown");
        assert_eq!(client.read(&mut buf).await.expect("read"), 0, "closed now");
    }
}
