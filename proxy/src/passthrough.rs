//! The Service's other ports: raw TCP to the same port of the original pods, at most so many
//! connections per port, each closed once no byte has moved either way for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use cz_forward::Dialer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::limits::ConnectionLimit;
use crate::linger::poll_read_len;

/// How many times per idle timeout a connection is looked at: it is closed after between one and
/// one and a quarter idle timeouts without traffic.
const IDLE_CHECKS: u32 = 4;

/// One pass-through port: where it goes and its limits.
pub struct Passthrough {
    /// Dials the original pods' port.
    pub target: Dialer,
    /// The port's connection cap.
    pub limit: ConnectionLimit,
    /// How long a connection may carry nothing before both ends are closed.
    pub idle_timeout: Duration,
}

/// Forwards connections accepted on `listener` until `shutdown`. Open connections are tracked
/// by `connections`, so shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    port: Passthrough,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some((mut downstream, peer, permit)) =
        crate::accept::next(&listener, &port.limit, &shutdown).await
    {
        let (target, idle_timeout) = (port.target.clone(), port.idle_timeout);
        let span = tracing::debug_span!("passthrough", %peer, target = target.address());
        connections.spawn(
            async move {
                let _permit = permit;
                let mut upstream = match target.connect().await {
                    Ok(upstream) => upstream,
                    Err(error) => {
                        return warn!(%error, "upstream unreachable; closing the client connection")
                    }
                };
                let _ = downstream.set_nodelay(true);
                match copy_until_idle(&mut downstream, &mut upstream, idle_timeout).await {
                    Ok((up, down)) => debug!(up, down, "closed"),
                    Err(error) => debug!(%error, "connection ended"),
                }
            }
            .instrument(span),
        );
    }
}

/// Copies both ways between `a` and `b` until both sides are done, or until nothing has moved
/// for `idle_timeout` (an error of kind `TimedOut`). Returns the bytes copied each way.
async fn copy_until_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle_timeout: Duration,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let moved = AtomicBool::new(false);
    let (mut a, mut b) = (
        Watched {
            inner: a,
            moved: &moved,
        },
        Watched {
            inner: b,
            moved: &moved,
        },
    );
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut quiet_checks = 0;
    let mut checks = tokio::time::interval(idle_timeout / IDLE_CHECKS);
    checks.reset();
    loop {
        tokio::select! {
            copied = copy.as_mut() => return copied,
            _ = checks.tick() => {
                quiet_checks = if moved.swap(false, Ordering::Relaxed) { 0 } else { quiet_checks + 1 };
                if quiet_checks >= IDLE_CHECKS {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    }
}

/// A stream that notes when bytes move through it.
struct Watched<'a, S> {
    inner: &'a mut S,
    moved: &'a AtomicBool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if ready!(poll_read_len(Pin::new(&mut *self.inner), cx, buf))? > 0 {
            self.moved.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let idle = Duration::from_secs(60);
        let (mut client, mut proxy_side) = tokio::io::duplex(1024);
        let (mut upstream_side, mut upstream) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move {
            copy_until_idle(&mut proxy_side, &mut upstream_side, idle).await
        });
        // Traffic every 40 s keeps it open well past the timeout...
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            client.write_all(b"ping").await.expect("write");
            let mut ping = [0; 4];
            upstream.read_exact(&mut ping).await.expect("read");
        }
        assert!(!copy.is_finished(), "closed while busy");
        // ...and 75 s of silence closes it.
        tokio::time::sleep(Duration::from_secs(75)).await;
        let error = copy.await.expect("task").expect_err("idle timeout");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
