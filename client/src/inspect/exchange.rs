//! One captured exchange: the intercepted request and the local app's response as the laptop saw
//! them, with bodies kept up to the inspector's cap.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderName, Method, StatusCode, Uri, Version};

use super::headers::CapturedHeaders;

/// An intercepted request and its response, as captured. Header values are kept as they were
/// (secrets included); the inspector's views mask them unless configured otherwise.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Exchange {
    /// Its number in this inspector, counting from 1 in the order exchanges ended.
    pub id: u64,
    /// When the request reached the laptop.
    pub started: SystemTime,
    /// The request as the proxy sent it.
    pub request: CapturedRequest,
    /// The response the cluster got (the local app's, or czctl's 502 when the app failed);
    /// `None` when the exchange ended before a response head (see [`Exchange::error`]).
    pub response: Option<CapturedResponse>,
    /// From arrival to the response head, and to the end of the response.
    pub timing: Timing,
    /// The connection switched protocols (WebSocket and other upgrades): no bodies are captured
    /// after the switch.
    pub upgraded: bool,
    /// Why the exchange did not complete normally (cancelled by the cluster side, response not
    /// delivered).
    pub error: Option<String>,
    /// A provisional record of a streaming exchange still open: its response head is known, its
    /// bodies are still flowing (sizes so far, nothing kept yet). The record of the finished
    /// exchange, with the same id, replaces it.
    pub in_progress: bool,
}

/// The captured request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CapturedRequest {
    /// Method.
    pub method: Method,
    /// The URI as the proxy sent it (origin form for HTTP/1.1, with an authority for HTTP/2).
    pub uri: Uri,
    /// HTTP version of the cluster's request.
    pub version: Version,
    /// Headers.
    pub headers: CapturedHeaders,
    /// Body, up to the cap.
    pub body: CapturedBody,
}

/// The captured response.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CapturedResponse {
    /// Status.
    pub status: StatusCode,
    /// HTTP version.
    pub version: Version,
    /// Headers.
    pub headers: CapturedHeaders,
    /// Body, up to the cap.
    pub body: CapturedBody,
}

/// A body as captured: its first bytes, up to the inspector's cap, and its whole size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapturedBody {
    /// The bytes kept (at most the cap).
    pub kept: Bytes,
    /// Every byte that passed, kept or not.
    pub size: u64,
}

impl CapturedBody {
    /// A body kept whole.
    pub fn whole(kept: Bytes) -> Self {
        let size = kept.len() as u64;
        Self { kept, size }
    }

    /// Whether bytes past the cap were counted but not kept.
    pub fn truncated(&self) -> bool {
        self.size > self.kept.len() as u64
    }
}

/// When an exchange's stages happened, from the request's arrival on the laptop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Until the response head was ready (the local app's think time).
    pub response_head: Option<Duration>,
    /// Until the exchange ended (the response's last byte, or the failure).
    pub total: Duration,
}

impl Exchange {
    /// The request's path and query.
    pub fn path(&self) -> &str {
        self.request
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
    }

    /// The response's status, if a response head was sent.
    pub fn status(&self) -> Option<StatusCode> {
        self.response.as_ref().map(|response| response.status)
    }

    /// Whether the exchange streams: gRPC (either side), server-sent events, or a body sent
    /// chunked, without a length; such a body may have been open for long.
    pub fn streaming(&self) -> bool {
        let request = Some(&self.request.headers);
        let response = self.response.as_ref().map(|response| &response.headers);
        [request, response]
            .into_iter()
            .flatten()
            .any(|headers| streams(|name| headers.get(name.as_str())))
    }

    /// `http://HOST/path`: the request's authority (or `Host` header) and path.
    pub fn url(&self) -> String {
        let host = self
            .request
            .uri
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| self.request.headers.get_str("host").map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_owned());
        format!("http://{host}{}", self.path())
    }
}

/// Whether a message whose header values `header` gives streams: gRPC, server-sent events, or
/// chunked.
pub(crate) fn streams<'a>(header: impl Fn(&HeaderName) -> Option<&'a [u8]>) -> bool {
    let content_type = header(&CONTENT_TYPE).unwrap_or_default();
    content_type.starts_with(b"application/grpc")
        || content_type.starts_with(b"text/event-stream")
        || header(&TRANSFER_ENCODING).is_some_and(|value| value.eq_ignore_ascii_case(b"chunked"))
}

/// `HTTP/1.1`, `HTTP/2`, as HAR and the page write them.
pub(crate) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
