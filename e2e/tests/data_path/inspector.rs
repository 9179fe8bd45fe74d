//! The request inspector on the real data path (proxy, QUIC tunnel, czctl, app): capture passes
//! every byte on unchanged while keeping only the cap, and records HTTP/2 requests, streamed
//! gRPC-style bodies (listed while open, then in full) and WebSocket upgrades for what they are.

use bytes::Bytes;
use cz_e2e::client::{get, http1, http2};
use cz_e2e::{within, PROMPTLY};
use czctl::inspect::{Exchange, Inspector, InspectorConfig};
use futures_util::SinkExt;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{intercept, Intercept};

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");
/// The cap in these tests: far below the bodies sent.
const CAP: usize = 4096;

/// An intercept whose tunnel is inspected with a cap of [`CAP`]; the inspector and its stream.
async fn inspected() -> (Intercept, Inspector, broadcast::Receiver<Arc<Exchange>>) {
    let setup = intercept(&[]).await;
    let mut config = InspectorConfig::new(setup.laptop.addr);
    config.body_limit = CAP;
    let inspector = Inspector::new(config);
    setup
        .tunnel
        .inspect(&inspector)
        .expect("the tunnel's first inspector");
    assert!(
        setup.tunnel.inspect(&inspector).is_err(),
        "a tunnel has one inspector"
    );
    let captured = inspector.subscribe();
    (setup, inspector, captured)
}

async fn next(captured: &mut broadcast::Receiver<Arc<Exchange>>) -> Arc<Exchange> {
    within(PROMPTLY, "the next captured exchange", captured.recv())
        .await
        .expect("an exchange")
}

/// The next record of a finished exchange (skipping those of streams still open).
async fn next_finished(captured: &mut broadcast::Receiver<Arc<Exchange>>) -> Arc<Exchange> {
    loop {
        let exchange = next(captured).await;
        if !exchange.in_progress {
            return exchange;
        }
    }
}

#[tokio::test]
async fn capture_passes_a_large_body_on_unchanged_and_keeps_only_the_cap() {
    let (setup, inspector, mut captured) = inspected().await;
    let body: Bytes = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut connection = http1(setup.proxy.http).await;
    let request = Request::post("http://svc.test/echo")
        .header(INTERCEPT.0, INTERCEPT.1)
        .header("authorization", "Bearer s3cret")
        .body(Full::new(body.clone()))
        .expect("a request");
    let response = within(PROMPTLY, "the echo", connection.send_request(request))
        .await
        .expect("a response");
    let echoed = within(PROMPTLY, "the echoed body", response.into_body().collect())
        .await
        .expect("the whole body")
        .to_bytes();
    assert!(echoed == body, "every byte passes unchanged");

    // The echo streams back (chunked): listed while open, then in full.
    let exchange = next_finished(&mut captured).await;
    assert_eq!(exchange.path(), "/echo");
    assert_eq!(exchange.request.body.size, 1 << 20);
    assert_eq!(exchange.request.body.kept, body.slice(..CAP));
    let response = exchange.response.as_ref().expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body.size, 1 << 20);
    assert_eq!(response.body.kept, body.slice(..CAP));
    assert_eq!(response.headers.get_str("x-served-by"), Some("laptop"));
    assert_eq!(
        exchange.request.headers.get_str("authorization"),
        Some("Bearer s3cret"),
        "kept as sent; only views mask it"
    );
    let har = inspector.har(inspector.exchanges().iter().map(|e| &**e));
    assert!(!har.to_string().contains("s3cret"));
}

#[tokio::test]
async fn http2_streams_and_upgrades_are_recorded_for_what_they_are() {
    let (setup, _inspector, mut captured) = inspected().await;
    // HTTP/2, a gRPC-style body with trailers.
    let mut connection = http2(setup.proxy.http).await;
    let request = Request::post("http://svc.test/echo")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x02hi")))
        .expect("a request");
    let response = connection.send_request(request).await.expect("a response");
    let _ = response.into_body().collect().await.expect("the body");
    // Listed as soon as its response head is sent, then again once it ended.
    let open = next(&mut captured).await;
    assert!(open.in_progress && open.streaming());
    let grpc = next(&mut captured).await;
    assert!(!grpc.in_progress);
    assert_eq!(grpc.id, open.id);
    assert_eq!(grpc.request.version, Version::HTTP_2);
    assert_eq!(&grpc.request.body.kept[..], b"\x00\x00\x00\x00\x02hi");
    assert!(grpc.streaming(), "a gRPC response streams");

    // A WebSocket: recorded once switched, as upgraded.
    let stream = TcpStream::connect(setup.proxy.http).await.expect("connect");
    let mut request = "ws://svc.test/ws".into_client_request().expect("a request");
    request
        .headers_mut()
        .insert(INTERCEPT.0, INTERCEPT.1.parse().expect("a value"));
    let (mut socket, _) = within(
        PROMPTLY,
        "the upgrade",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("upgraded");
    socket.send(Message::text("hello")).await.expect("send");
    let upgraded = next(&mut captured).await;
    assert!(upgraded.upgraded);
    assert_eq!(
        upgraded.status(),
        Some(http::StatusCode::SWITCHING_PROTOCOLS)
    );
    assert_eq!(upgraded.path(), "/ws");

    // Requests not intercepted are not the laptop's, so not captured.
    let cluster = get(setup.proxy.http, "/other", &[]).await;
    assert_eq!(cluster.served_by(), "cluster");
    let intercepted = get(setup.proxy.http, "/mine", &[INTERCEPT]).await;
    assert_eq!(intercepted.served_by(), "laptop");
    assert_eq!(next(&mut captured).await.path(), "/mine");
}
