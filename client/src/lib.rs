//! `czctl`: intercept selected traffic of a Kubernetes Service and serve it from your laptop.
//!
//! This library is the laptop's side of an intercept. A [`Tunnel`] dials the session's
//! `cz-proxy` over QUIC with mutual TLS (the laptop dials out; nothing in the cluster dials the
//! laptop), and serves every intercepted request the proxy sends by forwarding it to the local
//! app, reconnecting whenever the connection is lost. [`Tunnel::events`] reports what happens,
//! request by request.
//!
//! [`intercept::Intercept`] does the whole `czctl service intercept` through kube-rs: it creates
//! the session's proxy in the cluster, switches the Service to it, connects the tunnel, and
//! restores everything when stopped; [`k8s::session`] lists and closes sessions, including those
//! a crash left behind.

#![warn(missing_docs)]

mod events;
pub mod intercept;
pub mod k8s;
mod local_app;
mod tunnel;

pub use cz_shared::tls::{Identity, SessionCa};
pub use cz_shared::{InterceptRule, DEFAULT_RULE};
pub use events::{RequestEvent, TunnelEvent};
pub use tunnel::{ProxyResolver, Tunnel, TunnelConfig, TunnelError, TunnelState};
