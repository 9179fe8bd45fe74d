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

/// Feeds every connection accepted on `listener` into `streams` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    streams: Arc<StreamListener>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // The carrier batches its writes; Nagle would only delay acknowledgements.
                if let Err(error) = stream.set_nodelay(true) {
                    warn!(%peer, %error, "could not set TCP_NODELAY on a carrier");
                }
                debug!(%peer, "carrier connected");
                streams.add(stream);
            }
            Err(error) => warn!(%error, "could not accept a carrier connection"),
        }
    }
}
