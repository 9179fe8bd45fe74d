//! What to intercept and how.

use std::time::Duration;

use cz_shared::InterceptRule;

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
