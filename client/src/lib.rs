//! `czctl`: intercept selected traffic of a Kubernetes Service and serve it from your laptop.
//!
//! This library is the laptop's side of an intercept. A [`Tunnel`] dials the session's
//! `cz-proxy` over QUIC with mutual TLS (the laptop dials out; nothing in the cluster dials the
//! laptop), and serves every intercepted request the proxy sends by forwarding it to the local
//! app, reconnecting whenever the connection is lost. [`Tunnel::events`] reports what happens,
//! request by request.
//!
//! [`Intercept`] does the whole `czctl service intercept` through kube-rs: it creates the
//! session's proxy in the cluster, switches the Service to it, connects the tunnel, and restores
//! everything when stopped; [`session`] lists and closes sessions, including those a crash left
//! behind. `examples/intercept.rs` shows both. Give them a client from [`kube_client`]: kube's,
//! with `TCP_NODELAY` on its connections, which the tunnel's port-forward carrier needs.
//!
//! Layers point one way: the `czctl` binary's CLI → [`intercept`] (the order of the steps) →
//! one module per Kubernetes object and operation → kube-rs.

#![warn(missing_docs)]

mod events;
pub mod inspect;
pub mod intercept;
mod k8s;
mod local_app;
mod progress;
mod tunnel;

pub use cz_shared::contract::ProxyState;
pub use cz_shared::contract::DEFAULT_ORPHAN_AFTER;
pub use cz_shared::tls::{Identity, SessionCa};
pub use cz_shared::{InterceptRule, DEFAULT_RULE};
pub use events::{RequestEvent, TunnelEvent};
pub use inspect::{AlreadyInspected, Inspector, InspectorConfig};
pub use intercept::{
    Creation, Intercept, InterceptError, InterceptOptions, Joining, Left, Plan, TunnelMode,
    SHADOW_IP_PLACEHOLDER, SHADOW_UID_PLACEHOLDER,
};
pub use k8s::client::client as kube_client;
pub use k8s::record::Record;
pub use k8s::{session, INTERCEPT_ANNOTATION};
pub use progress::Progress;
pub use tunnel::{
    Carrier, CarrierIo, CarrierRefused, CarrierStream, Connected, ProxyResolver, ResolveError,
    StreamOpener, Tunnel, TunnelConfig, TunnelError, TunnelPath, TunnelState,
};

/// The errors of the Kubernetes steps, as [`InterceptError`] and [`session::SessionError`]
/// carry them.
pub mod errors {
    pub use crate::k8s::api_error::{ApiCallError, RBAC_MANIFEST};
    pub use crate::k8s::cleanup::{CleanupError, FailedDelete};
    pub use crate::k8s::names::NoRandomness;
    pub use crate::k8s::owned::{ObjectRef, SessionObject};
    pub use crate::k8s::proxy_admin::AdminError;
    pub use crate::k8s::proxy_pod::ProxyPodError;
    pub use crate::k8s::selector::SelectorError;
    pub use crate::k8s::target::TargetError;
}
