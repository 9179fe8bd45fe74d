//! The tunnel's endpoints over UDP (the direct carrier), at both ends: how large a datagram may
//! be, and how much the socket holds while the endpoint is busy.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;

/// Largest UDP payload MTU discovery tries. quinn sends up to 10 datagrams at once as one
/// segmented (GSO) send, and a send's whole payload must fit one IPv4 packet (65,507 bytes), so
/// 6,550 bytes is the most a full batch can carry: with larger datagrams the kernel refuses a
/// full batch (`EMSGSIZE`), quinn counts it as lost, and black-hole detection drops the tunnel to
/// 1200-byte packets. Where the path carries only 1500-byte packets the probes are lost and
/// discovery settles lower; on loopback (a local cluster) and jumbo-frame networks four times
/// fewer packets carry the same bytes.
pub(crate) const MTU_UPPER_BOUND: u16 = 6550;

/// The socket's receive buffer: the datagrams that arrive while the endpoint is busy (a full
/// congestion window of bulk data, in bursts of 10). The default (about 200 KiB on Linux) holds
/// three full batches; one more is dropped and costs the sender half its congestion window. The
/// kernel caps it at `net.core.rmem_max`; where a system refuses it, its default stays.
const RECEIVE_BUFFER: usize = 2 << 20;

/// A QUIC endpoint on `socket`, accepting connections with `server` if given. Its peers may send
/// datagrams of up to 6,550 bytes (`MTU_UPPER_BOUND`), so that MTU discovery can reach it (a peer's
/// advertised `max_udp_payload_size` caps the search; quinn's default, 1472 bytes, would stop it
/// at 1500-byte IP packets). quinn sizes its receive buffer for datagrams that large; its pages
/// become resident only where such datagrams arrive.
pub fn endpoint(
    socket: UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MTU_UPPER_BOUND)
        .expect("MTU_UPPER_BOUND is within quinn's 1200..=65527");
    if let Err(error) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER) {
        // Only throughput depends on it: the tunnel works on the system's default.
        tracing::debug!(%error, "the tunnel's UDP receive buffer stays at the system default");
    }
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
}
