//! Small HTTP/1.1 + h2c servers standing in for the in-cluster pods and the developer's app.
//!
//! The default handler says who answered (`x-served-by`) and what it saw (`x-seen-*` headers),
//! echoes `/echo` bodies back as they stream in (ending with the request's trailers and a
//! gRPC-style `grpc-status`), lists the request's headers on `/headers`, and echoes WebSocket
//! messages prefixed with its name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A response body any handler can return.
pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A request handler.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<TestBody>> + Send + Sync>;

/// A running app; stops when dropped.
pub struct App {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body of `text`.
pub fn text_body(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Starts an app on 127.0.0.1 with pinned socket buffers ([`crate::buffers::pinned_listener`]);
/// `handler` answers every request (the default when `None`).
pub async fn spawn_app(name: &'static str, handler: Option<Handler>) -> App {
    let (listener, _) = crate::buffers::pinned_listener();
    spawn_app_on(listener, name, handler)
}

/// Like [`spawn_app`], on a listener the caller bound.
pub fn spawn_app_on(listener: TcpListener, name: &'static str, handler: Option<Handler>) -> App {
    let addr = listener.local_addr().expect("addr");
    let handler = handler.unwrap_or_else(|| echo_handler(name));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    App { addr, task }
}

/// The default handler of an app called `name`.
pub fn echo_handler(name: &'static str) -> Handler {
    Arc::new(move |request| Box::pin(echo(name, request)))
}

async fn echo(name: &'static str, mut request: Request<Incoming>) -> Response<TestBody> {
    let mut seen = HeaderMap::new();
    seen.insert("x-served-by", HeaderValue::from_static(name));
    let version = format!("{:?}", request.version());
    seen.insert(
        "x-seen-version",
        HeaderValue::from_str(&version).expect("ascii"),
    );
    for (from, to) in [
        ("host", "x-seen-host"),
        ("x-forwarded-for", "x-seen-forwarded-for"),
        ("x-forwarded-host", "x-seen-forwarded-host"),
        ("connection", "x-seen-connection"),
    ] {
        if let Some(value) = request.headers().get(from) {
            seen.insert(to, value.clone());
        }
    }
    if request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        let key = request
            .headers()
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    if socket
                        .send(Message::text(format!("{name}: {text}")))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let mut response = Response::new(text_body(""));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            "sec-websocket-accept",
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("ascii"),
        );
        headers.extend(seen);
        return response;
    }
    if request.uri().path() == "/headers" {
        return headers_response(&request, seen);
    }
    let body = if request.uri().path() == "/echo" {
        echo_body(request.into_body())
    } else {
        text_body(format!(
            "{name} {} {}",
            request.method(),
            request.uri().path()
        ))
    };
    let mut response = Response::new(body);
    response.headers_mut().extend(seen);
    response
}

/// Lists every request header in the body, one `name: value` line each, and answers with
/// hop-by-hop headers of its own (`connection: x-app-hop`, `x-app-hop`, `keep-alive`) that no
/// proxy may pass on.
fn headers_response(request: &Request<Incoming>, seen: HeaderMap) -> Response<TestBody> {
    let mut listing = String::new();
    for (name, value) in request.headers() {
        listing.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut response = Response::new(text_body(listing));
    let headers = response.headers_mut();
    headers.extend(seen);
    if request.version() < http::Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-app-hop"));
        headers.insert("x-app-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    }
    response
}

/// Streams `body` back chunk by chunk as it arrives, then the request's trailers (if any) with
/// `grpc-status: 0` added.
fn echo_body(mut body: Incoming) -> TestBody {
    let (frames_tx, frames_rx) =
        mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
    tokio::spawn(async move {
        let mut trailers = HeaderMap::new();
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_trailers) {
                Ok(Ok(request_trailers)) => trailers.extend(request_trailers),
                Ok(Err(frame)) => {
                    if frames_tx.send(Ok(frame)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = frames_tx.send(Err(error.into())).await;
                    return;
                }
            }
        }
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let _ = frames_tx.send(Ok(Frame::trailers(trailers))).await;
    });
    BodyExt::boxed(StreamBody::new(tokio_stream_from(frames_rx)))
}

/// An mpsc receiver as a stream.
pub fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
