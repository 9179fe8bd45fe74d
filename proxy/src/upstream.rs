//! The original pods: requests without the intercept header go there, over the forwarding
//! core's pooled connections speaking the request's own protocol (HTTP/1.1, or h2c for HTTP/2
//! requests such as gRPC).

use cz_forward::{Dialer, ForwardError, Forwarder};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers;
use crate::upgrade::spawn_splice;

/// Pooled clients to the upstream.
pub struct Upstream {
    forwarder: Forwarder<Incoming>,
}

impl Upstream {
    /// Clients to the original pods, connected by `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        Self {
            forwarder: Forwarder::new(dialer),
        }
    }

    /// Sends the request to the original pods and streams the response back. An upgrade the
    /// upstream accepts is spliced on a task of its own.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let mut response = self
            .forwarder
            .send(request)
            .await
            .map_err(|error| match error {
                ForwardError::RequestBody { .. } => ProxyError::RequestBodyIncomplete,
                ForwardError::Timeout { address } => {
                    ProxyError::UpstreamTimeout { upstream: address }
                }
                ForwardError::Unreachable { address, source } => ProxyError::UpstreamUnreachable {
                    upstream: address,
                    source: source.into(),
                },
                ForwardError::Failed { address, source } => ProxyError::UpstreamUnreachable {
                    upstream: address,
                    source: source.into(),
                },
            })?;
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(downstream)) = (switched, downstream_upgrade) {
            let upstream = hyper::upgrade::on(&mut response);
            spawn_splice(
                downstream,
                async move { upstream.await.map(TokioIo::new) },
                (),
            );
        }
        headers::strip_hop_by_hop(response.headers_mut(), switched, |_| false);
        Ok(response.map(ProxyBody::Upstream))
    }
}
