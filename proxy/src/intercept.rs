//! Intercepted requests: over the tunnel to the developer's laptop, one QUIC stream each.

use std::time::Duration;

use cz_shared::stream::{FrameReader, FrameWriter, StreamError};
use http::{Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::{Metrics, TunnelWait};
use crate::routes::{Route, RoutePermit};
use crate::upgrade::spawn_splice;

/// Sends the request to the route's laptop, waiting up to `grace` for one to be connected, and
/// streams the response back. The request body is streamed on a task of its own, so both
/// directions flow at once (as gRPC bidirectional streams need).
///
/// Each wait on the laptop is bounded by the route's [`TunnelLimits`](crate::routes::TunnelLimits):
/// a place among the route's requests in flight and a tunnel stream, together within the slot
/// timeout (else 503 or 504); the response head within the response timeout of the request's
/// end (else 504, the stream cancelled); a head over the size limit is refused (502) and only
/// its stream is cancelled.
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
    let limits = route.limits();
    let (permit, (send, recv)) = take_turn(route, &laptop, metrics).await?;
    let active = metrics.stream_opened();
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv).max_head_len(limits.max_head_len);

    let mut request_body = None;
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
        request_body = Some(tokio::spawn(async move {
            match writer.write_body(body).await {
                Ok(_) => {
                    writer.finish();
                    Ok(())
                }
                Err(error) => {
                    debug!(%error, "request body not forwarded to the laptop");
                    writer.cancel();
                    Err(error)
                }
            }
        }));
        None
    };

    let head = read_head_in_time(&mut reader, request_body.as_mut(), limits.response_timeout);
    let (mut head, ()) = match head.await {
        Ok(head) => head.into_parts(),
        Err(error) => {
            // The laptop learns the answer is no longer wanted; its connection carries on.
            reader.cancel();
            if let Some(task) = request_body {
                task.abort();
            }
            match error {
                ProxyError::TunnelTimeout { .. } => {
                    metrics.tunnel_timed_out(TunnelWait::ResponseHead)
                }
                ProxyError::TunnelHeadTooLarge { .. } => metrics.oversized_head(),
                _ => {}
            }
            return Err(error);
        }
    };
    let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut head.headers, switched, |_| false);
    let body = match (switched, downstream_upgrade, upgrade_writer) {
        (true, Some(downstream), Some(writer)) => {
            let io = reader.into_io(writer.into_send_stream());
            spawn_splice(
                downstream,
                async move { Ok::<_, std::convert::Infallible>(io) },
                (active, permit),
            );
            ProxyBody::empty()
        }
        _ => ProxyBody::Tunnel(reader.into_body(), active, permit),
    };
    Ok(Response::from_parts(head, body))
}

/// Waits for a place among the route's requests in flight, then for a stream to the laptop,
/// both within the route's slot timeout; an expired wait is counted and answered for itself.
async fn take_turn(
    route: &Route,
    laptop: &quinn::Connection,
    metrics: &Metrics,
) -> Result<(RoutePermit, (quinn::SendStream, quinn::RecvStream)), ProxyError> {
    let limits = route.limits();
    let waited = limits.slot_timeout;
    let deadline = Instant::now() + waited;
    let Ok(permit) = timeout_at(deadline, route.admit()).await else {
        metrics.tunnel_timed_out(TunnelWait::RouteLimit);
        let limit = limits.max_requests;
        return Err(ProxyError::TunnelOverloaded { limit, waited });
    };
    let Ok(streams) = timeout_at(deadline, laptop.open_bi()).await else {
        metrics.tunnel_timed_out(TunnelWait::StreamSlot);
        return Err(ProxyError::TunnelBusy { waited });
    };
    Ok((permit, streams?))
}

/// Reads the laptop's response head, giving up `timeout` after the request was sent in full:
/// at once for a request without a body, else once `request_body` (its forwarding task) ends.
/// So a slow upload is never mistaken for a slow laptop, as NGINX, which reads the request body
/// before it sends the request on, never does. A client body that breaks off ends the wait at
/// once: the request cannot be answered whole.
async fn read_head_in_time(
    reader: &mut FrameReader,
    request_body: Option<&mut JoinHandle<Result<(), StreamError>>>,
    timeout: Duration,
) -> Result<Response<()>, ProxyError> {
    let expiry = async {
        if let Some(task) = request_body {
            if let Ok(Err(StreamError::Body(_))) = task.await {
                return ProxyError::RequestBodyIncomplete;
            }
        }
        tokio::time::sleep(timeout).await;
        ProxyError::TunnelTimeout { waited: timeout }
    };
    tokio::select! {
        biased;
        head = reader.read_response_head() => head.map_err(ProxyError::from),
        error = expiry => Err(error),
    }
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
