//! Intercepted requests: over the tunnel to the developer's laptop, one QUIC stream each.

use std::time::Duration;

use cz_shared::stream::{FrameReader, FrameWriter, StreamError};
use http::{Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use tracing::debug;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::Metrics;
use crate::routes::Route;
use crate::upgrade::spawn_splice;

/// Sends the request to the route's laptop, waiting up to `grace` for one to be connected, and
/// streams the response back. The request body is streamed on a task of its own, so both
/// directions flow at once (as gRPC bidirectional streams need).
pub async fn forward(
    route: &Route,
    mut request: Request<Incoming>,
    upgrade: bool,
    grace: Duration,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, ProxyError> {
    let laptop = match route.connected_laptop() {
        Some(laptop) => laptop,
        None => {
            let _waiting = metrics.waiting_for_laptop();
            route
                .laptop(grace)
                .await
                .ok_or(ProxyError::TunnelDisconnected)?
        }
    };
    let (send, recv) = laptop.open_bi().await?;
    let active = metrics.stream_opened();
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv);

    let upgrade_writer = if upgrade || body.is_end_stream() {
        // One write: the laptop never sees a head whose body has yet to end.
        tolerate_stop(writer.write_request_head_and_end(&parts).await)?;
        if !upgrade {
            writer.finish();
            None
        } else {
            Some(writer)
        }
    } else {
        tolerate_stop(writer.write_request_head(&parts).await)?;
        tokio::spawn(async move {
            match writer.write_body(body).await {
                Ok(_) => writer.finish(),
                Err(error) => debug!(%error, "request body not forwarded to the laptop"),
            }
        });
        None
    };

    let (mut head, ()) = reader.read_response_head().await?.into_parts();
    let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut head.headers, switched, |_| false);
    let body = match (switched, downstream_upgrade, upgrade_writer) {
        (true, Some(downstream), Some(writer)) => {
            let io = reader.into_io(writer.into_send_stream());
            spawn_splice(
                downstream,
                async move { Ok::<_, std::convert::Infallible>(io) },
                active,
            );
            ProxyBody::empty()
        }
        _ => ProxyBody::Tunnel(reader.into_body(), active),
    };
    Ok(Response::from_parts(head, body))
}

/// The laptop may stop reading a request before its end — its app answered early, as HTTP
/// servers may — and still be sending the response; so a stopped stream is not a failure of
/// the request: the response (or its absence, as a truncated stream) decides.
fn tolerate_stop(written: Result<(), StreamError>) -> Result<(), StreamError> {
    match written {
        Err(error) if error.is_stopped() => {
            debug!(%error, "the laptop stopped reading the request early");
            Ok(())
        }
        other => other,
    }
}
