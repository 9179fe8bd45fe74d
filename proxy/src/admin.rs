//! The admin port: `/healthz` (the process serves), `/readyz` (it accepts traffic; 503 while
//! draining), `/state` (the typed, versioned [`ProxyState`] czctl reads, as JSON) and Prometheus
//! `/metrics`. The paths are part of the contract in `cz_shared::contract`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cz_shared::contract::{ProxyState, HEALTH_PATH, METRICS_PATH, READY_PATH, STATE_PATH};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::accept;
use crate::body::ProxyBody;
use crate::limits::ConnectionLimit;
use crate::linger::Lingering;
use crate::metrics::Metrics;

/// Most admin connections open at once. The kubelet's probes, a Prometheus scraper and czctl
/// need a handful; the rest keeps the probes answered while a few hundred slow or silent
/// connections wait out [`HEADER_TIMEOUT`] (refused probes would take the pod out of the
/// Service). Each costs at most about 12 KiB, so 512 cost at most 6 MiB.
pub const MAX_CONNECTIONS: usize = 512;

/// How long an admin client may take to send a request head (idle keep-alive included).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin port's read buffer, the least hyper allows: its requests are one short line and a
/// few headers, so a bigger head is refused (431) instead of buffered.
const MAX_BUFFER: usize = 8192;

/// Socket buffers of admin connections: a `/metrics` answer is a few KiB.
pub const SOCKET_BUFFER: u32 = 16 * 1024;

/// Serves the admin endpoints, at most `limit` connections at once, until `stop`.
pub async fn serve(
    listener: TcpListener,
    limit: ConnectionLimit,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUFFER);
    while let Some((stream, _, permit)) = accept::next(&listener, &limit, &stop).await {
        let (metrics, ready) = (metrics.clone(), ready.clone());
        let service = service_fn(move |request| {
            let response = answer(&request, &metrics, &ready);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection =
            builder.serve_connection(TokioIo::new(Lingering::new(stream, permit)), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "admin connection failed");
            }
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> Response<ProxyBody> {
    let ready = ready.load(Ordering::Relaxed);
    let (status, body, content_type) = match (request.method(), request.uri().path()) {
        (&Method::GET, HEALTH_PATH) => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        (&Method::GET, READY_PATH) if ready => (StatusCode::OK, "ready\n".to_owned(), "text/plain"),
        (&Method::GET, READY_PATH) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining\n".to_owned(),
            "text/plain",
        ),
        (&Method::GET, STATE_PATH) => (
            StatusCode::OK,
            ProxyState::new(metrics.tunnel_connected(), ready).to_json(),
            "application/json",
        ),
        (&Method::GET, METRICS_PATH) => (
            StatusCode::OK,
            metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            format!("not found: try {HEALTH_PATH}, {READY_PATH}, {STATE_PATH} or {METRICS_PATH}\n"),
            "text/plain",
        ),
    };
    let mut response = Response::new(ProxyBody::message(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
