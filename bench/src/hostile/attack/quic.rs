//! Half-open QUIC handshakes on the tunnel's UDP port: Initial packets, each a real client's
//! first flight (quinn-proto's client, a certificate of a session of its own), sent from many
//! UDP sockets that never answer the proxy, so each handshake stays open on its side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cz_shared::protocol::SERVER_NAME;
use czctl::SessionCa;
use quinn_proto::{Endpoint, EndpointConfig};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Outcome;

/// Sockets (one handshake each) opened per burst.
const PER_BURST: usize = 100;
/// Time between bursts.
const BURST_EVERY: Duration = Duration::from_millis(500);
/// The most sockets held at once: later bursts reuse the oldest sockets for new handshakes.
const MAX_SOCKETS: usize = 2_000;

/// Sends a burst of Initials from fresh sockets every [`BURST_EVERY`] until `stop`.
pub async fn run(
    tunnel: SocketAddr,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let identity = SessionCa::generate()
        .and_then(|ca| ca.issue_client())
        .context("making a client certificate for the handshakes")?;
    let config = identity
        .client_config()
        .context("the handshakes' client configuration")?;
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(MAX_SOCKETS);
    let mut sent = 0;
    let mut ready = Some(ready);
    let mut ticks = tokio::time::interval(BURST_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        for _ in 0..PER_BURST {
            let mut datagram = Vec::with_capacity(1500);
            let (_, mut connection) = endpoint
                .connect(Instant::now(), config.clone(), tunnel, SERVER_NAME)
                .context("starting a QUIC handshake")?;
            let transmit = connection
                .poll_transmit(Instant::now(), 1, &mut datagram)
                .context("quinn-proto made no Initial packet")?;
            let socket = if sockets.len() < MAX_SOCKETS {
                sockets.push(UdpSocket::bind("127.0.0.1:0").await?);
                sockets.last()
            } else {
                sockets.get(sent % MAX_SOCKETS)
            }
            .context("no socket")?;
            socket
                .send_to(&datagram[..transmit.size], tunnel)
                .await
                .context("sending an Initial packet")?;
            sent += 1;
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
    }
    Ok(Outcome {
        figures: format!(
            "{sent} Initial packets from {} UDP sockets, {PER_BURST} every {}ms, never answered",
            sockets.len(),
            BURST_EVERY.as_millis()
        ),
        failures: Vec::new(),
    })
}
