//! Streaming both ways: gRPC-style bidirectional streams with trailers, WebSocket upgrades,
//! large bodies in bounded memory, many concurrent requests, and cancellation.

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cz_e2e::app::{text_body, tokio_stream_from, Handler, TestBody};
use cz_e2e::bulk::{self, matches_pattern};
use cz_e2e::client::{answer, get, http1, http2};
use cz_e2e::spawn_app;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Barrier, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{intercept, intercept_with};

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");
const BIG: u64 = 64 * 1024 * 1024;
/// Everything the path may hold of a stalled body: socket buffers of two TCP hops (the kernel
/// grows them to a few MiB each on loopback), the QUIC stream window (2 MiB) and hyper's buffers.
const BUFFER_LIMIT: u64 = 24 * 1024 * 1024;

#[tokio::test]
async fn grpc_style_bidirectional_stream_with_trailers_over_the_tunnel() {
    let setup = intercept(&[]).await;
    let (frames_tx, frames_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let mut connection = http2(setup.proxy.http).await;
    let request = Request::post("http://svc.test/echo")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(StreamBody::new(tokio_stream_from(frames_rx)))
        .expect("request");
    let response = connection
        .send_request(request)
        .await
        .expect("response head before the request ends");
    assert_eq!(response.headers()["x-served-by"], "laptop");
    let mut body = response.into_body();
    // Each message comes back before the next is sent: both directions stream at once.
    for message in ["first", "second", "third"] {
        frames_tx
            .send(Ok(Frame::data(Bytes::from(message))))
            .await
            .expect("send");
        let mut echoed = Vec::new();
        while echoed.len() < message.len() {
            let frame = body.frame().await.expect("echo").expect("frame");
            echoed.extend_from_slice(&frame.into_data().expect("data"));
        }
        assert_eq!(echoed, message.as_bytes());
    }
    drop(frames_tx);
    let trailers = loop {
        let frame = body.frame().await.expect("trailers").expect("frame");
        if let Ok(trailers) = frame.into_trailers() {
            break trailers;
        }
    };
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn websocket_through_the_tunnel_and_through_pass_through() {
    let setup = intercept(&[]).await;
    for (intercepted, expected) in [(true, "laptop"), (false, "cluster")] {
        let stream = TcpStream::connect(setup.proxy.http).await.expect("connect");
        let mut request = "ws://svc.test/ws".into_client_request().expect("request");
        if intercepted {
            request
                .headers_mut()
                .insert(INTERCEPT.0, INTERCEPT.1.parse().expect("value"));
        }
        let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("upgrade");
        assert_eq!(response.headers()["x-served-by"], expected);
        for text in ["hello", "again"] {
            socket.send(Message::text(text)).await.expect("send");
            let reply = socket.next().await.expect("reply").expect("message");
            assert_eq!(
                reply.into_text().expect("text").as_str(),
                format!("{expected}: {text}")
            );
        }
        socket.close(None).await.expect("close");
    }
}

/// A handler serving `/download` as a big pattern body, counting what it produced.
fn download_handler(produced: Arc<AtomicU64>) -> Handler {
    Arc::new(move |_| {
        let body = bulk::body(BIG, produced.clone());
        Box::pin(async move { Response::new(body) })
    })
}

#[tokio::test]
async fn big_download_streams_with_bounded_buffering_on_both_routes() {
    let cluster_produced = Arc::new(AtomicU64::new(0));
    let laptop_produced = Arc::new(AtomicU64::new(0));
    let cluster = spawn_app("cluster", Some(download_handler(cluster_produced.clone()))).await;
    let laptop = spawn_app("laptop", Some(download_handler(laptop_produced.clone()))).await;
    let setup = intercept_with(cluster, laptop, &[]).await;
    for (intercepted, produced) in [(true, &laptop_produced), (false, &cluster_produced)] {
        // A reader with a small socket buffer, so what piles up is the path's doing.
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(64 * 1024).expect("rcvbuf");
        let stream = socket.connect(setup.proxy.http).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::get("/download").header("host", "svc.test");
        if intercepted {
            request = request.header(INTERCEPT.0, INTERCEPT.1);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("head");
        let stalled_at = bulk::settled(produced).await;
        eprintln!("download (intercepted: {intercepted}): producer stalled at {stalled_at} bytes while the client did not read");
        assert!(
            stalled_at < BUFFER_LIMIT,
            "path buffered {stalled_at} bytes of an unread body"
        );

        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            assert!(
                matches_pattern(received, &data),
                "corrupt byte near offset {received}"
            );
            received += data.len() as u64;
        }
        assert_eq!(received, BIG);
    }
}

#[tokio::test]
async fn big_upload_streams_with_bounded_buffering_over_the_tunnel() {
    let gate = Arc::new(Notify::new());
    let handler: Handler = {
        let gate = gate.clone();
        Arc::new(move |request| {
            let gate = gate.clone();
            Box::pin(async move {
                gate.notified().await;
                let mut body = request.into_body();
                let (mut received, mut intact) = (0u64, true);
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        intact &= matches_pattern(received, &data);
                        received += data.len() as u64;
                    }
                }
                Response::new(text_body(format!("{received} {intact}")))
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &[],
    )
    .await;
    let produced = Arc::new(AtomicU64::new(0));
    let mut sender = http1::<TestBody>(setup.proxy.http).await;
    let request = Request::post("/upload")
        .header("host", "svc.test")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(bulk::body(BIG, produced.clone()))
        .expect("request");
    let response = tokio::spawn(sender.send_request(request));
    let stalled_at = bulk::settled(&produced).await;
    eprintln!("upload: client stalled at {stalled_at} bytes while the laptop app did not read");
    assert!(
        stalled_at < BUFFER_LIMIT,
        "path buffered {stalled_at} bytes of an unread upload"
    );
    gate.notify_one();
    let answer = answer(response.await.expect("task").expect("response")).await;
    assert_eq!(answer.body, format!("{BIG} true"));
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_one_tunnel() {
    const REQUESTS: usize = 200;
    let barrier = Arc::new(Barrier::new(REQUESTS));
    // Each request is answered only once all 200 are inside the laptop app at the same time.
    let handler: Handler = {
        let barrier = barrier.clone();
        Arc::new(move |_| {
            let barrier = barrier.clone();
            Box::pin(async move {
                let met = tokio::time::timeout(Duration::from_secs(30), barrier.wait())
                    .await
                    .is_ok();
                Response::new(text_body(if met { "together" } else { "alone" }))
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &[],
    )
    .await;
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(get(setup.proxy.http, "/", &[INTERCEPT])))
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("task").body, "together");
    }
}

#[tokio::test]
async fn cluster_client_cancelling_aborts_the_local_request() {
    let (download_aborted_tx, download_aborted_rx) = oneshot::channel::<()>();
    let (upload_outcome_tx, upload_outcome_rx) = oneshot::channel::<&'static str>();
    let download_aborted_tx = Arc::new(std::sync::Mutex::new(Some(download_aborted_tx)));
    let upload_outcome_tx = Arc::new(std::sync::Mutex::new(Some(upload_outcome_tx)));
    let handler: Handler = Arc::new(move |request| {
        let (download_aborted_tx, upload_outcome_tx) =
            (download_aborted_tx.clone(), upload_outcome_tx.clone());
        Box::pin(async move {
            if request.uri().path() == "/upload" {
                // Reads the upload; reports whether it ended cleanly or was cut.
                let mut body = request.into_body();
                let outcome = loop {
                    match body.frame().await {
                        Some(Ok(_)) => continue,
                        Some(Err(_)) => break "cut",
                        None => break "complete",
                    }
                };
                if let Some(tx) = upload_outcome_tx.lock().expect("lock").take() {
                    let _ = tx.send(outcome);
                }
                return Response::new(text_body(""));
            }
            // An endless download; the app notices when nobody takes its chunks any more.
            let (frames_tx, frames_rx) =
                mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
            tokio::spawn(async move {
                while frames_tx
                    .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                    .await
                    .is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if let Some(tx) = download_aborted_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(tokio_stream_from(
                frames_rx,
            ))))
        })
    });
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &[],
    )
    .await;

    let mut sender = http1::<Empty<Bytes>>(setup.proxy.http).await;
    let request = Request::get("/ticks")
        .header("host", "svc.test")
        .header(INTERCEPT.0, INTERCEPT.1);
    let response = sender
        .send_request(request.body(Empty::new()).expect("request"))
        .await
        .expect("head");
    let mut body = response.into_body();
    body.frame().await.expect("a first tick").expect("frame");
    drop((body, sender));
    tokio::time::timeout(Duration::from_secs(10), download_aborted_rx)
        .await
        .expect("the local download is aborted")
        .expect("signal");

    let (frames_tx, frames_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let mut sender = http1(setup.proxy.http).await;
    let request = Request::post("/upload")
        .header("host", "svc.test")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(StreamBody::new(tokio_stream_from(frames_rx)))
        .expect("request");
    let pending = tokio::spawn(sender.send_request(request));
    frames_tx
        .send(Ok(Frame::data(Bytes::from_static(b"part of an upload"))))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    pending.abort();
    drop(frames_tx);
    let outcome = tokio::time::timeout(Duration::from_secs(10), upload_outcome_rx)
        .await
        .expect("the local upload ends")
        .expect("signal");
    assert_eq!(
        outcome, "cut",
        "a cancelled upload must not look complete to the app"
    );
}
