//! The task behind a [`Tunnel`](super::Tunnel): dials the proxy over its carrier, exchanges
//! hellos, serves the streams the proxy opens, replaces a broken carrier stream under the same
//! connection, and redials with backoff whenever the connection itself is lost.

use std::sync::Arc;
use std::time::Duration;

use cz_shared::carrier::{stream_endpoint_config, STREAM_PEER};
use cz_shared::hello::{laptop_hello, HelloError};
use cz_shared::protocol::{CloseCode, Hello, ALPN, SERVER_NAME};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::carrier::{open_stream, Carrier, Opened, StreamOpener};
use super::{Connected, ProxyResolver, TunnelError, TunnelState};
use crate::events::{TunnelEvent, TunnelPath};
use crate::local_app::LocalApp;

/// How long dialling and the hello may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The background task behind a [`Tunnel`].
pub(super) struct Dialer {
    /// The UDP endpoint, for direct connections.
    pub(super) udp: Option<quinn::Endpoint>,
    /// The client configuration on stream carriers (their own transport settings).
    pub(super) stream_config: quinn::ClientConfig,
    pub(super) carrier: Carrier,
    pub(super) proxy: String,
    pub(super) resolver: Option<ProxyResolver>,
    pub(super) local_app: Arc<LocalApp>,
    pub(super) state_tx: watch::Sender<TunnelState>,
    pub(super) events_tx: broadcast::Sender<TunnelEvent>,
    pub(super) stop: CancellationToken,
}

/// A connected tunnel: the connection, what carries it and why.
struct Link {
    connection: quinn::Connection,
    connected: Connected,
    /// On a stream carrier: what replaces the stream when it is lost.
    stream: Option<StreamPath>,
}

/// A connection's stream carrier: the opener of new streams, the endpoint to move onto them,
/// and the current stream's loss.
struct StreamPath {
    open: StreamOpener,
    endpoint: quinn::Endpoint,
    lost: CancellationToken,
}

impl Link {
    fn because(mut self, why: String) -> Self {
        self.connected.why = why;
        self
    }
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
                Ok(Ok(mut link)) => {
                    retry_in = FIRST_RETRY;
                    info!(path = %link.connected.path, why = %link.connected.why, "tunnel connected");
                    self.state_tx
                        .send_replace(TunnelState::Connected(link.connected.clone()));
                    let _ = self.events_tx.send(TunnelEvent::Connected {
                        path: link.connected.path.clone(),
                        why: link.connected.why.clone(),
                    });
                    let Some(reason) = self.serve_link(&mut link).await else {
                        link.connection
                            .close(CloseCode::Shutdown.into(), b"czctl closed the tunnel");
                        if let Some(stream) = &link.stream {
                            stream
                                .endpoint
                                .close(CloseCode::Shutdown.into(), b"czctl closed the tunnel");
                        }
                        break;
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

    /// Serves `link` until its connection ends (returns why) or the tunnel is stopped (`None`).
    /// A lost carrier stream is replaced meanwhile, under the same connection.
    async fn serve_link(&self, link: &mut Link) -> Option<quinn::ConnectionError> {
        loop {
            let lost = link.stream.as_ref().map(|stream| stream.lost.clone());
            let carrier_lost = async {
                match lost {
                    Some(lost) => lost.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return None,
                reason = self.serve(&link.connection) => return Some(reason),
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
                        None if self.stop.is_cancelled() => return None,
                        // The connection ended before a new carrier took over.
                        None => return Some(link.connection.closed().await),
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

    /// Connects over the configured carrier.
    async fn connect(&self) -> Result<Link, TunnelError> {
        match &self.carrier {
            Carrier::Direct => self.connect_direct().await,
            Carrier::Stream(open) => self.connect_stream(open).await?.greeted(&self.proxy).await,
            Carrier::Auto { open, head_start } => self.connect_auto(open, *head_start).await,
        }
    }

    /// Direct UDP and the stream at once: direct if it connects within `head_start`, else the
    /// stream; if the stream fails, its error once direct UDP has had its head start. The
    /// stream's connection says hello only once it is chosen: the proxy attaches a connection at
    /// its hello, so it never sends requests over the one the laptop drops.
    async fn connect_auto(
        &self,
        open: &StreamOpener,
        head_start: Duration,
    ) -> Result<Link, TunnelError> {
        let direct = self.connect_direct();
        let stream = self.connect_stream(open);
        let head = tokio::time::sleep(head_start);
        tokio::pin!(direct, stream, head);
        let (mut direct_error, mut stream_result, mut head_passed) = (None, None, false);
        loop {
            tokio::select! {
                biased;
                result = &mut direct, if direct_error.is_none() => match result {
                    Ok(link) => {
                        let why = if head_passed {
                            "the stream carrier was not up yet".to_owned()
                        } else {
                            format!("direct UDP answered within {head_start:?}")
                        };
                        return Ok(link.because(why));
                    }
                    Err(error) => direct_error = Some(error),
                },
                result = &mut stream, if stream_result.is_none() => stream_result = Some(result),
                () = &mut head, if !head_passed => head_passed = true,
            }
            match (&direct_error, stream_result.take()) {
                (Some(direct), Some(Ok(link))) => {
                    let why = format!("direct UDP failed ({direct})");
                    return Ok(link.greeted(&self.proxy).await?.because(why));
                }
                (None, Some(Ok(link))) if head_passed => {
                    let why = format!("direct UDP did not answer within {head_start:?}");
                    return Ok(link.greeted(&self.proxy).await?.because(why));
                }
                // Direct UDP had its head start (or failed): the stream's error is the answer.
                (direct, Some(Err(error))) if head_passed || direct.is_some() => return Err(error),
                (_, pending) => stream_result = pending,
            }
        }
    }

    /// Dials the proxy over UDP and exchanges hellos.
    async fn connect_direct(&self) -> Result<Link, TunnelError> {
        let udp = self.udp.as_ref().ok_or(TunnelError::Closed)?;
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
        let connecting = udp
            .connect(proxy, SERVER_NAME)
            .map_err(|error| TunnelError::Connect {
                proxy: proxy.to_string(),
                reason: error.to_string(),
            })?;
        let connection = handshake(connecting, &proxy.to_string()).await?;
        let link = Link {
            connection,
            connected: Connected {
                path: TunnelPath::Direct(proxy),
                why: String::new(),
            },
            stream: None,
        };
        link.greeted(&proxy.to_string()).await
    }

    /// Opens a carrier stream and dials the proxy over it (without a hello yet).
    async fn connect_stream(&self, open: &StreamOpener) -> Result<Link, TunnelError> {
        let Opened { socket, lost } =
            open_stream(open)
                .await
                .map_err(|source| TunnelError::Carrier {
                    proxy: self.proxy.clone(),
                    source,
                })?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            stream_endpoint_config(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(TunnelError::Socket)?;
        endpoint.set_default_client_config(self.stream_config.clone());
        let connecting = endpoint
            .connect(STREAM_PEER, SERVER_NAME)
            .map_err(|error| TunnelError::Connect {
                proxy: self.proxy.clone(),
                reason: error.to_string(),
            })?;
        let connection = handshake(connecting, &self.proxy).await?;
        Ok(Link {
            connection,
            connected: Connected {
                path: TunnelPath::Stream,
                why: String::new(),
            },
            stream: Some(StreamPath {
                open: open.clone(),
                endpoint,
                lost,
            }),
        })
    }

    /// Serves the proxy's streams until the connection ends; returns why it ended.
    async fn serve(&self, connection: &quinn::Connection) -> quinn::ConnectionError {
        loop {
            match connection.accept_bi().await {
                Ok((send, recv)) => {
                    let local_app = self.local_app.clone();
                    let span = tracing::debug_span!("req", stream = %send.id());
                    // Boxed: the request's future is large, and tokio moves a spawned future
                    // several times on its way into the task (a copy of all of it each time).
                    let serve = Box::pin(async move { local_app.serve_stream(send, recv).await });
                    tokio::spawn(serve.instrument(span));
                }
                Err(reason) => return reason,
            }
        }
    }
}

/// Completes the QUIC handshake with `proxy`.
async fn handshake(
    connecting: quinn::Connecting,
    proxy: &str,
) -> Result<quinn::Connection, TunnelError> {
    connecting.await.map_err(|error| classify(proxy, &error))
}

impl Link {
    /// The link once hellos are exchanged with `proxy`, which then sends requests over it.
    async fn greeted(self, proxy: &str) -> Result<Self, TunnelError> {
        greet(&self.connection, proxy).await?;
        Ok(self)
    }
}

/// Exchanges hellos with `proxy` on `connection`.
async fn greet(connection: &quinn::Connection, proxy: &str) -> Result<(), TunnelError> {
    match exchange_hellos(connection).await {
        Ok(()) => Ok(()),
        // A refused client certificate shows up only now: TLS 1.3 servers verify the client
        // after the client considers the handshake done.
        Err(HelloError::Stream(error)) => Err(match connection.close_reason() {
            Some(reason) => classify(proxy, &reason),
            None => TunnelError::Connect {
                proxy: proxy.to_owned(),
                reason: error.to_string(),
            },
        }),
        Err(HelloError::Mismatch(mismatch)) => {
            connection.close(CloseCode::VersionMismatch.into(), b"version mismatch");
            Err(mismatch.into())
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
fn classify(proxy: &str, error: &quinn::ConnectionError) -> TunnelError {
    let code = match error {
        quinn::ConnectionError::TransportError(error) => Some(error.code),
        quinn::ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        _ => None,
    };
    let (proxy, reason) = (proxy.to_owned(), error.to_string());
    match code.map(u64::from) {
        Some(code) if (0x100..0x200).contains(&code) => TunnelError::Rejected { proxy, reason },
        _ => TunnelError::Connect { proxy, reason },
    }
}
