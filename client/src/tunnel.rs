//! The laptop's end of the tunnel: dials the proxy, says hello, serves the streams the proxy
//! opens, and redials with backoff whenever the connection is lost.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cz_shared::protocol::{CloseCode, Hello, Side, VersionMismatch, ALPN, SERVER_NAME};
use cz_shared::stream::{read_hello, StreamError};
use cz_shared::tls::{Identity, TlsError};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::events::TunnelEvent;
use crate::local_app::LocalApp;

/// How long dialling and the hello may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What a [`Tunnel`] needs: where the proxy is, the session credentials, where the app is.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The proxy's tunnel endpoint, `HOST:PORT` (UDP); resolved again on every reconnect.
    pub proxy: String,
    /// The laptop's session identity (client certificate and key, and the session CA).
    pub identity: Identity,
    /// Where intercepted requests go, usually `127.0.0.1:<localPort>`.
    pub local_app: SocketAddr,
}

/// Finds the proxy's current tunnel address; asked before every (re)connect, so a proxy that
/// moved (e.g. a replaced pod with a new IP) is found again.
pub type ProxyResolver =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<SocketAddr, String>> + Send>> + Send + Sync>;

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
    #[error("could not resolve the proxy address {proxy}: {reason}")]
    Resolve {
        /// The address given.
        proxy: String,
        /// Why.
        reason: String,
    },
    /// The proxy could not be reached or the connection broke during set-up.
    #[error("could not connect to the proxy at {proxy}: {reason}")]
    Connect {
        /// The proxy's address.
        proxy: SocketAddr,
        /// Why.
        reason: String,
    },
    /// TLS failed: the proxy does not hold this session's certificate, or it refused ours.
    #[error("the proxy at {proxy} is not this session's proxy, or refused this laptop's certificate ({reason}); if a previous session left it behind, run `czctl session close` and start the intercept again")]
    Rejected {
        /// The proxy's address.
        proxy: SocketAddr,
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
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Tls(_) | Self::Socket(_) | Self::Rejected { .. } | Self::VersionMismatch(_)
        )
    }
}

/// Where a tunnel stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TunnelState {
    /// Dialling the proxy (first time or again).
    Connecting,
    /// Connected; intercepted requests flow.
    Connected {
        /// The proxy's tunnel address.
        proxy: SocketAddr,
    },
    /// Gave up: retrying cannot help.
    Failed(Arc<TunnelError>),
    /// Closed by [`Tunnel::close`].
    Closed,
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
        let client_config = config.identity.client_config()?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .map_err(TunnelError::Socket)?;
        endpoint.set_default_client_config(client_config);
        let (state_tx, state_rx) = watch::channel(TunnelState::Connecting);
        let (events_tx, _) = broadcast::channel(1024);
        let stop = CancellationToken::new();
        let local_app = Arc::new(LocalApp::new(config.local_app, events_tx.clone()));
        let dialer = Dialer {
            endpoint,
            proxy: config.proxy,
            resolver,
            local_app,
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
        })
    }

    /// Events from now on. A receiver that falls more than 1,024 events behind skips the oldest.
    pub fn events(&self) -> broadcast::Receiver<TunnelEvent> {
        self.events_tx.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> TunnelState {
        self.state_rx.borrow().clone()
    }

    /// Waits until the tunnel is connected, or returns why it never will be.
    pub async fn connected(&self) -> Result<SocketAddr, Arc<TunnelError>> {
        let mut state_rx = self.state_rx.clone();
        let state = state_rx
            .wait_for(|state| !matches!(state, TunnelState::Connecting))
            .await
            .map_err(|_| Arc::new(TunnelError::Closed))?;
        match &*state {
            TunnelState::Connected { proxy } => Ok(*proxy),
            TunnelState::Failed(error) => Err(error.clone()),
            _ => Err(Arc::new(TunnelError::Closed)),
        }
    }

    /// Waits up to `timeout` for the proxy to end the connection, as a draining proxy does once
    /// its in-flight requests are answered; `false` if it is still connected at the deadline.
    /// Returns at once when the tunnel is not connected.
    pub async fn closed_by_proxy(&self, timeout: Duration) -> bool {
        let mut state_rx = self.state_rx.clone();
        let ended = tokio::time::timeout(
            timeout,
            state_rx.wait_for(|state| !matches!(state, TunnelState::Connected { .. })),
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

/// The background task behind a [`Tunnel`].
struct Dialer {
    endpoint: quinn::Endpoint,
    proxy: String,
    resolver: Option<ProxyResolver>,
    local_app: Arc<LocalApp>,
    state_tx: watch::Sender<TunnelState>,
    events_tx: broadcast::Sender<TunnelEvent>,
    stop: CancellationToken,
}

impl Dialer {
    async fn run(self) {
        let mut retry_in = FIRST_RETRY;
        loop {
            let attempt = tokio::select! {
                () = self.stop.cancelled() => break,
                attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => attempt,
            };
            match attempt {
                Ok(Ok(connection)) => {
                    retry_in = FIRST_RETRY;
                    let proxy = connection.remote_address();
                    info!(%proxy, "tunnel connected");
                    self.state_tx.send_replace(TunnelState::Connected { proxy });
                    let _ = self.events_tx.send(TunnelEvent::Connected { proxy });
                    let reason = tokio::select! {
                        () = self.stop.cancelled() => {
                            connection.close(CloseCode::Shutdown.into(), b"czctl closed the tunnel");
                            break;
                        }
                        reason = self.serve(&connection) => reason,
                    };
                    warn!(%reason, "tunnel lost; reconnecting");
                    self.state_tx.send_replace(TunnelState::Connecting);
                    let _ = self.events_tx.send(TunnelEvent::Disconnected {
                        reason: reason.to_string(),
                    });
                    continue;
                }
                Ok(Err(error)) if error.is_fatal() => {
                    warn!(%error, "giving up on the tunnel");
                    self.state_tx
                        .send_replace(TunnelState::Failed(Arc::new(error)));
                    break;
                }
                Ok(Err(error)) => {
                    debug!(%error, ?retry_in, "connect failed");
                    let _ = self.events_tx.send(TunnelEvent::ConnectFailed {
                        error: error.to_string(),
                        retry_in,
                    });
                }
                Err(_) => {
                    let error = format!("no answer within {CONNECT_TIMEOUT:?}");
                    let _ = self
                        .events_tx
                        .send(TunnelEvent::ConnectFailed { error, retry_in });
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(MAX_RETRY);
        }
        self.endpoint
            .close(CloseCode::Shutdown.into(), b"czctl closed the tunnel");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        self.state_tx.send_if_modified(|state| {
            let closed = !matches!(state, TunnelState::Failed(_));
            if closed {
                *state = TunnelState::Closed;
            }
            closed
        });
    }

    /// Dials the proxy and exchanges hellos.
    async fn connect(&self) -> Result<quinn::Connection, TunnelError> {
        let resolved = match &self.resolver {
            Some(resolve) => resolve().await,
            None => tokio::net::lookup_host(&self.proxy)
                .await
                .map_err(|error| error.to_string())
                .and_then(|mut addresses| {
                    addresses
                        .next()
                        .ok_or_else(|| "no address found".to_owned())
                }),
        };
        let proxy = resolved.map_err(|reason| TunnelError::Resolve {
            proxy: self.proxy.clone(),
            reason,
        })?;
        let connecting =
            self.endpoint
                .connect(proxy, SERVER_NAME)
                .map_err(|error| TunnelError::Connect {
                    proxy,
                    reason: error.to_string(),
                })?;
        let connection = connecting.await.map_err(|error| classify(proxy, &error))?;
        match exchange_hellos(&connection).await {
            Ok(()) => Ok(connection),
            // A refused client certificate shows up only now: TLS 1.3 servers verify the client
            // after the client considers the handshake done.
            Err(HelloError::Stream(error)) => Err(match connection.close_reason() {
                Some(reason) => classify(proxy, &reason),
                None => TunnelError::Connect {
                    proxy,
                    reason: error.to_string(),
                },
            }),
            Err(HelloError::Mismatch(mismatch)) => {
                connection.close(CloseCode::VersionMismatch.into(), b"version mismatch");
                Err(mismatch.into())
            }
        }
    }

    /// Serves the proxy's streams until the connection ends; returns why it ended.
    async fn serve(&self, connection: &quinn::Connection) -> quinn::ConnectionError {
        loop {
            match connection.accept_bi().await {
                Ok((send, recv)) => {
                    let local_app = self.local_app.clone();
                    let span = tracing::debug_span!("req", stream = %send.id());
                    tokio::spawn(
                        async move { local_app.serve_stream(send, recv).await }.instrument(span),
                    );
                }
                Err(reason) => return reason,
            }
        }
    }
}

enum HelloError {
    Stream(StreamError),
    Mismatch(VersionMismatch),
}

impl<E: Into<StreamError>> From<E> for HelloError {
    fn from(error: E) -> Self {
        Self::Stream(error.into())
    }
}

/// Sends our hello on a control stream and checks the proxy's.
async fn exchange_hellos(connection: &quinn::Connection) -> Result<(), HelloError> {
    let ours = Hello::new(env!("CARGO_PKG_VERSION"));
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| StreamError::Read(e.into()))?;
    send.write_all(&ours.encode()).await?;
    let _ = send.finish();
    let proxy = read_hello(&mut recv).await?;
    ours.check_compatible(Side::Client, &proxy)
        .map_err(HelloError::Mismatch)?;
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    debug!(alpn = ?alpn.as_deref().map(String::from_utf8_lossy), expected = ?String::from_utf8_lossy(ALPN), "hello exchanged");
    Ok(())
}

/// TLS failures (QUIC crypto error codes 0x100–0x1ff) are rejections; everything else is a
/// connection problem worth retrying.
fn classify(proxy: SocketAddr, error: &quinn::ConnectionError) -> TunnelError {
    let code = match error {
        quinn::ConnectionError::TransportError(error) => Some(error.code),
        quinn::ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        _ => None,
    };
    let reason = error.to_string();
    match code.map(u64::from) {
        Some(code) if (0x100..0x200).contains(&code) => TunnelError::Rejected { proxy, reason },
        _ => TunnelError::Connect { proxy, reason },
    }
}
