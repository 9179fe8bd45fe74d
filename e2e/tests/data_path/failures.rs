//! Things going wrong: no laptop, no local app, a stranger's certificate, a restarted proxy, bad
//! HTTP; and the proxy's other duties: raw TCP ports, admin endpoints, draining on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use cz_e2e::app::{text_body, Handler};
use cz_e2e::client::get;
use cz_e2e::{
    closed_port, eventually, init_tracing, proxy_config, spawn_app, spawn_proxy, start_tunnel,
    Session,
};
use czctl::{SessionCa, TunnelError, TunnelEvent};
use http::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::intercept_with;

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

#[tokio::test]
async fn without_a_laptop_intercepted_requests_wait_briefly_then_get_503() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=300ms"]),
        &session.proxy,
        0,
        &[],
    )
    .await;

    let answer = get(proxy.http, "/", &[INTERCEPT]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["x-cz-proxy-error"], "tunnel-disconnected");
    assert!(
        answer.body.contains("intercept session is disconnected"),
        "{}",
        answer.body
    );
    assert_eq!(
        get(proxy.http, "/", &[]).await.served_by(),
        "cluster",
        "other requests are unaffected"
    );

    // A request that arrives while the laptop is away is served once it (re)connects in time.
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=10s"]),
        &session.proxy,
        0,
        &[],
    )
    .await;
    let waiting = tokio::spawn(get(proxy.http, "/", &[INTERCEPT]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _tunnel = start_tunnel(proxy.tunnel, &session.laptop, laptop.addr);
    assert_eq!(waiting.await.expect("task").served_by(), "laptop");
}

#[tokio::test]
async fn closed_local_port_gives_502_naming_it_and_warns_once() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let local = closed_port().await;
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
    let listener = TcpListener::bind(local)
        .await
        .expect("rebind the local port");
    drop(listener);
    let _app = spawn_app_on(local).await;
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

/// The default app, on a given address.
async fn spawn_app_on(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let handler = cz_e2e::app::echo_handler("laptop");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    })
}

#[tokio::test]
async fn certificates_of_another_session_are_refused_both_ways() {
    init_tracing();
    let session = Session::new();
    let stranger = SessionCa::generate().expect("CA");
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=300ms"]),
        &session.proxy,
        0,
        &[],
    )
    .await;

    // A client certificate from another CA, even one that trusts this session's proxy.
    let mut intruder = stranger.issue_client().expect("identity");
    intruder.ca_cert_pem = session.ca.certificate_pem().to_owned();
    // A laptop of another session, which must not trust this proxy either.
    let other_laptop = stranger.issue_client().expect("identity");
    for identity in [intruder, other_laptop] {
        let tunnel = start_tunnel(proxy.tunnel, &identity, laptop.addr);
        let error = tunnel.connected().await.expect_err("refused");
        assert!(matches!(*error, TunnelError::Rejected { .. }), "{error}");
        assert!(
            error.to_string().contains("czctl session close"),
            "says what to do: {error}"
        );
    }
    let answer = get(proxy.http, "/", &[INTERCEPT]).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no stranger got the traffic"
    );
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
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &[]),
        &session.proxy,
        0,
        &[echo_addr],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.passthrough[0])
        .await
        .expect("connect");
    let payload = b"\x00raw bytes, not HTTP\xff";
    stream.write_all(payload).await.expect("write");
    let mut echoed = vec![0; payload.len()];
    stream.read_exact(&mut echoed).await.expect("read");
    assert_eq!(&echoed, payload);
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
    arrived.notified().await;

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
    let answer = in_flight.await.expect("task");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "finished")
    );
    setup.proxy.stop().await;
}
