//! The steps of starting and stopping an intercept, as the CLI prints them.

use std::time::Duration;

use crate::tunnel::{Connected, TunnelPath};

/// A step of [`Intercept::start`](crate::Intercept::start), [`Intercept::stop`](crate::Intercept::stop)
/// or [`session::close`](crate::session::close), for progress output.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Progress {
    /// The Service and port were checked.
    Checked {
        /// `namespace/service`.
        service: String,
        /// The port.
        port: String,
    },
    /// An object was created.
    Created(String),
    /// Waiting for the proxy to become ready.
    WaitingForProxy,
    /// The proxy is ready.
    ProxyReady(Duration),
    /// The Service now routes through the proxy.
    Switched,
    /// The tunnel is connected.
    TunnelConnected(Connected),
    /// The Service's selector is restored.
    Restored,
    /// The Service's endpoints no longer list the proxy: it can be deleted.
    ProxyUnlisted,
    /// The Service's endpoints still listed the proxy after this long; it is deleted anyway.
    ProxyStillListed(Duration),
    /// The Service's endpoints could not be read; the proxy is deleted after a fixed wait.
    EndpointsUnreadable {
        /// Why not.
        why: String,
        /// The wait instead.
        waiting: Duration,
    },
    /// Someone else changed the selector meanwhile; it was left as they set it.
    LeftAsChanged(String),
    /// An object was deleted.
    Deleted(String),
    /// An object goes with its deleted owner: the cluster's garbage collector deletes it (czctl
    /// does not check, as it may not read it).
    GoesWithOwner {
        /// The dependent object.
        object: String,
        /// Its owner, just deleted.
        owner: String,
    },
    /// An object under a session's name is no longer the one the session created; left alone.
    LeftAlone(String),
    /// Another developer's session uses the Service's proxy too: the session joined it, with its
    /// own rule, instead of creating one.
    Joined {
        /// The sessions already there, `OWNER (HEADER)` each.
        others: Vec<String>,
    },
    /// Sessions left the intercept while others stay on it: their routes were detached and the
    /// Service stays switched to the proxy.
    StillShared {
        /// The sessions staying, `OWNER (HEADER)` each.
        others: Vec<String>,
    },
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checked { service, port } => write!(f, "service {service} port {port} can be intercepted"),
            Self::Created(what) => write!(f, "created {what}"),
            Self::WaitingForProxy => write!(f, "waiting for the proxy to become ready"),
            Self::ProxyReady(took) => write!(f, "proxy ready after {:.1}s", took.as_secs_f64()),
            Self::Switched => write!(f, "service now routes through the proxy"),
            Self::TunnelConnected(Connected { path, why }) => {
                match path {
                    TunnelPath::Stream => write!(f, "tunnel connected over a port-forward to the proxy pod through the API server")?,
                    path => write!(f, "tunnel connected over {path}")?,
                }
                if why.is_empty() {
                    Ok(())
                } else {
                    write!(f, " ({why})")
                }
            }
            Self::Restored => write!(f, "service selector restored"),
            Self::ProxyUnlisted => write!(f, "the service's endpoints no longer list the proxy"),
            Self::ProxyStillListed(after) => write!(f, "the service's endpoints still list the proxy after {after:?}; removing it anyway"),
            Self::EndpointsUnreadable { why, waiting } => write!(f, "could not tell when the service's endpoints stop listing the proxy ({why}); waiting {waiting:?} instead"),
            Self::LeftAsChanged(selector) => write!(f, "service selector was changed by someone else during the intercept; left as they set it ({selector})"),
            Self::Deleted(what) => write!(f, "deleted {what}"),
            Self::GoesWithOwner { object, owner } => write!(f, "{object} goes with its owner {owner} (the cluster's garbage collector deletes it)"),
            Self::LeftAlone(what) => write!(f, "left {what} alone: another object with another uid took its name"),
            Self::Joined { others } => write!(f, "joined the proxy already intercepting this service for {}", others.join(", ")),
            Self::StillShared { others } => write!(f, "left the intercept; the service stays switched to the proxy for {}", others.join(", ")),
        }
    }
}
