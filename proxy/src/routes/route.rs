//! One route: a session's rule, the laptop its matching requests go to, and what that laptop may
//! cost the proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cz_shared::control::RouteState;
use cz_shared::protocol::CloseCode;
use cz_shared::signal::Signal;
use cz_shared::tls::{client_verifier, TlsError};
use cz_shared::InterceptRule;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
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

/// Least time between two notices to a route's laptop: a burst of conflicting requests is one
/// message, not thousands.
const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a signal to a laptop may take to be delivered before it is given up.
const SIGNAL_DELIVERY: Duration = Duration::from_secs(10);

/// Most earlier connections a route keeps standing by (see [`Route::attach`]).
const MAX_STANDBY: usize = 2;

/// The session a route belongs to.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// The session CA's certificate (PEM): only laptops it vouches for attach to the route.
    pub client_ca: String,
    /// How long the route's matching requests wait for a laptop that went away before they go
    /// to the original pods instead.
    pub orphan_after: Duration,
}

/// A session's rule and the laptop its matching requests go to.
pub struct Route {
    session: Session,
    rule: InterceptRule,
    verifier: Arc<dyn ClientCertVerifier>,
    laptop: watch::Sender<Option<quinn::Connection>>,
    /// The laptop's earlier connections, still open: a laptop dials over several carriers at
    /// once and keeps the one it picks, which may have attached first, so the newest of these
    /// takes over when the current one closes.
    standby: Mutex<Vec<quinn::Connection>>,
    /// What carries the laptop's connection, and the minor protocol version it announced (which
    /// signals it takes).
    attached: Mutex<(&'static str, u16)>,
    /// When the laptop was last sent a notice.
    last_notice: Mutex<Option<Instant>>,
    /// When a laptop was last connected (when the route was added, until one is).
    last_connected: Mutex<Instant>,
    limits: TunnelLimits,
    /// One permit per request in flight, up to [`TunnelLimits::max_requests`].
    in_flight: Arc<Semaphore>,
    requests: AtomicU64,
    conflicts: AtomicU64,
}

/// One of a route's places for a request in flight; the place is free again once dropped.
pub struct RoutePermit {
    _permit: OwnedSemaphorePermit,
}

impl Route {
    /// A route with no laptop connected yet; fails if the session's CA certificate is unusable.
    pub fn new(
        session: Session,
        rule: InterceptRule,
        limits: TunnelLimits,
    ) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            verifier: client_verifier(&session.client_ca)?,
            session,
            rule,
            laptop: watch::Sender::new(None),
            standby: Mutex::default(),
            attached: Mutex::new(("", 0)),
            last_notice: Mutex::new(None),
            last_connected: Mutex::new(Instant::now()),
            in_flight: Arc::new(Semaphore::new(limits.max_requests as usize)),
            limits,
            requests: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        }))
    }

    /// The route's rule.
    pub fn rule(&self) -> &InterceptRule {
        &self.rule
    }

    /// The session the route belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The route's limits.
    pub fn limits(&self) -> &TunnelLimits {
        &self.limits
    }

    /// Whether the client certificate `chain` (end entity first) is one of the session's laptops.
    pub fn accepts(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .is_ok()
    }

    /// A place for one more request in flight, waiting (without limit: callers bound the wait)
    /// until fewer than [`TunnelLimits::max_requests`] are.
    pub async fn admit(&self) -> RoutePermit {
        let permit = self.in_flight.clone().acquire_owned().await;
        RoutePermit {
            _permit: permit.expect("a route's semaphore is never closed"),
        }
    }

    /// Waits until no request is in flight on the route.
    pub async fn idle(&self) {
        let all = self.limits.max_requests;
        let _all = self.in_flight.acquire_many(all).await;
    }

    /// Makes `connection`, carried by `carrier` (for the control channel's state), the route's
    /// laptop, which announced protocol minor version `minor`; the previous connection, if still
    /// open, stands by (at most [`MAX_STANDBY`]; the oldest beyond are closed).
    pub fn attach(&self, connection: quinn::Connection, carrier: &'static str, minor: u16) {
        *self.attached.lock().expect("never poisoned") = (carrier, minor);
        let Some(previous) = self.laptop.send_replace(Some(connection)) else {
            return;
        };
        let mut standby = self.standby.lock().expect("never poisoned");
        standby.retain(|c| c.close_reason().is_none());
        if previous.close_reason().is_none() {
            standby.push(previous);
        }
        if standby.len() > MAX_STANDBY {
            standby.remove(0).close(
                CloseCode::Replaced.into(),
                b"replaced by a newer connection",
            );
        }
    }

    /// Forgets `connection`, which closed; if it was the route's laptop, the newest connection
    /// standing by takes over. Returns whether it was the route's laptop.
    pub fn detach(&self, connection: &quinn::Connection) -> bool {
        let id = connection.stable_id();
        let mut standby = self.standby.lock().expect("never poisoned");
        standby.retain(|c| c.stable_id() != id && c.close_reason().is_none());
        let detached = self.laptop.send_if_modified(|current| {
            let same = current.as_ref().map(quinn::Connection::stable_id) == Some(id);
            if same {
                *current = standby.pop();
            }
            same
        });
        if detached && self.laptop.borrow().is_none() {
            *self.last_connected.lock().expect("never poisoned") = Instant::now();
        }
        detached
    }

    /// Closes the laptop's connections.
    pub fn close_laptop(&self, reason: &'static [u8]) {
        let standby = std::mem::take(&mut *self.standby.lock().expect("never poisoned"));
        for connection in self.laptop.borrow().iter().chain(&standby) {
            connection.close(CloseCode::Shutdown.into(), reason);
        }
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

    /// How long the laptop has been away; `None` while it is connected.
    fn away_for(&self) -> Option<Duration> {
        match self.connected_laptop() {
            Some(_) => None,
            None => Some(
                self.last_connected
                    .lock()
                    .expect("never poisoned")
                    .elapsed(),
            ),
        }
    }

    /// Whether the laptop has been away longer than the session's orphan delay: then the route's
    /// matching requests go to the original pods, until a laptop attaches again.
    pub fn abandoned(&self) -> bool {
        self.away_for()
            .is_some_and(|away| away >= self.session.orphan_after)
    }

    /// Counts a request sent to the laptop.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused because it matched this route and another, and tells the
    /// laptop `why` (at most once per [`NOTICE_INTERVAL`], if it takes notices).
    pub fn conflicted(&self, why: &str) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        {
            let mut last = self.last_notice.lock().expect("never poisoned");
            if last.is_some_and(|at| at.elapsed() < NOTICE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Some(laptop) = self.connected_laptop() {
            self.signal(laptop, &Signal::Notice(why.to_owned()));
        }
    }

    /// Tells the route's laptop, on every connection still open, that the proxy is draining:
    /// it dials the proxy's replacement while this one finishes.
    pub fn announce_draining(&self) {
        let standby = self.standby.lock().expect("never poisoned").clone();
        let current = self.laptop.borrow().clone();
        for connection in current.into_iter().chain(standby) {
            self.signal(connection, &Signal::Draining);
        }
    }

    /// Sends `signal` to `laptop` on a stream of its own, in the background, if the laptop's
    /// protocol version has it.
    fn signal(&self, laptop: quinn::Connection, signal: &Signal) {
        let minor = self.attached.lock().expect("never poisoned").1;
        let Some(bytes) = signal.encode(minor) else {
            return;
        };
        tokio::spawn(async move {
            let send = async {
                let mut stream = laptop.open_uni().await?;
                stream.write_all(&bytes).await?;
                stream.finish()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            if let Ok(Err(error)) = tokio::time::timeout(SIGNAL_DELIVERY, send).await {
                tracing::debug!(%error, "signal not delivered");
            }
        });
    }

    /// The route as the control channel reports it.
    pub fn state(&self) -> RouteState {
        let away = self.away_for();
        RouteState {
            session: self.session.id.clone(),
            header: self.rule.to_string(),
            connected: away.is_none(),
            carrier: away
                .is_none()
                .then(|| self.attached.lock().expect("never poisoned").0.to_owned()),
            disconnected_seconds: away.map(|away| away.as_secs()),
            abandoned: away.is_some_and(|away| away >= self.session.orphan_after),
            orphan_after_seconds: self.session.orphan_after.as_secs(),
            requests: self.requests.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
        }
    }
}
