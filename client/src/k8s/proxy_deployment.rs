//! The proxy Deployment: one `cz-proxy` replica in the intercepted Service's place, listening on
//! every container port the Service targets, locked down (non-root, read-only root filesystem,
//! no capabilities, RuntimeDefault seccomp, no service-account token: admitted by a `restricted`
//! Pod Security level) and ready only once it serves.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, LocalObjectReference,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::SessionNames;
use cz_shared::contract::{
    self, PassthroughArg, ProxyArgs, ADMIN_PORT_NAME, CARRIER_PORT_NAME, READY_PATH, TLS_DIR,
    TUNNEL_PORT_NAME,
};
use cz_shared::control::{CONTROL_PORT_NAME, DEFAULT_CONTROL_PORT};

use super::target::Target;

/// The proxy's uid, and the group its certificate files belong to.
const PROXY_USER: i64 = 65532;

/// How long the proxy pod may take to stop once deleted: its shutdown delay (accepting while the
/// cluster stops routing to it), then up to 30 s for in-flight requests to finish.
pub(crate) const TERMINATION_GRACE: std::time::Duration =
    contract::DEFAULT_SHUTDOWN_DELAY.saturating_add(std::time::Duration::from_secs(30));

/// How long a matching request waits for the laptop. A replaced proxy pod gets the laptop only
/// once its predecessor has drained (its shutdown delay and a moment): matching requests the
/// replacement receives meanwhile wait for it instead of failing with 503.
const RECONNECT_GRACE: std::time::Duration =
    contract::DEFAULT_SHUTDOWN_DELAY.saturating_add(std::time::Duration::from_secs(5));

/// What the Deployment needs beyond the session's names.
pub(crate) struct ProxySpec<'a> {
    /// The Service being intercepted.
    pub target: &'a Target,
    /// The shadow Service's ClusterIP (the upstream).
    pub shadow_ip: &'a str,
    /// The intercept rule, `NAME:VALUE`.
    pub header: &'a str,
    /// How long the rule's requests wait for a laptop that went away.
    pub orphan_after: std::time::Duration,
    /// The proxy image.
    pub image: &'a str,
    /// An image pull secret, for private registries.
    pub image_pull_secret: Option<&'a str>,
}

/// A port number not taken by the Service's container ports.
fn free_port(preferred: u16, target: &Target) -> u16 {
    (preferred..)
        .find(|p| target.ports.iter().all(|t| t.container_port != *p))
        .expect("a free port")
}

/// The proxy's own ports, clear of the intercepted Service's.
pub(crate) struct ProxyPorts {
    /// The tunnel's UDP port, for direct QUIC.
    pub tunnel: u16,
    /// The admin port (probes, state).
    pub admin: u16,
    /// The carrier port on the pod's loopback, reached by port-forward.
    pub carrier: u16,
    /// The control port on the pod's loopback, reached by port-forward.
    pub control: u16,
}

/// The ports the proxy will use.
pub(crate) fn proxy_ports(target: &Target) -> ProxyPorts {
    ProxyPorts {
        tunnel: free_port(contract::DEFAULT_TUNNEL_PORT, target),
        admin: free_port(contract::DEFAULT_ADMIN_PORT, target),
        carrier: free_port(contract::DEFAULT_CARRIER_PORT, target),
        control: free_port(DEFAULT_CONTROL_PORT, target),
    }
}

/// The proxy Deployment.
pub(crate) fn build(
    names: &SessionNames,
    spec: &ProxySpec<'_>,
    owner: Option<OwnerReference>,
) -> Deployment {
    let target = spec.target;
    let ProxyPorts {
        tunnel: tunnel_port,
        admin: admin_port,
        carrier: carrier_port,
        control: control_port,
    } = proxy_ports(target);
    let intercepted = target.port();
    let args = ProxyArgs {
        http_port: intercepted.container_port,
        upstream: format!("{}:{}", spec.shadow_ip, intercepted.port.port),
        passthrough: target
            .ports
            .iter()
            .enumerate()
            .filter(|(index, port)| {
                *index != target.intercepted
                    && port.port.protocol.as_deref().unwrap_or("TCP") == "TCP"
            })
            .map(|(_, port)| PassthroughArg {
                listen_port: port.container_port,
                target: format!("{}:{}", spec.shadow_ip, port.port.port),
            })
            .collect(),
        tunnel_port,
        carrier_port,
        admin_port,
        header: spec.header.to_owned(),
        session: names.id.clone(),
        orphan_after: spec.orphan_after,
        control_port,
        shutdown_delay: contract::DEFAULT_SHUTDOWN_DELAY,
        reconnect_grace: RECONNECT_GRACE,
    }
    .to_args();
    let mut ports: Vec<ContainerPort> = target
        .ports
        .iter()
        .map(|p| ContainerPort {
            name: p.container_port_name.clone(),
            container_port: i32::from(p.container_port),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        })
        .collect();
    ports.sort_by_key(|p| p.container_port);
    ports.dedup_by_key(|p| p.container_port);
    ports.push(ContainerPort {
        name: Some(TUNNEL_PORT_NAME.into()),
        container_port: i32::from(tunnel_port),
        protocol: Some("UDP".into()),
        ..Default::default()
    });
    ports.push(ContainerPort {
        name: Some(CARRIER_PORT_NAME.into()),
        container_port: i32::from(carrier_port),
        protocol: Some("TCP".into()),
        ..Default::default()
    });
    ports.push(ContainerPort {
        name: Some(CONTROL_PORT_NAME.into()),
        container_port: i32::from(control_port),
        protocol: Some("TCP".into()),
        ..Default::default()
    });
    ports.push(ContainerPort {
        name: Some(ADMIN_PORT_NAME.into()),
        container_port: i32::from(admin_port),
        protocol: Some("TCP".into()),
        ..Default::default()
    });
    let quantity = |q: &str| Quantity(q.to_owned());
    let container = Container {
        name: "cz-proxy".into(),
        image: Some(spec.image.to_owned()),
        args: Some(args),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(READY_PATH.into()),
                port: IntOrString::Int(i32::from(admin_port)),
                ..Default::default()
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(PROXY_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".into(), quantity("10m")),
                    ("memory".into(), quantity("16Mi")),
                ]
                .into(),
            ),
            limits: Some(
                [
                    ("cpu".into(), quantity("1")),
                    ("memory".into(), quantity("128Mi")),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let pod_labels = names
        .labels()
        .into_iter()
        .chain(names.proxy_selector())
        .collect();
    Deployment {
        metadata: names.metadata(names.proxy(), owner),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(names.proxy_selector()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE.as_secs() as i64),
                    // fsGroup makes the kubelet give the certificate files to the proxy's
                    // group, so uid 65532 can read them; RuntimeDefault seccomp is what a
                    // `restricted` Pod Security level requires.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        fs_group: Some(PROXY_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    image_pull_secrets: spec.image_pull_secret.map(|name| {
                        vec![LocalObjectReference {
                            name: name.to_owned(),
                        }]
                    }),
                    volumes: Some(vec![Volume {
                        name: "tls".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(names.secret()),
                            // Owner and group (fsGroup) read; nobody else.
                            default_mode: Some(0o440),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
