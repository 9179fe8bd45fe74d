//! The inspector's HTTP interface: the page at `/`, and for scripts and the page a JSON API —
//! `GET /api/requests` (summaries, filtered by query), `GET /api/requests/{id}` (one in full),
//! `POST /api/requests/{id}/replay` (JSON edits, answers the new response), `GET /api/har`
//! (HAR 1.2, filtered or `?ids=…`), `GET /api/events` (server-sent events, one per new exchange).

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::body::BodyView;
use super::exchange::version_name;
use super::filter::Filter;
use super::headers::CapturedHeaders;
use super::mask::header_pairs;
use super::replay::{ReplayEdits, ReplayError};
use super::view::{millis, Detail, MessageView, Summary};
use super::{har, Inspector};

/// The body of the inspector's responses.
pub type InspectorBody = UnsyncBoxBody<Bytes, Infallible>;

/// The page: one file, no external assets.
const PAGE: &str = include_str!("page.html");

/// The page runs only its own inline script and style, and talks only to this inspector.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// Answers one request to the inspector.
pub(crate) async fn handle<B>(inspector: &Inspector, request: Request<B>) -> Response<InspectorBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_owned();
    let filter = match Filter::parse(request.uri().query()) {
        Ok(filter) => filter,
        Err(error) => return error_json(StatusCode::BAD_REQUEST, error),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    match segments.as_slice() {
        [""] if method == Method::GET => page(),
        ["api", "requests"] if method == Method::GET => list(inspector, &filter),
        ["api", "requests", id] if method == Method::GET => match find(inspector, id) {
            Ok(exchange) => ok_json(&Detail::of(&exchange, inspector.shows_secrets())),
            Err(response) => *response,
        },
        ["api", "requests", id, "replay"] if method == Method::POST => match find(inspector, id) {
            Ok(exchange) => replay(inspector, &exchange, request).await,
            Err(response) => *response,
        },
        ["api", "har"] if method == Method::GET => export(inspector, &filter),
        ["api", "events"] if method == Method::GET => events(inspector, filter),
        [""]
        | ["api", "requests" | "har" | "events"]
        | ["api", "requests", _]
        | ["api", "requests", _, "replay"] => error_json(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => error_json(StatusCode::NOT_FOUND, format!("nothing at {path}")),
    }
}

fn find(
    inspector: &Inspector,
    id: &str,
) -> Result<std::sync::Arc<super::Exchange>, Box<Response<InspectorBody>>> {
    id.parse()
        .ok()
        .and_then(|id| inspector.exchange(id))
        .ok_or_else(|| {
            Box::new(error_json(
                StatusCode::NOT_FOUND,
                format!("no request {id} (the inspector keeps the last ones only)"),
            ))
        })
}

fn page() -> Response<InspectorBody> {
    let mut response = Response::new(full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn list(inspector: &Inspector, filter: &Filter) -> Response<InspectorBody> {
    let exchanges = inspector.exchanges();
    let requests: Vec<Summary<'_>> = exchanges
        .iter()
        .filter(|exchange| filter.matches(exchange))
        .map(|exchange| Summary::of(exchange))
        .collect();
    ok_json(&json!({ "requests": requests }))
}

fn export(inspector: &Inspector, filter: &Filter) -> Response<InspectorBody> {
    let exchanges = inspector.exchanges();
    let chosen = exchanges.iter().filter(|e| filter.matches(e)).map(|e| &**e);
    let document = har::document(chosen, inspector.shows_secrets());
    let mut response = ok_json(&document);
    response.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"czctl-inspector.har\""),
    );
    response
}

/// The request body a replay may carry: edits with a body up to a few times the capture cap.
fn edits_limit(inspector: &Inspector) -> usize {
    inspector.body_limit().saturating_mul(3) + (1 << 20)
}

async fn replay<B>(
    inspector: &Inspector,
    exchange: &super::Exchange,
    request: Request<B>,
) -> Response<InspectorBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // JSON only: a form on another site cannot send it without the browser asking first.
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return error_json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a replay takes Content-Type: application/json (`{}` for the request as captured)",
        );
    }
    let body = match Limited::new(request.into_body(), edits_limit(inspector))
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("unreadable: {error}"),
            )
        }
    };
    let edits: ReplayEdits = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayEdits::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(edits) => edits,
            Err(error) => return error_json(StatusCode::BAD_REQUEST, error),
        }
    };
    match inspector.replayer().replay(exchange, edits).await {
        Ok(replayed) => {
            let headers = CapturedHeaders::from_map(&replayed.response.headers);
            let response = MessageView {
                status: Some(replayed.response.status.as_u16()),
                version: version_name(replayed.response.version),
                headers: header_pairs(&headers, inspector.shows_secrets()),
                body: BodyView::of(&replayed.body, &headers),
            };
            ok_json(&json!({
                "replay_of": exchange.id,
                "duration_ms": millis(replayed.duration),
                "response": response,
            }))
        }
        Err(error @ (ReplayError::BadEdit { .. } | ReplayError::BodyNotKept { .. })) => {
            error_json(StatusCode::BAD_REQUEST, error)
        }
        Err(error) => error_json(StatusCode::BAD_GATEWAY, error),
    }
}

/// Server-sent events: `event: request` with a summary for each new exchange that passes
/// `filter` (and again, same `id`, when one listed `in_progress` ends); `event: lagged` when
/// this subscriber fell behind and missed some (reload the list).
fn events(inspector: &Inspector, filter: Filter) -> Response<InspectorBody> {
    let receiver = inspector.subscribe();
    let hello = futures_util::stream::once(async { event_frame("retry: 1000\n\n".to_owned()) });
    let exchanges =
        futures_util::stream::unfold((receiver, filter), |(mut receiver, filter)| async move {
            loop {
                let text = match receiver.recv().await {
                    Ok(exchange) if filter.matches(&exchange) => {
                        let data = serde_json::to_string(&Summary::of(&exchange)).ok()?;
                        format!("id: {}\nevent: request\ndata: {data}\n\n", exchange.id)
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => format!("event: lagged\ndata: {missed}\n\n"),
                    Err(RecvError::Closed) => return None,
                };
                return Some((event_frame(text), (receiver, filter)));
            }
        });
    let mut response = Response::new(StreamBody::new(hello.chain(exchanges)).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn event_frame(text: String) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(text)))
}

fn full(bytes: impl Into<Bytes>) -> InspectorBody {
    Full::new(bytes.into()).boxed_unsync()
}

fn ok_json(value: &impl Serialize) -> Response<InspectorBody> {
    json_response(StatusCode::OK, value)
}

/// `{"error": "…"}` with `status`.
pub(crate) fn error_json(
    status: StatusCode,
    error: impl std::fmt::Display,
) -> Response<InspectorBody> {
    json_response(status, &json!({ "error": error.to_string() }))
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<InspectorBody> {
    let body = serde_json::to_vec(value).expect("views serialize to JSON");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
