//! Protocol upgrades (WebSocket and friends): once both sides agreed to switch, bytes are copied
//! both ways until either side closes.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Waits for both upgraded connections, then copies bytes between them until either closes.
/// A side that fails to upgrade ends the splice (logged, as nobody is left to tell).
pub async fn splice<A, B, EA, EB>(
    one: impl Future<Output = Result<A, EA>>,
    other: impl Future<Output = Result<B, EB>>,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    EA: std::fmt::Display,
    EB: std::fmt::Display,
{
    let mut one = match one.await {
        Ok(io) => io,
        Err(error) => return debug!(%error, "upgrade failed"),
    };
    let mut other = match other.await {
        Ok(io) => io,
        Err(error) => return debug!(%error, "next hop upgrade failed"),
    };
    match tokio::io::copy_bidirectional(&mut one, &mut other).await {
        Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
        Err(error) => debug!(%error, "upgraded connection failed"),
    }
}
