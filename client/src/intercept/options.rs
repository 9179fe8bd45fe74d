//! What to intercept and how, and what `--dry-run` shows instead of doing it.

use std::time::Duration;

use cz_shared::InterceptRule;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};

/// What to intercept and how.
#[derive(Debug, Clone)]
pub struct InterceptOptions {
    /// Namespace of the Service.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// The Service port; optional when it has only one.
    pub remote_port: Option<u16>,
    /// The laptop port; defaults to the remote port.
    pub local_port: Option<u16>,
    /// Which requests go to the laptop.
    pub rule: InterceptRule,
    /// The proxy image.
    pub proxy_image: String,
    /// Pull secret for the proxy image.
    pub image_pull_secret: Option<String>,
    /// How long the proxy may take to become ready.
    pub timeout: Duration,
    /// Dial the tunnel here instead of the proxy pod's IP (direct UDP; with
    /// [`TunnelMode::Auto`], only here).
    pub tunnel_endpoint: Option<String>,
    /// What carries the tunnel.
    pub tunnel: TunnelMode,
    /// How long the rule's matching requests wait for this laptop after it went away before
    /// they go to the original pods instead (`--orphan-after`).
    pub orphan_after: Duration,
}

/// What carries the tunnel (`--tunnel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TunnelMode {
    /// Direct UDP if it answers within a short head start, else port-forward.
    #[default]
    Auto,
    /// A port-forward to the proxy pod through the API server: needs only the API server.
    PortForward,
    /// UDP to the proxy pod's IP (or `--tunnel-endpoint`): needs a route to it.
    Direct,
}

/// What an intercept would create and change, as `--dry-run` shows it: built by the same code
/// as the objects [`crate::Intercept::start`] sends, with the values that exist only once it
/// runs elided (the Secret's certificates and key, the shadow Service's ClusterIP in the proxy's
/// arguments: [`SHADOW_IP_PLACEHOLDER`], its uid in the Secret's owner reference:
/// [`SHADOW_UID_PLACEHOLDER`]).
#[derive(Debug, Clone)]
pub struct Plan {
    /// The shadow Service.
    pub shadow_service: Service,
    /// The Secret, owned by the shadow Service: its data keys with empty values, and an
    /// annotation saying why.
    pub secret: Secret,
    /// The proxy Deployment.
    pub proxy_deployment: Deployment,
    /// The intercepted Service as the selector switch leaves it, reduced to what the switch
    /// sets (name, namespace, resourceVersion, the record annotation, the selector): an object
    /// `kubectl apply` takes, though czctl sends it as a JSON patch with preconditions.
    pub switched_service: Service,
}

/// What the proxy's arguments say in a [`Plan`] where the shadow Service's ClusterIP goes: the
/// API server assigns it when the shadow Service is created.
pub const SHADOW_IP_PLACEHOLDER: &str = "SHADOW-SERVICE-CLUSTER-IP";

/// What the Secret's owner reference says in a [`Plan`] where the shadow Service's uid goes: the
/// API server assigns it when the shadow Service is created.
pub const SHADOW_UID_PLACEHOLDER: &str = "SHADOW-SERVICE-UID";

impl Plan {
    /// The objects in the order czctl sends them, each as JSON with `apiVersion` and `kind`.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        Ok(vec![
            serde_json::to_value(&self.shadow_service)?,
            serde_json::to_value(&self.secret)?,
            serde_json::to_value(&self.proxy_deployment)?,
            serde_json::to_value(&self.switched_service)?,
        ])
    }
}
