//! Carriers of the tunnel's QUIC connection other than a UDP socket: QUIC datagrams framed on a
//! byte stream (a `pods/portforward` stream through the Kubernetes API server, a TCP connection).
//!
//! Both ends plug into quinn through its socket abstraction ([`quinn::AsyncUdpSocket`]), so the
//! QUIC connection, its mutual TLS and the tunnel's frames are the same on every carrier:
//!
//! - the laptop wraps one stream in a [`StreamSocket`] and builds its endpoint with
//!   [`quinn::Endpoint::new_with_abstract_socket`] (and [`stream_endpoint_config`]), dialling [`STREAM_PEER`]. When the stream
//!   breaks (its token is cancelled) it opens a new one and calls
//!   [`quinn::Endpoint::rebind_abstract`] with a new [`StreamSocket`]: the same QUIC connection
//!   migrates to it.
//! - the proxy feeds every accepted stream into one [`StreamListener`]; each stream is a peer
//!   address of its own, so a laptop coming back on a new stream is a QUIC path migration.
//!
//! Both ends use [`stream_endpoint_config`] and [`stream_transport_config`]. Every queue is bounded: a full send queue is
//! backpressure to quinn (`try_send` says `WouldBlock` and the poller wakes when there is room),
//! a full receive queue stops reading the stream (TCP flow control reaches the sender). A
//! datagram for a stream that has ended is dropped, as UDP would.
//!
//! Callers handing in a `TcpStream` set `TCP_NODELAY` on it: the carrier batches writes itself,
//! Nagle's algorithm would only add latency to acknowledgements.

mod client;
mod frame;
mod io;
mod server;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use client::StreamSocket;
pub use server::StreamListener;

/// The fixed datagram size on stream carriers, with MTU discovery off.
///
/// Nothing fragments or drops on a byte stream, so the MTU only trades per-packet cost (header,
/// AEAD tag, an acknowledgement, a frame header and a queue slot per datagram: 16 KiB carries
/// eleven times fewer packets than a 1452-byte path) against head-of-line delay (one datagram
/// holds the stream for 16 KiB: 13 ms at 10 Mbit/s, not the 52 ms of quinn's 65527-byte cap)
/// and against the memory the bounded queues may hold (`slots × STREAM_MTU`).
pub const STREAM_MTU: u16 = 16 * 1024;

/// The address a laptop dials on a stream carrier, and the local address of a
/// [`StreamListener`]: synthetic (TEST-NET-1), as a carrier has exactly one peer.
pub const STREAM_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1);

/// How often an idle connection on a stream carrier sends a keep-alive: well inside the 60 s
/// after which load balancers in front of API servers commonly cut idle connections.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Datagrams a stream's send queue holds (at most 1 MiB of [`STREAM_MTU`] datagrams).
const SEND_QUEUE: usize = 64;

/// Datagrams the receive queue holds before reading stops (at most 1 MiB).
const RECEIVE_QUEUE: usize = 64;

/// The endpoint settings of every endpoint on a stream carrier (both ends): receive buffers
/// and the advertised `max_udp_payload_size` sized for [`STREAM_MTU`] (quinn's default, 1472
/// bytes, would truncate every datagram).
pub fn stream_endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(STREAM_MTU)
        .expect("STREAM_MTU is within quinn's 1200..=65527");
    config
}

/// Transport settings every endpoint on a stream carrier uses (both ends must agree): the
/// tunnel's usual settings with the laptop's stream limit, a fixed MTU of [`STREAM_MTU`] without
/// MTU discovery, a congestion window starting at ten datagrams, and a keep-alive every 15 s.
///
/// The proxy passes it to [`Identity::server_config_with`](crate::tls::Identity::server_config_with),
/// which applies the proxy's own stream limit; the laptop to
/// [`Identity::client_config_with`](crate::tls::Identity::client_config_with).
pub fn stream_transport_config() -> quinn::TransportConfig {
    let mut transport = crate::tls::transport_config();
    transport
        .max_concurrent_bidi_streams(crate::tls::MAX_CONCURRENT_REQUESTS.into())
        .initial_mtu(STREAM_MTU)
        .min_mtu(STREAM_MTU)
        .mtu_discovery_config(None)
        .keep_alive_interval(Some(STREAM_KEEP_ALIVE));
    // quinn's initial window (12,000 bytes) is sized for 1200-byte datagrams and would not
    // admit one of ours; the TCP connection below does the real congestion control.
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(10 * u64::from(STREAM_MTU));
    transport.congestion_controller_factory(Arc::new(cubic));
    transport
}
