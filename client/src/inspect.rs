//! The request inspector: every intercepted exchange captured as it is forwarded (bodies teed,
//! never buffered before forwarding, kept up to a cap), the last ones kept in a ring, and a
//! local web page and JSON API to list, search, replay and export them (HAR 1.2).
//!
//! `czctl service intercept` starts one at `http://127.0.0.1:4040`. A library user creates an
//! [`Inspector`], attaches it to a running [`Tunnel`](crate::Tunnel) with
//! [`Tunnel::inspect`](crate::Tunnel::inspect), and then either serves it
//! ([`Inspector::serve`], on a listener from [`bind`]), mounts it in their own HTTP server
//! ([`Inspector::handle`]), or reads the captured exchanges directly ([`Inspector::subscribe`],
//! [`Inspector::exchanges`]):
//!
//! ```no_run
//! # async fn example(tunnel: czctl::Tunnel) -> std::io::Result<()> {
//! use czctl::inspect::{self, Inspector, InspectorConfig};
//!
//! let inspector = Inspector::new(InspectorConfig::new("127.0.0.1:3000".parse().unwrap()));
//! tunnel.inspect(&inspector).expect("the tunnel's first inspector");
//! let listener = inspect::bind("127.0.0.1:4040".parse().unwrap()).await?;
//! println!("inspector at http://{}", listener.local_addr()?);
//! tokio::spawn(inspector.clone().serve(listener, Default::default()));
//! let mut captured = inspector.subscribe();
//! while let Ok(exchange) = captured.recv().await {
//!     println!("{} {} -> {:?}", exchange.request.method, exchange.path(), exchange.status());
//! }
//! # Ok(()) }
//! ```

mod api;
mod body;
pub(crate) mod capture;
mod exchange;
mod filter;
mod har;
mod headers;
mod mask;
mod replay;
mod server;
mod store;
#[cfg(test)]
mod testing;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use api::InspectorBody;
pub use exchange::{CapturedBody, CapturedRequest, CapturedResponse, Exchange, Timing};
pub use headers::{CapturedHeaders, Fields};
pub use mask::MASKED;
pub use server::{bind, PORT_TRIES};

use capture::Capture;
use replay::Replayer;
use store::Store;

/// [`Tunnel::inspect`](crate::Tunnel::inspect) was called on a tunnel that already has an
/// inspector.
#[derive(Debug, thiserror::Error)]
#[error("this tunnel already has an inspector")]
pub struct AlreadyInspected;

/// Where `czctl service intercept` serves the inspector unless told otherwise.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4040);

/// How an [`Inspector`] captures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InspectorConfig {
    /// The local app, where replays go.
    pub local_app: SocketAddr,
    /// How many exchanges are kept; older ones are dropped (default 500).
    pub capacity: usize,
    /// How many bytes of each body are kept; the rest is counted only (default 1 MiB).
    pub body_limit: usize,
    /// Show `Authorization`, `Cookie`, `Set-Cookie` and `Proxy-Authorization` values in the
    /// page, the API and exports instead of [`MASKED`] (default: masked).
    pub show_secrets: bool,
}

impl InspectorConfig {
    /// The defaults, replaying to `local_app`.
    pub fn new(local_app: SocketAddr) -> Self {
        Self {
            local_app,
            capacity: 500,
            body_limit: 1 << 20,
            show_secrets: false,
        }
    }
}

/// Captured exchanges, their page and API. Cloning gives another handle to the same inspector.
#[derive(Clone)]
pub struct Inspector {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    replayer: Replayer,
    show_secrets: bool,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("store", &self.inner.store)
            .field("show_secrets", &self.inner.show_secrets)
            .finish()
    }
}

impl Inspector {
    /// An inspector with nothing captured yet.
    pub fn new(config: InspectorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Arc::new(Store::new(config.capacity, config.body_limit)),
                replayer: Replayer::new(config.local_app, config.body_limit),
                show_secrets: config.show_secrets,
            }),
        }
    }

    /// The exchanges kept, oldest first.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.inner.store.all()
    }

    /// Exchange `id`, if still kept.
    pub fn exchange(&self, id: u64) -> Option<Arc<Exchange>> {
        self.inner.store.get(id)
    }

    /// Every exchange captured from now on. A receiver that falls more than 256 behind skips
    /// the oldest ([`broadcast::error::RecvError::Lagged`]); capture never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Exchange>> {
        self.inner.store.subscribe()
    }

    /// `exchanges` as a HAR 1.2 document, secrets masked unless the inspector shows them.
    pub fn har<'a>(&self, exchanges: impl IntoIterator<Item = &'a Exchange>) -> serde_json::Value {
        har::document(exchanges, self.inner.show_secrets)
    }

    /// Answers one request to the page or the API, for mounting the inspector in another HTTP
    /// server (under its root: the page's links are absolute).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<InspectorBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        api::handle(self, request).await
    }

    /// Serves the page and the API on `listener` until `stop` is cancelled. On a loopback
    /// address, only requests addressed to a loopback name are answered.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        server::serve(self, listener, stop).await
    }

    /// Starts capturing the exchange whose request head is `request`.
    pub(crate) fn capture(&self, request: &http::request::Parts) -> Capture {
        Capture::begin(self.inner.store.clone(), request)
    }

    pub(crate) fn shows_secrets(&self) -> bool {
        self.inner.show_secrets
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.inner.store.body_limit()
    }

    pub(crate) fn replayer(&self) -> &Replayer {
        &self.inner.replayer
    }
}
