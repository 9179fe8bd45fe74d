//! The built-in `example/echo` image: answers every request with its pod name, method, path and
//! headers as JSON (HTTP/1.1 and h2c), echoes WebSocket messages, and on UDP ports answers each
//! datagram with `<pod>: <datagram>`.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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
                        let response = answer(&pod, request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
}

fn answer(pod: &str, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
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
        let mut response = Response::new(Full::default());
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
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
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
