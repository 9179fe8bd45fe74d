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
/// datagrams of up to [`MTU_UPPER_BOUND`] bytes, so that MTU discovery can reach it (a peer's
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

/// A proxy endpoint on 127.0.0.1 and a laptop's connection to it, both made by [`endpoint`]
/// with one session's identities: the proxy's endpoint, its side and the laptop's side.
#[cfg(test)]
pub(crate) async fn loopback_connection() -> (quinn::Endpoint, quinn::Connection, quinn::Connection)
{
    use std::net::Ipv4Addr;

    let loopback = || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback socket");
    let session = crate::tls::SessionCa::generate().expect("CA");
    let proxy_identity = session.issue_proxy().expect("proxy identity");
    let laptop_identity = session.issue_client().expect("laptop identity");
    let server = proxy_identity.server_config().expect("server config");
    let proxy = endpoint(loopback(), Some(server)).expect("proxy endpoint");
    let laptop = endpoint(loopback(), None).expect("laptop endpoint");
    let client = laptop_identity.client_config().expect("client config");
    let address = proxy.local_addr().expect("address");
    let (accepted, dialled) = tokio::join!(
        async {
            proxy
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("accepted")
        },
        async {
            let connecting = laptop.connect_with(client, address, crate::protocol::SERVER_NAME);
            connecting.expect("connect").await.expect("connected")
        },
    );
    (proxy, accepted, dialled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback carries 65,536-byte packets: after a bulk transfer both ends send the largest
    /// datagrams discovery tries, and no full batch of them was refused on the way (which black-hole
    /// detection would have answered by falling back to 1200-byte datagrams).
    #[tokio::test]
    async fn bulk_on_loopback_settles_on_the_largest_datagrams() {
        let (_proxy, proxy_side, laptop_side) = loopback_connection().await;
        let bulk = vec![0; 32 << 20];
        let (received, ()) = tokio::join!(
            async {
                let (_, mut recv) = proxy_side.accept_bi().await.expect("a stream");
                recv.read_to_end(bulk.len()).await.expect("the bulk").len()
            },
            async {
                let (mut send, _) = laptop_side.open_bi().await.expect("a stream");
                send.write_all(&bulk).await.expect("sent");
                send.finish().expect("finished");
                send.stopped().await.expect("read to the end");
            },
        );

        assert_eq!(received, bulk.len());
        for (side, connection) in [("laptop", &laptop_side), ("proxy", &proxy_side)] {
            let path = connection.stats().path;
            assert_eq!(path.black_holes_detected, 0, "{side}: {path:?}");
            assert_eq!(path.current_mtu, MTU_UPPER_BOUND, "{side}: {path:?}");
        }
    }
}
