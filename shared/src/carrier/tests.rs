//! The carrier's bounds, on in-memory streams with tokio's paused clock: the clock moves only
//! when every task waits, so "after everything settled" is deterministic, not a guess of time.

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::{self, HEADER_LEN};
use super::io::WRITE_BATCH;
use super::*;

/// Bytes an in-memory stream buffers between its ends.
const PIPE: usize = 64 * 1024;

/// A full-size frame on the wire.
const FRAME: usize = HEADER_LEN + STREAM_MTU as usize;

/// Until every task waits on something only the test can give.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn transmit(destination: SocketAddr, contents: &[u8]) -> Transmit<'_> {
    Transmit {
        destination,
        ecn: None,
        contents,
        segment_size: None,
        src_ip: None,
    }
}

/// Sends full-size datagrams until the socket pushes back and stays pushed back once
/// everything settled; returns how many it took.
async fn fill(
    socket: &dyn AsyncUdpSocket,
    poller: &mut Pin<Box<dyn UdpPoller>>,
    to: SocketAddr,
) -> usize {
    let datagram = vec![7; usize::from(STREAM_MTU)];
    let mut sent = 0;
    loop {
        match socket.try_send(&transmit(to, &datagram)) {
            Ok(()) => sent += 1,
            Err(error) => {
                assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
                settle().await;
                let writable = poll_fn(|cx| Poll::Ready(poller.as_mut().poll_writable(cx))).await;
                if writable.is_pending() {
                    return sent;
                }
            }
        }
    }
}

/// What a stalled stream may hold at most: the queue, the writer's batch, the pipe.
const MOST_HELD: usize = SEND_QUEUE + WRITE_BATCH / FRAME + 1 + PIPE / FRAME + 1;

/// Reads some of what the carrier wrote to `peer`.
async fn drain(peer: &mut DuplexStream) {
    let mut buffer = vec![0; 4 * FRAME];
    peer.read_exact(&mut buffer)
        .await
        .expect("the carrier wrote");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_pushes_back_on_quinn_and_wakes_it_when_drained() {
    let (ours, mut peer) = tokio::io::duplex(PIPE);
    let (socket, _lost) = StreamSocket::new(ours);
    let mut poller = socket.clone().create_io_poller();
    let sent = fill(&*socket, &mut poller, STREAM_PEER).await;
    assert!(
        sent <= MOST_HELD,
        "{sent} datagrams accepted, at most {MOST_HELD}"
    );
    assert!(sent >= SEND_QUEUE, "{sent}: the whole queue is used");

    drain(&mut peer).await;
    poll_fn(|cx| poller.as_mut().poll_writable(cx))
        .await
        .expect("writable again once the stream moves");
    socket
        .try_send(&transmit(STREAM_PEER, &[1; 1200]))
        .expect("room again");
}

#[tokio::test(start_paused = true)]
async fn a_listener_pushes_back_per_stream_and_drops_datagrams_to_ended_streams() {
    let listener = StreamListener::new();
    let (ours, mut peer) = tokio::io::duplex(PIPE);
    listener.add(ours, ());
    let address = server::peer_address(0);
    let mut poller = listener.clone().create_io_poller();
    let sent = fill(&*listener, &mut poller, address).await;
    assert!(
        sent <= MOST_HELD,
        "{sent} datagrams accepted, at most {MOST_HELD}"
    );

    drain(&mut peer).await;
    poll_fn(|cx| poller.as_mut().poll_writable(cx))
        .await
        .expect("writable again once the stream moves");

    drop(peer);
    settle().await;
    for _ in 0..2 * MOST_HELD {
        listener
            .try_send(&transmit(address, &[1; 1200]))
            .expect("dropped, as UDP would");
    }
    poll_fn(|cx| poller.as_mut().poll_writable(cx))
        .await
        .expect("an ended stream never blocks");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stops_reading_does_not_hold_up_the_others() {
    let listener = StreamListener::new();
    let (dead, mut dead_peer) = tokio::io::duplex(PIPE);
    let (live, mut live_peer) = tokio::io::duplex(PIPE);
    listener.add(dead, ());
    listener.add(live, ());
    let (dead, live) = (server::peer_address(0), server::peer_address(1));
    let mut poller = listener.clone().create_io_poller();
    let held = fill(&*listener, &mut poller, dead).await;

    // The endpoint waits on the full stream for a moment, then counts it as stalled.
    let waited = tokio::time::Instant::now();
    poll_fn(|cx| poller.as_mut().poll_writable(cx))
        .await
        .expect("writable once the stream counts as stalled");
    assert!(
        waited.elapsed() <= Duration::from_millis(200),
        "{:?}",
        waited.elapsed()
    );
    for _ in 0..2 * MOST_HELD {
        listener
            .try_send(&transmit(dead, &[1; 1200]))
            .expect("dropped, as a congested path would");
    }
    for _ in 0..SEND_QUEUE {
        listener
            .try_send(&transmit(live, &[2; 1200]))
            .expect("the live stream is not held up");
    }
    drain(&mut live_peer).await;

    // Once it reads again, it gets datagrams, and pushes back when full, again.
    let mut everything = vec![0; held * FRAME];
    dead_peer
        .read_exact(&mut everything[..(held - 4) * FRAME])
        .await
        .expect("what it held");
    settle().await;
    let sent = fill(&*listener, &mut poller, dead).await;
    assert!(
        sent >= SEND_QUEUE / 2,
        "{sent}: delivered, not dropped, after it drained"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_receive_queue_stops_reading_the_stream() {
    let (ours, mut peer) = tokio::io::duplex(PIPE);
    let (socket, _lost) = StreamSocket::new(ours);
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        let mut wire = Vec::new();
        frame::encode(&[9; STREAM_MTU as usize], &mut wire);
        while peer.write_all(&wire).await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    settle().await;
    // The queue, a datagram waiting for room, what the reader's buffer holds, the pipe.
    let most = RECEIVE_QUEUE + 1 + 64 * 1024 / FRAME + 1 + PIPE / FRAME + 1;
    let stalled_at = written.load(Ordering::Relaxed);
    assert!(
        stalled_at <= most,
        "{stalled_at} frames written, at most {most}"
    );

    let mut buffer = vec![0; usize::from(STREAM_MTU)];
    let mut meta = [RecvMeta::default()];
    for _ in 0..RECEIVE_QUEUE {
        let received =
            poll_fn(|cx| socket.poll_recv(cx, &mut [IoSliceMut::new(&mut buffer)], &mut meta))
                .await
                .expect("a datagram");
        assert_eq!(
            (received, meta[0].len, meta[0].addr),
            (1, buffer.len(), STREAM_PEER)
        );
    }
    settle().await;
    assert!(
        written.load(Ordering::Relaxed) > stalled_at,
        "reading resumes once quinn takes datagrams"
    );
}
