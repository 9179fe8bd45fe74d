//! Capture: bodies pass on unchanged, only the cap is kept, streams are listed while open.
use super::*;
use http_body_util::{BodyExt, StreamBody};

/// A body of `chunks`, as frames.
fn chunked(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

use std::convert::Infallible;

fn request(headers: &[(&str, &str)]) -> request::Parts {
    let mut builder = http::Request::post("/upload?x=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(())
        .expect("test bodies and heads are valid")
        .into_parts()
        .0
}

#[tokio::test]
async fn bodies_pass_unchanged_and_only_the_cap_is_kept() {
    let store = Arc::new(Store::new(10, 4));
    let mut captured = store.subscribe();
    let mut capture = Capture::begin(store.clone(), &request(&[("x-a", "1")]));
    let forwarded = capture
        .tee_request(chunked(&[b"abc", b"defgh"]))
        .collect()
        .await
        .expect("test bodies and heads are valid")
        .to_bytes();
    assert_eq!(&forwarded[..], b"abcdefgh", "forwarded whole");
    let head = http::Response::builder()
        .status(201)
        .header("content-type", "text/plain")
        .body(())
        .expect("test bodies and heads are valid")
        .into_parts()
        .0;
    let body = capture.tee_response(&head, chunked(&[b"ok"]));
    assert_eq!(
        &body
            .collect()
            .await
            .expect("test bodies and heads are valid")
            .to_bytes()[..],
        b"ok"
    );
    drop(capture);

    let exchange = captured.try_recv().expect("recorded when dropped");
    assert_eq!(exchange.id, 1);
    assert_eq!(exchange.request.method, http::Method::POST);
    assert_eq!(exchange.path(), "/upload?x=1");
    assert_eq!(exchange.request.headers.get_str("x-a"), Some("1"));
    assert_eq!(
        exchange.request.body,
        CapturedBody {
            kept: Bytes::from_static(b"abcd"),
            size: 8
        }
    );
    assert!(exchange.request.body.truncated());
    let response = exchange
        .response
        .as_ref()
        .expect("test bodies and heads are valid");
    assert_eq!(response.status, 201);
    assert_eq!(
        response.body,
        CapturedBody::whole(Bytes::from_static(b"ok"))
    );
    assert!(
        exchange
            .timing
            .response_head
            .expect("test bodies and heads are valid")
            <= exchange.timing.total
    );
    assert!(exchange.error.is_none());
}

#[tokio::test]
async fn a_streaming_exchange_is_listed_while_open_then_replaced() {
    let store = Arc::new(Store::new(10, 1024));
    let mut capture = Capture::begin(store.clone(), &request(&[]));
    let head = http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(())
        .expect("test bodies and heads are valid")
        .into_parts()
        .0;
    let mut body = capture.tee_response(&head, chunked(&[b"data: 1\n\n", b"data: 2\n\n"]));
    let open = store.get(1).expect("listed once the head is sent");
    assert!(open.in_progress && open.streaming());
    assert_eq!(
        open.response.as_ref().map(|r| r.status),
        Some(http::StatusCode::OK)
    );
    while body.frame().await.is_some() {}
    drop(capture);
    let done = store.get(1).expect("the same number");
    assert!(!done.in_progress);
    assert_eq!(done.response.as_ref().expect("a response").body.size, 18);
    assert_eq!(store.all().len(), 1);
}

#[tokio::test]
async fn an_exchange_dropped_before_its_response_is_recorded_as_cancelled() {
    let store = Arc::new(Store::new(10, 1024));
    drop(Capture::begin(store.clone(), &request(&[])));
    let exchange = store.get(1).expect("recorded");
    assert!(exchange.response.is_none());
    assert!(exchange
        .error
        .as_deref()
        .expect("test bodies and heads are valid")
        .contains("cancelled"));
}

#[tokio::test]
async fn a_large_body_costs_the_cap_not_its_size() {
    let store = Arc::new(Store::new(10, 1024));
    let capture = Capture::begin(store.clone(), &request(&[]));
    static CHUNK: [u8; 64 * 1024] = [7; 64 * 1024];
    let mut body = capture.tee_request(chunked(&[&CHUNK[..]; 160]));
    let mut forwarded = 0;
    while let Some(frame) = body.frame().await {
        forwarded += frame
            .expect("test bodies and heads are valid")
            .into_data()
            .expect("test bodies and heads are valid")
            .len();
    }
    drop(capture);
    let exchange = store.get(1).expect("test bodies and heads are valid");
    assert_eq!(forwarded, 10 * 1024 * 1024);
    assert_eq!(exchange.request.body.size, 10 * 1024 * 1024);
    assert_eq!(exchange.request.body.kept.len(), 1024);
}

#[tokio::test]
async fn no_inspector_captures_nothing_and_passes_bodies_on() {
    let capture = Capture::off();
    let body = capture.tee_request(chunked(&[b"x"]));
    assert_eq!(
        &body
            .collect()
            .await
            .expect("test bodies and heads are valid")
            .to_bytes()[..],
        b"x"
    );
}

#[tokio::test]
async fn read_capped_counts_past_the_cap() {
    let body = read_capped(chunked(&[b"12345", b"678"]), 6)
        .await
        .expect("test bodies and heads are valid");
    assert_eq!((&body.kept[..], body.size), (&b"123456"[..], 8));
}

#[tokio::test]
async fn a_request_body_sent_after_the_response_is_recorded_whole() {
    let store = Arc::new(Store::new(10, 1024));
    let mut captured = store.subscribe();
    let mut capture = Capture::begin(store.clone(), &request(&[]));
    let request_body = capture.tee_request(chunked(&[b"early ", b"late"]));
    let head = http::Response::builder()
        .status(200)
        .body(())
        .expect("a valid head")
        .into_parts()
        .0;
    // The app answered before reading the request: the response ends first.
    let response = capture.tee_response(&head, chunked(&[b"ok"]));
    response.collect().await.expect("the response");
    drop(capture);
    assert!(
        captured.try_recv().is_err(),
        "not recorded while the request body is still being sent"
    );

    let sent = request_body
        .collect()
        .await
        .expect("the request")
        .to_bytes();
    assert_eq!(&sent[..], b"early late");
    let exchange = captured
        .try_recv()
        .expect("recorded once the request body is done");
    assert_eq!(
        exchange.request.body,
        CapturedBody::whole(Bytes::from_static(b"early late"))
    );
    assert_eq!(exchange.response.as_ref().expect("a response").status, 200);
}
