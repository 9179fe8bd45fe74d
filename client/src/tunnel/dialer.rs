//! The task behind a [`Tunnel`](super::Tunnel): dials the proxy over its carrier, exchanges
//! hellos, serves the streams the proxy opens, replaces a broken carrier stream under the same
//! connection, and redials with backoff whenever the connection itself is lost. When the proxy
//! says it is draining (its pod is being replaced), the tunnel dials the replacement at once and
//! serves the old connection beside the new one until the old proxy closes it: make before break.

use std::sync::Arc;
use std::time::Duration;

use cz_shared::protocol::CloseCode;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::carrier::{open_stream, Carrier, Opened};
use super::connect::{Link, StreamPath};
use super::serve::Server;
use super::{ProxyResolver, TunnelError, TunnelState};
use crate::events::TunnelEvent;

/// How long dialling and the hello may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to reach a draining proxy's replacement: requests that
/// reach the replacement wait for this laptop meanwhile.
const MAX_HANDOVER_RETRY: Duration = Duration::from_millis(250);

/// The background task behind a [`Tunnel`].
pub(super) struct Dialer {
    /// The UDP endpoint, for direct connections.
    pub(super) udp: Option<quinn::Endpoint>,
    /// The client configuration on stream carriers (their own transport settings).
    pub(super) stream_config: quinn::ClientConfig,
    pub(super) carrier: Carrier,
    pub(super) proxy: String,
    pub(super) resolver: Option<ProxyResolver>,
    pub(super) server: Server,
    pub(super) state_tx: watch::Sender<TunnelState>,
    pub(super) events_tx: broadcast::Sender<TunnelEvent>,
    pub(super) stop: CancellationToken,
}

/// Why [`Dialer::serve_link`] returned.
enum LinkEnd {
    /// The tunnel was stopped.
    Stopped,
    /// The connection ended.
    Lost(quinn::ConnectionError),
    /// The proxy is draining: the link is still up, and a replacement is wanted.
    Draining,
}

impl Dialer {
    pub(super) async fn run(self) {
        let mut retry_in = FIRST_RETRY;
        let mut most = MAX_RETRY;
        // Links whose proxy is draining, served until it closes them.
        let mut retired = JoinSet::new();
        // Whether the tunnel is reported connected: a retired link may still be serving.
        let mut up = false;
        loop {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, self.connect());
            let Some(attempt) = self.beside_retired(connect, &mut retired, &mut up).await else {
                break;
            };
            let attempt = attempt.unwrap_or_else(|_| {
                Err(TunnelError::Connect {
                    proxy: self.proxy.clone(),
                    reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
                })
            });
            match attempt {
                Ok(mut link) => {
                    info!(path = %link.connected.path, why = %link.connected.why, "tunnel connected");
                    up = true;
                    self.state_tx
                        .send_replace(TunnelState::Connected(link.connected.clone()));
                    let _ = self.events_tx.send(TunnelEvent::Connected {
                        path: link.connected.path.clone(),
                        why: link.connected.why.clone(),
                    });
                    match self.serve_link(&mut link).await {
                        LinkEnd::Stopped => {
                            link.close();
                            break;
                        }
                        LinkEnd::Lost(reason) => {
                            warn!(%reason, "tunnel lost; reconnecting");
                            self.lost(reason.to_string());
                            (up, retry_in, most) = (false, FIRST_RETRY, MAX_RETRY);
                            continue;
                        }
                        LinkEnd::Draining => {
                            while retired.try_join_next().is_some() {}
                            let first = retired.is_empty();
                            retired.spawn(self.retire(link));
                            if first {
                                info!("the proxy is draining; dialling its replacement");
                                let _ = self.events_tx.send(TunnelEvent::ProxyDraining);
                                // The replacement may take a moment to be up: look often.
                                (retry_in, most) = (FIRST_RETRY, MAX_HANDOVER_RETRY);
                                continue;
                            }
                            // What was dialled drains too (a fixed address that reaches the old
                            // proxy): no replacement there yet, back off as usual.
                            debug!("the proxy dialled is draining too");
                            most = MAX_RETRY;
                        }
                    }
                }
                Err(error) if error.is_fatal() => {
                    warn!(%error, "giving up on the tunnel");
                    self.state_tx
                        .send_replace(TunnelState::Failed(Arc::new(error)));
                    break;
                }
                Err(error) => {
                    if up {
                        // The draining proxy still serves: nothing to worry the user about yet.
                        debug!(%error, "the draining proxy's replacement is not up yet");
                    } else {
                        debug!(%error, ?retry_in, "connect failed");
                        let error = error.to_string();
                        let _ = self
                            .events_tx
                            .send(TunnelEvent::ConnectFailed { error, retry_in });
                    }
                }
            }
            let pause = tokio::time::sleep(retry_in);
            if self
                .beside_retired(pause, &mut retired, &mut up)
                .await
                .is_none()
            {
                break;
            }
            if !up {
                most = MAX_RETRY;
            }
            retry_in = (retry_in * 2).min(most);
        }
        // Retired links close on the stop too.
        while retired.join_next().await.is_some() {}
        if let Some(udp) = &self.udp {
            udp.close(CloseCode::Shutdown.into(), b"czctl closed the tunnel");
            let _ = tokio::time::timeout(Duration::from_secs(1), udp.wait_idle()).await;
        }
        self.state_tx.send_if_modified(|state| {
            let closed = !matches!(state, TunnelState::Failed(_));
            if closed {
                *state = TunnelState::Closed;
            }
            closed
        });
    }

    /// Runs `future` to its end (`None` if the tunnel stops first) while `retired` links serve;
    /// when the last of them ends while the tunnel is reported `up`, reports it lost.
    async fn beside_retired<F: std::future::Future>(
        &self,
        future: F,
        retired: &mut JoinSet<()>,
        up: &mut bool,
    ) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                output = &mut future => return Some(output),
                Some(_) = retired.join_next(), if !retired.is_empty() => {
                    if *up && retired.is_empty() {
                        *up = false;
                        let reason = "the draining proxy closed the tunnel before its replacement was up";
                        self.lost(reason.into());
                    }
                }
            }
        }
    }

    /// Reports that the tunnel has no connection for `reason`, and is reconnecting.
    fn lost(&self, reason: String) {
        self.state_tx.send_replace(TunnelState::Connecting);
        let _ = self.events_tx.send(TunnelEvent::Disconnected { reason });
    }

    /// Serves `link`, whose proxy is draining, until the proxy closes it or the tunnel stops.
    fn retire(&self, link: Link) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (server, stop) = (self.server.clone(), self.stop.clone());
        async move {
            tokio::select! {
                reason = server.serve(&link.connection, &link.proxy) => {
                    debug!(%reason, "the draining proxy closed its tunnel");
                }
                () = stop.cancelled() => link.close(),
            }
        }
    }

    /// Serves `link` until its connection ends, the tunnel is stopped, or its proxy says it is
    /// draining. A lost carrier stream is replaced meanwhile, under the same connection.
    async fn serve_link(&self, link: &mut Link) -> LinkEnd {
        loop {
            let lost = link.stream.as_ref().map(|stream| stream.lost.clone());
            let carrier_lost = async {
                match lost {
                    Some(lost) => lost.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return LinkEnd::Stopped,
                reason = self.server.serve(&link.connection, &link.proxy) => {
                    return LinkEnd::Lost(reason);
                }
                () = link.proxy.draining.cancelled() => return LinkEnd::Draining,
                () = carrier_lost => {
                    let Some(stream) = link.stream.as_mut() else {
                        continue; // only a stream carrier has a loss to wait for
                    };
                    warn!("tunnel carrier lost; reconnecting");
                    let _ = self.events_tx.send(TunnelEvent::CarrierLost);
                    let started = tokio::time::Instant::now();
                    match self.replace_carrier(stream, &link.connection).await {
                        Some(lost) => {
                            let after = started.elapsed();
                            info!(?after, "tunnel carrier back");
                            let _ = self.events_tx.send(TunnelEvent::CarrierBack { after });
                            stream.lost = lost;
                        }
                        None if self.stop.is_cancelled() => return LinkEnd::Stopped,
                        // The connection ended before a new carrier took over.
                        None => return LinkEnd::Lost(link.connection.closed().await),
                    }
                }
            }
        }
    }

    /// Opens new carrier streams (with backoff) until one takes over `connection`; `None` when
    /// the connection ends or the tunnel stops first.
    async fn replace_carrier(
        &self,
        stream: &StreamPath,
        connection: &quinn::Connection,
    ) -> Option<CancellationToken> {
        let mut retry_in = FIRST_RETRY;
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, open_stream(&stream.open)).await {
                Ok(Ok(Opened { socket, lost })) => match stream.endpoint.rebind_abstract(socket) {
                    Ok(()) => return Some(lost),
                    Err(error) => debug!(%error, "could not move the tunnel to the new carrier"),
                },
                Ok(Err(error)) => debug!(%error, ?retry_in, "could not open a carrier"),
                Err(_) => debug!(?retry_in, "opening a carrier timed out"),
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                _ = connection.closed() => return None,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(MAX_RETRY);
        }
    }
}
