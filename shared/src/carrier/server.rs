//! The proxy's end of stream carriers: one quinn socket fed by any number of accepted streams,
//! each a peer address of its own.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{debug, Instrument};

use super::client::QueuePoller;
use super::io::{self as carrier_io, Received};
use super::{RECEIVE_QUEUE, SEND_QUEUE, STREAM_PEER};

/// The send queue of each stream, by its synthetic peer address.
type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// How long the endpoint waits for a stream's full queue to get room before it counts the
/// stream as stalled: a live stream drains its queue within milliseconds, even through a slow
/// port-forward; one whose laptop died or stopped reading does not.
const STALL_AFTER: Duration = Duration::from_millis(100);

/// Proxy side: one quinn [`AsyncUdpSocket`] fed by any number of accepted byte streams. Each
/// stream is a distinct, synthetic peer address (unique per stream), so a laptop that comes back
/// on a new stream is a QUIC path migration. Datagrams to a stream that has ended are dropped.
///
/// A stream's full queue is backpressure to the whole endpoint (nothing is lost while a laptop
/// reads at its pace) for at most [`STALL_AFTER`]: a stream whose queue stays full longer is
/// stalled, and datagrams to it are dropped, as a congested UDP path drops them (its QUIC
/// connection backs off and retransmits), until its queue is half empty again. So one laptop that
/// died behind a port-forward, or stopped reading, never holds up the others' connections.
///
/// The endpoint on it uses [`stream_transport_config`](super::stream_transport_config).
pub struct StreamListener {
    peers: Peers,
    /// The peer whose full queue last refused a datagram: what pollers wait on.
    blocked: Mutex<Option<SocketAddr>>,
    /// Peers whose queue stayed full for [`STALL_AFTER`]: datagrams to them are dropped.
    stalled: Arc<Mutex<HashSet<SocketAddr>>>,
    next_peer: AtomicU32,
    incoming_tx: mpsc::Sender<Received>,
    incoming_rx: Mutex<mpsc::Receiver<Received>>,
}

impl StreamListener {
    /// A listener without streams yet.
    pub fn new() -> Arc<Self> {
        let (incoming_tx, incoming_rx) = mpsc::channel(RECEIVE_QUEUE);
        Arc::new(Self {
            peers: Arc::default(),
            blocked: Mutex::new(None),
            stalled: Arc::default(),
            next_peer: AtomicU32::new(0),
            incoming_tx,
            incoming_rx: Mutex::new(incoming_rx),
        })
    }

    /// Adds an accepted stream (e.g. a TCP connection, with `TCP_NODELAY` set); it is served,
    /// on the current tokio runtime, until it ends or fails. `held` (a connection permit, say)
    /// is dropped when it ends.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn add<S, H>(&self, stream: S, held: H)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
        H: Send + 'static,
    {
        let peer = peer_address(self.next_peer.fetch_add(1, Ordering::Relaxed));
        let (outgoing_tx, outgoing_rx) = mpsc::channel(SEND_QUEUE);
        lock(&self.peers).insert(peer, outgoing_tx);
        let (peers, stalled) = (self.peers.clone(), self.stalled.clone());
        let incoming_tx = self.incoming_tx.clone();
        let span = tracing::debug_span!("carrier", %peer);
        tokio::spawn(
            async move {
                match carrier_io::carry(stream, peer, outgoing_rx, incoming_tx).await {
                    Ok(()) => debug!("carrier stream ended"),
                    Err(error) => debug!(%error, "carrier stream failed"),
                }
                lock(&peers).remove(&peer);
                lock(&stalled).remove(&peer);
                drop(held);
            }
            .instrument(span),
        );
    }

    fn sender(&self, peer: &SocketAddr) -> Option<mpsc::Sender<Bytes>> {
        lock(&self.peers).get(peer).cloned()
    }
}

/// The synthetic address of the `index`th stream: 240.0.0.0/4 (reserved, never routed).
pub(super) fn peer_address(index: u32) -> SocketAddr {
    SocketAddr::new(
        Ipv4Addr::from(0xF000_0000 | (index & 0x0FFF_FFFF)).into(),
        1,
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for StreamListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamListener")
            .field("streams", &lock(&self.peers).len())
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for StreamListener {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(ListenerPoller {
            listener: self,
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let datagram = carrier_io::datagram(transmit)?;
        let peer = transmit.destination;
        let Some(outgoing_tx) = self.sender(&peer) else {
            return Ok(()); // The stream is gone: dropped, as UDP would.
        };
        let mut blocked = lock(&self.blocked);
        let mut stalled = lock(&self.stalled);
        match outgoing_tx.try_send(datagram) {
            // Lost, as on a congested path: the stream's connection retransmits.
            Err(mpsc::error::TrySendError::Full(_)) if stalled.contains(&peer) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                *blocked = Some(peer);
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                if *blocked == Some(peer) {
                    *blocked = None;
                }
                if outgoing_tx.capacity() > SEND_QUEUE / 2 {
                    stalled.remove(&peer);
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        carrier_io::deliver(&mut lock(&self.incoming_rx), cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(STREAM_PEER)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Writable unless the stream that last refused a datagram still has a full queue; wakes when
/// that queue gets room, its stream ends, or it has been full for [`STALL_AFTER`] (then the
/// stream is stalled).
struct ListenerPoller {
    listener: Arc<StreamListener>,
    /// The blocked peer this poller waits on, its queue, and when it counts as stalled.
    waiting: Option<(SocketAddr, QueuePoller, Pin<Box<tokio::time::Sleep>>)>,
}

impl fmt::Debug for ListenerPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerPoller")
            .field("waiting", &self.waiting.as_ref().map(|(peer, ..)| peer))
            .finish_non_exhaustive()
    }
}

impl UdpPoller for ListenerPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(peer) = *lock(&this.listener.blocked) else {
            return Poll::Ready(Ok(()));
        };
        if this
            .waiting
            .as_ref()
            .is_none_or(|(waiting, ..)| *waiting != peer)
        {
            let Some(outgoing_tx) = this.listener.sender(&peer) else {
                return Poll::Ready(Ok(())); // Gone: sends to it are dropped.
            };
            let stall = Box::pin(tokio::time::sleep(STALL_AFTER));
            this.waiting = Some((peer, QueuePoller::new(outgoing_tx), stall));
        }
        let (_, queue, stall) = this.waiting.as_mut().expect("set just above");
        if queue.poll_room(cx).is_ready() {
            // It moves: the next time it is full, it gets the whole delay again.
            this.waiting = None;
            return Poll::Ready(Ok(()));
        }
        ready!(stall.as_mut().poll(cx));
        debug!(%peer, "carrier stream stalled: datagrams to it are dropped until it drains");
        // In `try_send`'s order: `blocked`, then `stalled`.
        let mut blocked = lock(&this.listener.blocked);
        lock(&this.listener.stalled).insert(peer);
        if *blocked == Some(peer) {
            *blocked = None;
        }
        this.waiting = None;
        Poll::Ready(Ok(()))
    }
}
