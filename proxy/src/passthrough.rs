//! The Service's other ports: raw TCP to the same port of the original pods.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

/// Forwards connections accepted on `listener` to `target` until `shutdown`. Open connections
/// are tracked by `connections`, so shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    target: String,
    connect_timeout: Duration,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let Some((mut downstream, peer)) = crate::accept::next(&listener, &shutdown).await else {
            break;
        };
        let target = target.clone();
        let span = tracing::debug_span!("passthrough", %peer, %target);
        connections.spawn(
            async move {
                let connect =
                    tokio::time::timeout(connect_timeout, TcpStream::connect(&target)).await;
                let mut upstream = match connect {
                    Ok(Ok(upstream)) => upstream,
                    Ok(Err(error)) => {
                        return warn!(%error, "upstream unreachable; closing the client connection")
                    }
                    Err(_) => {
                        return warn!("upstream connect timed out; closing the client connection")
                    }
                };
                let _ = (downstream.set_nodelay(true), upstream.set_nodelay(true));
                match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                    Ok((up, down)) => debug!(up, down, "closed"),
                    Err(error) => debug!(%error, "connection failed"),
                }
            }
            .instrument(span),
        );
    }
}
