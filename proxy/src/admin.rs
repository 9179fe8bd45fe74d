//! The admin port: `/healthz` (the process serves), `/readyz` (it accepts traffic; 503 while
//! draining), `/state` (the typed, versioned [`ProxyState`] czctl reads, as JSON) and Prometheus
//! `/metrics`. The paths are part of the contract in `cz_shared::contract`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cz_shared::contract::{ProxyState, HEALTH_PATH, METRICS_PATH, READY_PATH, STATE_PATH};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::body::ProxyBody;
use crate::metrics::Metrics;

/// Serves the admin endpoints until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "admin accept failed");
                    continue;
                }
            },
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        let service = service_fn(move |request| {
            let response = answer(&request, &metrics, &ready);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
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
