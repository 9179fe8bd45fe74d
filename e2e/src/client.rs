//! HTTP clients for tests: one connection each, so tests control keep-alive and protocol.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A finished response.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Answer {
    /// Which app answered (`x-served-by`), or `proxy` when nobody did.
    pub fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("proxy")
    }
}

/// An HTTP/1.1 connection to `addr`.
pub async fn http1<B>(addr: SocketAddr) -> http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http1_over(TcpStream::connect(addr).await.expect("connect")).await
}

/// An HTTP/1.1 connection over `stream`.
pub async fn http1_over<B>(stream: TcpStream) -> http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection.with_upgrades());
    sender
}

/// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
pub async fn http2<B>(addr: SocketAddr) -> http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// Reads a response to the end.
pub async fn answer(response: http::Response<hyper::body::Incoming>) -> Answer {
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: head.status,
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path` with `headers` on a new HTTP/1.1 connection, answered within
/// [`PROMPTLY`](crate::PROMPTLY).
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let exchange = async {
        let mut sender = http1::<Empty<Bytes>>(addr).await;
        let mut request = Request::get(path).header("host", "svc.test");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).expect("request");
        answer(sender.send_request(request).await.expect("response")).await
    };
    crate::within(
        crate::PROMPTLY,
        &format!("an answer to GET {path}"),
        exchange,
    )
    .await
}
