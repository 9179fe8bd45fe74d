//! The port-forward carrier's listener: TCP connections on the pod's loopback, each a byte
//! stream carrying the tunnel's QUIC datagrams into one [`StreamListener`].
//!
//! It listens on 127.0.0.1 only, so the one way in from outside the pod is `pods/portforward`,
//! which the API server authorizes; the QUIC connection on it is mutually authenticated as on
//! the UDP port.

use std::sync::Arc;

use cz_shared::carrier::StreamListener;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::accept;
use crate::limits::ConnectionLimit;

/// Most carrier connections at once: each laptop holds one, plus one while it reconnects.
pub const MAX_CONNECTIONS: usize = 32;

/// Feeds every connection accepted on `listener` into `streams`, at most `limit` at once, until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    limit: ConnectionLimit,
    streams: Arc<StreamListener>,
    shutdown: CancellationToken,
) {
    while let Some((stream, peer, permit)) = accept::next(&listener, &limit, &shutdown).await {
        // The carrier batches its writes; Nagle would only delay acknowledgements.
        if let Err(error) = stream.set_nodelay(true) {
            warn!(%peer, %error, "could not set TCP_NODELAY on a carrier");
        }
        debug!(%peer, "carrier connected");
        streams.add(stream, permit);
    }
}
