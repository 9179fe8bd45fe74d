//! Accepting TCP connections until shutdown, the same way on every port: within the listener's
//! [`ConnectionLimit`], refusing the rest at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::limits::{ConnectionLimit, ConnectionPermit};

/// The next connection `limit` admits, or `None` once `shutdown` is cancelled. A connection over
/// the cap is reset at once: no buffer, task or upstream connection is spent on it, and the
/// kernel keeps no TIME_WAIT state. Accept errors (out of file descriptors and the like) are
/// logged and retried after a short pause instead of spinning.
pub async fn next(
    listener: &TcpListener,
    limit: &ConnectionLimit,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, ConnectionPermit)> {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match limit.admit() {
                    Some(permit) => return Some((stream, peer, permit)),
                    None => {
                        debug!(%peer, "connection refused: the listener is at its cap");
                        let _ = stream.set_zero_linger();
                    }
                },
                Err(error) => {
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
