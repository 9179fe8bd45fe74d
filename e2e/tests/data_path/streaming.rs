//! Streaming both ways: gRPC-style bidirectional streams with trailers, WebSocket upgrades,
//! large bodies in bounded memory, many concurrent requests, and cancellation.

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cz_e2e::app::{text_body, tokio_stream_from, Handler, TestBody};
use cz_e2e::buffers::{
    self, Allowance, BOUNDED_SOCKET, COPY_BUFFER, FRAME_READER_BUFFER, HYPER_BUFFER,
    QUIC_STREAM_WINDOW, SEND_OVERSHOOT,
};
use cz_e2e::bulk::{self, matches_pattern};
use cz_e2e::client::{answer, get, http1, http1_over, http2};
use cz_e2e::{spawn_app, within, PROMPTLY};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Barrier, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{intercept, intercept_via, intercept_with, Intercept, Via};

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

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
            let frame = within(PROMPTLY, "the echo of a message", body.frame()).await;
            echoed.extend_from_slice(
                &frame
                    .expect("echo")
                    .expect("frame")
                    .into_data()
                    .expect("data"),
            );
        }
        assert_eq!(echoed, message.as_bytes());
    }
    drop(frames_tx);
    let trailers = within(PROMPTLY, "the trailers", trailers_of(body)).await;
    assert_eq!(trailers["grpc-status"], "0");
}

/// Reads `body` to its end and returns its trailers.
async fn trailers_of(mut body: hyper::body::Incoming) -> http::HeaderMap {
    loop {
        let frame = body.frame().await.expect("trailers").expect("frame");
        if let Ok(trailers) = frame.into_trailers() {
            return trailers;
        }
    }
}

#[tokio::test]
async fn trailers_travel_both_ways_on_both_routes() {
    let setup = intercept(&[]).await;
    for (intercepted, expected) in [(true, "laptop"), (false, "cluster")] {
        let mut connection = http2(setup.proxy.http).await;
        let mut request_trailers = http::HeaderMap::new();
        request_trailers.insert("x-request-trailer", "sent".parse().expect("value"));
        let frames: [Result<Frame<Bytes>, Infallible>; 2] = [
            Ok(Frame::data(Bytes::from_static(b"payload"))),
            Ok(Frame::trailers(request_trailers)),
        ];
        let mut request = Request::post("http://svc.test/echo")
            .version(Version::HTTP_2)
            .header("te", "trailers");
        if intercepted {
            request = request.header(INTERCEPT.0, INTERCEPT.1);
        }
        let request = request
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .expect("request");
        let response = within(PROMPTLY, "the response", connection.send_request(request))
            .await
            .expect("response");
        assert_eq!(response.headers()["x-served-by"], expected);
        let trailers = within(PROMPTLY, "the trailers", trailers_of(response.into_body())).await;
        assert_eq!(
            trailers["grpc-status"], "0",
            "{expected}: response trailers"
        );
        assert_eq!(
            trailers.get("x-request-trailer").map(|v| v.as_bytes()),
            Some(&b"sent"[..]),
            "{expected}: the request's trailers reached the app"
        );
    }
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
        let upgrade = tokio_tungstenite::client_async(request, stream);
        let (mut socket, response) = within(PROMPTLY, "the upgrade", upgrade)
            .await
            .expect("upgrade");
        assert_eq!(response.headers()["x-served-by"], expected);
        for text in ["hello", "again"] {
            socket.send(Message::text(text)).await.expect("send");
            let reply = within(PROMPTLY, "the WebSocket reply", socket.next())
                .await
                .expect("reply")
                .expect("message");
            assert_eq!(
                reply.into_text().expect("text").as_str(),
                format!("{expected}: {text}")
            );
        }
        within(PROMPTLY, "the WebSocket close", socket.close(None))
            .await
            .expect("close");
    }
}

/// A handler serving `/download` as a pattern body of `len` bytes, counting what it produced.
fn download_handler(len: u64, produced: Arc<AtomicU64>) -> Handler {
    Arc::new(move |_| {
        let body = bulk::body(len, produced.clone());
        Box::pin(async move { Response::new(body) })
    })
}

/// A body size well beyond what `allowance` lets the path hold, so unbounded buffering shows.
fn big_beyond(allowance: &Allowance) -> u64 {
    let big = (2 * allowance.total()).max(64 * 1024 * 1024);
    big.next_multiple_of(bulk::CHUNK as u64)
}

/// How long a test may take to move a big body once its reader reads.
const BULK_PATIENCE: Duration = Duration::from_secs(180);

/// What may pile up of a download nobody reads, from the producing app to the client.
fn download_allowance(intercepted: bool) -> Allowance {
    let pinned = buffers::pinned();
    let allowance = Allowance::default()
        .plus(
            "the producer: a chunk queued and one in hand",
            2 * bulk::CHUNK as u64,
        )
        .plus("the app's HTTP/1 write buffer", HYPER_BUFFER)
        .plus("the app's socket (pinned SO_SNDBUF)", pinned.send);
    let allowance = if intercepted {
        allowance
            .plus("czctl's socket to the app (bounded)", BOUNDED_SOCKET)
            .plus("czctl's HTTP/1 read buffer", HYPER_BUFFER)
            .plus("czctl's frame being written to QUIC", HYPER_BUFFER)
            .plus("the QUIC stream window", QUIC_STREAM_WINDOW)
            .plus("the proxy's frame reader", FRAME_READER_BUFFER)
    } else {
        allowance
            .plus(
                "the proxy's socket to the upstream (bounded)",
                BOUNDED_SOCKET,
            )
            .plus("the proxy's HTTP/1 client read buffer", HYPER_BUFFER)
    };
    allowance
        .plus("the proxy's HTTP/1 write buffer", HYPER_BUFFER)
        .plus("the proxy's socket to the client (bounded)", BOUNDED_SOCKET)
        .plus("the client's socket (pinned SO_RCVBUF)", pinned.receive)
        .plus("the client's HTTP/1 read buffer", HYPER_BUFFER)
}

#[tokio::test]
async fn big_download_streams_with_bounded_buffering_on_both_routes() {
    let laptop_allowance = download_allowance(true);
    let cluster_allowance = download_allowance(false);
    let big = big_beyond(&laptop_allowance).max(big_beyond(&cluster_allowance));
    let cluster_produced = Arc::new(AtomicU64::new(0));
    let laptop_produced = Arc::new(AtomicU64::new(0));
    let cluster = download_handler(big, cluster_produced.clone());
    let laptop = download_handler(big, laptop_produced.clone());
    let setup = intercept_with(
        spawn_app("cluster", Some(cluster)).await,
        spawn_app("laptop", Some(laptop)).await,
        &[],
    )
    .await;
    for (intercepted, produced, allowance) in [
        (true, &laptop_produced, &laptop_allowance),
        (false, &cluster_produced, &cluster_allowance),
    ] {
        stalled_download(&setup, intercepted, big, produced, allowance).await;
    }
}

/// The tunnel's stream carrier (what a port-forward carries) adds no buffering of its own: its
/// queues hold QUIC packets, which the QUIC stream window already bounds.
#[tokio::test]
async fn big_download_over_a_stream_carrier_streams_with_bounded_buffering() {
    let allowance = download_allowance(true);
    let big = big_beyond(&allowance);
    let produced = Arc::new(AtomicU64::new(0));
    let laptop = download_handler(big, produced.clone());
    let setup = intercept_via(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(laptop)).await,
        &[],
        Via::Tcp,
    )
    .await;
    stalled_download(&setup, true, big, &produced, &allowance).await;
}

/// Downloads `big` bytes through the proxy (`intercepted`: with the header), first not reading
/// until the producer stalls below `allowance`, then reading every byte.
async fn stalled_download(
    setup: &Intercept,
    intercepted: bool,
    big: u64,
    produced: &AtomicU64,
    allowance: &Allowance,
) {
    let (stream, _) = buffers::pinned_connect(setup.proxy.http).await;
    let mut sender = http1_over::<Empty<Bytes>>(stream).await;
    let mut request = Request::get("/download").header("host", "svc.test");
    if intercepted {
        request = request.header(INTERCEPT.0, INTERCEPT.1);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = within(
        PROMPTLY,
        "the download's head",
        sender.send_request(request),
    )
    .await
    .expect("head");
    let what = format!("download (intercepted: {intercepted}), allowed:\n{allowance}\n");
    let stalled_at = bulk::stalls_below(produced, allowance.total(), &what).await;
    eprintln!("{what}stalled at {stalled_at}");

    let received = within(
        BULK_PATIENCE,
        "the whole download",
        read_pattern(response.into_body()),
    )
    .await;
    assert_eq!(received, big);
}

/// A raw TCP stream through a pass-through port to an upstream that writes without end, read by
/// nobody: the proxy holds its bounded sockets' worth and a copy buffer, not what the host's
/// autotuning would let pile up.
#[tokio::test]
async fn a_pass_through_stream_nobody_reads_is_held_in_bounded_memory() {
    let pinned = buffers::pinned();
    let allowance = Allowance::default()
        .plus("the upstream's socket (pinned SO_SNDBUF)", pinned.send)
        .plus("the upstream's socket's last write", SEND_OVERSHOOT)
        .plus(
            "the proxy's socket to the upstream (bounded)",
            BOUNDED_SOCKET,
        )
        .plus("the proxy's copy buffer", COPY_BUFFER)
        .plus("the proxy's socket to the client (bounded)", BOUNDED_SOCKET)
        .plus("the proxy's socket's last write", SEND_OVERSHOOT)
        .plus("the client's socket (pinned SO_RCVBUF)", pinned.receive);
    let (upstream, _) = buffers::pinned_listener();
    let upstream_addr = upstream.local_addr().expect("address");
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let produced = produced.clone();
        tokio::spawn(async move {
            let (mut stream, _) = upstream.accept().await.expect("accept");
            let mut offset = 0u64;
            loop {
                let chunk: Vec<u8> = (offset..offset + bulk::CHUNK as u64)
                    .map(bulk::byte_at)
                    .collect();
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                offset += chunk.len() as u64;
                produced.store(offset, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let session = cz_e2e::Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = cz_e2e::spawn_proxy(
        cz_e2e::proxy_config(cluster.addr, &[]),
        &session.proxy,
        0,
        &[upstream_addr],
    )
    .await;
    let (mut client, _) = buffers::pinned_connect(proxy.passthrough[0]).await;
    let what = format!("pass-through stream, allowed:\n{allowance}\n");
    let stalled_at = bulk::stalls_below(&produced, allowance.total(), &what).await;
    eprintln!("{what}stalled at {stalled_at}");
    // Reading resumes the stream, intact.
    let mut resumed = vec![0; 4 * bulk::CHUNK];
    within(
        PROMPTLY,
        "the stream to resume",
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut resumed),
    )
    .await
    .expect("read");
    assert!(matches_pattern(0, &resumed), "corrupt stream");
    producer.abort();
}

/// Reads a pattern body to its end, checking every byte; returns its length.
async fn read_pattern(
    mut body: impl hyper::body::Body<Data = Bytes, Error = impl std::fmt::Debug> + Unpin,
) -> u64 {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            assert!(
                matches_pattern(received, &data),
                "corrupt byte near offset {received}"
            );
            received += data.len() as u64;
        }
    }
    received
}

#[tokio::test]
async fn big_upload_streams_with_bounded_buffering_over_the_tunnel() {
    let pinned = buffers::pinned();
    let allowance = Allowance::default()
        .plus(
            "the producer: a chunk queued and one in hand",
            2 * bulk::CHUNK as u64,
        )
        .plus("the client's HTTP/1 write buffer", HYPER_BUFFER)
        .plus("the client's socket (pinned SO_SNDBUF)", pinned.send)
        .plus(
            "the proxy's socket from the client (bounded)",
            BOUNDED_SOCKET,
        )
        .plus("the proxy's HTTP/1 read buffer", HYPER_BUFFER)
        .plus("the proxy's frame being written to QUIC", HYPER_BUFFER)
        .plus("the QUIC stream window", QUIC_STREAM_WINDOW)
        .plus("czctl's frame reader", FRAME_READER_BUFFER)
        .plus("czctl's HTTP/1 write buffer", HYPER_BUFFER)
        .plus("czctl's socket to the app (bounded)", BOUNDED_SOCKET)
        .plus("the app's socket (pinned SO_RCVBUF)", pinned.receive)
        .plus("the app's HTTP/1 read buffer", HYPER_BUFFER);
    let big = big_beyond(&allowance);
    let gate = Arc::new(Notify::new());
    let handler: Handler = {
        let gate = gate.clone();
        Arc::new(move |request| {
            let gate = gate.clone();
            Box::pin(async move {
                gate.notified().await;
                let received = read_pattern(request.into_body()).await;
                Response::new(text_body(received.to_string()))
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
    let (stream, _) = buffers::pinned_connect(setup.proxy.http).await;
    let mut sender = http1_over::<TestBody>(stream).await;
    let request = Request::post("/upload")
        .header("host", "svc.test")
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(bulk::body(big, produced.clone()))
        .expect("request");
    let response = tokio::spawn(sender.send_request(request));
    let what = format!("upload, allowed:\n{allowance}\n");
    let stalled_at = bulk::stalls_below(&produced, allowance.total(), &what).await;
    eprintln!("{what}stalled at {stalled_at}");
    gate.notify_one();
    let response = within(BULK_PATIENCE, "the upload's answer", response)
        .await
        .expect("task")
        .expect("response");
    let answer = within(PROMPTLY, "the answer's body", answer(response)).await;
    assert_eq!(
        answer.body,
        big.to_string(),
        "the app got the whole upload intact"
    );
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
    let (upload_started_tx, upload_started_rx) = oneshot::channel::<()>();
    let (upload_outcome_tx, upload_outcome_rx) = oneshot::channel::<&'static str>();
    let download_aborted_tx = Arc::new(std::sync::Mutex::new(Some(download_aborted_tx)));
    let upload_started_tx = Arc::new(std::sync::Mutex::new(Some(upload_started_tx)));
    let upload_outcome_tx = Arc::new(std::sync::Mutex::new(Some(upload_outcome_tx)));
    let handler: Handler = Arc::new(move |request| {
        let (download_aborted_tx, upload_started_tx, upload_outcome_tx) = (
            download_aborted_tx.clone(),
            upload_started_tx.clone(),
            upload_outcome_tx.clone(),
        );
        Box::pin(async move {
            if request.uri().path() == "/upload" {
                // Reads the upload, says when the first part arrived, and whether it ended
                // cleanly or was cut.
                let mut body = request.into_body();
                let outcome = loop {
                    match body.frame().await {
                        Some(Ok(_)) => {
                            if let Some(tx) = upload_started_tx.lock().expect("lock").take() {
                                let _ = tx.send(());
                            }
                        }
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
            let (frames_tx, frames_rx) = mpsc::channel::<BodyFrame>(1);
            tokio::spawn(async move {
                while frames_tx.send(Ok(tick())).await.is_ok() {}
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

    let (mut body, sender) = open_response(setup.proxy.http, "/ticks", Version::HTTP_11).await;
    within(PROMPTLY, "a first tick", body.frame())
        .await
        .expect("a first tick")
        .expect("frame");
    drop((body, sender));
    within(
        PROMPTLY,
        "the local download to be aborted",
        download_aborted_rx,
    )
    .await
    .expect("signal");

    // The cluster client's connection breaks in the middle of a chunked upload.
    let mut connection = TcpStream::connect(setup.proxy.http).await.expect("connect");
    let head = "POST /upload HTTP/1.1\r\nhost: svc.test\r\nx-c6o-intercept: yes\r\n\
                transfer-encoding: chunked\r\n\r\n11\r\npart of an upload\r\n";
    connection.write_all(head.as_bytes()).await.expect("write");
    within(
        PROMPTLY,
        "the upload to reach the local app",
        upload_started_rx,
    )
    .await
    .expect("signal");
    drop(connection);
    let outcome = within(PROMPTLY, "the local upload to end", upload_outcome_rx)
        .await
        .expect("signal");
    assert_eq!(
        outcome, "cut",
        "a cancelled upload must not look complete to the app"
    );
}

type BodyFrame = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

fn tick() -> Frame<Bytes> {
    Frame::data(Bytes::from_static(b"tick\n"))
}

/// Sends an intercepted `GET path` on a new connection of `version`; returns the response body
/// and what keeps the connection open.
async fn open_response(
    addr: std::net::SocketAddr,
    path: &str,
    version: Version,
) -> (hyper::body::Incoming, Box<dyn std::any::Any + Send>) {
    let request = Request::get(format!("http://svc.test{path}"))
        .version(version)
        .header(INTERCEPT.0, INTERCEPT.1)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let (response, sender): (_, Box<dyn std::any::Any + Send>) = if version == Version::HTTP_2 {
        let mut sender = http2(addr).await;
        let response = within(PROMPTLY, "the response head", sender.send_request(request)).await;
        (response, Box::new(sender))
    } else {
        let mut sender = http1(addr).await;
        let response = within(PROMPTLY, "the response head", sender.send_request(request)).await;
        (response, Box::new(sender))
    };
    let response = response.expect("head");
    (response.into_body(), sender)
}

#[tokio::test]
async fn laptop_side_failures_mid_response_reach_the_client_as_errors() {
    // `/cut`: the app sends part of a body, then fails once told to; anything else: an endless
    // body.
    let cut = Arc::new(Notify::new());
    let handler: Handler = {
        let cut = cut.clone();
        Arc::new(move |request| {
            let cut = cut.clone();
            Box::pin(async move {
                let cutting = request.uri().path() == "/cut";
                let (frames_tx, frames_rx) = mpsc::channel::<BodyFrame>(1);
                tokio::spawn(async move {
                    if cutting {
                        let _ = frames_tx.send(Ok(tick())).await;
                        cut.notified().await;
                        let _ = frames_tx
                            .send(Err("the app failed mid-response".into()))
                            .await;
                        return;
                    }
                    while frames_tx.send(Ok(tick())).await.is_ok() {}
                });
                Response::new(BodyExt::boxed(StreamBody::new(tokio_stream_from(
                    frames_rx,
                ))))
            })
        })
    };
    let setup = intercept_with(
        spawn_app("cluster", None).await,
        spawn_app("laptop", Some(handler)).await,
        &[],
    )
    .await;
    let versions = [Version::HTTP_11, Version::HTTP_2];

    // The local app fails in the middle of its response.
    for version in versions {
        let (mut body, _sender) = open_response(setup.proxy.http, "/cut", version).await;
        within(PROMPTLY, "a first tick", body.frame())
            .await
            .expect("a first tick")
            .expect("frame");
        cut.notify_one();
        let ended = within(PROMPTLY, "the cut response to end", body.collect()).await;
        assert!(
            ended.is_err(),
            "{version:?}: a response the app cut reached the client as a complete body: {:?}",
            ended.map(|body| body.to_bytes())
        );
    }

    // The tunnel is lost in the middle of responses.
    let mut open = Vec::new();
    for version in versions {
        let (mut body, sender) = open_response(setup.proxy.http, "/ticks", version).await;
        within(PROMPTLY, "a first tick", body.frame())
            .await
            .expect("a first tick")
            .expect("frame");
        open.push((version, body, sender));
    }
    within(PROMPTLY, "czctl to close the tunnel", setup.tunnel.close()).await;
    for (version, body, _sender) in open {
        let ended = within(PROMPTLY, "the response to end", body.collect()).await;
        assert!(
            ended.is_err(),
            "{version:?}: a response cut by the lost tunnel reached the client as a complete body"
        );
    }
}
