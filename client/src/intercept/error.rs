//! Why an intercept could not start or stop cleanly. Every message says what happened and what
//! to do next, and claims no clean-up that was not verified.

use std::sync::Arc;

use cz_shared::tls::TlsError;

use crate::k8s::api_error::ApiCallError;
use crate::k8s::cleanup::{with_causes, CleanupError};
use crate::k8s::names::NoRandomness;
use crate::k8s::proxy_control::ControlError;
use crate::k8s::proxy_pod::ProxyPodError;
use crate::k8s::record::Member;
use crate::k8s::selector::SelectorError;
use crate::k8s::target::TargetError;
use crate::TunnelError;

/// Why an intercept could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The Service cannot be intercepted as asked; nothing was changed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No session id could be drawn; nothing was changed.
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
    /// The session certificates could not be made; nothing was changed.
    #[error("could not make the session's certificates")]
    Certificates(#[source] TlsError),
    /// Set-up failed part-way and was undone as far as `rollback` says.
    #[error("the intercept of {service} did not start; {rollback}")]
    NotStarted {
        /// `namespace/service`.
        service: String,
        /// What failed.
        #[source]
        cause: SetUpError,
        /// How far undoing it got.
        rollback: Rollback,
    },
    /// Stopping did not remove everything.
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
}

/// A step of setting up that failed.
#[derive(Debug, thiserror::Error)]
pub enum SetUpError {
    /// The session certificates could not be made.
    #[error("could not make the session's certificates")]
    Certificates(#[source] TlsError),
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
    /// The proxy did not become ready.
    #[error(transparent)]
    Proxy(#[from] ProxyPodError),
    /// The Service's selector could not be switched.
    #[error(transparent)]
    Switch(#[from] SelectorError),
    /// Another developer's session on the Service has the same rule.
    #[error("{namespace}/{name} is already intercepted with the header {} by {} since {} (session {}); use a header value of your own, e.g. -x {}:<your name>; if that session is gone, close it with: czctl service intercept {name} -n {namespace} --clean --session {}", holder.header, holder.owner, holder.since, holder.session, holder.header.split(':').next().unwrap_or_default(), holder.session)]
    RuleTaken {
        /// Namespace.
        namespace: String,
        /// The Service.
        name: String,
        /// The session holding the rule.
        holder: Box<Member>,
    },
    /// The Service stopped being intercepted while this session was joining it.
    #[error("the intercept this session was joining ended meanwhile (its last developer left); start again")]
    JoinedEnded,
    /// The running proxy did not take the session's route.
    #[error("the proxy already intercepting this service did not add your route")]
    Join(#[source] ControlError),
    /// Ctrl-C or SIGTERM arrived.
    #[error("interrupted (Ctrl-C or SIGTERM) while setting up")]
    Interrupted,
    /// The tunnel could not connect.
    #[error("the tunnel to the proxy failed")]
    Tunnel(#[source] Arc<TunnelError>),
    /// The tunnel kept failing to connect for as long as set-up may take.
    #[error("the tunnel did not connect within {timeout:?} (last attempt: {last_error}); check that you may port-forward to pods in the namespace (`kubectl auth can-i create pods/portforward`), or pass --tunnel direct where the proxy pod's IP is reachable")]
    TunnelTimeout {
        /// How long it tried (`--timeout`).
        timeout: std::time::Duration,
        /// Why the last attempt failed.
        last_error: String,
    },
}

/// How far undoing a failed set-up got.
#[derive(Debug)]
pub enum Rollback {
    /// The Service is as before and every object czctl created is gone.
    Complete,
    /// Something is left; the error says what and how to remove it.
    Incomplete(CleanupError),
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Complete => write!(f, "everything czctl had created was removed"),
            Self::Incomplete(error) => {
                write!(f, "undoing it is incomplete: {}", with_causes(error))
            }
        }
    }
}
