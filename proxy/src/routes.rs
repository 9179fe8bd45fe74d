//! The routing table: which session's rule sends a request to which laptop.
//!
//! Several developers share one proxy, each with a route of their own. A request is matched
//! against every route, in the order the routes were added (the flag's route first): a request
//! matching one route goes to its laptop; one matching none, or only routes whose laptop has been
//! away longer than their orphan delay, goes to the original pods; one matching two or more is
//! refused (409) and counted on each of them, never given silently to one.
//!
//! Reads are lock-free (one atomic load per request); routes are joined and detached while the
//! proxy serves (writers take a lock, so a join's checks and its insertion are one step), and a
//! route's laptop connection can come and go without touching the table.

mod route;
mod verifier;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderMap;
use rustls::pki_types::CertificateDer;

pub use route::{Route, RoutePermit, Session, TunnelLimits};
pub use verifier::SessionsVerifier;

/// Where a request goes.
pub enum Match {
    /// To the original pods.
    Upstream,
    /// To this route's laptop.
    Laptop(Arc<Route>),
    /// Nowhere: it matches several routes, these.
    Conflict(Vec<Arc<Route>>),
}

/// Why a route was not joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// Another session's route has the same rule.
    #[error("session {held_by} already intercepts requests with {rule}")]
    RuleTaken {
        /// The rule.
        rule: String,
        /// The session holding it.
        held_by: String,
    },
    /// Another session registered the same CA: its laptops would attach to both routes.
    #[error("session {held_by} already registered this CA certificate")]
    CaTaken {
        /// The session holding it.
        held_by: String,
    },
    /// The session has a route already, with another rule or CA.
    #[error("session {0} already has a route, with another rule or CA; leave first")]
    SessionTaken(String),
}

impl JoinRefused {
    /// The refusal's code on the control channel.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RuleTaken { .. } => "rule-taken",
            Self::CaTaken { .. } => "ca-taken",
            Self::SessionTaken(_) => "session-taken",
        }
    }

    /// The session in the way.
    pub fn held_by(&self) -> &str {
        match self {
            Self::RuleTaken { held_by, .. } | Self::CaTaken { held_by } => held_by,
            Self::SessionTaken(session) => session,
        }
    }
}

/// The routes of the proxy, looked up per request.
#[derive(Default)]
pub struct RouteTable {
    routes: ArcSwap<Vec<Arc<Route>>>,
    /// Serializes writers, so that a join checks and inserts against the same table.
    writers: Mutex<()>,
}

impl RouteTable {
    /// Adds `route` after the others, unless another session holds its rule or CA; the same
    /// session joining again with the same rule and CA keeps its existing route (returned).
    pub fn join(&self, route: Arc<Route>) -> Result<Arc<Route>, JoinRefused> {
        let _writer = self.writers.lock().expect("never poisoned");
        let current = self.routes.load();
        let (session, ca) = (&route.session().id, route.session().client_ca.trim());
        for existing in current.iter() {
            let theirs = existing.session();
            let same_ca = theirs.client_ca.trim() == ca;
            if &theirs.id == session {
                return if existing.rule() == route.rule() && same_ca {
                    Ok(existing.clone())
                } else {
                    Err(JoinRefused::SessionTaken(session.clone()))
                };
            }
            if existing.rule() == route.rule() {
                return Err(JoinRefused::RuleTaken {
                    rule: route.rule().to_string(),
                    held_by: theirs.id.clone(),
                });
            }
            if same_ca {
                return Err(JoinRefused::CaTaken {
                    held_by: theirs.id.clone(),
                });
            }
        }
        let mut routes = Vec::with_capacity(current.len() + 1);
        routes.extend(current.iter().cloned());
        routes.push(route.clone());
        self.routes.store(Arc::new(routes));
        Ok(route)
    }

    /// Detaches `session`'s route: its matching requests go to the original pods from then on
    /// (requests in flight keep the route until they end). Returns the route, if there was one.
    pub fn remove(&self, session: &str) -> Option<Arc<Route>> {
        let _writer = self.writers.lock().expect("never poisoned");
        let current = self.routes.load();
        let removed = current.iter().find(|r| r.session().id == session)?.clone();
        let rest = current
            .iter()
            .filter(|r| r.session().id != session)
            .cloned()
            .collect();
        self.routes.store(Arc::new(rest));
        Some(removed)
    }

    /// Every route, in matching order.
    pub fn all(&self) -> Arc<Vec<Arc<Route>>> {
        self.routes.load_full()
    }

    /// Whether `name` is the header of one of the routes' rules (in any spelling).
    pub fn is_rule_name(&self, name: &[u8]) -> bool {
        self.routes
            .load()
            .iter()
            .any(|route| route.rule().matches_name(name))
    }

    /// Where a request with `headers` goes.
    pub fn find(&self, headers: &HeaderMap) -> Match {
        let routes = self.routes.load();
        let taking = |route: &&Arc<Route>| route.rule().matches(headers) && !route.abandoned();
        let mut matching = routes.iter().filter(taking);
        let Some(first) = matching.next() else {
            return Match::Upstream;
        };
        match matching.next() {
            None => Match::Laptop(first.clone()),
            Some(second) => {
                let mut all = vec![first.clone(), second.clone()];
                all.extend(matching.cloned());
                Match::Conflict(all)
            }
        }
    }

    /// The route whose session issued the client certificate `chain` (end entity first).
    pub fn for_laptop(&self, chain: &[CertificateDer<'_>]) -> Option<Arc<Route>> {
        self.routes
            .load()
            .iter()
            .find(|route| route.accepts(chain))
            .cloned()
    }

    /// Whether any route's laptop is connected.
    pub fn any_laptop_connected(&self) -> bool {
        self.routes
            .load()
            .iter()
            .any(|route| route.connected_laptop().is_some())
    }
}

#[cfg(test)]
mod tests;
