//! The laptop's end of a stream carrier: one byte stream as quinn's socket.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use tracing::debug;

use super::io::{self as carrier_io, Received};
use super::{RECEIVE_QUEUE, SEND_QUEUE, STREAM_PEER};

/// The laptop's local address on a stream carrier (synthetic, TEST-NET-1).
const LAPTOP_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 1);

/// Laptop side: a quinn [`AsyncUdpSocket`] whose datagrams ride one byte stream, length-prefixed,
/// to and from [`STREAM_PEER`].
///
/// One per carrier: when the carrier breaks, open a new stream, make a new `StreamSocket` and
/// call [`quinn::Endpoint::rebind_abstract`]; the QUIC connection migrates to it. The endpoint
/// and its connections must use [`stream_transport_config`](super::stream_transport_config).
pub struct StreamSocket {
    outgoing_tx: mpsc::Sender<Bytes>,
    incoming_rx: Mutex<mpsc::Receiver<Received>>,
}

impl StreamSocket {
    /// Starts reading and writing `stream` (on the current tokio runtime); returns the socket
    /// (for [`quinn::Endpoint::new_with_abstract_socket`] or
    /// [`quinn::Endpoint::rebind_abstract`]) and a token cancelled when the stream ends or fails,
    /// so the caller knows the carrier is lost. A `TcpStream` should have `TCP_NODELAY` set.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new<S>(stream: S) -> (Arc<Self>, CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (outgoing_tx, outgoing_rx) = mpsc::channel(SEND_QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::channel(RECEIVE_QUEUE);
        let lost = CancellationToken::new();
        let carrier_lost = lost.clone();
        tokio::spawn(async move {
            match carrier_io::carry(stream, STREAM_PEER, outgoing_rx, incoming_tx).await {
                Ok(()) => debug!("tunnel carrier stream ended"),
                Err(error) => debug!(%error, "tunnel carrier stream failed"),
            }
            carrier_lost.cancel();
        });
        let socket = Arc::new(Self {
            outgoing_tx,
            incoming_rx: Mutex::new(incoming_rx),
        });
        (socket, lost)
    }
}

impl fmt::Debug for StreamSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSocket")
            .field("carrier_open", &!self.outgoing_tx.is_closed())
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for StreamSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(QueuePoller::new(self.outgoing_tx.clone()))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.outgoing_tx.try_send(carrier_io::datagram(transmit)?) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            // A closed queue is a lost carrier: the datagram is dropped, as UDP would.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming_rx = self
            .incoming_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        carrier_io::deliver(&mut incoming_rx, cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LAPTOP_ADDRESS)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Writable while one send queue has room; wakes when it gets some. A closed queue is
/// writable: sends to it are dropped.
pub(super) struct QueuePoller {
    outgoing: PollSender<Bytes>,
}

impl QueuePoller {
    /// A poller of the queue `outgoing_tx` feeds.
    pub(super) fn new(outgoing_tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            outgoing: PollSender::new(outgoing_tx),
        }
    }

    /// Whether the queue has room, registering `cx` to be woken when it has if not.
    pub(super) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.outgoing.get_ref().is_some_and(|tx| tx.capacity() > 0) {
            return Poll::Ready(());
        }
        match self.outgoing.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {
                // Only the wake-up was wanted: `try_send` takes its own slot.
                self.outgoing.abort_send();
                Poll::Ready(())
            }
            Poll::Ready(Err(_closed)) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for QueuePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePoller").finish_non_exhaustive()
    }
}

impl UdpPoller for QueuePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_room(cx).map(Ok)
    }
}
