//! The developer's app on the laptop: each intercepted request arrives on a tunnel stream and is
//! sent to the app by the forwarding core `cz_forward` (pooled connections, HTTP/2 when the
//! cluster request was HTTP/2, as gRPC needs; HTTP/1.1 otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cz_forward::{is_upgrade, Dialer, ForwardError, Forwarder, DEFAULT_SOCKET_BUFFER};
use cz_shared::stream::{FrameReader, FrameWriter, TunnelBody};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tracing::debug;

use crate::events::{RequestEvent, TunnelEvent};
use crate::inspect::capture::{Capture, Tee};
use crate::inspect::AlreadyInspected;
use crate::Inspector;

type LocalRequestBody = Tee<Either<TunnelBody, Empty<Bytes>>>;

/// How long connecting to the local app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pooled clients to the local app, shared by all streams of all connections of a tunnel.
pub(crate) struct LocalApp {
    address: SocketAddr,
    forwarder: Forwarder<LocalRequestBody>,
    unreachable: AtomicBool,
    events_tx: broadcast::Sender<TunnelEvent>,
    inspector: OnceLock<Inspector>,
}

impl LocalApp {
    pub(crate) fn new(address: SocketAddr, events_tx: broadcast::Sender<TunnelEvent>) -> Self {
        Self {
            address,
            // Bounded buffers: an app that stops reading an upload pins little of the laptop.
            forwarder: Forwarder::new(
                Dialer::new(&address.to_string(), CONNECT_TIMEOUT)
                    .expect("a socket address is an authority")
                    .socket_buffer(DEFAULT_SOCKET_BUFFER),
            ),
            unreachable: AtomicBool::new(false),
            events_tx,
            inspector: OnceLock::new(),
        }
    }

    /// Captures the exchanges served from now on into `inspector`.
    pub(crate) fn inspect(&self, inspector: Inspector) -> Result<(), AlreadyInspected> {
        self.inspector.set(inspector).map_err(|_| AlreadyInspected)
    }

    /// Serves one intercepted request: reads it from the stream, asks the local app, writes the
    /// response back. If the cluster side cancels, the local request is dropped (aborted).
    pub(crate) async fn serve_stream(&self, send: quinn::SendStream, recv: quinn::RecvStream) {
        let started = Instant::now();
        let mut reader = FrameReader::new(recv);
        let mut writer = FrameWriter::new(send);
        let (parts, ()) = match reader.read_request_head().await {
            Ok(request) => request.into_parts(),
            Err(error) => {
                debug!(%error, "unreadable request from the proxy");
                writer.cancel();
                return;
            }
        };
        let mut capture = self
            .inspector
            .get()
            .map_or_else(Capture::off, |inspector| inspector.capture(&parts));
        let observed = (self.events_tx.receiver_count() > 0).then(|| {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", PathAndQuery::as_str)
                .to_owned();
            (parts.method.clone(), path)
        });
        let upgrade = is_upgrade(&parts.headers);
        let (body, upgrade_reader) = if upgrade {
            if let Err(error) = reader.skip_body().await {
                return debug!(%error, "upgrade request cut short");
            }
            (Either::Right(Empty::new()), Some(reader))
        } else if reader.take_empty_body() {
            // Passed on as a request without a body, not as a body of unknown length.
            (Either::Right(Empty::new()), None)
        } else {
            (Either::Left(reader.into_body()), None)
        };
        let body = capture.tee_request(body);
        let response = tokio::select! {
            response = self.forwarder.send(Request::from_parts(parts, body)) => response,
            () = writer.stopped() => return debug!("request cancelled by the cluster side"),
        };
        let result = match response {
            Ok(mut response) => {
                self.set_reachable(true, None);
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(reader) = upgrade_reader {
                        let upgraded = hyper::upgrade::on(&mut response);
                        let (head, _) = response.into_parts();
                        capture.upgraded(&head);
                        if let Err(error) = writer.write_response_head(&head).await {
                            return debug!(%error, "could not send the upgrade response");
                        }
                        let tunnel = reader.into_io(writer.into_send_stream());
                        let local = async move { upgraded.await.map(TokioIo::new) };
                        return cz_forward::splice(
                            local,
                            std::future::ready(Ok::<_, std::convert::Infallible>(tunnel)),
                        )
                        .await;
                    }
                }
                let (head, body) = response.into_parts();
                let body = capture.tee_response(&head, body);
                write_response(&mut writer, head, body).await
            }
            Err(error) => {
                let unreachable = !matches!(
                    error,
                    ForwardError::Failed { .. } | ForwardError::RequestBody { .. }
                );
                self.set_reachable(!unreachable, Some(&error));
                let (head, body) = self.failure_response(unreachable, &error).into_parts();
                let body = capture.tee_response(&head, body);
                write_response(&mut writer, head, body).await
            }
        };
        match result {
            Ok((status, response_bytes)) => {
                writer.finish();
                if let Some((method, path)) = observed {
                    let event = RequestEvent {
                        method,
                        path,
                        status,
                        duration: started.elapsed(),
                        response_bytes,
                    };
                    let _ = self.events_tx.send(TunnelEvent::Request(event));
                }
            }
            Err(error) => {
                debug!(%error, "response not delivered to the cluster side");
                capture.failed(format_args!(
                    "response not delivered to the cluster side: {error}"
                ));
            }
        }
    }

    /// Reports the local app going away or coming back, once per change.
    fn set_reachable(&self, reachable: bool, error: Option<&ForwardError>) {
        let was_unreachable = self.unreachable.swap(!reachable, Ordering::Relaxed);
        let event = match (was_unreachable, reachable) {
            (false, false) => TunnelEvent::LocalAppUnreachable {
                address: self.address,
                error: error.map(ForwardError::root_cause).unwrap_or_default(),
            },
            (true, true) => TunnelEvent::LocalAppReachable {
                address: self.address,
            },
            _ => return,
        };
        let _ = self.events_tx.send(event);
    }

    fn failure_response(&self, unreachable: bool, error: &ForwardError) -> Response<Full<Bytes>> {
        let port = self.address.port();
        if unreachable {
            cz_forward::error_response(
                StatusCode::BAD_GATEWAY,
                "local-app-unreachable",
                format!(
                    "czctl: nothing is answering on {} ({}): start your app on port {port}, or run czctl with --localPort set to the port your app listens on\n",
                    self.address,
                    error.root_cause()
                ),
            )
        } else {
            cz_forward::error_response(
                StatusCode::BAD_GATEWAY,
                "local-app-failed",
                format!(
                    "czctl: the local app on {} failed to answer: {}\n",
                    self.address,
                    error.root_cause()
                ),
            )
        }
    }
}

async fn write_response<B>(
    writer: &mut FrameWriter,
    head: http::response::Parts,
    body: B,
) -> Result<(StatusCode, u64), cz_shared::stream::StreamError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<cz_shared::stream::BoxError>,
{
    let sent = writer.write_response(&head, body).await?;
    Ok((head.status, sent))
}
