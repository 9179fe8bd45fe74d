//! The session's proxy pod: waiting until it is ready, saying why it is not (from its status and
//! its own Events), and finding its address again whenever the tunnel redials.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::Api;

use super::api_error::{ApiCallError, CallContext};
use super::names::SessionNames;

/// How often readiness is checked.
const POLL: Duration = Duration::from_millis(250);

/// Why the proxy pod is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ProxyPodError {
    /// The proxy did not become ready in time.
    #[error("the proxy did not become ready within {timeout:?}: {reason}. If the image cannot be pulled, push it to a registry the cluster can reach and pass --proxy-image (and --image-pull-secret)")]
    NotReady {
        /// The time allowed.
        timeout: Duration,
        /// What the pod and its events say.
        reason: String,
    },
    /// No proxy pod is ready (yet).
    #[error("no ready proxy pod for session {session} yet")]
    NoneReady {
        /// The session id.
        session: String,
    },
    /// The pod's IP and port make no address.
    #[error("the proxy pod's address {address} is not an IP address")]
    BadAddress {
        /// What the pod reported.
        address: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The API call failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
}

/// Whether `pod` is Ready and not being deleted: a terminating proxy still serves what the
/// cluster sends it for its shutdown delay, but the tunnel must go to its replacement.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The session's proxy pods.
async fn list(pods: &Api<Pod>, names: &SessionNames) -> Result<Vec<Pod>, ApiCallError> {
    Ok(pods
        .list(&ListParams::default().labels_from(&names.proxy_pods()))
        .await
        .during::<Pod>("list", Some(&names.namespace))?
        .items)
}

/// The session's proxy pods, and the IP of a ready one.
async fn ready_ip(
    pods: &Api<Pod>,
    names: &SessionNames,
) -> Result<(Option<String>, Vec<Pod>), ApiCallError> {
    let items = list(pods, names).await?;
    let ready = items
        .iter()
        .filter(|pod| is_ready(pod))
        .find_map(|pod| pod.status.as_ref()?.pod_ip.clone());
    Ok((ready, items))
}

/// A ready proxy pod: its name and IP.
pub(crate) struct ReadyPod {
    /// The pod's name.
    pub name: String,
    /// The pod's IP.
    pub ip: String,
}

impl ReadyPod {
    /// Its tunnel address, at `tunnel_port`.
    pub(crate) fn tunnel_address(&self, tunnel_port: u16) -> Result<SocketAddr, ProxyPodError> {
        let address = format!("{}:{tunnel_port}", self.ip);
        address
            .parse()
            .map_err(|source| ProxyPodError::BadAddress { address, source })
    }
}

/// The session's ready proxy pod.
pub(crate) async fn ready_pod(
    client: &kube::Client,
    names: &SessionNames,
) -> Result<ReadyPod, ProxyPodError> {
    let pods = Api::<Pod>::namespaced(client.clone(), &names.namespace);
    list(&pods, names)
        .await?
        .into_iter()
        .filter(is_ready)
        .find_map(|pod| {
            Some(ReadyPod {
                ip: pod.status?.pod_ip?,
                name: pod.metadata.name?,
            })
        })
        .ok_or_else(|| ProxyPodError::NoneReady {
            session: names.id.clone(),
        })
}

/// Waits until the session's proxy pod is ready; returns its IP. On timeout, the error says why
/// from the pod's status and events.
pub(crate) async fn wait_ready(
    client: &kube::Client,
    names: &SessionNames,
    timeout: Duration,
) -> Result<String, ProxyPodError> {
    let pods = Api::<Pod>::namespaced(client.clone(), &names.namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (ready, items) = ready_ip(&pods, names).await?;
        if let Some(ip) = ready {
            return Ok(ip);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProxyPodError::NotReady {
                timeout,
                reason: why_not_ready(client, names, &items).await,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the pod's container states say.
fn container_reasons(pod: &Pod) -> Vec<String> {
    let states = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|status| status.state.as_ref());
    let mut reasons = Vec::new();
    for state in states {
        if let Some(waiting) = &state.waiting {
            reasons.push(format!(
                "{}: {}",
                waiting.reason.as_deref().unwrap_or("waiting"),
                waiting.message.as_deref().unwrap_or_default()
            ));
        }
        if let Some(terminated) = &state.terminated {
            reasons.push(format!(
                "container exited with code {}",
                terminated.exit_code
            ));
        }
    }
    reasons
}

/// Why the first of `pods` is not ready: its containers' states and its own Events.
async fn why_not_ready(client: &kube::Client, names: &SessionNames, pods: &[Pod]) -> String {
    let Some(pod) = pods.first() else {
        return "no proxy pod was created (check the Deployment's events)".into();
    };
    let mut reasons = container_reasons(pod);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let events = Api::<Event>::namespaced(client.clone(), &names.namespace);
    let own = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={pod_name}"
    ));
    match events
        .list(&own)
        .await
        .during::<Event>("list", Some(&names.namespace))
    {
        Ok(list) => reasons.extend(list.items.into_iter().map(|e| {
            format!(
                "event {}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })),
        Err(error) => reasons.push(format!("its events could not be read ({error})")),
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "pod {pod_name} is not ready (its readiness probe on /readyz fails)"
        ));
    }
    reasons.join("; ")
}
