//! The built-in `example/echo` image: answers every request with its pod name, method, path and
//! headers as JSON (HTTP/1.1 and h2c) after reading its body, streams N zero bytes for
//! `GET /bytes/N` (downloads through a Service or a port-forward), echoes WebSocket messages, and
//! on UDP ports answers each datagram with `<pod>: <datagram>`.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{stream, SinkExt, Stream, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Serves on `listeners` and answers datagrams on `sockets` until `stop`.
pub fn serve(
    listeners: Vec<TcpListener>,
    sockets: Vec<UdpSocket>,
    pod: String,
    stop: CancellationToken,
) {
    for socket in sockets {
        let (pod, stop) = (pod.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0; 65_536];
            loop {
                let (len, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    received = socket.recv_from(&mut buf) => match received { Ok(received) => received, Err(_) => continue },
                };
                let mut reply = format!("{pod}: ").into_bytes();
                reply.extend_from_slice(&buf[..len]);
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
    for listener in listeners {
        let (pod, stop) = (pod.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
                };
                let pod = pod.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let pod = pod.clone();
                        async move { Ok::<_, Infallible>(answer(&pod, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
}

/// A response body: small and whole, or streamed zeros.
type EchoBody = Either<Full<Bytes>, StreamBody<ZeroFrames>>;

/// The frames of a `/bytes/N` download.
type ZeroFrames = Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Unpin>;

async fn answer(pod: &str, mut request: Request<Incoming>) -> Response<EchoBody> {
    let websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if let (true, Some(key)) = (
        websocket,
        request.headers().get(header::SEC_WEBSOCKET_KEY).cloned(),
    ) {
        let upgrade = hyper::upgrade::on(&mut request);
        let pod = pod.to_owned();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(message)) = socket.next().await {
                let reply = match message {
                    Message::Text(text) => Message::text(format!("{pod}: {text}")),
                    Message::Binary(data) => Message::binary(data),
                    _ => continue,
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
        });
        let mut response = Response::new(Either::Left(Full::default()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("ASCII"),
        );
        return response;
    }
    if let Some(len) = request.uri().path().strip_prefix("/bytes/") {
        if let Ok(len) = len.parse() {
            return Response::new(Either::Right(StreamBody::new(zeros(len))));
        }
    }
    let (parts, mut body) = request.into_parts();
    while let Some(Ok(_)) = body.frame().await {}
    let request = Request::from_parts(parts, ());
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        headers.insert(
            name.to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = json!({
        "pod": pod,
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |p| p.as_str()),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    });
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(format!("{body}\n")))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "x-served-by",
        HeaderValue::from_str(pod).unwrap_or(HeaderValue::from_static("echo")),
    );
    response
}

/// `len` zero bytes in 64 KiB frames of one static buffer.
fn zeros(len: u64) -> ZeroFrames {
    const CHUNK: u64 = 64 * 1024;
    static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];
    let frames = (0..len.div_ceil(CHUNK)).map(move |i| {
        let size = (len - i * CHUNK).min(CHUNK) as usize;
        Ok(Frame::data(Bytes::from_static(&ZEROS[..size])))
    });
    Box::new(stream::iter(frames))
}

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use hyper::client::conn::http1;

    use super::*;

    type TestBody = Either<Empty<Bytes>, Full<Bytes>>;
    type Sender = http1::SendRequest<TestBody>;

    /// One HTTP/1.1 connection to an echo server of its own.
    async fn echo_connection() -> (Sender, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        serve(vec![listener], Vec::new(), "echo-1".into(), stop.clone());
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        (sender, stop)
    }

    /// Sends `request` and reads the whole answer.
    async fn exchange(sender: &mut Sender, request: Request<TestBody>) -> Bytes {
        let response = sender.send_request(request).await.expect("an answer");
        let body = response.into_body().collect().await.expect("the body");
        body.to_bytes()
    }

    #[tokio::test]
    async fn downloads_stream_the_asked_bytes_and_uploads_are_read_before_the_answer() {
        let (mut sender, stop) = echo_connection().await;
        let len = 200_000;
        let request = Request::get(format!("/bytes/{len}")).body(Either::Left(Empty::new()));
        let body = exchange(&mut sender, request.expect("request")).await;
        assert_eq!(body.len(), len, "the asked length");
        assert!(body.iter().all(|&b| b == 0), "zeros");

        // The same connection answers an upload after reading all of it, and stays usable.
        let upload = Bytes::from(vec![7; 300_000]);
        sender.ready().await.expect("reusable after the download");
        let request = Request::post("/upload").body(Either::Right(Full::new(upload)));
        let body = exchange(&mut sender, request.expect("request")).await;
        let answer: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            (answer["method"].as_str(), answer["path"].as_str()),
            (Some("POST"), Some("/upload"))
        );
        sender.ready().await.expect("reusable after the upload");
        stop.cancel();
    }
}
