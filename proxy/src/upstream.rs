//! The original pods: requests without the intercept header go there, over pooled connections
//! speaking the request's own protocol (HTTP/1.1, or h2c for HTTP/2 requests such as gRPC).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers;
use crate::upgrade::spawn_splice;

/// Pooled clients to the upstream.
pub struct Upstream {
    address: Arc<str>,
    authority: Authority,
    http1: Client<Connector, Incoming>,
    http2: Client<Connector, Incoming>,
}

impl Upstream {
    /// Clients to `address` (HOST:PORT) that give up connecting after `connect_timeout`.
    pub fn new(address: &str, connect_timeout: Duration) -> Result<Self, http::uri::InvalidUri> {
        let authority: Authority = address.parse()?;
        let connector = Connector {
            address: address.into(),
            connect_timeout,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60));
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        Ok(Self {
            address: address.into(),
            authority,
            http1,
            http2,
        })
    }

    /// Sends the request to the original pods and streams the response back. An upgrade the
    /// upstream accepts is spliced on a task of its own.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let http2 = request.version() == Version::HTTP_2;
        // HTTP/1 requests keep their Host header and get the upstream's authority in the URI
        // (the connector ignores it anyway); HTTP/2 requests keep their own `:authority`.
        if !http2 || request.uri().authority().is_none() {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            *request.uri_mut() =
                Uri::from_parts(parts).expect("scheme, authority and path make a URI");
        }
        let client = if http2 { &self.http2 } else { &self.http1 };
        let mut response = client
            .request(request)
            .await
            .map_err(|error| self.classify(error))?;
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(downstream)) = (switched, downstream_upgrade) {
            let upstream = hyper::upgrade::on(&mut response);
            spawn_splice(
                downstream,
                async move { upstream.await.map(TokioIo::new) },
                (),
            );
        }
        headers::strip_hop_by_hop(response.headers_mut(), switched);
        Ok(response.map(ProxyBody::Upstream))
    }

    fn classify(&self, error: hyper_util::client::legacy::Error) -> ProxyError {
        let timed_out = std::iter::successors(std::error::Error::source(&error), |e| e.source())
            .filter_map(|e| e.downcast_ref::<io::Error>())
            .any(|e| e.kind() == io::ErrorKind::TimedOut);
        let upstream = self.address.to_string();
        if timed_out {
            ProxyError::UpstreamTimeout { upstream }
        } else {
            ProxyError::UpstreamUnreachable {
                upstream,
                source: error,
            }
        }
    }
}

/// Dials the upstream address whatever the request's URI says, so requests keep their own
/// authority and all share one pool.
#[derive(Clone)]
pub struct Connector {
    address: Arc<str>,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (address, connect_timeout) = (self.address.clone(), self.connect_timeout);
        Box::pin(async move {
            let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&*address))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}
