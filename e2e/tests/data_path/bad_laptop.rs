//! A laptop that misbehaves — never answers, answers with a huge head, holds every stream, gets
//! more requests than the route carries at once — costs the proxy a bounded wait and bounded
//! memory, each refusal says why and is counted, and the laptop's connection carries on.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cz_e2e::app::tokio_stream_from;
use cz_e2e::client::{get, Answer};
use cz_e2e::raw_laptop::RawLaptop;
use cz_e2e::{init_tracing, metric, proxy_config, spawn_app, spawn_proxy, within, Session};
use cz_e2e::{ProxyHandle, PROMPTLY};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::mpsc;

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

/// A proxy with `extra` flags and a raw laptop allowing it `max_streams` streams at once.
async fn proxy_and_raw_laptop(extra: &[&str], max_streams: u32) -> (ProxyHandle, RawLaptop) {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(proxy_config(cluster.addr, extra), &session.proxy, 0, &[]).await;
    let laptop = RawLaptop::connect(&proxy, &session.laptop, max_streams).await;
    (proxy, laptop)
}

/// Sends an intercepted `GET path` on a task of its own.
fn send(proxy: &ProxyHandle, path: &'static str) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(get(proxy.http, path, &[INTERCEPT]))
}

async fn answer_of(request: tokio::task::JoinHandle<Answer>, what: &str) -> Answer {
    within(PROMPTLY, what, request).await.expect("request task")
}

/// Asserts the proxy answered itself with `status`, naming `code` and explaining with `says`.
fn assert_refused(answer: &Answer, status: StatusCode, code: &str, says: &[&str]) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.headers["x-cz-proxy-error"], code);
    for words in says {
        assert!(
            answer.body.contains(words),
            "{words:?} not in {}",
            answer.body
        );
    }
}

async fn timeouts(proxy: &ProxyHandle, stage: &str) -> f64 {
    let name = format!("cz_proxy_tunnel_timeouts_total{{stage=\"{stage}\"}}");
    metric(proxy.admin, &name).await
}

#[tokio::test]
async fn a_laptop_that_never_answers_gets_504_after_the_response_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let (proxy, mut laptop) = proxy_and_raw_laptop(&["--tunnel-response-timeout=500ms"], 16).await;
    let started = Instant::now();
    let silent = send(&proxy, "/silent");
    let mut request = laptop.next_request().await;
    assert_eq!(request.head.uri.path(), "/silent");

    let answer = answer_of(silent, "the proxy to give up on the silent laptop").await;
    assert_refused(
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        "tunnel-timeout",
        &[
            "did not start answering within 500ms",
            "--tunnel-response-timeout",
        ],
    );
    assert!(
        started.elapsed() >= TIMEOUT,
        "gave up after {:?}, before the {TIMEOUT:?} timeout",
        started.elapsed()
    );
    within(
        PROMPTLY,
        "the proxy to tell the laptop its answer is no longer wanted",
        request.writer.stopped(),
    )
    .await;
    assert_eq!(timeouts(&proxy, "ResponseHead").await, 1.0);
    assert!(
        laptop.connection.close_reason().is_none(),
        "only the stream ended"
    );
}

#[tokio::test]
async fn the_response_timeout_counts_from_the_end_of_the_request_body() {
    let (proxy, mut laptop) = proxy_and_raw_laptop(&["--tunnel-response-timeout=300ms"], 16).await;
    let (frames_tx, frames_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let mut sender = cz_e2e::client::http1(proxy.http).await;
    let request = Request::post("/upload")
        .header("host", "svc.test")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(StreamBody::new(tokio_stream_from(frames_rx)))
        .expect("request");
    let mut response = tokio::spawn(async move { sender.send_request(request).await });
    let send_part = |part: &'static str| frames_tx.send(Ok(Frame::data(Bytes::from(part))));
    send_part("part one").await.expect("the client sends");
    let mut upload = laptop.next_request().await;
    let first = upload.next_body_frame();
    let part = within(PROMPTLY, "the first part at the laptop", first).await;
    let part = part
        .expect("a frame")
        .expect("data")
        .into_data()
        .expect("data");
    assert_eq!(part, "part one");

    // Not an ordering sleep: while the upload goes on, no answer may come, so any window longer
    // than the timeout shows a proxy that counts from the request's head.
    let early = tokio::time::timeout(Duration::from_secs(1), &mut response).await;
    assert!(early.is_err(), "answered during the upload: {early:?}");
    send_part("part two").await.expect("the client sends");
    drop(frames_tx);
    let mut rest = Vec::new();
    while let Some(frame) = within(PROMPTLY, "the upload's rest", upload.next_body_frame()).await {
        rest.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
    }
    assert_eq!(rest, b"part two");
    upload.answer(StatusCode::OK, "uploaded").await;
    let answer = within(PROMPTLY, "the upload answered", response)
        .await
        .expect("task")
        .expect("response");
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_response_head_over_the_limit_gets_502_and_the_laptop_carries_on() {
    let (proxy, mut laptop) = proxy_and_raw_laptop(&["--max-header-bytes=8192"], 16).await;
    let oversized = send(&proxy, "/oversized");
    let mut request = laptop.next_request().await;
    let (head, ()) = Response::builder()
        .header("x-big", "b".repeat(16 * 1024))
        .body(())
        .expect("response")
        .into_parts();
    request
        .writer
        .write_response_head(&head)
        .await
        .expect("the head is sent");

    let answer = answer_of(oversized, "the oversized head refused").await;
    assert_refused(
        &answer,
        StatusCode::BAD_GATEWAY,
        "tunnel-head-too-large",
        &["more than the 8192 bytes", "--max-header-bytes"],
    );
    within(
        PROMPTLY,
        "the proxy to stop the oversized answer",
        request.writer.stopped(),
    )
    .await;
    assert_eq!(
        metric(proxy.admin, "cz_proxy_tunnel_oversized_heads_total").await,
        1.0
    );

    // The same laptop connection serves the next request.
    let next = send(&proxy, "/next");
    let request = laptop.next_request().await;
    assert_eq!(request.head.uri.path(), "/next");
    request.answer(StatusCode::OK, "fine").await;
    let answer = answer_of(next, "the next request answered").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "fine")
    );
    assert!(laptop.connection.close_reason().is_none());
}

#[tokio::test]
async fn a_laptop_holding_every_stream_gets_the_next_request_504_after_the_slot_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let (proxy, mut laptop) = proxy_and_raw_laptop(&["--tunnel-slot-timeout=500ms"], 1).await;
    let first = send(&proxy, "/first");
    let held = laptop.next_request().await;

    let started = Instant::now();
    let answer = get(proxy.http, "/second", &[INTERCEPT]).await;
    assert_refused(
        &answer,
        StatusCode::GATEWAY_TIMEOUT,
        "tunnel-busy",
        &["took no new request within 500ms", "--tunnel-slot-timeout"],
    );
    assert!(
        started.elapsed() >= TIMEOUT,
        "gave up after {:?}, before the {TIMEOUT:?} timeout",
        started.elapsed()
    );
    assert_eq!(timeouts(&proxy, "StreamSlot").await, 1.0);

    // The request holding the stream was only slow: its answer still arrives.
    held.answer(StatusCode::OK, "late").await;
    let answer = answer_of(first, "the held request answered").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "late")
    );
}

#[tokio::test]
async fn requests_beyond_the_route_limit_wait_then_get_503() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (proxy, mut laptop) =
        proxy_and_raw_laptop(&["--tunnel-max-requests=2", "--tunnel-slot-timeout=1s"], 16).await;
    let first = send(&proxy, "/1");
    let one = laptop.next_request().await;
    let second = send(&proxy, "/2");
    let two = laptop.next_request().await;

    let started = Instant::now();
    let answer = get(proxy.http, "/3", &[INTERCEPT]).await;
    assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "tunnel-overloaded",
        &[
            "already has 2 intercepted requests",
            "--tunnel-max-requests",
        ],
    );
    assert!(
        started.elapsed() >= TIMEOUT,
        "refused after {:?}, without waiting the {TIMEOUT:?} for a place",
        started.elapsed()
    );
    assert_eq!(timeouts(&proxy, "RouteLimit").await, 1.0);

    // A request that ends frees its place; the refused one never reached the laptop, so the next
    // stream the laptop sees is the next request's.
    one.answer(StatusCode::OK, "one").await;
    assert_eq!(answer_of(first, "the first answered").await.body, "one");
    let fourth = send(&proxy, "/4");
    let four = laptop.next_request().await;
    assert_eq!(four.head.uri.path(), "/4");
    four.answer(StatusCode::OK, "four").await;
    assert_eq!(answer_of(fourth, "the fourth answered").await.body, "four");
    two.answer(StatusCode::OK, "two").await;
    assert_eq!(answer_of(second, "the second answered").await.body, "two");
}
