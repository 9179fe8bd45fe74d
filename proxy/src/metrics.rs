//! Prometheus metrics of the proxy, served on the admin port's `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Where a request went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Route {
    /// To the original pods.
    Upstream,
    /// Through the tunnel to the laptop.
    Tunnel,
}

/// Which listener a connection came to.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Listener {
    /// The intercepted HTTP port.
    Http,
    /// A raw TCP pass-through port.
    Passthrough,
    /// The admin port.
    Admin,
    /// The port-forward carrier's port.
    Carrier,
    /// The control port.
    Control,
    /// The UDP tunnel port (QUIC handshakes).
    Tunnel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: Listener,
}

/// Where an intercepted request stopped waiting on the tunnel.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TunnelWait {
    /// For a place under the route's limit of requests in flight (answered 503).
    RouteLimit,
    /// For a stream the laptop accepts (answered 504).
    StreamSlot,
    /// For the laptop's response head (answered 504).
    ResponseHead,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    stage: TunnelWait,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// The proxy's metrics and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Each route's counter of 200 answers, the commonest series, found in `requests` once:
    /// the family's lookup hashes the labels under a lock on every request.
    ok_requests: [OnceLock<Counter>; 2],
    upstream_latency: Histogram,
    tunnel_latency: Histogram,
    tunnel_connected: Gauge,
    active_streams: Gauge,
    waiting_requests: Gauge,
    connections: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    tunnel_timeouts: Family<WaitLabels, Counter>,
    oversized_heads: Counter,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cz_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route (upstream or tunnel) and status",
            requests.clone(),
        );
        // 100 µs to ~13 s: proxy overhead is sub-millisecond, laptops can be slow.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, by route",
            latency.clone(),
        );
        let tunnel_connected = Gauge::default();
        registry.register(
            "tunnel_connected",
            "1 while a developer's laptop is connected to the tunnel",
            tunnel_connected.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "tunnel_active_streams",
            "Intercepted requests currently carried by the tunnel",
            active_streams.clone(),
        );
        let waiting_requests = Gauge::default();
        registry.register(
            "tunnel_waiting_requests",
            "Intercepted requests waiting for the developer's laptop to (re)connect",
            waiting_requests.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections",
            "Connections open, by listener (tunnel: QUIC handshakes in progress)",
            connections.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused at the listener's cap, by listener (tunnel: QUIC handshakes refused at the cap or timed out)",
            connections_refused.clone(),
        );
        let tunnel_timeouts = Family::<WaitLabels, Counter>::default();
        registry.register(
            "tunnel_timeouts",
            "Intercepted requests that waited too long on the tunnel, by what they waited for: a place under --tunnel-max-requests (RouteLimit), a stream the laptop accepts (StreamSlot), the laptop's response head (ResponseHead)",
            tunnel_timeouts.clone(),
        );
        let oversized_heads = Counter::default();
        registry.register(
            "tunnel_oversized_heads",
            "Response heads from the laptop refused for being over --max-header-bytes",
            oversized_heads.clone(),
        );
        Self {
            ok_requests: [OnceLock::new(), OnceLock::new()],
            upstream_latency: latency.get_or_create_owned(&RouteLabels {
                route: Route::Upstream,
            }),
            tunnel_latency: latency.get_or_create_owned(&RouteLabels {
                route: Route::Tunnel,
            }),
            registry,
            requests,
            tunnel_connected,
            active_streams,
            waiting_requests,
            connections,
            connections_refused,
            tunnel_timeouts,
            oversized_heads,
        }
    }

    /// The gauge of connections open on `listener`.
    pub fn connections(&self, listener: Listener) -> Gauge {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// The counter of connections `listener` refused.
    pub fn connections_refused(&self, listener: Listener) -> Counter {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// Records an answered request.
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route, status };
        if status == 200 {
            self.ok_requests[route as usize]
                .get_or_init(|| self.requests.get_or_create_owned(&labels))
                .inc();
        } else {
            self.requests.get_or_create(&labels).inc();
        }
        let latency = match route {
            Route::Upstream => &self.upstream_latency,
            Route::Tunnel => &self.tunnel_latency,
        };
        latency.observe(elapsed.as_secs_f64());
    }

    /// Sets whether a laptop is connected.
    pub fn set_tunnel_connected(&self, connected: bool) {
        self.tunnel_connected.set(i64::from(connected));
    }

    /// Whether a laptop is connected.
    pub fn tunnel_connected(&self) -> bool {
        self.tunnel_connected.get() > 0
    }

    /// Counts a tunnel stream as active until the returned guard is dropped.
    pub fn stream_opened(&self) -> ActiveStream {
        self.active_streams.inc();
        InFlight(self.active_streams.clone())
    }

    /// Counts a request as waiting for a laptop until the returned guard is dropped.
    pub fn waiting_for_laptop(&self) -> InFlight {
        self.waiting_requests.inc();
        InFlight(self.waiting_requests.clone())
    }

    /// Counts an intercepted request that gave up waiting for `stage`.
    pub fn tunnel_timed_out(&self, stage: TunnelWait) {
        self.tunnel_timeouts
            .get_or_create(&WaitLabels { stage })
            .inc();
    }

    /// Counts a response head refused for its size.
    pub fn oversized_head(&self) {
        self.oversized_heads.inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Something counted in a gauge while it lasts; dropping it uncounts it.
pub struct InFlight(Gauge);

/// An intercepted request in flight; see [`Metrics::stream_opened`].
pub type ActiveStream = InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_requests_latency_and_tunnel_state() {
        let metrics = Metrics::new();
        metrics.observe(Route::Tunnel, 200, Duration::from_millis(3));
        // The second 200 goes through the cached counter: the same series.
        metrics.observe(Route::Tunnel, 200, Duration::from_millis(3));
        metrics.observe(Route::Upstream, 503, Duration::from_millis(1));
        metrics.set_tunnel_connected(true);
        let stream = metrics.stream_opened();
        let waiting = metrics.waiting_for_laptop();
        metrics.tunnel_timed_out(TunnelWait::ResponseHead);
        metrics.oversized_head();
        let text = metrics.encode();
        assert!(
            text.contains(r#"cz_proxy_tunnel_timeouts_total{stage="ResponseHead"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("cz_proxy_tunnel_oversized_heads_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"cz_proxy_requests_total{route="Tunnel",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cz_proxy_requests_total{route="Upstream",status="503"} 1"#),
            "{text}"
        );
        assert!(text.contains("cz_proxy_tunnel_connected 1"), "{text}");
        assert!(text.contains("cz_proxy_tunnel_active_streams 1"), "{text}");
        assert!(
            text.contains("cz_proxy_tunnel_waiting_requests 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"cz_proxy_request_duration_seconds_count{route="Tunnel"} 2"#),
            "{text}"
        );
        drop((stream, waiting));
        let text = metrics.encode();
        assert!(text.contains("cz_proxy_tunnel_active_streams 0"), "{text}");
        assert!(
            text.contains("cz_proxy_tunnel_waiting_requests 0"),
            "{text}"
        );
    }
}
