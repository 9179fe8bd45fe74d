//! What a running [`Tunnel`](crate::Tunnel) reports: connection changes, each intercepted request,
//! and problems with the local app. A CLI prints them; an inspector UI could list them.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};

/// Something that happened on a tunnel.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TunnelEvent {
    /// The tunnel to the proxy is up; intercepted requests flow.
    Connected {
        /// What carries it.
        path: TunnelPath,
        /// Why that carrier ([`crate::Connected::why`]).
        why: String,
    },
    /// The carrier stream broke; a new one is being opened, and the connection (with the
    /// requests in flight) continues on it. Reported once per break, not per retry.
    CarrierLost,
    /// A new carrier stream took over the connection `after` the old one broke.
    CarrierBack {
        /// How long the tunnel had no carrier.
        after: Duration,
    },
    /// The tunnel went down; it is being re-established.
    Disconnected {
        /// Why, as the connection reported it.
        reason: String,
    },
    /// The proxy is shutting down (its pod is being deleted or replaced): the tunnel dials its
    /// replacement while the old connection goes on serving, and reports
    /// [`TunnelEvent::Connected`] once the replacement is up.
    ProxyDraining,
    /// Dialling the proxy failed; another attempt follows after `retry_in`.
    ConnectFailed {
        /// Why.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// An intercepted request was answered.
    Request(RequestEvent),
    /// The local app stopped accepting connections: intercepted requests get 502 until it is
    /// back. Reported once per outage, not per request.
    LocalAppUnreachable {
        /// Where the app was expected.
        address: SocketAddr,
        /// The connection error.
        error: String,
    },
    /// A message from the proxy for the developer, e.g. that a request matched this session's
    /// rule and another developer's, and was refused.
    Notice(String),
    /// The local app accepts connections again.
    LocalAppReachable {
        /// Where the app listens.
        address: SocketAddr,
    },
}

/// One intercepted request and its outcome.
#[derive(Debug, Clone)]
pub struct RequestEvent {
    /// The request method.
    pub method: Method,
    /// The request's path and query.
    pub path: String,
    /// The response status (502 if the local app could not be reached).
    pub status: StatusCode,
    /// From the request's arrival on the laptop to the end of its response.
    pub duration: Duration,
    /// Response body bytes sent back to the cluster.
    pub response_bytes: u64,
}

/// What carries a connected tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelPath {
    /// QUIC over UDP, to the proxy at this address.
    Direct(SocketAddr),
    /// QUIC over a carrier stream ([`Carrier::Stream`](crate::Carrier::Stream)).
    Stream,
}

impl std::fmt::Display for TunnelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(proxy) => write!(f, "direct UDP to {proxy}"),
            Self::Stream => f.write_str("a stream carrier"),
        }
    }
}
