//! Clients to one fixed address: HTTP/1.1 connections kept between requests, and one HTTP/2
//! (h2c, as gRPC needs) connection that all HTTP/2 requests share; each request goes over the
//! connections of its own protocol.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};

use crate::dial::Dialer;
use crate::error::ForwardError;
use crate::http1::Http1Pool;
use crate::http1::ResponseBody;
use crate::http2::Http2Connection;

/// Clients to one address.
pub struct Forwarder<B: Send + 'static> {
    dialer: Dialer,
    http1: Arc<Http1Pool<B>>,
    http2: Http2Connection<B>,
}

impl<B> Forwarder<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Clients to the address `dialer` connects to. Connections are opened on demand; an
    /// HTTP/1.1 connection idle for a minute is closed.
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            http1: Arc::new(Http1Pool::new()),
            http2: Http2Connection::new(),
        }
    }

    /// Where requests go.
    pub fn address(&self) -> &str {
        self.dialer.address()
    }

    /// Sends `request` over the connections of its protocol and returns the response as it
    /// arrives. HTTP/1 requests are sent in origin form (`/path?query`) with their own `Host`
    /// header (this address when they have none); HTTP/2 requests keep their own `:authority`
    /// (or get this one when they have none).
    pub async fn send(
        &self,
        mut request: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, ForwardError> {
        if request.version() == Version::HTTP_2 {
            if request.uri().authority().is_none() {
                self.set_authority(request.uri_mut());
            }
            self.http2.send(&self.dialer, request).await
        } else {
            self.prepare_http1(&mut request);
            self.http1.send(&self.dialer, request).await
        }
    }

    /// Origin-form URI (authority-form for CONNECT) and a `Host` header, as an HTTP/1.1 server
    /// expects them; a request without `Host` gets its URI's authority (absolute form), else
    /// this address.
    fn prepare_http1(&self, request: &mut Request<B>) {
        if !request.headers().contains_key(header::HOST) {
            let authority = request.uri().authority().unwrap_or(self.dialer.authority());
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        let uri = request.uri();
        if request.method() != Method::CONNECT
            && (uri.scheme().is_some() || uri.path_and_query().is_none())
        {
            let path = uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
    }

    fn set_authority(&self, uri: &mut Uri) {
        let mut parts = std::mem::take(uri).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.dialer.authority().clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *uri = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use std::time::Duration;

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
