//! Serving one tunnel connection: the proxy's requests go to the local app, its signals become
//! events (a notice) or a request to move (the proxy is draining).

use std::sync::Arc;

use cz_shared::signal::{Signal, MAX_SIGNAL_LEN};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::events::TunnelEvent;
use crate::local_app::LocalApp;

/// What serves a tunnel's connections; one per tunnel, cloned for each connection.
#[derive(Clone)]
pub(super) struct Server {
    pub(super) local_app: Arc<LocalApp>,
    pub(super) events_tx: broadcast::Sender<TunnelEvent>,
}

/// What a connection's proxy said about itself: its protocol minor version (how its signals are
/// encoded), and, once it says it is draining, a cancelled token.
#[derive(Clone, Default)]
pub(super) struct ProxyPeer {
    pub(super) minor: u16,
    pub(super) draining: CancellationToken,
}

impl Server {
    /// Serves the proxy's streams on `connection` until it ends; returns why it ended. Requests
    /// come on bidirectional streams, signals on unidirectional ones.
    pub(super) async fn serve(
        &self,
        connection: &quinn::Connection,
        proxy: &ProxyPeer,
    ) -> quinn::ConnectionError {
        loop {
            tokio::select! {
                accepted = connection.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        let local_app = self.local_app.clone();
                        let span = tracing::debug_span!("req", stream = %send.id());
                        // Boxed: the request's future is large, and tokio moves a spawned
                        // future several times on its way into the task (a copy of all of it
                        // each time).
                        let serve =
                            Box::pin(async move { local_app.serve_stream(send, recv).await });
                        tokio::spawn(serve.instrument(span));
                    }
                    Err(reason) => return reason,
                },
                accepted = connection.accept_uni() => match accepted {
                    Ok(recv) => {
                        tokio::spawn(receive_signal(recv, proxy.clone(), self.events_tx.clone()));
                    }
                    Err(reason) => return reason,
                },
            }
        }
    }
}

/// Reads one signal from the proxy and acts on it.
async fn receive_signal(
    mut recv: quinn::RecvStream,
    proxy: ProxyPeer,
    events_tx: broadcast::Sender<TunnelEvent>,
) {
    let bytes = match recv.read_to_end(MAX_SIGNAL_LEN).await {
        Ok(bytes) => bytes,
        Err(error) => return debug!(%error, "a signal from the proxy could not be read"),
    };
    match Signal::decode(&bytes, proxy.minor) {
        Ok(Signal::Notice(notice)) => {
            let _ = events_tx.send(TunnelEvent::Notice(notice));
        }
        Ok(Signal::Draining) => proxy.draining.cancel(),
        Err(unknown) => debug!(%unknown, "ignored"),
    }
}
