//! The port-forward carrier of a whole proxy, in-process: its TCP port is on 127.0.0.1 while the
//! others are on every address, and a laptop on it is hello'd and attached as on the UDP port.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cz_proxy::{run, Config, Listeners};
use cz_shared::carrier::{
    stream_endpoint_config, stream_transport_config, StreamSocket, STREAM_PEER,
};
use cz_shared::contract::{ProxyState, STATE_PATH};
use cz_shared::hello::laptop_hello;
use cz_shared::protocol::{Hello, SERVER_NAME};
use cz_shared::tls::SessionCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The whole test is done well within this.
const DEADLINE: Duration = Duration::from_secs(30);

/// A proxy on ephemeral ports of every address, as in a pod.
fn config() -> Config {
    Config::try_parse_from([
        "cz-proxy",
        "--http-port=0",
        "--upstream=127.0.0.1:1",
        "--tunnel-port=0",
        "--carrier-port=0",
        "--control-port=0",
        "--admin-port=0",
        "--worker-threads=1",
    ])
    .expect("valid test flags")
}

/// The admin port's state, read with a bare HTTP/1.0 request.
async fn state(admin: std::net::SocketAddr) -> ProxyState {
    let mut stream = TcpStream::connect(admin).await.expect("admin port");
    let request = format!("GET {STATE_PATH} HTTP/1.0\r\nHost: proxy\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    ProxyState::from_json(&response[body_at..]).expect("a state")
}

#[tokio::test]
async fn a_laptop_on_the_loopback_carrier_port_is_hello_d_and_attached() {
    let config = config();
    let listeners = Listeners::bind(&config).await.expect("bind");
    let carrier = listeners.carrier.local_addr().expect("address");
    let admin = listeners.admin.local_addr().expect("address");
    assert_eq!(
        carrier.ip().to_string(),
        "127.0.0.1",
        "on the loopback only"
    );
    assert_eq!(
        admin.ip().to_string(),
        "0.0.0.0",
        "the others on every address"
    );
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()));
    // A process standing in for a pod on a shared host binds everything on its own address.
    let mut shared = config.clone();
    shared.bind_ip = [127, 0, 0, 2].into();
    let stand_in = Listeners::bind(&shared).await.expect("bind");
    assert_eq!(
        stand_in
            .carrier
            .local_addr()
            .expect("address")
            .ip()
            .to_string(),
        "127.0.0.2"
    );
    drop(stand_in);

    let session = SessionCa::generate().expect("CA");
    let shutdown = CancellationToken::new();
    let proxy = tokio::spawn(run(
        config,
        session.issue_proxy().expect("proxy"),
        listeners,
        shutdown.clone(),
    ));

    let laptop = async {
        let stream = TcpStream::connect(carrier).await.expect("carrier port");
        stream.set_nodelay(true).expect("nodelay");
        let (socket, _lost) = StreamSocket::new(stream);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            stream_endpoint_config(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint");
        let client_config = session
            .issue_client()
            .expect("laptop")
            .client_config_with(stream_transport_config())
            .expect("client config");
        let connection = endpoint
            .connect_with(client_config, STREAM_PEER, SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let proxy_hello = laptop_hello(&connection, &Hello::new("test"))
            .await
            .expect("the proxy answers our hello");
        assert_eq!(proxy_hello.software, env!("CARGO_PKG_VERSION"));
        // Attached shortly after its hello: polled until then, within the deadline.
        while !state(admin).await.laptop_connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connection
    };
    let connection = tokio::time::timeout(DEADLINE, laptop)
        .await
        .expect("attached in time");
    connection.close(0u32.into(), b"done");
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, proxy)
        .await
        .expect("the proxy stops")
        .expect("joins")
        .expect("runs");
}
