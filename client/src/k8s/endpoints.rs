//! Whether a Service's endpoints still list the session's proxy, read from its EndpointSlices:
//! after the selector is restored, the proxy is deleted only once the cluster no longer lists
//! it, so that what still reaches it meanwhile is served (the proxy's own shutdown delay then
//! covers kube-proxy's and ingress controllers' lag behind the endpoints).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::Api;

use super::api_error::{ApiCallError, CallContext};
use super::names::SessionNames;

/// How often the endpoints are read again.
const POLL: Duration = Duration::from_millis(100);

/// How long the endpoints may take to drop the proxy before it is deleted anyway: an endpoints
/// controller takes milliseconds, a busy one a few seconds.
pub(crate) const UNLISTED_TIMEOUT: Duration = Duration::from_secs(30);

/// How waiting for the endpoints ended.
#[derive(Debug)]
pub(crate) enum ProxyListing {
    /// The Service's endpoints no longer list the proxy.
    Unlisted,
    /// They still did at [`UNLISTED_TIMEOUT`].
    StillListed,
    /// They could not be read (e.g. RBAC refused `list endpointslices`).
    Unreadable(ApiCallError),
}

/// Waits until the EndpointSlices of Service `names.service` list no pod of the session's
/// proxy, for at most [`UNLISTED_TIMEOUT`].
pub(crate) async fn wait_until_unlisted(
    client: &kube::Client,
    names: &SessionNames,
) -> ProxyListing {
    let deadline = tokio::time::Instant::now() + UNLISTED_TIMEOUT;
    loop {
        match proxy_listed(client, names).await {
            Ok(false) => return ProxyListing::Unlisted,
            Ok(true) if tokio::time::Instant::now() >= deadline => {
                return ProxyListing::StillListed
            }
            Ok(true) => tokio::time::sleep(POLL).await,
            Err(error) => return ProxyListing::Unreadable(error),
        }
    }
}

/// Whether an endpoint of the Service is one of the session's proxy pods.
async fn proxy_listed(client: &kube::Client, names: &SessionNames) -> Result<bool, ApiCallError> {
    let namespace = names.namespace.as_str();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(
            &ListParams::default().labels(&format!("kubernetes.io/service-name={}", names.service)),
        )
        .await
        .during::<EndpointSlice>("list", Some(namespace))?;
    let targets: BTreeSet<String> = slices
        .items
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter_map(|endpoint| endpoint.target_ref.as_ref())
        .filter(|target| target.kind.as_deref() == Some("Pod"))
        .filter_map(|target| target.name.clone())
        .collect();
    if targets.is_empty() {
        return Ok(false);
    }
    let proxies = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels_from(&names.proxy_pods()))
        .await
        .during::<Pod>("list", Some(namespace))?;
    Ok(proxies
        .items
        .iter()
        .filter_map(|pod| pod.metadata.name.as_ref())
        .any(|name| targets.contains(name)))
}
