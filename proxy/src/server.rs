//! The intercepted port: HTTP/1.1 and h2c connections, each request routed on its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cz_shared::protocol::MAX_METHOD_LEN;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::body::ProxyBody;
use crate::config::Config;
use crate::error::ProxyError;
use crate::headers::{self, ClientAddr};
use crate::intercept;
use crate::metrics::{Metrics, Route};
use crate::routes::RouteTable;
use crate::upstream::Upstream;

/// What every request handler needs.
pub struct Router {
    /// Intercept routes.
    pub routes: Arc<RouteTable>,
    /// The original pods.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long a matching request waits for a laptop.
    pub reconnect_grace: Duration,
}

impl Router {
    /// Routes one request and answers it, recording its metrics.
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: &ClientAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // Routing sees the request as the next hop will: a `Connection:` token cannot hide
        // the intercept header from one and show it to the other.
        let upgrade =
            headers::prepare_request(&mut request, client, |name| self.routes.is_rule_name(name));
        let laptop_route = self.routes.find(request.headers());
        let (route, result) = match laptop_route {
            // Refused on both routes, so that the answer does not depend on the route.
            _ if request.method().as_str().len() > MAX_METHOD_LEN => {
                let route = match laptop_route {
                    Some(_) => Route::Tunnel,
                    None => Route::Upstream,
                };
                (route, Err(ProxyError::MethodTooLong))
            }
            Some(laptop_route) => {
                let span =
                    tracing::debug_span!("req", route = "tunnel", rule = %laptop_route.rule());
                let forwarded = intercept::forward(
                    &laptop_route,
                    request,
                    upgrade,
                    self.reconnect_grace,
                    &self.metrics,
                );
                (Route::Tunnel, forwarded.instrument(span).await)
            }
            None => (
                Route::Upstream,
                self.upstream.forward(request, upgrade).await,
            ),
        };
        let response = result.unwrap_or_else(|error| {
            debug!(%error, code = error.code(), "answered by the proxy");
            error.into_response()
        });
        self.metrics
            .observe(route, response.status().as_u16(), started.elapsed());
        response
    }
}

/// Runs [`serve`] on a thread of its own with its own single-threaded event loop, as one more
/// HTTP worker. Workers share nothing on the request path but the route table and the metrics:
/// each has its own upstream connections, so a request never waits for another thread.
pub fn serve_on_own_thread(
    worker: usize,
    listener: std::net::TcpListener,
    router: Arc<Router>,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("http-worker-{worker}"))
        .spawn(move || {
            runtime.block_on(async {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, router, &config, shutdown).await,
                    Err(error) => warn!(%error, worker, "HTTP worker could not listen"),
                }
            });
        })
}

/// Serves the intercepted port until `shutdown`, then lets in-flight requests finish for up to
/// `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    config: &Config,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(config.max_header_bytes);
    let graceful = GracefulShutdown::new();
    loop {
        let Some((stream, peer)) = crate::accept::next(&listener, &shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let client = Arc::new(ClientAddr::new(peer, &config.trusted_proxies));
        let router = router.clone();
        let service = service_fn(move |request| {
            let (router, client) = (router.clone(), client.clone());
            async move { Ok::<_, Infallible>(router.handle(request, &client).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    debug!(%error, "connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(listener);
    info!("stopped accepting HTTP connections; draining in-flight requests");
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(timeout = ?config.drain_timeout, "requests still in flight at the drain deadline");
    }
}
