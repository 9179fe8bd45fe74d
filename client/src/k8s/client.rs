//! The Kubernetes client to give czctl: kube's own stack (base URI, retries on 429/503/504,
//! authentication, extra headers such as impersonation, connect/read/write timeouts) on
//! connections with `TCP_NODELAY` set, as client-go's are. The tunnel's port-forward carries
//! QUIC packets over one of these connections; with Nagle's algorithm on, a small packet waits
//! for the ACK of the one before it (up to the API server's delayed-ACK timeout), which capped
//! the port-forward carrier at about 1,400 requests/s (bench/RESULTS.md).

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A client of the cluster `config` names, its connections without Nagle's delay. Behind an
/// HTTP or SOCKS proxy (`proxy-url` in the kubeconfig) it is kube's own client, which tunnels
/// through the proxy itself.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector = TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let retry = config
        .default_retry
        .then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
