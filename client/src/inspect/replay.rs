//! Replay: a captured request sent again to the local app, as captured or edited, and the
//! response read (up to the capture cap) to show beside the original.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use cz_forward::{Dialer, ForwardError, Forwarder, DEFAULT_SOCKET_BUFFER};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use serde::Deserialize;

use super::capture::read_capped;
use super::exchange::{CapturedBody, Exchange};
use super::headers::CapturedHeaders;
use super::mask::{is_secret, MASKED};

/// How long connecting to the local app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a replay may take in all.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// Changes to the captured request; what is absent is sent as captured.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayEdits {
    method: Option<String>,
    /// Path and query.
    path: Option<String>,
    /// Every header, in order; a secret's value left as [`MASKED`] sends the captured one.
    headers: Option<Vec<(String, String)>>,
    /// The body, as text.
    body: Option<String>,
    /// The body, base64.
    body_base64: Option<String>,
}

/// Why a replay was not made or got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// The edits do not make a valid request.
    #[error("invalid {what}: {detail}")]
    BadEdit { what: &'static str, detail: String },
    /// The captured body was cut at the cap and no replacement was given.
    #[error("the request body was cut at the capture cap ({kept} of {size} bytes kept): send a body with the replay")]
    BodyNotKept { kept: usize, size: u64 },
    /// The local app did not answer.
    #[error("the local app did not answer: {}", .0.root_cause())]
    Forward(#[source] ForwardError),
    /// The local app's response broke off.
    #[error("the local app's response broke off: {0}")]
    ResponseBody(#[source] hyper::Error),
    /// The local app took too long.
    #[error("the local app did not answer within {REPLAY_TIMEOUT:?}")]
    Timeout,
}

/// The response to a replay.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) response: http::response::Parts,
    pub(crate) body: CapturedBody,
    pub(crate) duration: Duration,
}

/// Sends replays to the local app over connections of its own.
pub(crate) struct Replayer {
    forwarder: Forwarder<Full<Bytes>>,
    body_limit: usize,
}

impl Replayer {
    pub(crate) fn new(local_app: SocketAddr, body_limit: usize) -> Self {
        let dialer = Dialer::new(&local_app.to_string(), CONNECT_TIMEOUT)
            .expect("a socket address is an authority")
            .socket_buffer(DEFAULT_SOCKET_BUFFER);
        Self {
            forwarder: Forwarder::new(dialer),
            body_limit,
        }
    }

    /// Sends `original`'s request again, changed by `edits`.
    pub(crate) async fn replay(
        &self,
        original: &Exchange,
        edits: ReplayEdits,
    ) -> Result<Replayed, ReplayError> {
        let request = build(original, edits)?;
        let started = Instant::now();
        let exchange = async {
            let response = self
                .forwarder
                .send(request)
                .await
                .map_err(ReplayError::Forward)?;
            let (response, body) = response.into_parts();
            let body = read_capped(body, self.body_limit)
                .await
                .map_err(ReplayError::ResponseBody)?;
            Ok(Replayed {
                response,
                body,
                duration: started.elapsed(),
            })
        };
        tokio::time::timeout(REPLAY_TIMEOUT, exchange)
            .await
            .map_err(|_| ReplayError::Timeout)?
    }
}

/// The request to send: the captured one with `edits` applied.
fn build(original: &Exchange, edits: ReplayEdits) -> Result<Request<Full<Bytes>>, ReplayError> {
    let captured = &original.request;
    let bad = |what| move |detail: String| ReplayError::BadEdit { what, detail };
    let method = match edits.method {
        Some(method) => Method::from_bytes(method.trim().as_bytes())
            .map_err(|error| bad("method")(error.to_string()))?,
        None => captured.method.clone(),
    };
    let uri = match edits.path {
        Some(path) => with_path(&captured.uri, &path).map_err(bad("path"))?,
        None => captured.uri.clone(),
    };
    let mut headers = match edits.headers {
        Some(pairs) => edited_headers(&captured.headers, pairs).map_err(bad("header"))?,
        None => captured.headers.to_header_map(),
    };
    let body = match (edits.body, edits.body_base64) {
        (Some(text), _) => Bytes::from(text),
        (None, Some(encoded)) => BASE64
            .decode(encoded.trim())
            .map(Bytes::from)
            .map_err(|error| bad("body_base64")(error.to_string()))?,
        (None, None) if captured.body.truncated() => {
            return Err(ReplayError::BodyNotKept {
                kept: captured.body.kept.len(),
                size: captured.body.size,
            })
        }
        (None, None) => captured.body.kept.clone(),
    };
    // The body's own length is sent.
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = captured.version;
    *request.headers_mut() = headers;
    Ok(request)
}

/// `uri` with its path and query replaced by `path`.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, String> {
    let path = path.trim();
    if !path.starts_with('/') {
        return Err(format!("{path:?} does not start with /"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path.parse().map_err(|error| format!("{path:?}: {error}"))?);
    Uri::from_parts(parts).map_err(|error| error.to_string())
}

/// The headers `pairs` give; a secret left as [`MASKED`] takes the captured value (the n-th
/// masked one of a name, the n-th captured value).
fn edited_headers(
    captured: &CapturedHeaders,
    pairs: Vec<(String, String)>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = if value == MASKED && is_secret(name.as_str()) {
            let index = headers.get_all(&name).iter().count();
            match captured.get_all(name.as_str()).nth(index) {
                Some(value) => HeaderValue::from_bytes(value)
                    .map_err(|_| format!("the captured value of {name} is not a header value"))?,
                None => continue,
            }
        } else {
            HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of {name} is not a header value"))?
        };
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testing::exchange;

    #[test]
    fn masked_secrets_are_replayed_with_their_captured_values() {
        let mut original = exchange(
            "POST",
            "/a?x=1",
            200,
            &[("authorization", "Bearer real"), ("content-length", "2")],
        );
        original.request.body = CapturedBody::whole(Bytes::from_static(b"hi"));
        let edits = ReplayEdits {
            method: Some("PUT".into()),
            path: Some("/b?y=2".into()),
            headers: Some(vec![
                ("authorization".into(), MASKED.into()),
                ("x-new".into(), "1".into()),
            ]),
            body: Some("changed".into()),
            ..Default::default()
        };
        let request = build(&original, edits).expect("valid test input");
        assert_eq!(request.method(), Method::PUT);
        assert_eq!(request.uri(), "/b?y=2");
        assert_eq!(request.headers()["authorization"], "Bearer real");
        assert_eq!(request.headers()["x-new"], "1");
        assert!(request.headers().get("content-length").is_none());
        let unchanged = build(&original, ReplayEdits::default()).expect("valid test input");
        assert_eq!(unchanged.headers()["authorization"], "Bearer real");
        assert_eq!(unchanged.uri(), "/a?x=1");
    }

    #[test]
    fn a_cut_body_is_not_replayed_and_bad_edits_are_refused() {
        let mut original = exchange("POST", "/", 200, &[]);
        original.request.body = CapturedBody {
            kept: Bytes::from_static(b"abc"),
            size: 10,
        };
        assert!(matches!(
            build(&original, ReplayEdits::default()),
            Err(ReplayError::BodyNotKept { kept: 3, size: 10 })
        ));
        let bad_path = ReplayEdits {
            path: Some("no-slash".into()),
            body: Some(String::new()),
            ..Default::default()
        };
        assert!(matches!(
            build(&original, bad_path),
            Err(ReplayError::BadEdit { what: "path", .. })
        ));
    }
}
