//! The proxy bounded against hostile clients: connection caps, the time from accept to a request
//! head, idle timeouts, and error answers a client reads even while it is still sending.

use std::sync::Arc;

use bytes::Bytes;
use cz_e2e::client::get;
use cz_e2e::{
    app::text_body, eventually, init_tracing, metric, proxy_config, spawn_app, spawn_proxy, within,
    Handler, Session, PROMPTLY,
};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::failures::{echo_through, spawn_tcp_echo};
use crate::{intercept, intercept_with};

/// Waits until the proxy ends `stream` (a close or a reset), failing with `what` if it does not.
async fn ended_by_proxy(stream: &mut TcpStream, what: &str) {
    let mut discard = [0u8; 4096];
    within(PROMPTLY, what, async {
        while let Ok(1..) = stream.read(&mut discard).await {}
    })
    .await;
}

/// Connects to `addr` and sends `bytes`. A connection the proxy refuses is reset as soon as it
/// is accepted: connecting or writing may already fail, or reading will.
async fn try_connect_sending(
    addr: std::net::SocketAddr,
    bytes: &[u8],
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    Ok(stream)
}

/// Connects to `addr` and sends `bytes`, expecting the proxy to admit the connection.
async fn connect_sending(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    try_connect_sending(addr, bytes)
        .await
        .expect("connect and send")
}

/// Whether a connection the proxy accepted at the TCP level is served: a request on it gets any
/// answer at all (a refused one is reset or closed without one).
async fn is_served(addr: std::net::SocketAddr) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n";
    let Ok(mut stream) = try_connect_sending(addr, request).await else {
        return false;
    };
    let mut answer = [0u8; 8];
    let read = within(PROMPTLY, "an answer or a refusal", stream.read(&mut answer)).await;
    matches!(read, Ok(8..)) && answer.starts_with(b"HTTP/1.1")
}

#[tokio::test]
async fn a_connection_without_a_complete_head_is_closed_at_the_header_timeout() {
    let setup = intercept(&["--header-read-timeout=1s"]).await;
    let partial: [(&str, &[u8]); 3] = [
        ("a connection that sent nothing", b""),
        ("a partial HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        ("a partial HTTP/1 head", b"GET / HTTP/1.1\r\nhost: svc\r\n"),
    ];
    for (what, bytes) in partial {
        let mut stream = connect_sending(setup.proxy.http, bytes).await;
        ended_by_proxy(&mut stream, &format!("the proxy to close {what}")).await;
    }
}

#[tokio::test]
async fn an_http2_connection_that_starts_no_request_is_closed() {
    let setup = intercept(&["--header-read-timeout=1s"]).await;
    // Never a request: only the preface, settings and pings.
    let stream = TcpStream::connect(setup.proxy.http).await.expect("connect");
    let (_sender, connection) =
        http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    within(
        PROMPTLY,
        "the proxy to close an HTTP/2 connection that sent no request",
        connection,
    )
    .await
    .ok();
    // One request, then idle.
    let stream = TcpStream::connect(setup.proxy.http).await.expect("connect");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get("http://svc.test/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert!(response.status().is_success(), "{:?}", response.status());
    within(
        PROMPTLY,
        "the proxy to close an idle HTTP/2 connection",
        connection,
    )
    .await
    .expect("connection task")
    .ok();
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_counted_and_the_others_served() {
    let setup = intercept(&["--max-connections=3"]).await;
    let (http, admin) = (setup.proxy.http, setup.proxy.admin);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_sending(http, b"GET / HTTP/1.1\r\n").await);
    }
    let open = r#"cz_proxy_connections{listener="Http"}"#;
    eventually("3 open connections", PROMPTLY, || async {
        (metric(admin, open).await == 3.0).then_some(())
    })
    .await;
    // Accepted by the kernel, then reset by the proxy without an answer.
    assert!(!is_served(http).await, "a fourth connection was served");
    let refused = r#"cz_proxy_connections_refused_total{listener="Http"}"#;
    assert_eq!(metric(admin, refused).await, 1.0);
    drop(held.pop());
    eventually(
        "a freed place to serve a new connection",
        PROMPTLY,
        || async { is_served(http).await.then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn pass_through_connections_are_capped_and_closed_when_idle() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let flags = [
        "--max-passthrough-connections=1",
        "--passthrough-idle-timeout=1s",
    ];
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &flags),
        &session.proxy,
        0,
        &[spawn_tcp_echo().await],
    )
    .await;
    let port = proxy.passthrough[0];
    let mut first = TcpStream::connect(port).await.expect("connect");
    echo_through(&mut first, b"first").await;
    if let Ok(mut second) = try_connect_sending(port, b"second").await {
        ended_by_proxy(&mut second, "the proxy to refuse a second connection").await;
    }
    let refused = r#"cz_proxy_connections_refused_total{listener="Passthrough"}"#;
    assert_eq!(metric(proxy.admin, refused).await, 1.0);
    ended_by_proxy(
        &mut first,
        "the proxy to close an idle pass-through connection",
    )
    .await;
}

#[tokio::test]
async fn error_answers_reach_a_client_that_is_still_sending() {
    let setup = intercept(&[]).await;
    let oversized = format!(
        "GET / HTTP/1.1\r\nhost: svc\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let malformed = format!(
        "GET / HTTP/1.1\r\nhost: svc\r\nno colon here\r\n\r\n{}",
        "b".repeat(200 * 1024)
    );
    // Without a lingering close the unread bytes make the kernel reset the connection, which
    // destroys the answer in the client's receive queue in most runs: a few tries show it.
    for _ in 0..5 {
        for (sent, status) in [(&oversized, "431"), (&malformed, "400")] {
            let stream = TcpStream::connect(setup.proxy.http).await.expect("connect");
            let (mut read, mut write) = stream.into_split();
            let sent = sent.clone();
            let writer = tokio::spawn(async move { write.write_all(sent.as_bytes()).await });
            let mut answer = Vec::new();
            let read = within(PROMPTLY, "the error answer", read.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "expected {status}, got {read:?}: {answer:?}"
            );
            writer.abort();
        }
    }
}

#[tokio::test]
async fn the_admin_port_is_capped_and_has_a_header_timeout() {
    let setup = intercept(&[]).await;
    let admin = setup.proxy.admin;
    let mut held = Vec::new();
    for _ in 0..cz_proxy::admin::MAX_CONNECTIONS {
        held.push(connect_sending(admin, b"GET /healthz HTTP/1.1\r\n").await);
    }
    // The kernel queues connections in order, so this one comes after the ones held.
    assert!(
        !is_served(admin).await,
        "a connection beyond the cap was served"
    );
    ended_by_proxy(&mut held[0], "the admin port to close a slow head").await;
    eventually("the admin port to serve again", PROMPTLY, || async {
        is_served(admin).await.then_some(())
    })
    .await;
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);
}

#[tokio::test]
async fn the_admin_port_refuses_a_head_beyond_its_small_buffer() {
    let setup = intercept(&[]).await;
    let admin = setup.proxy.admin;
    let big_head = format!(
        "GET /healthz HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let mut stream = connect_sending(admin, big_head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = within(PROMPTLY, "the 431", stream.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// An app that reads a request's whole body before it answers, as one that needs the body does
/// (an app that answers before the body's end gets its answer through, as it should).
fn reads_the_body_first(name: &'static str) -> Handler {
    Arc::new(move |request: Request<Incoming>| {
        Box::pin(async move {
            let read = request.into_body().collect().await;
            Response::new(text_body(format!("{name} read the body: {}", read.is_ok())))
        })
    })
}

#[tokio::test]
async fn a_request_body_that_breaks_off_gets_400_on_both_routes() {
    let cluster = spawn_app("cluster", Some(reads_the_body_first("cluster"))).await;
    let laptop = spawn_app("laptop", Some(reads_the_body_first("laptop"))).await;
    let setup = intercept_with(cluster, laptop, &[]).await;
    for route in ["", "x-c6o-intercept: yes\r\n"] {
        let request = format!(
            "POST / HTTP/1.1\r\nhost: svc\r\n{route}transfer-encoding: chunked\r\n\r\n10\r\nabc"
        );
        let mut stream = connect_sending(setup.proxy.http, request.as_bytes()).await;
        stream.shutdown().await.expect("half-close");
        let mut answer = Vec::new();
        let _ = within(PROMPTLY, "the 400", stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("request-body-incomplete"),
            "route {route:?}: {answer}"
        );
    }
}
