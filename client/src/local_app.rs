//! The developer's app on the laptop: each intercepted request arrives on a tunnel stream and is
//! sent to the app over pooled connections (HTTP/2 when the cluster request was HTTP/2, as gRPC
//! needs; HTTP/1.1 otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use cz_shared::headers::{is_upgrade, ERROR_HEADER};
use cz_shared::stream::{FrameReader, FrameWriter, TunnelBody};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::broadcast;
use tracing::debug;

use crate::events::{RequestEvent, TunnelEvent};

type LocalRequestBody = Either<TunnelBody, Empty<Bytes>>;

/// Pooled clients to the local app, shared by all streams of all connections of a tunnel.
pub(crate) struct LocalApp {
    address: SocketAddr,
    authority: Authority,
    http1: Client<HttpConnector, LocalRequestBody>,
    http2: Client<HttpConnector, LocalRequestBody>,
    unreachable: AtomicBool,
    events_tx: broadcast::Sender<TunnelEvent>,
}

impl LocalApp {
    pub(crate) fn new(address: SocketAddr, events_tx: broadcast::Sender<TunnelEvent>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new());
        Self {
            address,
            authority: address
                .to_string()
                .parse()
                .expect("a socket address is an authority"),
            http1: builder.build(connector.clone()),
            http2: builder.http2_only(true).build(connector),
            unreachable: AtomicBool::new(false),
            events_tx,
        }
    }

    /// Serves one intercepted request: reads it from the stream, asks the local app, writes the
    /// response back. If the cluster side cancels, the local request is dropped (aborted).
    pub(crate) async fn serve_stream(&self, send: quinn::SendStream, recv: quinn::RecvStream) {
        let started = Instant::now();
        let mut reader = FrameReader::new(recv);
        let mut writer = FrameWriter::new(send);
        let (mut parts, ()) = match reader.read_request_head().await {
            Ok(request) => request.into_parts(),
            Err(error) => {
                debug!(%error, "unreadable request from the proxy");
                writer.cancel();
                return;
            }
        };
        let observed = (self.events_tx.receiver_count() > 0).then(|| {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", PathAndQuery::as_str)
                .to_owned();
            (parts.method.clone(), path)
        });
        let upgrade = is_upgrade(&parts.headers);
        parts.uri = self.local_uri(parts.uri);
        let http2 = parts.version == Version::HTTP_2;
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
        let client = if http2 { &self.http2 } else { &self.http1 };
        let response = tokio::select! {
            response = client.request(Request::from_parts(parts, body)) => response,
            () = writer.stopped() => return debug!("request cancelled by the cluster side"),
        };
        let result = match response {
            Ok(mut response) => {
                self.set_reachable(true, None);
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(reader) = upgrade_reader {
                        let upgraded = hyper::upgrade::on(&mut response);
                        let (head, _) = response.into_parts();
                        if let Err(error) = writer.write_response_head(&head).await {
                            return debug!(%error, "could not send the upgrade response");
                        }
                        return splice(upgraded, reader, writer).await;
                    }
                }
                let (head, body) = response.into_parts();
                write_response(&mut writer, head, body).await
            }
            Err(error) => {
                let unreachable = error.is_connect();
                self.set_reachable(!unreachable, Some(&error));
                let (head, body) = self.failure_response(unreachable, &error).into_parts();
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
            Err(error) => debug!(%error, "response not delivered to the cluster side"),
        }
    }

    fn local_uri(&self, uri: Uri) -> Uri {
        let mut parts = uri.into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
    }

    /// Reports the local app going away or coming back, once per change.
    fn set_reachable(&self, reachable: bool, error: Option<&hyper_util::client::legacy::Error>) {
        let was_unreachable = self.unreachable.swap(!reachable, Ordering::Relaxed);
        let event = match (was_unreachable, reachable) {
            (false, false) => TunnelEvent::LocalAppUnreachable {
                address: self.address,
                error: error.map(connect_error_text).unwrap_or_default(),
            },
            (true, true) => TunnelEvent::LocalAppReachable {
                address: self.address,
            },
            _ => return,
        };
        let _ = self.events_tx.send(event);
    }

    fn failure_response(
        &self,
        unreachable: bool,
        error: &hyper_util::client::legacy::Error,
    ) -> Response<Full<Bytes>> {
        let port = self.address.port();
        let (text, code) = if unreachable {
            (
                format!(
                    "czctl: nothing is answering on {} ({}): start your app on port {port}, or run czctl with --localPort set to the port your app listens on\n",
                    self.address,
                    connect_error_text(error)
                ),
                "local-app-unreachable",
            )
        } else {
            (
                format!(
                    "czctl: the local app on {} failed to answer: {error}\n",
                    self.address
                ),
                "local-app-failed",
            )
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
        response
    }
}

/// The innermost cause of a connect error (e.g. "Connection refused (os error 111)").
fn connect_error_text(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
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

/// Copies the bytes of an upgraded connection between the local app and the tunnel stream.
async fn splice(local: hyper::upgrade::OnUpgrade, reader: FrameReader, writer: FrameWriter) {
    let local = match local.await {
        Ok(upgraded) => upgraded,
        Err(error) => return debug!(%error, "local app upgrade failed"),
    };
    let mut tunnel = reader.into_io(writer.into_send_stream());
    match tokio::io::copy_bidirectional(&mut TokioIo::new(local), &mut tunnel).await {
        Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
        Err(error) => debug!(%error, "upgraded connection failed"),
    }
}
