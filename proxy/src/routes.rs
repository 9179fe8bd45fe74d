//! The routing table: which rule sends a request to which laptop.
//!
//! Reads are lock-free (one atomic load per request); routes can be added and removed while the
//! proxy serves, and a route's laptop connection can come and go without touching the table.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use cz_shared::protocol::CloseCode;
use cz_shared::InterceptRule;
use http::HeaderMap;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// What a route's laptop may cost the proxy: how many requests it carries at once, how long a
/// request waits for its turn and for the answer, how large an answer's head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Most requests in flight on the route at once.
    pub max_requests: u32,
    /// How long a request waits for a place and a tunnel stream.
    pub slot_timeout: Duration,
    /// How long the laptop may take to send a response head once the request is sent.
    pub response_timeout: Duration,
    /// Largest response head (or trailers) accepted from the laptop, in bytes.
    pub max_head_len: usize,
}

impl From<&Config> for TunnelLimits {
    /// The limits of `--tunnel-*`; a response head is held to `--max-header-bytes`, the bound
    /// on the clients' request heads.
    fn from(config: &Config) -> Self {
        Self {
            max_requests: config.tunnel_max_requests,
            slot_timeout: config.tunnel_slot_timeout,
            response_timeout: config.tunnel_response_timeout,
            max_head_len: config.max_header_bytes as usize,
        }
    }
}

/// A rule and the laptop its matching requests go to.
pub struct Route {
    rule: InterceptRule,
    laptop: watch::Sender<Option<quinn::Connection>>,
    limits: TunnelLimits,
    /// One permit per request in flight, up to [`TunnelLimits::max_requests`].
    in_flight: Arc<Semaphore>,
}

/// One of a route's places for a request in flight; the place is free again once dropped.
pub struct RoutePermit {
    _permit: OwnedSemaphorePermit,
}

impl Route {
    /// A route with no laptop connected yet.
    pub fn new(rule: InterceptRule, limits: TunnelLimits) -> Arc<Self> {
        Arc::new(Self {
            rule,
            laptop: watch::Sender::new(None),
            in_flight: Arc::new(Semaphore::new(limits.max_requests as usize)),
            limits,
        })
    }

    /// The route's rule.
    pub fn rule(&self) -> &InterceptRule {
        &self.rule
    }

    /// The route's limits.
    pub fn limits(&self) -> &TunnelLimits {
        &self.limits
    }

    /// A place for one more request in flight, waiting (without limit: callers bound the wait)
    /// until fewer than [`TunnelLimits::max_requests`] are.
    pub async fn admit(&self) -> RoutePermit {
        let permit = self.in_flight.clone().acquire_owned().await;
        RoutePermit {
            _permit: permit.expect("a route's semaphore is never closed"),
        }
    }

    /// Makes `connection` the route's laptop; a previous connection (e.g. one the laptop has
    /// already given up on after a network change) is closed.
    pub fn attach(&self, connection: quinn::Connection) {
        if let Some(previous) = self.laptop.send_replace(Some(connection)) {
            previous.close(
                CloseCode::Replaced.into(),
                b"replaced by a newer connection",
            );
        }
    }

    /// Forgets `connection` if it is still the route's laptop; returns whether it was.
    pub fn detach(&self, connection: &quinn::Connection) -> bool {
        self.laptop.send_if_modified(|current| {
            let same =
                current.as_ref().map(quinn::Connection::stable_id) == Some(connection.stable_id());
            if same {
                *current = None;
            }
            same
        })
    }

    /// The laptop's connection, if one is connected now.
    pub fn connected_laptop(&self) -> Option<quinn::Connection> {
        self.laptop
            .borrow()
            .as_ref()
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// The laptop's connection, waiting up to `grace` for one to (re)connect.
    pub async fn laptop(&self, grace: Duration) -> Option<quinn::Connection> {
        let usable =
            |c: &Option<quinn::Connection>| c.as_ref().is_some_and(|c| c.close_reason().is_none());
        if let Some(connection) = self.connected_laptop() {
            return Some(connection);
        }
        let mut laptop_rx = self.laptop.subscribe();
        let connected = tokio::time::timeout(grace, laptop_rx.wait_for(usable)).await;
        match connected {
            Ok(Ok(connection)) => connection.clone(),
            _ => None,
        }
    }
}

/// The routes of the proxy, looked up per request.
#[derive(Default)]
pub struct RouteTable {
    routes: ArcSwap<Vec<Arc<Route>>>,
}

impl RouteTable {
    /// Adds a route; a route with the same rule is replaced.
    pub fn add(&self, route: Arc<Route>) {
        self.routes.rcu(|routes| {
            let mut routes: Vec<_> = routes
                .iter()
                .filter(|r| r.rule != route.rule)
                .cloned()
                .collect();
            routes.push(route.clone());
            routes
        });
    }

    /// Removes the route with `rule`; requests matching it go upstream from then on.
    pub fn remove(&self, rule: &InterceptRule) {
        self.routes.rcu(|routes| {
            routes
                .iter()
                .filter(|r| &r.rule != rule)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Whether `name` is the header of one of the routes' rules (in any spelling).
    pub fn is_rule_name(&self, name: &[u8]) -> bool {
        self.routes
            .load()
            .iter()
            .any(|route| route.rule.matches_name(name))
    }

    /// The route a request with `headers` takes, if any.
    pub fn find(&self, headers: &HeaderMap) -> Option<Arc<Route>> {
        self.routes
            .load()
            .iter()
            .find(|route| route.rule.matches(headers))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const LIMITS: TunnelLimits = TunnelLimits {
        max_requests: 2,
        slot_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(60),
        max_head_len: 64 * 1024,
    };

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn routes_are_added_and_removed_at_run_time() {
        let table = RouteTable::default();
        let alice: InterceptRule = "x-dev:alice".parse().expect("rule");
        let bob: InterceptRule = "x-dev:bob".parse().expect("rule");
        table.add(Route::new(alice.clone(), LIMITS));
        table.add(Route::new(bob.clone(), LIMITS));
        assert_eq!(
            table
                .find(&headers("x-dev", "bob"))
                .map(|r| r.rule().clone()),
            Some(bob.clone())
        );
        assert_eq!(
            table
                .find(&headers("x-dev", "alice"))
                .map(|r| r.rule().clone()),
            Some(alice)
        );
        assert!(table.is_rule_name(b"X_DEV"));
        assert!(!table.is_rule_name(b"x-other"));
        table.remove(&bob);
        assert!(table.find(&headers("x-dev", "bob")).is_none());
        assert!(table.find(&HeaderMap::new()).is_none());
    }

    #[tokio::test]
    async fn waiting_for_a_laptop_gives_up_after_the_grace_period_not_before() {
        let route = Route::new(InterceptRule::default(), LIMITS);
        let grace = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(20), route.laptop(grace))
            .await
            .expect("the wait ends once the grace period is over");
        assert!(waited.is_none(), "no laptop ever connected");
        assert!(
            started.elapsed() >= grace,
            "gave up after {:?}, before the {grace:?} grace period",
            started.elapsed()
        );
        assert!(route.connected_laptop().is_none());
    }

    #[tokio::test]
    async fn a_route_admits_its_limit_of_requests_and_the_next_when_one_ends() {
        let route = Route::new(InterceptRule::default(), LIMITS);
        let first = route.admit().await;
        let _second = route.admit().await;
        let mut third = std::pin::pin!(route.admit());
        assert!(
            futures_util::FutureExt::now_or_never(third.as_mut()).is_none(),
            "a third request waits while two are in flight"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(20), third)
            .await
            .expect("the third request is admitted once the first ends");
    }
}
