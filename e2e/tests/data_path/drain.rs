//! The proxy's drain (SIGTERM) loses no request of a keep-alive client: every HTTP/1 response
//! closes its connection, HTTP/2 connections get GOAWAY with their streams finishing, an idle
//! connection is closed only after a quiet moment, and new connections are served for the
//! shutdown delay.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cz_e2e::app::{text_body, Handler};
use cz_e2e::client::{self, answer};
use cz_e2e::{eventually, spawn_app, within, PROMPTLY};
use cz_proxy::drain::QUIET;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::keep_alive::{get, Client, IDLE};
use crate::{intercept, intercept_with};

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

/// Waits until the drain has begun (a response closes its connection), and checks that the
/// proxy still reports itself ready: it serves through its shutdown delay.
async fn draining(setup: &crate::Intercept) {
    eventually("the drain to begin", PROMPTLY, || async {
        let answer = client::get(setup.proxy.http, "/probe", &[]).await;
        (answer
            .headers
            .get("connection")
            .is_some_and(|v| v == "close"))
        .then_some(())
    })
    .await;
    let ready = client::get(setup.proxy.admin, "/readyz", &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "ready through the shutdown delay"
    );
}

#[tokio::test]
async fn during_the_drain_every_http1_response_closes_its_connection_and_new_ones_are_served() {
    let setup = intercept(&["--shutdown-delay=30s"]).await;
    let mut kept = Client::connect(setup.proxy.http).await;
    kept.send(&get("/before", false)).await;
    let (head, _) = kept.response_with_head().await;
    assert!(!head.to_ascii_lowercase().contains("connection: close"));

    setup.proxy.begin_shutdown();
    draining(&setup).await;
    for (intercepted, served_by) in [(false, "cluster"), (true, "laptop")] {
        let path = format!("/during-{served_by}");
        let mut client = Client::connect(setup.proxy.http).await;
        client.send(&get(&path, intercepted)).await;
        let (head, body) = client.response_with_head().await;
        assert_eq!(body, format!("{served_by} GET {path}"));
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let closed = client.closed_by_proxy("a new connection closed").await;
        assert!(
            closed < QUIET / 2,
            "closed after its response, took {closed:?}"
        );
    }
    kept.send(&get("/after", true)).await;
    let (head, body) = kept.response_with_head().await;
    assert_eq!(body, "laptop GET /after");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let closed = kept.closed_by_proxy("the kept connection closed").await;
    assert!(
        closed < QUIET / 2,
        "closed after its response, took {closed:?}"
    );
}

#[tokio::test]
async fn the_listener_closes_and_readyz_fails_after_the_shutdown_delay() {
    const DELAY: Duration = Duration::from_secs(2);
    let setup = intercept(&["--shutdown-delay=2s"]).await;
    let began = Instant::now();
    setup.proxy.begin_shutdown();
    draining(&setup).await;
    let http = setup.proxy.http;
    eventually("the listener to close", PROMPTLY, || async {
        tokio::net::TcpStream::connect(http)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let closed = began.elapsed();
    assert!(closed >= DELAY, "closed {closed:?} into the drain");
    let ready = client::get(setup.proxy.admin, "/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_drain_closes_an_idle_connection_only_after_a_quiet_moment() {
    let setup = intercept(&["--shutdown-delay=30s"]).await;
    let (mut idle, mut late) = (
        Client::connect(setup.proxy.http).await,
        Client::connect(setup.proxy.http).await,
    );
    for client in [&mut idle, &mut late] {
        client.send(&get("/first", false)).await;
        client.response_with_head().await;
    }
    tokio::time::sleep(IDLE).await;
    let began = Instant::now();
    setup.proxy.begin_shutdown();
    // A request sent while the client still had the connection for idle is answered.
    tokio::time::sleep(QUIET / 2).await;
    late.send(&get("/late", false)).await;
    let (head, body) = late.response_with_head().await;
    assert_eq!(body, "cluster GET /late");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    idle.closed_by_proxy("the idle connection closed").await;
    let quiet = began.elapsed();
    assert!(
        quiet >= QUIET - Duration::from_millis(50),
        "closed {quiet:?} into the drain, before a quiet moment"
    );
}

#[tokio::test]
async fn http2_connections_get_goaway_and_their_streams_in_flight_finish() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let handler: Handler = {
        let (arrived, release) = (arrived.clone(), release.clone());
        Arc::new(move |request| {
            let (arrived, release) = (arrived.clone(), release.clone());
            let slow = request.uri().path() == "/slow";
            Box::pin(async move {
                if slow {
                    arrived.notify_one();
                    release.notified().await;
                }
                Response::new(text_body("finished"))
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", Some(handler)).await,
        spawn_app("laptop", None).await,
        &["--shutdown-delay=30s"],
    )
    .await;
    let mut sender = client::http2::<Empty<Bytes>>(setup.proxy.http).await;
    let request = |path: &str| {
        Request::get(format!("http://svc.test{path}"))
            .body(Empty::new())
            .expect("request")
    };
    let first = sender.send_request(request("/fast")).await.expect("fast");
    assert_eq!(answer(first).await.status, StatusCode::OK);
    let slow = tokio::spawn(sender.send_request(request("/slow")));
    within(PROMPTLY, "the slow request to arrive", arrived.notified()).await;

    setup.proxy.begin_shutdown();
    draining(&setup).await;
    release.notify_one();
    let slow = within(PROMPTLY, "the slow answer", slow)
        .await
        .expect("task")
        .expect("the stream in flight finished");
    assert_eq!(answer(slow).await.body, "finished");
    let began = Instant::now();
    eventually("the proxy to end the connection", PROMPTLY, || {
        let closed = sender.is_closed();
        async move { closed.then_some(()) }
    })
    .await;
    assert!(began.elapsed() < QUIET, "GOAWAY at once, not after idling");
}

/// What the clients of [`clients_sending_continuously_lose_no_request_across_the_drain`] saw.
#[derive(Default)]
struct Seen {
    answered: AtomicUsize,
    closed_by_response: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// An HTTP/1.1 keep-alive client sending back to back until `stop`, on a new connection
/// whenever a response closes the last; nothing is ever sent again.
async fn http1_client(addr: std::net::SocketAddr, seen: Arc<Seen>, stop: CancellationToken) {
    let mut sender = None;
    for count in 0.. {
        if stop.is_cancelled() {
            return;
        }
        let mut connection = match sender.take() {
            Some(connection) => connection,
            None => client::http1::<Empty<Bytes>>(addr).await,
        };
        let mut request = Request::get(format!("/h1/{count}")).header("host", "svc.test");
        if count % 2 == 0 {
            request = request.header(INTERCEPT.0, INTERCEPT.1);
        }
        let sent = connection.send_request(request.body(Empty::new()).expect("request"));
        match within(PROMPTLY, "an HTTP/1.1 answer", sent).await {
            Ok(response) => {
                let closes = response
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v == "close");
                let answer = answer(response).await;
                if answer.status != StatusCode::OK {
                    seen.failures
                        .lock()
                        .expect("lock")
                        .push(format!("{answer:?}"));
                }
                seen.answered.fetch_add(1, Ordering::Relaxed);
                if closes {
                    seen.closed_by_response.fetch_add(1, Ordering::Relaxed);
                } else {
                    sender = Some(connection);
                }
            }
            Err(error) => seen.failures.lock().expect("lock").push(error.to_string()),
        }
    }
}

/// An HTTP/2 client sending back to back until `stop`, on a new connection once the proxy has
/// ended the last (GOAWAY). Only a request hyper never sent (canceled) is sent again.
async fn http2_client(addr: std::net::SocketAddr, seen: Arc<Seen>, stop: CancellationToken) {
    let mut sender = client::http2::<Empty<Bytes>>(addr).await;
    for count in 0.. {
        if stop.is_cancelled() {
            return;
        }
        if sender.is_closed() || sender.ready().await.is_err() {
            seen.closed_by_response.fetch_add(1, Ordering::Relaxed);
            sender = client::http2(addr).await;
        }
        let request = Request::get(format!("http://svc.test/h2/{count}"))
            .body(Empty::new())
            .expect("request");
        match within(PROMPTLY, "an HTTP/2 answer", sender.send_request(request)).await {
            Ok(response) => {
                assert_eq!(answer(response).await.status, StatusCode::OK);
                seen.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if error.is_canceled() => {}
            Err(error) => seen.failures.lock().expect("lock").push(error.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_continuously_lose_no_request_across_the_drain() {
    const HTTP1_CLIENTS: usize = 8;
    let setup = intercept(&["--shutdown-delay=30s"]).await;
    let (seen, stop) = (Arc::new(Seen::default()), CancellationToken::new());
    let mut clients = Vec::new();
    for _ in 0..HTTP1_CLIENTS {
        let client = http1_client(setup.proxy.http, seen.clone(), stop.clone());
        clients.push(tokio::spawn(client));
    }
    clients.push(tokio::spawn(http2_client(
        setup.proxy.http,
        seen.clone(),
        stop.clone(),
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = seen.answered.load(Ordering::Relaxed);
    setup.proxy.begin_shutdown();
    tokio::time::sleep(QUIET * 2).await;
    stop.cancel();
    for client in clients {
        within(PROMPTLY, "a client to stop", client)
            .await
            .expect("client");
    }
    let failures = seen.failures.lock().expect("lock").clone();
    assert_eq!(failures, Vec::<String>::new(), "requests lost in the drain");
    let answered = seen.answered.load(Ordering::Relaxed);
    assert!(before > 0 && answered > before, "{before} then {answered}");
    let closed = seen.closed_by_response.load(Ordering::Relaxed);
    assert!(
        closed > HTTP1_CLIENTS,
        "every connection was ended by the drain and its successors too: {closed}"
    );
}
