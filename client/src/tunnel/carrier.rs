//! What carries the tunnel's QUIC packets to the proxy: UDP straight to it, or byte streams
//! (a port-forward to the proxy pod through the API server, which is all most laptops reach),
//! or both at once with direct UDP given a head start. The QUIC connection, its session
//! certificates and hello are the same on every carrier.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cz_shared::carrier::StreamSocket;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::ResolveError;

/// A byte stream that can carry the tunnel.
pub trait CarrierIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> CarrierIo for T {}

/// A carrier stream, as a [`StreamOpener`] opens it.
pub type CarrierStream = Box<dyn CarrierIo>;

/// Opens a new carrier stream to the proxy: asked for the first one and again whenever one
/// breaks, so a replaced proxy pod is found again. An error that retrying cannot fix (a refused
/// permission) is a [`CarrierRefused`]: the tunnel then gives up instead of retrying.
pub type StreamOpener = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<CarrierStream, ResolveError>> + Send>>
        + Send
        + Sync,
>;

/// A carrier the cluster refuses to open (e.g. no permission for `pods/portforward`): retrying
/// cannot help.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CarrierRefused(pub ResolveError);

/// How the tunnel reaches the proxy.
#[derive(Clone)]
pub enum Carrier {
    /// QUIC over UDP to the proxy's address.
    Direct,
    /// QUIC over streams from the opener, one at a time; when one breaks, a new one takes over
    /// the same QUIC connection (connection migration), so requests in flight carry on.
    Stream(StreamOpener),
    /// Both at once: direct UDP when its handshake completes within `head_start`, else the
    /// stream — never waiting for a UDP timeout first.
    Auto {
        /// Opens the stream carrier.
        open: StreamOpener,
        /// How long direct UDP may take before the stream carrier is used.
        head_start: Duration,
    },
}

impl std::fmt::Debug for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct => f.write_str("Direct"),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Auto { head_start, .. } => write!(f, "Auto {{ head_start: {head_start:?} }}"),
        }
    }
}

/// A stream carrier in use: the socket quinn sends through, and a token cancelled when its
/// stream ends.
pub(super) struct Opened {
    pub(super) socket: Arc<StreamSocket>,
    pub(super) lost: CancellationToken,
}

/// Opens a stream with `open` and puts a QUIC socket on it.
pub(super) async fn open_stream(open: &StreamOpener) -> Result<Opened, ResolveError> {
    let stream = open().await?;
    let (socket, lost) = StreamSocket::new(stream);
    Ok(Opened { socket, lost })
}
