//! Dialling the proxy over the tunnel's carrier: direct UDP, a carrier stream, or both with
//! direct UDP given a head start; a link is ready once hellos are exchanged (over a stream,
//! only once it is chosen).

use std::sync::Arc;
use std::time::Duration;

use cz_shared::carrier::{stream_endpoint_config, STREAM_PEER};
use cz_shared::protocol::{CloseCode, SERVER_NAME};
use tokio_util::sync::CancellationToken;

use super::carrier::{open_stream, Carrier, Opened, StreamOpener};
use super::dialer::Dialer;
use super::handshake::{greet, handshake};
use super::serve::ProxyPeer;
use super::{Connected, TunnelError};
use crate::events::TunnelPath;

/// A connected tunnel: the connection, what carries it and why.
pub(super) struct Link {
    pub(super) connection: quinn::Connection,
    pub(super) connected: Connected,
    /// On a stream carrier: what replaces the stream when it is lost.
    pub(super) stream: Option<StreamPath>,
    /// What the proxy said about itself.
    pub(super) proxy: ProxyPeer,
}

/// A connection's stream carrier: the opener of new streams, the endpoint to move onto them,
/// and the current stream's loss.
pub(super) struct StreamPath {
    pub(super) open: StreamOpener,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) lost: CancellationToken,
}

impl Link {
    fn because(mut self, why: String) -> Self {
        self.connected.why = why;
        self
    }
}

impl Dialer {
    /// Connects over the configured carrier.
    pub(super) async fn connect(&self) -> Result<Link, TunnelError> {
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
            proxy: ProxyPeer::default(),
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
            proxy: ProxyPeer::default(),
        })
    }
}

impl Link {
    /// The link once hellos are exchanged with `proxy`, which then sends requests over it.
    async fn greeted(mut self, proxy: &str) -> Result<Self, TunnelError> {
        self.proxy.minor = greet(&self.connection, proxy).await?.protocol.minor;
        Ok(self)
    }

    /// Closes the connection, and its carrier stream's endpoint if it has one.
    pub(super) fn close(&self) {
        let reason = b"czctl closed the tunnel";
        self.connection.close(CloseCode::Shutdown.into(), reason);
        if let Some(stream) = &self.stream {
            stream.endpoint.close(CloseCode::Shutdown.into(), reason);
        }
    }
}
