//! The laptop's end of the tunnel: dials the proxy over its [`Carrier`], says hello, serves the
//! streams the proxy opens, and redials with backoff whenever the connection is lost.

mod carrier;
mod connect;
mod dialer;
mod handshake;
mod serve;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use cz_shared::protocol::VersionMismatch;
use cz_shared::tls::{Identity, TlsError};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::TunnelEvent;
pub use crate::events::TunnelPath;
use crate::inspect::AlreadyInspected;
use crate::local_app::LocalApp;
pub use carrier::{Carrier, CarrierIo, CarrierRefused, CarrierStream, StreamOpener};
use dialer::Dialer;

/// What a [`Tunnel`] needs: where the proxy is, the session credentials, where the app is.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The proxy's tunnel endpoint, `HOST:PORT` (UDP), resolved again on every direct
    /// (re)connect; on a stream carrier, only the proxy's name in messages.
    pub proxy: String,
    /// The laptop's session identity (client certificate and key, and the session CA).
    pub identity: Identity,
    /// Where intercepted requests go, usually `127.0.0.1:<localPort>`.
    pub local_app: SocketAddr,
}

/// Why a [`ProxyResolver`] found no address.
pub type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// Finds the proxy's current tunnel address; asked before every (re)connect, so a proxy that
/// moved (e.g. a replaced pod with a new IP) is found again.
pub type ProxyResolver = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<SocketAddr, ResolveError>> + Send>>
        + Send
        + Sync,
>;

/// Why a tunnel could not be (re-)established.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The session certificates are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No UDP socket could be opened for the tunnel.
    #[error("could not open a UDP socket for the tunnel: {0}")]
    Socket(#[source] std::io::Error),
    /// The proxy address did not resolve.
    #[error("could not resolve the proxy address {proxy}: {source}")]
    Resolve {
        /// The address given.
        proxy: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// No carrier stream to the proxy could be opened.
    #[error("could not open a carrier to the proxy {proxy}: {source}")]
    Carrier {
        /// The proxy's name.
        proxy: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// The proxy could not be reached or the connection broke during set-up.
    #[error("could not connect to the proxy at {proxy}: {reason}")]
    Connect {
        /// The proxy's address, or its name on a stream carrier.
        proxy: String,
        /// Why.
        reason: String,
    },
    /// TLS failed: the proxy does not hold this session's certificate, or it refused ours.
    #[error("the proxy at {proxy} is not this session's proxy, or refused this laptop's certificate ({reason}); if a previous session left it behind, run `czctl session close` and start the intercept again")]
    Rejected {
        /// The proxy's address, or its name on a stream carrier.
        proxy: String,
        /// The TLS error.
        reason: String,
    },
    /// The proxy speaks an incompatible protocol version.
    #[error(transparent)]
    VersionMismatch(#[from] VersionMismatch),
    /// The tunnel was closed before it connected.
    #[error("the tunnel was closed")]
    Closed,
}

impl TunnelError {
    /// Errors that retrying cannot fix.
    pub(crate) fn is_fatal(&self) -> bool {
        match self {
            Self::Tls(_) | Self::Socket(_) | Self::Rejected { .. } | Self::VersionMismatch(_) => {
                true
            }
            Self::Carrier { source, .. } => source.is::<CarrierRefused>(),
            _ => false,
        }
    }
}

/// Where a tunnel stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TunnelState {
    /// Dialling the proxy (first time or again).
    Connecting,
    /// Connected; intercepted requests flow.
    Connected(Connected),
    /// Gave up: retrying cannot help.
    Failed(Arc<TunnelError>),
    /// Closed by [`Tunnel::close`].
    Closed,
}

/// How a connected tunnel reaches the proxy, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connected {
    /// What carries the tunnel.
    pub path: TunnelPath,
    /// Why this carrier (for [`Carrier::Auto`]: which one answered, or why direct UDP was not
    /// used); empty when only one was configured.
    pub why: String,
}

/// A running tunnel from the laptop to a proxy. Dropping it without [`Tunnel::close`] stops it too.
///
/// ```no_run
/// # async fn example(identity: czctl::Identity) -> Result<(), Box<dyn std::error::Error>> {
/// use czctl::{Tunnel, TunnelConfig, TunnelEvent};
///
/// let tunnel = Tunnel::start(TunnelConfig {
///     proxy: "10.0.0.7:7443".into(),
///     identity,
///     local_app: "127.0.0.1:3000".parse().unwrap(),
/// })?;
/// let mut events = tunnel.events();
/// tunnel.connected().await?;
/// while let Ok(event) = events.recv().await {
///     if let TunnelEvent::Request(request) = event {
///         println!("{} {} -> {}", request.method, request.path, request.status);
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Tunnel {
    state_rx: watch::Receiver<TunnelState>,
    events_tx: broadcast::Sender<TunnelEvent>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    local_app: Arc<LocalApp>,
}

impl Tunnel {
    /// Starts dialling the proxy in the background. Must be called within a tokio runtime.
    pub fn start(config: TunnelConfig) -> Result<Self, TunnelError> {
        Self::start_with_resolver(config, None)
    }

    /// Like [`Tunnel::start`], with `resolver` finding the proxy's address before every
    /// (re)connect instead of resolving `config.proxy`, which then only names it in messages.
    pub fn start_with_resolver(
        config: TunnelConfig,
        resolver: Option<ProxyResolver>,
    ) -> Result<Self, TunnelError> {
        Self::start_with_carrier(config, Carrier::Direct, resolver)
    }

    /// Like [`Tunnel::start_with_resolver`], over `carrier`: direct UDP, a byte stream such
    /// as a port-forward to the proxy pod, or both with direct UDP given a head start.
    pub fn start_with_carrier(
        config: TunnelConfig,
        carrier: Carrier,
        resolver: Option<ProxyResolver>,
    ) -> Result<Self, TunnelError> {
        let udp = match carrier {
            Carrier::Stream(_) => None,
            Carrier::Direct | Carrier::Auto { .. } => {
                let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .map_err(TunnelError::Socket)?;
                let mut endpoint =
                    cz_shared::udp::endpoint(socket, None).map_err(TunnelError::Socket)?;
                endpoint.set_default_client_config(config.identity.client_config()?);
                Some(endpoint)
            }
        };
        let stream_config = config
            .identity
            .client_config_with(cz_shared::carrier::stream_transport_config())?;
        let (state_tx, state_rx) = watch::channel(TunnelState::Connecting);
        let (events_tx, _) = broadcast::channel(1024);
        let stop = CancellationToken::new();
        let local_app = Arc::new(LocalApp::new(config.local_app, events_tx.clone()));
        let dialer = Dialer {
            udp,
            stream_config,
            carrier,
            proxy: config.proxy,
            resolver,
            server: serve::Server {
                local_app: local_app.clone(),
                events_tx: events_tx.clone(),
            },
            state_tx,
            events_tx: events_tx.clone(),
            stop: stop.clone(),
        };
        let span = tracing::info_span!("tunnel", proxy = %dialer.proxy);
        let task = tokio::spawn(dialer.run().instrument(span));
        Ok(Self {
            state_rx,
            events_tx,
            stop,
            task: Some(task),
            local_app,
        })
    }

    /// Events from now on. A receiver that falls more than 1,024 events behind skips the oldest.
    pub fn events(&self) -> broadcast::Receiver<TunnelEvent> {
        self.events_tx.subscribe()
    }

    /// Captures every exchange served from now on into `inspector` (a tunnel has at most one).
    pub fn inspect(&self, inspector: &crate::Inspector) -> Result<(), AlreadyInspected> {
        self.local_app.inspect(inspector.clone())
    }

    /// The current state.
    pub fn state(&self) -> TunnelState {
        self.state_rx.borrow().clone()
    }

    /// Waits until the tunnel is connected (and says over what), or returns why it never will
    /// be.
    pub async fn connected(&self) -> Result<Connected, Arc<TunnelError>> {
        let mut state_rx = self.state_rx.clone();
        let state = state_rx
            .wait_for(|state| !matches!(state, TunnelState::Connecting))
            .await
            .map_err(|_| Arc::new(TunnelError::Closed))?;
        match &*state {
            TunnelState::Connected(connected) => Ok(connected.clone()),
            TunnelState::Failed(error) => Err(error.clone()),
            _ => Err(Arc::new(TunnelError::Closed)),
        }
    }

    /// Waits up to `timeout` for the proxy to end the connection, as a draining proxy does once
    /// its in-flight requests are answered; `false` if it is still connected at the deadline.
    /// Returns at once when the tunnel is not connected.
    pub async fn closed_by_proxy(&self, timeout: std::time::Duration) -> bool {
        let mut state_rx = self.state_rx.clone();
        let ended = tokio::time::timeout(
            timeout,
            state_rx.wait_for(|state| !matches!(state, TunnelState::Connected(_))),
        )
        .await;
        ended.is_ok()
    }

    /// Closes the connection (in-flight requests are cut) and waits for the tunnel to stop.
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
