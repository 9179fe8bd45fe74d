//! One connection on the intercepted port, from accept to close: it waits for the client's first
//! bytes, tells HTTP/2 with prior knowledge (h2c) from HTTP/1 by them, and serves it — HTTP/1
//! parked while idle ([`http1`]). It adds the time limits hyper does not enforce itself: from
//! accept to the first complete request head (protocol detection and the HTTP/2 preface
//! included), and how long an HTTP/2 connection may start no request.

use std::convert::Infallible;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1 as hyper_http1, http2 as hyper_http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::bounds::{Bounds, Interrupted};
use crate::drain::QUIET;
use crate::exchange::{ConnectionState, ExchangeBody};
use crate::http1::{self, Handler};
use crate::linger::Lingering;
use crate::park::ParkableIo;
use crate::router::Router;

/// How the connections of one worker speak HTTP, configured once.
pub struct Protocols {
    /// HTTP/1.1 (and 1.0).
    pub http1: hyper_http1::Builder,
    /// HTTP/2 with prior knowledge (h2c).
    pub http2: hyper_http2::Builder<TokioExecutor>,
}

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a client speaks, as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Serves one accepted connection until it closes, `header_timeout` passes without a complete
/// first request head (or, later, after an exchange), an HTTP/2 connection starts no request for
/// a whole `header_timeout` period, or the drain that `shutdown` begins ends it (see
/// [`crate::drain`]: after its next response, with GOAWAY, or after a quiet moment).
pub async fn serve(
    io: Lingering,
    protocols: Arc<Protocols>,
    router: Arc<Router>,
    state: Arc<ConnectionState>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let cancelled = pin!(shutdown.cancelled());
    let head_deadline = pin!(tokio::time::sleep(header_timeout));
    let mut bounds = Bounds::new(cancelled, head_deadline);
    let mut io = ParkableIo::new(io);
    // No buffer or protocol state is spent on a connection until its client sends something.
    let protocol = match bounds.until(detect(&mut io)).await {
        Ok(Ok(protocol)) => protocol,
        Ok(Err(error)) => return debug!(%error, "reading the client's first bytes failed"),
        Err(Interrupted::Shutdown) => return,
        Err(Interrupted::HeadDeadline) => {
            return debug!("the client sent nothing within the header timeout; closing");
        }
    };
    let handler = handler(router, state.clone());
    match protocol {
        Protocol::Http1 => {
            let http1 = &protocols.http1;
            http1::serve(io, http1, handler, &state, &mut bounds, header_timeout).await;
        }
        // Boxed: an HTTP/1 connection's task does not keep room for an HTTP/2 connection.
        Protocol::Http2 => {
            let http2 = &protocols.http2;
            Box::pin(serve_http2(
                io,
                http2,
                handler,
                &state,
                header_timeout,
                &shutdown,
            ))
            .await;
        }
    }
}

/// Reads the client's first bytes, up to the length of the HTTP/2 preface or the first that
/// differs from it, and keeps them for the connection to read again.
async fn detect(io: &mut ParkableIo) -> io::Result<Protocol> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let mut filled = 0;
    while filled < first.len() {
        let read = io.read(&mut first[filled..]).await?;
        filled += read;
        if read == 0 || first[..filled] != HTTP2_PREFACE[..filled] {
            break;
        }
    }
    io.unread(&first[..filled]);
    Ok(if first == *HTTP2_PREFACE {
        Protocol::Http2
    } else {
        Protocol::Http1
    })
}

/// Routes each request of a connection and counts its exchanges. During the drain an HTTP/1
/// response carries `Connection: close`, so that the connection closes after it, the one moment
/// the client cannot be sending another request on it.
fn handler(router: Arc<Router>, state: Arc<ConnectionState>) -> impl Handler {
    service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let http1 = request.version() < Version::HTTP_2;
        let exchange = state.clone().begin_exchange();
        async move {
            let mut response = router.handle(request, &exchange.connection().client).await;
            if http1 && exchange.connection().is_draining() {
                let headers = response.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response.map(|body| ExchangeBody::new(body, exchange)))
        }
    })
}

/// Serves HTTP/2 on `io` until it closes, starts no request for a whole `header_timeout`
/// period (then GOAWAY), or the drain: GOAWAY once it has served a request (at once if it has),
/// or after a quiet moment without one, so that a connection made during the drain is not sent
/// away before its first request.
async fn serve_http2(
    io: ParkableIo,
    builder: &hyper_http2::Builder<TokioExecutor>,
    handler: impl Handler,
    state: &ConnectionState,
    header_timeout: Duration,
    shutdown: &CancellationToken,
) {
    let connection = builder.serve_connection(TokioIo::new(io), handler);
    tokio::pin!(connection);
    let mut seen = 0;
    let mut closing = false;
    let mut drained_at = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if drained_at.is_none() && !closing => {
                let now = Instant::now();
                drained_at = Some(if state.requests() > 0 { now } else { now + QUIET });
            }
            () = tokio::time::sleep_until(drained_at.unwrap_or_else(Instant::now)),
                if drained_at.is_some() && !closing =>
            {
                debug!("the proxy drains; GOAWAY");
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(header_timeout), if !closing => {
                let requests = state.requests();
                if requests == 0 {
                    return debug!("no complete request head within the header timeout; closing");
                }
                if requests == seen {
                    debug!("HTTP/2 connection idle for the header timeout; closing gracefully");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                seen = requests;
            }
        }
    }
}
