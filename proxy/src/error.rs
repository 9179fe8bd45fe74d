//! Every way a proxied request can fail, and the one place failures become HTTP responses.

use std::time::Duration;

use cz_shared::protocol::{ProtocolError, MAX_METHOD_LEN};
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
        /// Why: the connection failed, or the exchange on it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    Tunnel(#[source] StreamError),
    /// Opening a stream on the tunnel failed (the connection was lost).
    #[error("the intercept tunnel to the developer's laptop was lost: {0}")]
    TunnelLost(#[from] quinn::ConnectionError),
    /// The request matches the rules of several developers' sessions; giving it to one of them
    /// would be a guess.
    #[error("this request matches the intercept rules of {} sessions ({rules}), so the proxy cannot tell whose laptop it is for and sent it to none; send only one developer's intercept header (the sessions are listed by `czctl session list -A`)", .sessions)]
    RouteConflict {
        /// How many sessions' rules matched.
        sessions: usize,
        /// Their rules, `NAME:VALUE` of session ID, comma-separated.
        rules: String,
    },
    /// The request's method is longer than the tunnel carries ([`MAX_METHOD_LEN`]); refused on
    /// both routes, so the answer does not depend on the route.
    #[error(
        "the request method is longer than {MAX_METHOD_LEN} bytes, the longest this proxy forwards"
    )]
    MethodTooLong,
    /// The client's request body broke off (a truncated chunked body, a connection closed
    /// mid-upload), so the request never reached its destination whole; refused on both routes.
    #[error("the request's body ended before its end (a malformed chunked body, or the connection closed mid-body), so the request was not forwarded whole: send the complete body")]
    RequestBodyIncomplete,
    /// The route already carries as many requests as it may, and none finished in time.
    #[error("the developer's laptop already has {limit} intercepted requests in flight, the most this proxy sends it at once (cz-proxy --tunnel-max-requests), and none finished within {waited:?}; retry later, or raise --tunnel-max-requests if the app on the laptop is meant to serve this many at once")]
    TunnelOverloaded {
        /// The route's limit.
        limit: u32,
        /// How long the request waited.
        waited: Duration,
    },
    /// The laptop accepted no new tunnel stream in time (all its streams are in use).
    #[error("the developer's laptop took no new request within {waited:?} (cz-proxy --tunnel-slot-timeout): every tunnel stream its czctl allows is still busy with an earlier request; retry later, and check that the app on the laptop finishes its requests")]
    TunnelBusy {
        /// How long the request waited.
        waited: Duration,
    },
    /// The laptop sent no response head in time; the request was cancelled.
    #[error("the developer's laptop did not start answering within {waited:?} of receiving the request (cz-proxy --tunnel-response-timeout), so the request was cancelled; if the app on the laptop is paused in a debugger, resume it, or raise --tunnel-response-timeout for long debugging sessions")]
    TunnelTimeout {
        /// How long the proxy waited.
        waited: Duration,
    },
    /// The laptop's response head is larger than the proxy accepts.
    #[error("the developer's laptop answered with a response head of {len} bytes, more than the {max} bytes this proxy accepts (cz-proxy --max-header-bytes); make the app on the laptop send fewer or smaller headers")]
    TunnelHeadTooLarge {
        /// The head's length.
        len: u32,
        /// The largest accepted.
        max: usize,
    },
}

impl From<StreamError> for ProxyError {
    /// A head over the limit is the laptop app's doing, not a broken tunnel: said apart.
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::Protocol(ProtocolError::HeadTooLarge { len, max }) => {
                Self::TunnelHeadTooLarge { len, max }
            }
            other => Self::Tunnel(other),
        }
    }
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable { .. }
            | Self::Tunnel(_)
            | Self::TunnelLost(_)
            | Self::TunnelHeadTooLarge { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } | Self::TunnelBusy { .. } | Self::TunnelTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            // Refused before reaching the laptop, as NGINX's limit_conn refuses: 503.
            Self::TunnelDisconnected | Self::TunnelOverloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::MethodTooLong | Self::RequestBodyIncomplete => StatusCode::BAD_REQUEST,
            Self::RouteConflict { .. } => StatusCode::CONFLICT,
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
            Self::RequestBodyIncomplete => "request-body-incomplete",
            Self::TunnelOverloaded { .. } => "tunnel-overloaded",
            Self::TunnelBusy { .. } => "tunnel-busy",
            Self::TunnelTimeout { .. } => "tunnel-timeout",
            Self::TunnelHeadTooLarge { .. } => "tunnel-head-too-large",
            Self::RouteConflict { .. } => "route-conflict",
        }
    }

    /// The response the client gets: the status, a plain-text explanation and the header.
    pub fn into_response(self) -> Response<ProxyBody> {
        cz_forward::error_response(self.status(), self.code(), format!("{self}\n"))
    }
}
