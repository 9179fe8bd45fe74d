//! The Service to intercept: checks that it can be, and which of its ports.

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::core::Selector;
use kube::Api;

use super::api_error::{ApiCallError, CallContext};
use super::record::Record;

/// Why a Service cannot be intercepted as asked. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No such Service.
    #[error("service \"{name}\" not found in namespace \"{namespace}\"{}", match candidates.as_slice() {
        [] => "; it has no services (pick another namespace with -n)".to_owned(),
        some => format!("; services there, closest first: {}", some.join(", ")),
    })]
    ServiceNotFound {
        /// Namespace searched.
        namespace: String,
        /// Service asked for.
        name: String,
        /// Services of the namespace, closest names first.
        candidates: Vec<String>,
    },
    /// The Service selects no pods by label.
    #[error("service {namespace}/{name} has no selector (its endpoints are managed by hand or by another controller), so czctl cannot redirect it; intercept the Service that selects your pods instead")]
    NoSelector {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
    },
    /// Someone intercepts another port of it already: sessions share one port's proxy.
    #[error("service {namespace}/{name} is already intercepted on port {} by {} since {} (session {}, header {}); several developers share an intercept on that port, each with their own header value (-r {} -x NAME:VALUE); if that session is gone, close it with: czctl session close -n {namespace} --session {}", record.remote_port, record.owner, record.since, record.session, record.header, record.remote_port, record.session)]
    AlreadyIntercepted {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
        /// The other session.
        record: Box<Record>,
    },
    /// The port is ambiguous or wrong.
    #[error("service {namespace}/{name} {}: {}; choose one with -r/--remotePort", given.map_or("has several ports".to_owned(), |p| format!("has no port {p}")), ports.join(", "))]
    PortNeeded {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
        /// The port given, if any.
        given: Option<u16>,
        /// The Service's ports.
        ports: Vec<String>,
    },
    /// A named targetPort matches no container port.
    #[error("service {name} targets the port named \"{port_name}\", but no pod it selects declares a container port with that name; start the workload, or intercept by number with -r")]
    UnresolvedPort {
        /// Service.
        name: String,
        /// The port name.
        port_name: String,
    },
    /// The API call failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
}

/// A Service port, with the container port its pods listen on.
#[derive(Debug, Clone)]
pub(crate) struct TargetPort {
    /// The Service port.
    pub port: ServicePort,
    /// The container port number behind it.
    pub container_port: u16,
    /// The name the proxy gives that container port (a named targetPort keeps resolving).
    pub container_port_name: Option<String>,
}

/// A Service that can be intercepted, and the port to intercept.
#[derive(Debug, Clone)]
pub(crate) struct Target {
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

/// Reads `namespace/name` and checks it can be intercepted on `remote_port`: it has a selector
/// and the port, and is not intercepted on another port (an intercept of the same port is
/// joined).
pub(crate) async fn resolve(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    remote_port: Option<u16>,
) -> Result<Target, TargetError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let Some(service) = services
        .get_opt(name)
        .await
        .during::<Service>("get", Some(namespace))?
    else {
        let mut names: Vec<String> = services
            .list(&ListParams::default())
            .await
            .during::<Service>("list", Some(namespace))?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort_by_key(|candidate| strsim::levenshtein(candidate, name));
        return Err(TargetError::ServiceNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            candidates: names,
        });
    };
    let spec = service.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Err(TargetError::NoSelector {
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
        return Err(TargetError::PortNeeded {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            given: remote_port,
            ports: service_ports.iter().map(describe_port).collect(),
        });
    };
    if let Some(record) = Record::read(&service) {
        if i32::from(record.remote_port) != service_ports[intercepted].port {
            return Err(TargetError::AlreadyIntercepted {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                record: Box::new(record),
            });
        }
    }
    // Named target ports resolve through the pods the Service selects now.
    let selects: Selector = selector.into_iter().collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .list(&ListParams::default().labels_from(&selects).limit(1))
        .await
        .during::<Pod>("list", Some(namespace))?
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
                    .ok_or_else(|| TargetError::UnresolvedPort {
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
pub(crate) fn describe_port(port: &ServicePort) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn closest_names_first() {
        let mut names = ["payments", "echo", "ech0-v2", "frontend"];
        names.sort_by_key(|n| strsim::levenshtein(n, "ecoh"));
        assert_eq!(names[0], "echo");
    }
}
