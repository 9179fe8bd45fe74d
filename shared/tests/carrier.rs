//! The QUIC connection over stream carriers, end to end on TCP loopback: a laptop endpoint on a
//! `StreamSocket`, a proxy endpoint on a `StreamListener`.

use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cz_shared::carrier::{
    stream_endpoint_config, stream_transport_config, StreamListener, StreamSocket, STREAM_PEER,
};
use cz_shared::protocol::SERVER_NAME;
use cz_shared::tls::{Identity, SessionCa};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bytes of the transfer.
const BODY: usize = 64 * 1024 * 1024;

/// Every test is done well within this.
const DEADLINE: Duration = Duration::from_secs(120);

/// The body's byte at `offset`: a pattern that a lost, repeated or reordered chunk breaks.
fn pattern(offset: usize) -> u8 {
    (offset as u64).wrapping_mul(0x9E37_79B9).to_be_bytes()[5] ^ (offset >> 20) as u8
}

/// The proxy's end: a quinn server on a `StreamListener` fed by a TCP listener on loopback,
/// keeping a handle on each accepted connection so a test can cut it.
struct Proxy {
    endpoint: quinn::Endpoint,
    address: SocketAddr,
    accepted: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    async fn start(identity: &Identity) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let listener = StreamListener::new();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            stream_endpoint_config(),
            Some(
                identity
                    .server_config_with(stream_transport_config())
                    .expect("server config"),
            ),
            listener.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let handles = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                stream.set_nodelay(true).expect("nodelay");
                let stream = stream.into_std().expect("std");
                handles
                    .lock()
                    .expect("lock")
                    .push(stream.try_clone().expect("clone"));
                listener.add(TcpStream::from_std(stream).expect("tokio"), ());
            }
        });
        Self {
            endpoint,
            address,
            accepted,
        }
    }

    /// Cuts every carrier accepted so far, in both directions.
    fn cut_carriers(&self) {
        for stream in self.accepted.lock().expect("lock").drain(..) {
            stream.shutdown(Shutdown::Both).expect("shutdown");
        }
    }

    /// Accepts one laptop and sends it the body on the stream it opens.
    async fn serve_body(&self) -> Result<(), String> {
        let incoming = self.endpoint.accept().await.ok_or("endpoint closed")?;
        let connection = incoming.await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        recv.read_exact(&mut [0]).await.map_err(|e| e.to_string())?;
        let chunk: Vec<u8> = (0..BODY).map(pattern).collect();
        send.write_all(&chunk).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        // Until the laptop has everything and closes.
        connection.closed().await;
        Ok(())
    }
}

/// A carrier to `proxy`: a new TCP connection as a `StreamSocket`.
async fn carrier(proxy: SocketAddr) -> (Arc<StreamSocket>, CancellationToken) {
    let stream = TcpStream::connect(proxy).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    StreamSocket::new(stream)
}

/// The laptop's endpoint on a first carrier, and that carrier's lost token.
async fn laptop(proxy: SocketAddr) -> (quinn::Endpoint, CancellationToken) {
    let (socket, lost) = carrier(proxy).await;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        stream_endpoint_config(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("endpoint");
    (endpoint, lost)
}

/// Reads the body, checking every byte; calls `halfway` once, after a quarter of it.
async fn read_body(connection: &quinn::Connection, halfway: impl FnOnce()) {
    let (mut send, mut recv) = connection.open_bi().await.expect("open");
    send.write_all(&[1]).await.expect("ask");
    let mut halfway = Some(halfway);
    let mut offset = 0;
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = recv.read(&mut buffer).await.expect("read");
        let Some(read) = read else { break };
        for (index, byte) in buffer[..read].iter().enumerate() {
            assert_eq!(*byte, pattern(offset + index), "byte {}", offset + index);
        }
        offset += read;
        if offset >= BODY / 4 {
            if let Some(halfway) = halfway.take() {
                halfway();
            }
        }
    }
    assert_eq!(offset, BODY, "the whole body, byte-exact");
    connection.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_cross_a_stream_carrier_byte_exact() {
    let session = SessionCa::generate().expect("CA");
    let proxy = Proxy::start(&session.issue_proxy().expect("proxy")).await;
    let (laptop, _lost) = laptop(proxy.address).await;
    let client_config = session
        .issue_client()
        .expect("laptop")
        .client_config_with(stream_transport_config())
        .expect("client config");
    let transfer = async {
        let connection = laptop
            .connect_with(client_config, STREAM_PEER, SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        read_body(&connection, || {}).await;
    };
    let (served, ()) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(proxy.serve_body(), transfer)
    })
    .await
    .expect("the transfer finishes");
    served.expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_survives_a_cut_carrier_by_migrating_to_a_new_one() {
    let session = SessionCa::generate().expect("CA");
    let proxy = Proxy::start(&session.issue_proxy().expect("proxy")).await;
    let (laptop, lost) = laptop(proxy.address).await;
    let client_config = session
        .issue_client()
        .expect("laptop")
        .client_config_with(stream_transport_config())
        .expect("client config");
    let connection = laptop
        .connect_with(client_config, STREAM_PEER, SERVER_NAME)
        .expect("connect");
    let transfer = async {
        let connection = connection.await.expect("handshake");
        read_body(&connection, || proxy.cut_carriers()).await;
    };
    let migrate = async {
        lost.cancelled().await;
        let (socket, _lost) = carrier(proxy.address).await;
        laptop.rebind_abstract(socket).expect("rebind");
    };
    // The proxy serves one connection: the body (four times the connection's flow-control
    // window) can only complete if that connection continued on the new carrier.
    let (served, (), ()) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(proxy.serve_body(), transfer, migrate)
    })
    .await
    .expect("the transfer finishes on the new carrier");
    served.expect("the proxy served the whole body on one connection");
}

#[tokio::test]
async fn a_client_of_another_ca_is_refused_on_a_stream_carrier() {
    let session = SessionCa::generate().expect("CA");
    let stranger = SessionCa::generate().expect("CA");
    let proxy = Proxy::start(&session.issue_proxy().expect("proxy")).await;
    let (laptop, _lost) = laptop(proxy.address).await;
    let mut intruder = stranger.issue_client().expect("intruder");
    intruder.ca_cert_pem = session.certificate_pem().to_owned();
    let client_config = intruder
        .client_config_with(stream_transport_config())
        .expect("client config");
    let accepted = async {
        let incoming = proxy
            .endpoint
            .accept()
            .await
            .expect("an incoming connection");
        incoming.await.map(drop)
    };
    let connected = async {
        let connection = laptop
            .connect_with(client_config, STREAM_PEER, SERVER_NAME)
            .expect("connect")
            .await?;
        // The client finishes its side first; the refusal arrives as the connection's close.
        Err::<(), _>(connection.closed().await)
    };
    let (accepted, connected) =
        tokio::time::timeout(DEADLINE, async { tokio::join!(accepted, connected) })
            .await
            .expect("the handshake ends, one way or the other");
    accepted.expect_err("the proxy refuses a certificate its session did not issue");
    connected.expect_err("and the laptop learns it");
}
