//! Pod port-forward over WebSocket, as kube-rs's `Api::<Pod>::portforward` speaks it
//! (subprotocol `v4.channel.k8s.io`): per requested port a data channel (2·i) and an error
//! channel (2·i+1); each channel's first frame from the server is the port, little-endian; every
//! binary frame starts with its channel number. Each connection goes to 127.0.0.1 inside the
//! pod, as a container runtime dials it ([`PodNetwork::connect_inside`]).

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::body::ApiBody;
use crate::network::{ClusterNetwork, PodNetwork};
use crate::store::ApiError;

const PROTOCOL: &str = "v4.channel.k8s.io";

/// Accepts the WebSocket upgrade and bridges each requested port of `pod`.
pub fn upgrade(
    mut request: Request<Incoming>,
    network: &ClusterNetwork,
    port_forwards: &PortForwards,
    pod: &Value,
    query: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ports="))
        .flat_map(|ports| {
            ports
                .split("%2C")
                .flat_map(|p| p.split(','))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|port| {
            port.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid port {port:?}")))
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "at least one port is required (ports=...)",
        ));
    }
    let offered = request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|p| p.to_str().ok())
        .unwrap_or_default();
    if !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "port-forward needs the WebSocket subprotocol {PROTOCOL}"
        )));
    }
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("port-forward needs a WebSocket upgrade"))?
        .clone();
    let pod_network = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok())
        .and_then(|ip| network.pod(ip))
        .ok_or_else(|| ApiError::bad_request("the pod is not running"))?;
    let upgrade = hyper::upgrade::on(&mut request);
    let cut = port_forwards.current();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                bridge(socket, &pod_network, &ports, cut).await;
            }
            Err(error) => debug!(%error, "port-forward upgrade failed"),
        }
    });
    let mut response = Response::new(BodyExt::boxed(Empty::new().map_err(|never| match never {})));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL),
    );
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is ASCII"),
    );
    Ok(response)
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::binary(bytes)
}

async fn bridge<S>(
    socket: WebSocketStream<S>,
    pod: &PodNetwork,
    ports: &[u16],
    cut: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (to_client_tx, mut to_client_rx) = mpsc::channel::<Message>(16);
    let mut to_pod = Vec::new();
    for (index, &port) in ports.iter().enumerate() {
        let data_channel = 2 * index as u8;
        for channel in [data_channel, data_channel + 1] {
            let _ = to_client_tx.send(frame(channel, &port.to_le_bytes())).await;
        }
        match pod.connect_inside(port).await {
            Ok(connection) => {
                let (mut read, write) = connection.into_split();
                to_pod.push(Some(write));
                let to_client_tx = to_client_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 32 * 1024];
                    while let Ok(read) = read.read(&mut buf).await {
                        if read == 0
                            || to_client_tx
                                .send(frame(data_channel, &buf[..read]))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                });
            }
            Err(error) => {
                to_pod.push(None);
                let message = format!(
                    "error forwarding port {port} to pod at {}: {error}",
                    pod.ip()
                );
                let _ = to_client_tx
                    .send(frame(data_channel + 1, message.as_bytes()))
                    .await;
            }
        }
    }
    drop(to_client_tx);
    let writer = tokio::spawn(async move {
        while let Some(message) = to_client_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    loop {
        let message = tokio::select! {
            () = cut.cancelled() => {
                // As when the API server goes away: no close frame, the connection just ends.
                writer.abort();
                return;
            }
            message = stream.next() => message,
        };
        let Some(Ok(message)) = message else {
            break;
        };
        let Message::Binary(bytes) = message else {
            if message.is_close() {
                break;
            }
            continue;
        };
        let Some((&channel, data)) = bytes.split_first() else {
            continue;
        };
        if let Some(Some(pod)) = to_pod.get_mut(channel as usize / 2) {
            if channel % 2 == 0 && pod.write_all(data).await.is_err() {
                break;
            }
        }
    }
    for pod in to_pod.iter_mut().flatten() {
        let _ = pod.shutdown().await;
    }
    drop(to_pod);
    let _ = writer.await;
}

/// The port-forwards being served, so that all can be cut at once, as an API server restart or
/// a load balancer's idle timeout cuts them.
#[derive(Debug, Default)]
pub struct PortForwards {
    current: Mutex<CancellationToken>,
}

impl PortForwards {
    /// What cuts the port-forwards opened now.
    fn current(&self) -> CancellationToken {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Cuts every port-forward open now; later ones are served as usual.
    pub fn cut_all(&self) {
        std::mem::take(&mut *self.current.lock().expect("not poisoned")).cancel();
    }
}
