//! Protocol upgrades (WebSocket and friends): once both sides agreed to switch, bytes are copied
//! both ways until either side closes.

use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Copies bytes between the downstream client's upgraded connection and `next_hop` (the
/// upstream's upgraded connection, or a tunnel stream) on a task of its own. `guard` lives as
/// long as the copy, e.g. to count the tunnel stream as active.
pub fn spawn_splice<T, E, G>(
    downstream: OnUpgrade,
    next_hop: impl Future<Output = Result<T, E>> + Send + 'static,
    guard: G,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    G: Send + 'static,
{
    tokio::spawn(async move {
        let _guard = guard;
        let downstream = match downstream.await {
            Ok(upgraded) => upgraded,
            Err(error) => return debug!(%error, "downstream upgrade failed"),
        };
        let mut next_hop = match next_hop.await {
            Ok(io) => io,
            Err(error) => return debug!(%error, "next hop upgrade failed"),
        };
        match tokio::io::copy_bidirectional(&mut TokioIo::new(downstream), &mut next_hop).await {
            Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
            Err(error) => debug!(%error, "upgraded connection failed"),
        }
    });
}
