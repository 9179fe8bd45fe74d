//! The session proxy's own ports, reached through a port-forward to its pod: HTTP exchanges with
//! its admin port (the typed, versioned state it serves on `/state`, see `cz_shared::contract`)
//! and its control port ([`super::proxy_control`]).

use std::time::Duration;

use bytes::Bytes;
use cz_shared::contract::{ProxyState, StateError, ADMIN_PORT_NAME, STATE_PATH};
use http::HeaderValue;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use super::api_error::{ApiCallError, CallContext};
use super::names::SessionNames;
use super::port_forward::{self, PortForwardError};

/// How long asking the proxy may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the proxy's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The session has no proxy pod.
    #[error("session {session} has no proxy pod")]
    NoPod {
        /// The session id.
        session: String,
    },
    /// The proxy pod declares no such port (a proxy of an older czctl has no control port).
    #[error("the proxy pod {pod} has no container port named {port}; if it was started by an older czctl, stop that intercept and start again with this one")]
    NoPort {
        /// The pod.
        pod: String,
        /// The port's name.
        port: String,
    },
    /// A Kubernetes call (the pod list or the port-forward) failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
    /// The port-forward failed.
    #[error(transparent)]
    PortForward(#[from] PortForwardError),
    /// The port-forward ended before the proxy answered.
    #[error("the port-forward to the proxy ended before the proxy answered")]
    Ended,
    /// HTTP to the proxy failed.
    #[error("the proxy did not answer over HTTP")]
    Http(#[source] hyper::Error),
    /// The proxy answered with an error status.
    #[error("the proxy answered {STATE_PATH} with {0}")]
    Status(StatusCode),
    /// The proxy did not answer in time.
    #[error("the proxy did not answer within {ASK_TIMEOUT:?}")]
    Timeout,
    /// The answer is not a state this czctl reads.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The state of session `names`' proxy.
pub(crate) async fn proxy_state(
    client: &kube::Client,
    names: &SessionNames,
) -> Result<ProxyState, AdminError> {
    let request = Request::get(STATE_PATH)
        .body(Full::default())
        .expect("a GET of a fixed path is a valid request");
    let (status, body) = exchange(client, names, None, ADMIN_PORT_NAME, request).await?;
    if !status.is_success() {
        return Err(AdminError::Status(status));
    }
    Ok(ProxyState::from_json(&body)?)
}

/// One HTTP/1.1 exchange with the port named `port_name` of session `names`' proxy pod named
/// `pod` (else a ready one if there is one), through a port-forward, within [`ASK_TIMEOUT`].
pub(crate) async fn exchange(
    client: &kube::Client,
    names: &SessionNames,
    pod: Option<&str>,
    port_name: &str,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), AdminError> {
    tokio::time::timeout(ASK_TIMEOUT, ask(client, names, pod, port_name, request))
        .await
        .map_err(|_| AdminError::Timeout)?
}

async fn ask(
    client: &kube::Client,
    names: &SessionNames,
    wanted: Option<&str>,
    port_name: &str,
    mut request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), AdminError> {
    let namespace = names.namespace.as_str();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut listed = pods
        .list(&ListParams::default().labels_from(&names.proxy_pods()))
        .await
        .during::<Pod>("list", Some(namespace))?
        .items;
    // A ready pod first: while the proxy pod is replaced, the old one is still listed.
    listed.sort_by_key(|pod| !is_ready(pod));
    if let Some(wanted) = wanted {
        listed.retain(|pod| pod.metadata.name.as_deref() == Some(wanted));
    }
    let pod = listed.into_iter().next().ok_or_else(|| AdminError::NoPod {
        session: names.id.clone(),
    })?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let port = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(port_name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .ok_or_else(|| AdminError::NoPort {
            pod: pod_name.clone(),
            port: port_name.to_owned(),
        })?;
    let stream = port_forward::open(client, namespace, pod_name, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(AdminError::Http)?;
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("cz-proxy"));
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    // The connection is driven until the exchange ends; then it is dropped.
    tokio::select! {
        exchange = exchange => exchange.map_err(AdminError::Http),
        ended = connection => {
            ended.map_err(AdminError::Http)?;
            Err(AdminError::Ended)
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}
