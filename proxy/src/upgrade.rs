//! Protocol upgrades (WebSocket and friends) on a task of their own: the downstream client's
//! upgraded connection spliced to the next hop by the forwarding core's [`cz_forward::splice`].

use std::future::Future;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

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
        let downstream = async move { downstream.await.map(TokioIo::new) };
        cz_forward::splice(downstream, next_hop).await;
    });
}
