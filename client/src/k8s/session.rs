//! Sessions as the cluster records them: listing them, and closing them — restoring every
//! intercepted Service and deleting everything czctl created — whatever state a crash left.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::selector::{self, Record, Restored};
use super::{MANAGED_BY, SERVICE_LABEL};
use crate::intercept::{InterceptError, Progress, ENDPOINT_PROPAGATION};

/// An intercept recorded on a Service.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Namespace of the Service.
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
    /// What the Service's annotation records.
    pub record: Record,
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The intercepted Services in `namespace` (all namespaces when `None`).
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<SessionInfo>, InterceptError> {
    let services = api::<Service>(client, namespace)
        .list(&ListParams::default())
        .await?;
    Ok(services
        .items
        .iter()
        .filter_map(|service| {
            Some(SessionInfo {
                namespace: service.metadata.namespace.clone()?,
                service: service.metadata.name.clone()?,
                record: Record::read(service)?,
            })
        })
        .collect())
}

/// Closes every session in `namespace` (all when `None`), or only those of `service`: restores
/// the Services and deletes what czctl created. Safe to run when nothing is left.
pub async fn close(
    client: &kube::Client,
    namespace: Option<&str>,
    service: Option<&str>,
    progress: &mut impl FnMut(Progress),
) -> Result<usize, InterceptError> {
    let mut closed = 0;
    let mut restored = false;
    for session in list(client, namespace).await? {
        if service.is_some_and(|s| s != session.service) {
            continue;
        }
        let services = Api::<Service>::namespaced(client.clone(), &session.namespace);
        match selector::restore(&services, &session.service, None).await? {
            Restored::Selector => {
                progress(Progress::Restored);
                restored = true;
            }
            Restored::LeftAsChanged(selector) => {
                progress(Progress::LeftAsChanged(format!("{selector:?}")))
            }
            Restored::Nothing => {}
        }
        closed += 1;
    }
    if restored {
        // Connections still routed to the proxies meanwhile are served, not refused.
        tokio::time::sleep(ENDPOINT_PROPAGATION).await;
    }
    let mut labels = format!("app.kubernetes.io/managed-by={MANAGED_BY}");
    if let Some(service) = service {
        labels.push_str(&format!(",{SERVICE_LABEL}={service}"));
    }
    let params = ListParams::default().labels(&labels);
    delete_all::<Deployment>(client, namespace, &params, "proxy deployment", progress).await?;
    delete_all::<Service>(client, namespace, &params, "shadow service", progress).await?;
    delete_all::<Secret>(client, namespace, &params, "secret", progress).await?;
    Ok(closed)
}

async fn delete_all<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    params: &ListParams,
    what: &str,
    progress: &mut impl FnMut(Progress),
) -> Result<(), InterceptError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    for object in api::<K>(client, namespace).list(params).await?.items {
        let (Some(ns), Some(name)) = (object.meta().namespace.clone(), object.meta().name.clone())
        else {
            continue;
        };
        match Api::<K>::namespaced(client.clone(), &ns)
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => progress(Progress::Deleted(format!("{what} {ns}/{name}"))),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Whether a laptop is connected to `session`'s proxy, read from the proxy's metrics through a
/// port-forward to its admin port; `None` when the proxy cannot be asked.
pub async fn laptop_connected(client: &kube::Client, session: &SessionInfo) -> Option<bool> {
    use k8s_openapi::api::core::v1::Pod;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pods = Api::<Pod>::namespaced(client.clone(), &session.namespace);
    let selector = format!("{}={}", super::SESSION_LABEL, session.record.session);
    let pod = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items
        .into_iter()
        .next()?;
    let admin_port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("cz-admin"))?
        .container_port as u16;
    let mut forwarder = pods
        .portforward(pod.metadata.name.as_deref()?, &[admin_port])
        .await
        .ok()?;
    let mut stream = forwarder.take_stream(admin_port)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: cz-proxy\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut metrics = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut metrics),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        metrics
            .lines()
            .any(|line| line.trim() == "cz_proxy_tunnel_connected 1"),
    )
}
