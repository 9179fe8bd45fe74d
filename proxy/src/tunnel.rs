//! The tunnel listener: laptops dial in over QUIC with their session's client certificate, say
//! hello, and from then on carry their session's route's intercepted requests.

use std::sync::Arc;
use std::time::Duration;

use cz_shared::hello::{proxy_hello, HelloError};
use cz_shared::protocol::{CloseCode, Hello};
use tracing::{debug, info, warn, Instrument};

use crate::drain::{Drain, DrainSignal};
use crate::limits::{ConnectionLimit, ConnectionPermit};
use crate::metrics::{Listener, Metrics};
use crate::routes::{Route, RouteTable};

/// How long a laptop may take between its TLS handshake and its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a QUIC handshake may take, from its first packet: a few round trips, even through a
/// port-forward across the world.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most QUIC handshakes in progress at once per endpoint; laptops connect one at a time.
pub const MAX_HANDSHAKES: usize = 64;

/// Bounds what unauthenticated peers can make an endpoint hold: at most [`MAX_HANDSHAKES`]
/// connection attempts, each buffering at most 64 KiB of early packets (quinn's defaults are
/// 65,536 attempts of 10 MB each).
pub fn bound_handshakes(config: &mut quinn::ServerConfig) {
    config
        .max_incoming(MAX_HANDSHAKES)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(MAX_HANDSHAKES as u64 * 64 * 1024);
}

/// Where laptops come from, which decides how their addresses are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// UDP, where a source address can be spoofed: each one is validated with a QUIC retry (one
    /// round trip, no state kept) before a handshake is started for it.
    Udp,
    /// Port-forward streams, whose addresses the proxy assigns itself.
    Streams,
}

impl Path {
    /// How the control channel names it.
    fn describe(self) -> &'static str {
        match self {
            Self::Udp => "direct UDP",
            Self::Streams => "port-forward",
        }
    }
}

/// Accepts laptops until `drain` closes the listeners, attaching each to the route of `routes`
/// whose session issued its certificate; at most `handshakes` handshakes at once, each bounded
/// by [`HANDSHAKE_TIMEOUT`]. A laptop attaching once the drain has begun is told so at once.
pub async fn serve(
    endpoint: quinn::Endpoint,
    path: Path,
    handshakes: ConnectionLimit,
    routes: Arc<RouteTable>,
    metrics: Arc<Metrics>,
    drain: Drain,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = drain.closed().cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        if path == Path::Udp && !incoming.remote_address_validated() && incoming.may_retry() {
            // A retry token is stateless; only a peer that receives it at its address comes back.
            let _ = incoming.retry();
            continue;
        }
        let Some(permit) = handshakes.admit() else {
            debug!(peer = %incoming.remote_address(), "QUIC handshake refused: too many in progress");
            incoming.refuse();
            continue;
        };
        let span = tracing::info_span!("tunnel", peer = %incoming.remote_address());
        let (routes, metrics) = (routes.clone(), metrics.clone());
        let laptop = serve_laptop(incoming, path, permit, routes, metrics, drain.signal());
        tokio::spawn(laptop.instrument(span));
    }
}

async fn serve_laptop(
    incoming: quinn::Incoming,
    path: Path,
    handshake: ConnectionPermit,
    routes: Arc<RouteTable>,
    metrics: Arc<Metrics>,
    draining: DrainSignal,
) {
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            return warn!(%error, "tunnel handshake failed (a client without this session's certificate?)")
        }
        Err(_) => {
            metrics.connections_refused(Listener::Tunnel).inc();
            return warn!(timeout = ?HANDSHAKE_TIMEOUT, "tunnel handshake not completed in time");
        }
    };
    drop(handshake);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, exchange_hellos(&connection)).await {
        Ok(Ok(hello)) => hello,
        // A laptop dialling over several carriers at once closes those it does not pick before
        // their hello.
        Ok(Err(_))
            if matches!(
                connection.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(_))
            ) =>
        {
            return debug!(
                "laptop closed the connection before its hello (it picked another carrier)"
            );
        }
        Ok(Err(error)) => {
            warn!(%error, "laptop refused");
            return;
        }
        Err(_) => {
            connection.close(CloseCode::ProtocolViolation.into(), b"no hello");
            return warn!("laptop sent no hello in time");
        }
    };
    // The handshake checked the certificate against the routes of that moment.
    let Some(route) = route_of(&connection, &routes) else {
        connection.close(CloseCode::Shutdown.into(), b"session detached");
        return warn!("laptop refused: its session left this proxy during the handshake");
    };
    let session = route.session().id.clone();
    info!(%session, "laptop connected");
    route.attach(connection.clone(), path.describe(), hello.protocol.minor);
    // After attaching: a drain that began before is seen here, one that begins after announces
    // itself to the route's connections, this one among them.
    if draining.is_draining() {
        route.announce_draining();
    }
    metrics.set_tunnel_connected(routes.any_laptop_connected());
    let reason = connection.closed().await;
    route.detach(&connection);
    metrics.set_tunnel_connected(routes.any_laptop_connected());
    info!(%session, %reason, "laptop disconnected");
}

/// Once `drain` begins, tells every laptop connected that this proxy is shutting down, so that
/// each dials the proxy's replacement while this one finishes.
pub async fn announce_drain(routes: Arc<RouteTable>, drain: Drain) {
    drain.begun().cancelled().await;
    for route in routes.all().iter() {
        route.announce_draining();
    }
}

/// The route whose session issued the laptop's certificate.
fn route_of(connection: &quinn::Connection, routes: &RouteTable) -> Option<Arc<Route>> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    routes.for_laptop(&chain)
}

/// Reads the laptop's hello and answers with ours. On a version mismatch the laptop, having
/// both versions, reports it and closes; we wait for that (briefly) so our hello reaches it.
/// Returns the laptop's hello.
async fn exchange_hellos(connection: &quinn::Connection) -> Result<Hello, HelloError> {
    let ours = Hello::new(env!("CARGO_PKG_VERSION"));
    match proxy_hello(connection, &ours).await {
        Err(HelloError::Mismatch(mismatch)) => {
            let _closed = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
            connection.close(CloseCode::VersionMismatch.into(), b"version mismatch");
            Err(mismatch.into())
        }
        other => other,
    }
}
