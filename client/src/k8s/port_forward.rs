//! Port-forwards to the session's proxy pod through the API server, which authorizes them: the
//! tunnel's carrier (to the port cz-proxy binds on its pod's loopback, so this is the only way
//! in, and the laptop needs to reach nothing but the API server) and the admin port.

use std::pin::Pin;
use std::task::{Context, Poll};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Portforwarder;
use kube::Api;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::api_error::ApiCallError;

/// Why no port-forward could be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// The port-forward was refused or failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
    /// The port-forward gave no stream.
    #[error("the port-forward to the proxy pod {pod} opened no stream")]
    NoStream {
        /// The pod.
        pod: String,
    },
}

/// A port-forward stream; the port-forward ends with it.
pub(crate) struct PortForwardStream {
    stream: DuplexStream,
    forwarder: Portforwarder,
}

impl Drop for PortForwardStream {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl AsyncRead for PortForwardStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForwardStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What RBAC checks for a port-forward as kube-rs opens it: a WebSocket upgrade is an HTTP GET,
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
    let mut forwarder = Api::<Pod>::namespaced(client.clone(), namespace)
        .portforward(&pod, &[port])
        .await
        .map_err(|source| ApiCallError {
            resource: "pods/portforward".into(),
            ..ApiCallError::new::<Pod>(PORT_FORWARD_VERBS, Some(namespace), source)
        })?;
    let stream = forwarder
        .take_stream(port)
        .ok_or(PortForwardError::NoStream { pod })?;
    Ok(PortForwardStream { stream, forwarder })
}
