//! The Service to intercept: checks that it can be, and which of its ports.

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::Api;

use super::selector::Record;
use crate::intercept::InterceptError;

/// A Service port, with the container port its pods listen on.
#[derive(Debug, Clone)]
pub struct TargetPort {
    /// The Service port.
    pub port: ServicePort,
    /// The container port number behind it.
    pub container_port: u16,
    /// The name the proxy gives that container port (a named targetPort keeps resolving).
    pub container_port_name: Option<String>,
}

/// A Service that can be intercepted, and the port to intercept.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Service as read (its resourceVersion is the precondition for the switch).
    pub service: Service,
    /// Every port, resolved.
    pub ports: Vec<TargetPort>,
    /// Index in `ports` of the intercepted one.
    pub intercepted: usize,
}

impl Target {
    /// The intercepted port.
    pub fn port(&self) -> &TargetPort {
        &self.ports[self.intercepted]
    }
}

/// Reads `namespace/name` and checks it can be intercepted on `remote_port`.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    remote_port: Option<u16>,
) -> Result<Target, InterceptError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let Some(service) = services.get_opt(name).await? else {
        let mut names: Vec<String> = services
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort_by_key(|candidate| distance(candidate, name));
        return Err(InterceptError::ServiceNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            candidates: names,
        });
    };
    if let Some(record) = Record::read(&service) {
        return Err(InterceptError::AlreadyIntercepted {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            record: Box::new(record),
        });
    }
    let spec = service.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Err(InterceptError::NoSelector {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    let service_ports = spec.ports.clone().unwrap_or_default();
    let intercepted = match (remote_port, service_ports.len()) {
        (Some(wanted), _) => service_ports
            .iter()
            .position(|p| p.port == i32::from(wanted)),
        (None, 1) => Some(0),
        (None, _) => None,
    };
    let Some(intercepted) = intercepted else {
        return Err(InterceptError::PortNeeded {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            given: remote_port,
            ports: service_ports.iter().map(describe_port).collect(),
        });
    };
    // Named target ports resolve through the pods the Service selects now.
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .list(&ListParams::default().labels(&label_selector).limit(1))
        .await?
        .items
        .into_iter()
        .next();
    let mut ports = Vec::new();
    for port in service_ports {
        let (container_port, container_port_name) = match &port.target_port {
            Some(IntOrString::Int(number)) => (*number as u16, None),
            None => (port.port as u16, None),
            Some(IntOrString::String(port_name)) => {
                let number = pod
                    .as_ref()
                    .and_then(|pod| pod.spec.as_ref())
                    .and_then(|spec| {
                        spec.containers
                            .iter()
                            .flat_map(|c| c.ports.clone().unwrap_or_default())
                            .find(|p| p.name.as_deref() == Some(port_name))
                    })
                    .map(|p| p.container_port as u16)
                    .ok_or_else(|| InterceptError::UnresolvedPort {
                        name: name.to_owned(),
                        port_name: port_name.clone(),
                    })?;
                (number, Some(port_name.clone()))
            }
        };
        ports.push(TargetPort {
            port,
            container_port,
            container_port_name,
        });
    }
    Ok(Target {
        service,
        ports,
        intercepted,
    })
}

/// `80 (http → 8080/TCP)`.
pub fn describe_port(port: &ServicePort) -> String {
    let target = match &port.target_port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => port.port.to_string(),
    };
    let name = port
        .name
        .as_deref()
        .map(|n| format!("{n} "))
        .unwrap_or_default();
    format!(
        "{} ({name}→ {target}/{})",
        port.port,
        port.protocol.as_deref().unwrap_or("TCP")
    )
}

/// Edit distance, to list the closest Service names first.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn closest_names_first() {
        let mut names = ["payments", "echo", "ech0-v2", "frontend"];
        names.sort_by_key(|n| super::distance(n, "ecoh"));
        assert_eq!(names[0], "echo");
    }
}
