//! What both ends of a stream carrier share: the task that moves datagrams between a byte
//! stream and the bounded queues, and the delivery of received datagrams to quinn.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{frame, STREAM_MTU};

/// A received datagram and the peer (stream) it came from.
pub(super) type Received = (SocketAddr, Bytes);

/// Bytes the writer gathers from its queue before writing them in one go.
pub(super) const WRITE_BATCH: usize = 64 * 1024;

/// Bytes the reader asks the stream for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Carries datagrams between `stream` and the queues until the stream ends or fails, or the
/// socket that sends on `outgoing_rx` is gone. Datagrams read are tagged with `peer`.
pub(super) async fn carry<S>(
    stream: S,
    peer: SocketAddr,
    outgoing_rx: mpsc::Receiver<Bytes>,
    incoming_tx: mpsc::Sender<Received>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite,
{
    let (read, write) = tokio::io::split(stream);
    tokio::select! {
        read = read_datagrams(read, peer, incoming_tx) => read,
        written = write_datagrams(write, outgoing_rx) => written,
    }
}

/// Reads frames into `incoming_tx`; a full queue stops reading (TCP flow control).
async fn read_datagrams<R: AsyncRead + Unpin>(
    mut read: R,
    peer: SocketAddr,
    incoming_tx: mpsc::Sender<Received>,
) -> io::Result<()> {
    let mut buffer = BytesMut::new();
    loop {
        while let Some(datagram) = frame::decode(&mut buffer)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?
        {
            if incoming_tx.send((peer, datagram)).await.is_err() {
                return Ok(());
            }
        }
        buffer.reserve(READ_CHUNK);
        if read.read_buf(&mut buffer).await? == 0 {
            return match buffer.is_empty() {
                true => Ok(()),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
    }
}

/// Writes the queue's datagrams, framed, in batches: whatever has queued up (to
/// [`WRITE_BATCH`]) goes out in one write, flushed when the queue is empty.
async fn write_datagrams<W: AsyncWrite + Unpin>(
    mut write: W,
    mut outgoing_rx: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH + frame::HEADER_LEN + usize::from(STREAM_MTU));
    while let Some(datagram) = outgoing_rx.recv().await {
        frame::encode(&datagram, &mut batch);
        while batch.len() < WRITE_BATCH {
            match outgoing_rx.try_recv() {
                Ok(datagram) => frame::encode(&datagram, &mut batch),
                Err(_) => break,
            }
        }
        write.write_all(&batch).await?;
        write.flush().await?;
        batch.clear();
    }
    Ok(())
}

/// The datagram of `transmit`, or why it cannot go on a stream carrier.
pub(super) fn datagram(transmit: &Transmit<'_>) -> io::Result<Bytes> {
    let len = transmit.contents.len();
    if len == 0 || len > usize::from(STREAM_MTU) || transmit.segment_size.is_some_and(|s| s < len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a {len}-byte transmit does not fit a stream carrier's {STREAM_MTU}-byte datagrams \
                 (is the endpoint configured with stream_transport_config()?)"
            ),
        ));
    }
    Ok(Bytes::copy_from_slice(transmit.contents))
}

/// Hands queued datagrams to quinn, as many as `bufs` and `meta` take. A closed queue (the
/// stream is gone) stays pending: to quinn a socket error would end the endpoint.
pub(super) fn deliver(
    incoming_rx: &mut mpsc::Receiver<Received>,
    cx: &mut Context<'_>,
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> Poll<io::Result<usize>> {
    let room = bufs.len().min(meta.len());
    let mut count = 0;
    while count < room {
        let (peer, datagram) = if count == 0 {
            match incoming_rx.poll_recv(cx) {
                Poll::Ready(Some(received)) => received,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        } else {
            match incoming_rx.try_recv() {
                Ok(received) => received,
                Err(_) => break,
            }
        };
        let len = datagram.len();
        let Some(buf) = bufs[count].get_mut(..len) else {
            // Larger than quinn's buffer: the peer is not on STREAM_MTU. Dropped, as UDP would.
            continue;
        };
        buf.copy_from_slice(&datagram);
        meta[count] = RecvMeta {
            addr: peer,
            len,
            stride: len,
            ..RecvMeta::default()
        };
        count += 1;
    }
    Poll::Ready(Ok(count))
}
