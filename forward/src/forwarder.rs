//! Pooled HTTP clients to one fixed address: HTTP/1.1 and HTTP/2 (h2c, as gRPC needs) in pools
//! of their own, each request sent over the pool of its own protocol.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::dial::Dialer;
use crate::error::ForwardError;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pooled clients to one address.
pub struct Forwarder<B> {
    dialer: Arc<Dialer>,
    http1: Client<Connector, B>,
    http2: Client<Connector, B>,
}

impl<B> Forwarder<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Clients to the address `dialer` connects to.
    pub fn new(dialer: Dialer) -> Self {
        let dialer = Arc::new(dialer);
        let connector = Connector(dialer.clone());
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        Self {
            dialer,
            http1,
            http2,
        }
    }

    /// Where requests go.
    pub fn address(&self) -> &str {
        self.dialer.address()
    }

    /// Sends `request` over the pool of its protocol and returns the response as it arrives.
    /// HTTP/1 requests keep their `Host` header and get this address as the URI's authority;
    /// HTTP/2 requests keep their own `:authority` (or get this one when they have none).
    pub async fn send(&self, mut request: Request<B>) -> Result<Response<Incoming>, ForwardError> {
        let http2 = request.version() == Version::HTTP_2;
        if !http2 || request.uri().authority().is_none() {
            let mut parts = std::mem::take(request.uri_mut()).into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(self.dialer.authority().clone());
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(PathAndQuery::from_static("/"));
            }
            *request.uri_mut() =
                Uri::from_parts(parts).expect("scheme, authority and path make a URI");
        }
        let client = if http2 { &self.http2 } else { &self.http1 };
        client
            .request(request)
            .await
            .map_err(|error| ForwardError::classify(self.address(), error))
    }
}

/// Dials the one address whatever the request's URI says, so requests keep their own authority
/// and all share one pool.
#[derive(Clone)]
pub(crate) struct Connector(Arc<Dialer>);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dialer = self.0.clone();
        Box::pin(async move { dialer.connect().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_says_why() {
        // Bound without SO_REUSEADDR and not listening: connections are refused, and no other
        // listener can take the port while the test runs.
        let closed = tokio::net::TcpSocket::new_v4().expect("socket");
        closed.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let address = closed.local_addr().expect("address").to_string();
        let forwarder: Forwarder<Empty<Bytes>> =
            Forwarder::new(Dialer::new(&address, Duration::from_secs(5)).expect("an authority"));
        let request = Request::get("/probe").body(Empty::new()).expect("request");
        let error = forwarder.send(request).await.expect_err("nothing listens");
        assert!(
            matches!(&error, ForwardError::Unreachable { address: a, .. } if *a == address),
            "{error:?}"
        );
        assert!(error.to_string().contains(&address), "{error}");
        assert!(!error.root_cause().is_empty());
    }
}
