//! Tests of the tunnel's UDP endpoints with real session identities: a proxy and a laptop
//! connected on 127.0.0.1 by [`udp::endpoint`] with [`tls`]'s configurations.

use std::net::{Ipv4Addr, UdpSocket};

use crate::protocol::SERVER_NAME;
use crate::tls::SessionCa;
use crate::udp::{self, MTU_UPPER_BOUND};

/// A proxy endpoint on 127.0.0.1 and a laptop's connection to it, both made by [`udp::endpoint`]
/// with one session's identities: the proxy's endpoint, its side and the laptop's side.
pub(crate) async fn connection() -> (quinn::Endpoint, quinn::Connection, quinn::Connection) {
    let loopback = || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback socket");
    let session = SessionCa::generate().expect("CA");
    let proxy_identity = session.issue_proxy().expect("proxy identity");
    let laptop_identity = session.issue_client().expect("laptop identity");
    let server = proxy_identity.server_config().expect("server config");
    let proxy = udp::endpoint(loopback(), Some(server)).expect("proxy endpoint");
    let laptop = udp::endpoint(loopback(), None).expect("laptop endpoint");
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
            let connecting = laptop.connect_with(client, address, SERVER_NAME);
            connecting.expect("connect").await.expect("connected")
        },
    );
    (proxy, accepted, dialled)
}

/// Loopback carries 65,536-byte packets: after a bulk transfer both ends send the largest
/// datagrams discovery tries, and no full batch of them was refused on the way (which black-hole
/// detection would have answered by falling back to 1200-byte datagrams).
#[tokio::test]
async fn bulk_on_loopback_settles_on_the_largest_datagrams() {
    let (_proxy, proxy_side, laptop_side) = connection().await;
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
