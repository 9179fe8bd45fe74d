//! Routing one request: to the laptop when a route's rule matches, else to the original pods;
//! answering failures itself and recording every request's metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cz_shared::protocol::MAX_METHOD_LEN;
use http::{Request, Response};
use hyper::body::Incoming;
use tracing::{debug, warn, Instrument};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers::{self, ClientAddr};
use crate::intercept;
use crate::metrics::{Metrics, Route};
use crate::routes::{Match, Route as LaptopRoute, RouteTable};
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
    pub(crate) async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: &ClientAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // Routing sees the request as the next hop will: a `Connection:` token cannot hide
        // the intercept header from one and show it to the other.
        let upgrade =
            headers::prepare_request(&mut request, client, |name| self.routes.is_rule_name(name));
        let (route, result) = match self.routes.find(request.headers()) {
            // Refused on both routes, so that the answer does not depend on the route.
            found if request.method().as_str().len() > MAX_METHOD_LEN => {
                let route = match found {
                    Match::Upstream => Route::Upstream,
                    _ => Route::Tunnel,
                };
                (route, Err(ProxyError::MethodTooLong))
            }
            Match::Laptop(laptop_route) => {
                laptop_route.count_request();
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
            Match::Conflict(routes) => (Route::Tunnel, Err(conflict(&routes, &request))),
            Match::Upstream => (
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

/// Refuses a request that matches several sessions' routes, counting it on each of them.
fn conflict(routes: &[Arc<LaptopRoute>], request: &Request<Incoming>) -> ProxyError {
    let rules = routes
        .iter()
        .map(|route| format!("{} of session {}", route.rule(), route.session().id))
        .collect::<Vec<_>>()
        .join(", ");
    for route in routes {
        route.count_conflict();
    }
    warn!(method = %request.method(), path = request.uri().path(), %rules, "request matches several sessions' routes; refused");
    ProxyError::RouteConflict {
        sessions: routes.len(),
        rules,
    }
}
