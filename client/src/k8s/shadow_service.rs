//! The shadow Service: the intercepted Service's original selector and ports under another name,
//! so the proxy still reaches the original pods once the real Service points at the proxy.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::names::SessionNames;
use super::target::Target;

/// The shadow of `target`'s Service.
pub(crate) fn build(
    names: &SessionNames,
    target: &Target,
    owner: Option<OwnerReference>,
) -> Service {
    let spec = target.service.spec.clone().unwrap_or_default();
    Service {
        metadata: names.metadata(names.shadow(), owner),
        spec: Some(ServiceSpec {
            selector: spec.selector,
            ports: Some(
                target
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.port.name.clone(),
                        port: p.port.port,
                        protocol: p.port.protocol.clone(),
                        target_port: p.port.target_port.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            type_: Some("ClusterIP".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
