//! The tunnel through the API server: where the laptop cannot reach the proxy pod (an isolated
//! cluster network, as on real clusters) the intercept rides a port-forward, and a cut
//! port-forward does not cut the session or the requests in flight.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};

use super::support::http::{connect, pattern, LaptopApp, INTERCEPT};
use super::support::{Czctl, Setup, CZCTL_DEADLINE};

/// The line czctl printed about the tunnel's carrier.
fn tunnel_line(czctl: &Czctl) -> &str {
    czctl
        .seen
        .iter()
        .find(|line| line.contains("tunnel connected"))
        .unwrap_or_else(|| panic!("no tunnel line in {:?}", czctl.seen))
}

/// The session's proxy pod's IP.
async fn proxy_ip(setup: &Setup) -> IpAddr {
    setup.proxy_pods().await[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("the proxy pod's IP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_intercept_rides_a_port_forward_when_pods_are_unreachable() {
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    let proxy = proxy_ip(&setup).await;
    assert!(
        tokio::net::TcpStream::connect((proxy, 9901)).await.is_err(),
        "the test reached the proxy pod at {proxy}: the network is not isolated"
    );
    let line = tunnel_line(&czctl);
    assert!(
        line.contains("port-forward") && line.contains("direct UDP did not answer"),
        "{line}"
    );
    setup
        .laptop_answers("a request with the header to reach the laptop over the port-forward")
        .await;
    setup.stop_cleanly(czctl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_keeps_direct_udp_when_the_proxy_pod_is_reachable() {
    let setup = Setup::start().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    let line = tunnel_line(&czctl);
    assert!(
        line.contains("direct UDP to") && line.contains("answered within"),
        "{line}"
    );
    setup
        .laptop_answers("a request with the header to reach the laptop over UDP")
        .await;
    setup.stop_cleanly(czctl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_port_forward_does_not_cut_a_download_in_flight() {
    const SIZE: usize = 64 * 1024 * 1024;
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let mut czctl = setup
        .intercept(laptop.port, &["--tunnel", "port-forward"])
        .await;
    let mut sender = connect(&setup.service_address)
        .await
        .expect("a connection to the Service");
    let request = Request::get(format!("/bytes/{SIZE}"))
        .header("host", "echo.demo")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let download = async {
        let response = sender.send_request(request).await.expect("a response");
        assert!(response.status().is_success(), "{response:?}");
        let mut body = response.into_body();
        let (mut received, mut cut) = (0, false);
        while let Some(frame) = body.frame().await {
            let data = frame
                .expect("the body is not cut")
                .into_data()
                .unwrap_or_default();
            assert!(
                data == pattern(received, data.len()),
                "bytes {received}..{} differ from what the laptop sent",
                received + data.len()
            );
            received += data.len();
            if !cut && received >= SIZE / 4 {
                setup.cluster.cut_port_forwards();
                cut = true;
            }
        }
        assert!(cut, "the download ended before a quarter of it arrived");
        received
    };
    let received = tokio::time::timeout(CZCTL_DEADLINE, download)
        .await
        .expect("the download completes in time");
    assert_eq!(received, SIZE, "the whole body arrived");
    let back = czctl.read_until("tunnel back after").await;
    eprintln!("czctl: {back}");
    czctl.signal("INT");
    let (ok, _, stderr) = czctl.finish().await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stderr
            .matches("tunnel carrier lost — reconnecting…")
            .count(),
        1,
        "one warning per break: {stderr}"
    );
    setup.no_leftovers("after czctl stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cut_while_idle_the_next_request_reaches_the_laptop() {
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup
        .intercept(laptop.port, &["--tunnel", "port-forward"])
        .await;
    setup.cluster.cut_port_forwards();
    let answer = super::support::http::answered_by(&setup.service_address, Some(INTERCEPT)).await;
    assert_eq!(
        answer.as_deref(),
        Ok("laptop"),
        "the first request after the cut"
    );
    setup.stop_cleanly(czctl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_port_is_closed_to_the_cluster_network() {
    let setup = Setup::start_isolated().await;
    let laptop = LaptopApp::start(0).await;
    let czctl = setup.intercept(laptop.port, &[]).await;
    let proxy = proxy_ip(&setup).await;
    let inside = |port| setup.cluster.connect_inside(SocketAddr::new(proxy, port));
    assert!(
        inside(9901).await.is_ok(),
        "the proxy pod's admin port from inside the cluster"
    );
    assert!(
        inside(cz_shared::contract::DEFAULT_CARRIER_PORT)
            .await
            .is_err(),
        "another pod reached the proxy's carrier port"
    );
    setup.stop_cleanly(czctl).await;
}
