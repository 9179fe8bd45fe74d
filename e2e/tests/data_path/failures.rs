//! Things going wrong: no laptop, no local app, a stranger's certificate, a restarted proxy, bad
//! HTTP; and the proxy's other duties: raw TCP ports, admin endpoints, draining on SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cz_e2e::app::{text_body, Handler};
use cz_e2e::client::get;
use cz_e2e::{
    closed_port, eventually, init_tracing, metric, proxy_config, spawn_app, spawn_proxy,
    start_tunnel, within, Session, PROMPTLY,
};
use czctl::{SessionCa, TunnelError, TunnelEvent};
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::intercept_with;

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

#[tokio::test]
async fn without_a_laptop_intercepted_requests_wait_the_grace_period_then_get_503() {
    const GRACE: Duration = Duration::from_secs(2);
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=2s"]),
        &session.proxy,
        0,
        &[],
    )
    .await;

    let started = Instant::now();
    let waiting = tokio::spawn(get(proxy.http, "/", &[INTERCEPT]));
    wait_until_held(proxy.admin).await;
    assert_eq!(
        within(
            PROMPTLY,
            "a request without the header answered",
            get(proxy.http, "/", &[])
        )
        .await
        .served_by(),
        "cluster",
        "other requests are unaffected while one waits"
    );
    let answer = within(PROMPTLY, "the waiting request answered", waiting)
        .await
        .expect("task");
    let waited = started.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["x-cz-proxy-error"], "tunnel-disconnected");
    assert!(
        answer.body.contains("intercept session is disconnected"),
        "{}",
        answer.body
    );
    assert!(
        waited >= GRACE,
        "answered after {waited:?}, without waiting the {GRACE:?} grace period"
    );
}

#[tokio::test]
async fn a_request_waiting_for_the_laptop_is_served_once_it_connects() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    // The grace outlasts the test's own patience: only the laptop connecting can end the wait.
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=10m"]),
        &session.proxy,
        0,
        &[],
    )
    .await;
    let waiting = tokio::spawn(get(proxy.http, "/", &[INTERCEPT]));
    wait_until_held(proxy.admin).await;
    let _tunnel = start_tunnel(proxy.tunnel, &session.laptop, laptop.addr);
    let answer = within(PROMPTLY, "the held request served by the laptop", waiting)
        .await
        .expect("task");
    assert_eq!(answer.served_by(), "laptop");
}

/// Waits until the proxy holds one intercepted request, waiting for a laptop.
async fn wait_until_held(admin: std::net::SocketAddr) {
    eventually(
        "the proxy to hold the request for a laptop",
        PROMPTLY,
        || async { (metric(admin, "cz_proxy_tunnel_waiting_requests").await == 1.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn closed_local_port_gives_502_naming_it_and_warns_once() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let closed = closed_port();
    let local = closed.addr;
    let proxy = spawn_proxy(proxy_config(cluster.addr, &[]), &session.proxy, 0, &[]).await;
    let tunnel = start_tunnel(proxy.tunnel, &session.laptop, local);
    let mut events = tunnel.events();
    tunnel.connected().await.expect("connected");

    for _ in 0..3 {
        let answer = get(proxy.http, "/", &[INTERCEPT]).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.headers["x-cz-proxy-error"], "local-app-unreachable");
        assert!(
            answer
                .body
                .contains(&format!("start your app on port {}", local.port())),
            "{}",
            answer.body
        );
    }
    // The app comes up on that port: requests flow again, and that is said once too.
    let _app = cz_e2e::app::spawn_app_on(closed.open(), "laptop", None);
    assert_eq!(
        get(proxy.http, "/", &[INTERCEPT]).await.served_by(),
        "laptop"
    );

    let mut unreachable = 0;
    let mut reachable = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            TunnelEvent::LocalAppUnreachable { address, .. } => {
                assert_eq!(address, local);
                unreachable += 1;
            }
            TunnelEvent::LocalAppReachable { .. } => reachable += 1,
            _ => {}
        }
    }
    assert_eq!(
        (unreachable, reachable),
        (1, 1),
        "one warning per outage, not one per request"
    );
}

#[tokio::test]
async fn certificates_of_another_session_are_refused_both_ways() {
    init_tracing();
    let session = Session::new();
    let stranger = SessionCa::generate().expect("CA");
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    let intruder_app = spawn_app("intruder", None).await;
    let config = proxy_config(cluster.addr, &["--reconnect-grace=300ms"]);

    // The proxy refuses a client certificate of another CA, even one that trusts this proxy.
    let proxy = spawn_proxy(config.clone(), &session.proxy, 0, &[]).await;
    let mut intruder = stranger.issue_client().expect("identity");
    intruder.ca_cert_pem = session.ca.certificate_pem().to_owned();
    let intruder_tunnel = start_tunnel(proxy.tunnel, &intruder, intruder_app.addr);
    let error = within(
        PROMPTLY,
        "the intruder's verdict",
        intruder_tunnel.connected(),
    )
    .await
    .expect_err("the proxy refuses the intruder");
    assert!(matches!(*error, TunnelError::Rejected { .. }), "{error}");
    assert!(
        error.to_string().contains("czctl session close"),
        "says what to do: {error}"
    );
    let answer = get(proxy.http, "/", &[INTERCEPT]).await;
    assert_eq!(
        (answer.status, answer.served_by()),
        (StatusCode::SERVICE_UNAVAILABLE, "proxy"),
        "no intruder got the traffic"
    );

    // The laptop refuses a proxy of another session, even one that would accept the laptop.
    let mut impostor = stranger.issue_proxy().expect("identity");
    impostor.ca_cert_pem = session.ca.certificate_pem().to_owned();
    let impostor_proxy = spawn_proxy(config, &impostor, 0, &[]).await;
    let tunnel = start_tunnel(impostor_proxy.tunnel, &session.laptop, laptop.addr);
    let error = within(PROMPTLY, "the laptop's verdict", tunnel.connected())
        .await
        .expect_err("the laptop refuses the impostor");
    assert!(matches!(*error, TunnelError::Rejected { .. }), "{error}");
    let answer = get(impostor_proxy.http, "/", &[INTERCEPT]).await;
    assert_eq!(
        (answer.status, answer.served_by()),
        (StatusCode::SERVICE_UNAVAILABLE, "proxy"),
        "the impostor got no laptop to send traffic to"
    );
    drop((intruder_tunnel, tunnel));
}

#[tokio::test]
async fn laptop_reconnects_after_the_proxy_restarts() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    let config = proxy_config(cluster.addr, &[]);
    let proxy = spawn_proxy(config.clone(), &session.proxy, 0, &[]).await;
    let tunnel_port = proxy.tunnel.port();
    let tunnel = start_tunnel(proxy.tunnel, &session.laptop, laptop.addr);
    let mut events = tunnel.events();
    tunnel.connected().await.expect("connected");
    assert_eq!(
        get(proxy.http, "/", &[INTERCEPT]).await.served_by(),
        "laptop"
    );

    proxy.stop().await;
    let restarted = spawn_proxy(config, &session.proxy, tunnel_port, &[]).await;
    let mut saw_disconnect = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Ok(TunnelEvent::Disconnected { .. })) => saw_disconnect = true,
            Ok(Ok(TunnelEvent::Connected { .. })) if saw_disconnect => break,
            Ok(Ok(_)) => {}
            other => panic!("no reconnect: {other:?}"),
        }
    }
    assert_eq!(
        get(restarted.http, "/", &[INTERCEPT]).await.served_by(),
        "laptop"
    );
}

#[tokio::test]
async fn other_ports_pass_through_as_raw_tcp() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &[]),
        &session.proxy,
        0,
        &[spawn_tcp_echo().await],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.passthrough[0])
        .await
        .expect("connect");
    echo_through(&mut stream, b"\x00raw bytes, not HTTP\xff").await;
}

/// A raw TCP server that sends back whatever it receives; returns its address.
pub(crate) async fn spawn_tcp_echo() -> std::net::SocketAddr {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    echo_addr
}

/// Sends raw bytes on a new connection and returns what comes back until the proxy closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the proxy closes the connection")
        .ok();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn bad_requests_are_refused_without_disturbing_other_connections() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let config = proxy_config(
        cluster.addr,
        &["--header-read-timeout=1s", "--max-header-bytes=16384"],
    );
    let proxy = spawn_proxy(config, &session.proxy, 0, &[]).await;
    let mut steady = cz_e2e::client::http1::<http_body_util::Empty<bytes::Bytes>>(proxy.http).await;
    let steady_get = || {
        http::Request::get("/")
            .header("host", "svc.test")
            .body(http_body_util::Empty::new())
            .expect("request")
    };
    assert_eq!(
        steady
            .send_request(steady_get())
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );

    let malformed = raw_exchange(proxy.http, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed:?}");
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: svc\r\nx-big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let oversized = raw_exchange(proxy.http, huge.as_bytes()).await;
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized:?}");
    // Headers that never finish: the connection is cut by the read timeout, while the steady
    // connection keeps being served.
    let started = std::time::Instant::now();
    let slow = tokio::spawn(raw_exchange(proxy.http, b"GET / HTTP/1.1\r\nhost: svc\r\n"));
    while !slow.is_finished() {
        steady
            .ready()
            .await
            .expect("the steady connection is still open");
        assert_eq!(
            steady
                .send_request(steady_get())
                .await
                .expect("response")
                .status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = slow.await.expect("task");
    assert!(!slow.starts_with("HTTP/1.1 200"), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        steady
            .send_request(steady_get())
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_port_reports_health_readiness_and_metrics() {
    let setup = crate::intercept(&[]).await;
    get(setup.proxy.http, "/", &[INTERCEPT]).await;
    get(setup.proxy.http, "/", &[]).await;
    let admin = setup.proxy.admin;
    assert_eq!(get(admin, "/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(get(admin, "/readyz", &[]).await.status, StatusCode::OK);
    let metrics = get(admin, "/metrics", &[]).await.body;
    for line in [
        r#"cz_proxy_requests_total{route="Tunnel",status="200"} 1"#,
        r#"cz_proxy_requests_total{route="Upstream",status="200"} 1"#,
        "cz_proxy_tunnel_connected 1",
        "cz_proxy_tunnel_active_streams 0",
        r#"cz_proxy_request_duration_seconds_count{route="Tunnel"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_requests() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handler: Handler = {
        let (arrived, release) = (arrived.clone(), release.clone());
        Arc::new(move |_| {
            let (arrived, release) = (arrived.clone(), release.clone());
            Box::pin(async move {
                arrived.notify_one();
                release.notified().await;
                Response::new(text_body("finished"))
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &[],
    )
    .await;
    let http = setup.proxy.http;
    let in_flight = tokio::spawn(get(http, "/slow", &[INTERCEPT]));
    within(
        PROMPTLY,
        "the request to reach the laptop app",
        arrived.notified(),
    )
    .await;

    setup.proxy.begin_shutdown();
    eventually(
        "the proxy to stop accepting",
        Duration::from_secs(10),
        || async { TcpStream::connect(http).await.is_err().then_some(()) },
    )
    .await;
    assert_eq!(
        get(setup.proxy.admin, "/readyz", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    release.notify_one();
    let answer = within(PROMPTLY, "the drained request answered", in_flight)
        .await
        .expect("task");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "finished")
    );
    setup.proxy.stop().await;
}

#[tokio::test]
async fn unreachable_and_unresponsive_upstreams_get_502_and_504() {
    init_tracing();
    let session = Session::new();
    let closed = closed_port();
    let refused = closed.addr;
    let proxy = spawn_proxy(proxy_config(refused, &[]), &session.proxy, 0, &[]).await;
    let answer = within(PROMPTLY, "an answer", get(proxy.http, "/", &[])).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["x-cz-proxy-error"], "upstream-unreachable");
    assert!(
        answer.body.contains(&refused.to_string()),
        "{}",
        answer.body
    );

    let unresponsive = cz_e2e::Unresponsive::new().await;
    let config = proxy_config(unresponsive.addr, &["--upstream-connect-timeout=500ms"]);
    let proxy = spawn_proxy(config, &session.proxy, 0, &[]).await;
    let answer = within(PROMPTLY, "an answer", get(proxy.http, "/", &[])).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.headers["x-cz-proxy-error"], "upstream-timeout");
    assert!(
        answer.body.contains("did not accept a connection in time"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_local_app_that_drops_the_request_gets_502_local_app_failed() {
    init_tracing();
    // Accepts, reads the request, and hangs up without answering.
    let rude = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let rude_addr = rude.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = rude.accept().await {
            let mut head = [0; 1024];
            let _ = stream.read(&mut head).await;
        }
    });
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(proxy_config(cluster.addr, &[]), &session.proxy, 0, &[]).await;
    let tunnel = start_tunnel(proxy.tunnel, &session.laptop, rude_addr);
    within(PROMPTLY, "the tunnel to connect", tunnel.connected())
        .await
        .expect("connected");
    let answer = within(PROMPTLY, "an answer", get(proxy.http, "/", &[INTERCEPT])).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["x-cz-proxy-error"], "local-app-failed");
    assert!(answer.body.contains("failed to answer"), "{}", answer.body);
}

#[tokio::test]
async fn a_tunnel_lost_before_the_answer_gives_502_tunnel_failed() {
    let arrived = Arc::new(Notify::new());
    let handler: Handler = {
        let arrived = arrived.clone();
        Arc::new(move |_| {
            let arrived = arrived.clone();
            Box::pin(async move {
                arrived.notify_one();
                std::future::pending::<Response<cz_e2e::app::TestBody>>().await
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &["--reconnect-grace=300ms"],
    )
    .await;
    let waiting = tokio::spawn(get(setup.proxy.http, "/", &[INTERCEPT]));
    within(
        PROMPTLY,
        "the request to reach the laptop app",
        arrived.notified(),
    )
    .await;
    within(PROMPTLY, "czctl to close the tunnel", setup.tunnel.close()).await;
    let answer = within(PROMPTLY, "an answer", waiting).await.expect("task");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["x-cz-proxy-error"], "tunnel-failed");
    assert!(
        answer.body.contains("tunnel to the developer's laptop"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn shutdown_drains_open_pass_through_connections() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--drain-timeout=10m"]),
        &session.proxy,
        0,
        &[spawn_tcp_echo().await],
    )
    .await;
    let port = proxy.passthrough[0];
    let mut open = TcpStream::connect(port).await.expect("connect");
    echo_through(&mut open, b"before").await;

    proxy.begin_shutdown();
    eventually(
        "the pass-through port to stop accepting",
        PROMPTLY,
        || async { TcpStream::connect(port).await.is_err().then_some(()) },
    )
    .await;
    echo_through(&mut open, b"while draining").await;
    let mut stopping = tokio::spawn(proxy.stop());
    // Not an ordering sleep: nothing may end the proxy while the connection is open, so any
    // window shows a proxy that stops too early.
    let stopped_early = tokio::time::timeout(Duration::from_millis(500), &mut stopping).await;
    assert!(
        stopped_early.is_err(),
        "the proxy stopped with a pass-through connection open"
    );
    echo_through(&mut open, b"still").await;
    drop(open);
    within(
        PROMPTLY,
        "the proxy to stop once the last connection closed",
        stopping,
    )
    .await
    .expect("proxy task");
}

/// Sends `payload` on a pass-through connection to an echo server and checks it comes back.
pub(crate) async fn echo_through(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.expect("write");
    let mut echoed = vec![0; payload.len()];
    within(PROMPTLY, "the echo", stream.read_exact(&mut echoed))
        .await
        .expect("read");
    assert_eq!(echoed, payload);
}
