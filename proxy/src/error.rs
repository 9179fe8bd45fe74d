//! Every way a proxied request can fail, and the one place failures become HTTP responses.

use cz_shared::protocol::MAX_METHOD_LEN;
use cz_shared::stream::StreamError;
use http::{Response, StatusCode};

use crate::body::ProxyBody;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The original pods could not be reached.
    #[error("the in-cluster service ({upstream}) could not be reached: {source}")]
    UpstreamUnreachable {
        /// The upstream address.
        upstream: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Connecting to the original pods took too long.
    #[error("the in-cluster service ({upstream}) did not accept a connection in time")]
    UpstreamTimeout {
        /// The upstream address.
        upstream: String,
    },
    /// No laptop is connected, and none reconnected within the grace period.
    #[error("the intercept session is disconnected: the developer's czctl is not connected to this proxy, so this request, which carries the intercept header, was not forwarded; restart `czctl service intercept`, or send the request without the header to reach the in-cluster service")]
    TunnelDisconnected,
    /// The tunnel failed while carrying the request.
    #[error("the intercept tunnel to the developer's laptop failed: {0}")]
    Tunnel(#[from] StreamError),
    /// Opening a stream on the tunnel failed (the connection was lost).
    #[error("the intercept tunnel to the developer's laptop was lost: {0}")]
    TunnelLost(#[from] quinn::ConnectionError),
    /// The request's method is longer than the tunnel carries ([`MAX_METHOD_LEN`]); refused on
    /// both routes, so the answer does not depend on the route.
    #[error(
        "the request method is longer than {MAX_METHOD_LEN} bytes, the longest this proxy forwards"
    )]
    MethodTooLong,
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable { .. } | Self::Tunnel(_) | Self::TunnelLost(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::TunnelDisconnected => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodTooLong => StatusCode::BAD_REQUEST,
        }
    }

    /// A short name for the [`cz_forward::ERROR_HEADER`] header and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UpstreamUnreachable { .. } => "upstream-unreachable",
            Self::UpstreamTimeout { .. } => "upstream-timeout",
            Self::TunnelDisconnected => "tunnel-disconnected",
            Self::Tunnel(_) | Self::TunnelLost(_) => "tunnel-failed",
            Self::MethodTooLong => "method-too-long",
        }
    }

    /// The response the client gets: the status, a plain-text explanation and the header.
    pub fn into_response(self) -> Response<ProxyBody> {
        cz_forward::error_response(self.status(), self.code(), format!("{self}\n"))
    }
}
