//! The task behind a [`Tunnel`](super::Tunnel): resolves and dials the proxy, exchanges hellos,
//! serves the streams the proxy opens, and redials with backoff whenever the connection is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cz_shared::hello::{laptop_hello, HelloError};
use cz_shared::protocol::{CloseCode, Hello, ALPN, SERVER_NAME};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::{ProxyResolver, TunnelError, TunnelState};
use crate::events::TunnelEvent;
use crate::local_app::LocalApp;

/// How long dialling and the hello may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The background task behind a [`Tunnel`].
pub(super) struct Dialer {
    pub(super) endpoint: quinn::Endpoint,
    pub(super) proxy: String,
    pub(super) resolver: Option<ProxyResolver>,
    pub(super) local_app: Arc<LocalApp>,
    pub(super) state_tx: watch::Sender<TunnelState>,
    pub(super) events_tx: broadcast::Sender<TunnelEvent>,
    pub(super) stop: CancellationToken,
}

impl Dialer {
    pub(super) async fn run(self) {
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
                .and_then(|mut addresses| {
                    addresses.next().ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no address found")
                    })
                })
                .map_err(Into::into),
        };
        let proxy = resolved.map_err(|source| TunnelError::Resolve {
            proxy: self.proxy.clone(),
            source,
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

/// Exchanges hellos as the laptop.
async fn exchange_hellos(connection: &quinn::Connection) -> Result<(), HelloError> {
    let ours = Hello::new(env!("CARGO_PKG_VERSION"));
    laptop_hello(connection, &ours).await?;
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
