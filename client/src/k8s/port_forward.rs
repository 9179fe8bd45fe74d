//! Port-forwards to the session's proxy pod through the API server, which authorizes them: the
//! tunnel's carrier (to the port cz-proxy binds on its pod's loopback, so this is the only way
//! in, and the laptop needs to reach nothing but the API server) and the admin port.
//!
//! A port-forward is a WebSocket (`v4.channel.k8s.io`) whose binary messages start with their
//! channel: 0 the port's bytes, 1 its errors; each channel's first message is the port number.
//! [`PortForwardStream`] reads and writes that WebSocket directly, one message per write: kube's
//! `Portforwarder` would add a task, a channel and an in-memory pipe per port-forward and send
//! what the laptop writes in 4 KiB messages, each flushed on its own — a third of the direct
//! carrier's throughput from the laptop to the pod (bench/RESULTS.md).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::api_error::ApiCallError;

/// The channel of the port's bytes.
const DATA: u8 = 0;
/// The channel of the port's errors (the kubelet's text).
const ERROR: u8 = 1;

/// Why no port-forward could be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// The port-forward was refused or failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
}

/// A port-forward stream: the port's bytes both ways; an error the kubelet reports (nothing
/// listens on the port, the pod is gone) ends reading with that error.
pub(crate) struct PortForwardStream {
    socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    /// What is left of the last data message.
    unread: Bytes,
    /// Whether the data and the error channel have sent their first message (the port).
    data_open: bool,
    error_open: bool,
    pod: String,
}

impl PortForwardStream {
    /// What the message `data` of `channel` means for reading: bytes, an error, or nothing.
    fn receive(&mut self, channel: u8, data: Bytes) -> io::Result<()> {
        match channel {
            DATA if !self.data_open => self.data_open = true,
            DATA => self.unread = data,
            ERROR if !self.error_open => self.error_open = true,
            ERROR if !data.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "the port-forward to pod {}: {}",
                        self.pod,
                        String::from_utf8_lossy(&data)
                    ),
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

impl AsyncRead for PortForwardStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            let message = match ready!(this.socket.poll_next_unpin(cx)) {
                Some(message) => message.map_err(io::Error::other)?,
                None => return Poll::Ready(Ok(())),
            };
            match message {
                Message::Binary(mut data) if !data.is_empty() => {
                    let channel = data.get_u8();
                    this.receive(channel, data)?;
                }
                Message::Close(_) => return Poll::Ready(Ok(())),
                _ => {}
            }
        }
        let len = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread.split_to(len));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PortForwardStream {
    /// Takes all of `buf` as one message, sent at the next flush (or when the WebSocket's write
    /// buffer is full).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = &mut self.get_mut().socket;
        ready!(socket.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        let mut message = Vec::with_capacity(1 + buf.len());
        message.push(DATA);
        message.extend_from_slice(buf);
        socket
            .start_send_unpin(Message::binary(message))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .socket
            .poll_flush_unpin(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .socket
            .poll_close_unpin(cx)
            .map_err(io::Error::other)
    }
}

/// What RBAC checks for a port-forward opened as a WebSocket: the upgrade is an HTTP GET,
/// authorized as `get`, and since Kubernetes 1.35 also as `create` (the
/// `AuthorizePodWebsocketUpgradeCreatePermission` check). Either may be the one refused, so the
/// message names both (the API server's own message, kept as the cause, says which).
const PORT_FORWARD_VERBS: &str = "get and create";

/// Opens a port-forward to `port` of `pod` in `namespace`.
pub(crate) async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: String,
    port: u16,
) -> Result<PortForwardStream, PortForwardError> {
    let refused = |source| ApiCallError {
        resource: "pods/portforward".into(),
        ..ApiCallError::new::<Pod>(PORT_FORWARD_VERBS, Some(namespace), source)
    };
    let request = kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
        .portforward(&pod, &[port])
        .map_err(|error| refused(kube::Error::BuildRequest(error)))?;
    let connection = client.connect(request).await.map_err(refused)?;
    Ok(PortForwardStream {
        socket: connection.into_stream(),
        unread: Bytes::new(),
        data_open: false,
        error_open: false,
        pod,
    })
}
