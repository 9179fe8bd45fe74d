//! The tunnel listener: laptops dial in over QUIC with the session's client certificate, say
//! hello, and from then on carry the route's intercepted requests.

use std::sync::Arc;
use std::time::Duration;

use cz_shared::hello::{proxy_hello, HelloError};
use cz_shared::protocol::{CloseCode, Hello};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::metrics::Metrics;
use crate::routes::Route;

/// How long a laptop may take between its TLS handshake and its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts laptops until `shutdown`, attaching each to `route`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    route: Arc<Route>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let span = tracing::info_span!("tunnel", peer = %incoming.remote_address());
        tokio::spawn(serve_laptop(incoming, route.clone(), metrics.clone()).instrument(span));
    }
}

async fn serve_laptop(incoming: quinn::Incoming, route: Arc<Route>, metrics: Arc<Metrics>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            return warn!(%error, "tunnel handshake failed (a client without this session's certificate?)")
        }
    };
    match tokio::time::timeout(HELLO_TIMEOUT, exchange_hellos(&connection)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(%error, "laptop refused");
            return;
        }
        Err(_) => {
            connection.close(CloseCode::ProtocolViolation.into(), b"no hello");
            return warn!("laptop sent no hello in time");
        }
    }
    info!("laptop connected");
    route.attach(connection.clone());
    metrics.set_tunnel_connected(true);
    let reason = connection.closed().await;
    if route.detach(&connection) {
        metrics.set_tunnel_connected(false);
    }
    info!(%reason, "laptop disconnected");
}

/// Reads the laptop's hello and answers with ours. On a version mismatch the laptop, having
/// both versions, reports it and closes; we wait for that (briefly) so our hello reaches it.
async fn exchange_hellos(connection: &quinn::Connection) -> Result<(), HelloError> {
    let ours = Hello::new(env!("CARGO_PKG_VERSION"));
    match proxy_hello(connection, &ours).await {
        Err(HelloError::Mismatch(mismatch)) => {
            let _closed = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
            connection.close(CloseCode::VersionMismatch.into(), b"version mismatch");
            Err(mismatch.into())
        }
        other => other.map(drop),
    }
}
