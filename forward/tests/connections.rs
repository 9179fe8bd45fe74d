//! How the forwarder uses connections: one kept-alive HTTP/1.1 connection serves requests one
//! after another, one that cannot be reused is not, a connection the server closed while idle
//! costs the next request nothing, and HTTP/2 requests share one connection.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cz_forward::{Dialer, Forwarder};
use http::{header, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// An HTTP/1.1 and h2c server on 127.0.0.1 that counts the connections it accepted and answers
/// every request with `Host`, the request target, and a body of `/size/N` bytes when asked.
/// With `close_idle_after`, it closes every connection that long after each response.
struct Server {
    address: String,
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(Builder::default()).await
    }

    async fn start_with(options: Builder) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if options.no_keep_alive {
                    builder.http1().keep_alive(false);
                }
                tokio::spawn(async move {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
            }
        });
        Self {
            address,
            connections,
        }
    }

    fn forwarder<B>(&self) -> Forwarder<B>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Forwarder::new(Dialer::new(&self.address, Duration::from_secs(5)).expect("an authority"))
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Builder {
    no_keep_alive: bool,
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let size = request
        .uri()
        .path()
        .strip_prefix("/size/")
        .and_then(|n| n.parse::<usize>().ok());
    let text = match size {
        Some(size) => vec![b'x'; size],
        None => {
            let host = request
                .headers()
                .get(header::HOST)
                .map(|h| h.to_str().expect("ASCII").to_owned());
            format!("{} {:?}", request.uri(), host).into_bytes()
        }
    };
    let status = if request.uri().path() == "/no-content" {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = Response::new(Full::new(Bytes::from(
        if status == StatusCode::NO_CONTENT {
            Vec::new()
        } else {
            text
        },
    )));
    *response.status_mut() = status;
    Ok(response)
}

fn get(target: &str) -> Request<Empty<Bytes>> {
    Request::get(target).body(Empty::new()).expect("request")
}

async fn text<B: Send + Unpin + 'static>(
    response: Response<cz_forward::ResponseBody<B>>,
) -> String {
    let body = response.into_body().collect().await.expect("body");
    String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn http1_requests_one_after_another_share_one_connection() {
    let server = Server::start().await;
    let forwarder = server.forwarder();
    for n in 0..5 {
        let response = forwarder
            .send(get(&format!("/size/{}", 1000 * n)))
            .await
            .expect("response");
        assert_eq!(text(response).await.len(), 1000 * n);
    }
    // Bodies that end without being read (HEAD, 204) give the connection back too.
    let head = Request::head("/").body(Empty::new()).expect("request");
    drop(forwarder.send(head).await.expect("response"));
    drop(forwarder.send(get("/no-content")).await.expect("response"));
    let last = forwarder.send(get("/")).await.expect("response");
    assert!(!text(last).await.is_empty());
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn concurrent_http1_requests_get_connections_of_their_own_and_keep_them() {
    let server = Server::start().await;
    let forwarder = server.forwarder();
    for _ in 0..3 {
        let responses =
            futures_util::future::join_all((0..4).map(|_| forwarder.send(get("/size/100000"))))
                .await;
        for response in responses {
            assert_eq!(text(response.expect("response")).await.len(), 100_000);
        }
    }
    assert_eq!(server.connections(), 4);
}

#[tokio::test]
async fn a_response_body_dropped_before_its_end_closes_its_connection() {
    let server = Server::start().await;
    let forwarder = server.forwarder();
    let response = forwarder
        .send(get("/size/1000000"))
        .await
        .expect("response");
    let mut body = response.into_body();
    let _first = body.frame().await.expect("a frame").expect("data");
    drop(body);
    let response = forwarder.send(get("/size/10")).await.expect("response");
    assert_eq!(text(response).await, "x".repeat(10));
    assert_eq!(
        server.connections(),
        2,
        "the half-read connection was not reused"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_reused() {
    let server = Server::start_with(Builder {
        no_keep_alive: true,
    })
    .await;
    let forwarder = server.forwarder();
    for _ in 0..3 {
        let response = forwarder.send(get("/")).await.expect("response");
        assert!(!text(response).await.is_empty());
    }
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn http1_requests_go_in_origin_form_with_a_host() {
    let server = Server::start().await;
    let forwarder = server.forwarder();
    let absolute = forwarder.send(get("http://elsewhere.example/a?b=c")).await;
    assert_eq!(
        text(absolute.expect("response")).await,
        r#"/a?b=c Some("elsewhere.example")"#
    );
    let mut named = get("/x");
    named
        .headers_mut()
        .insert(header::HOST, "app.local".parse().expect("a value"));
    let named = forwarder.send(named).await.expect("response");
    assert_eq!(text(named).await, r#"/x Some("app.local")"#);
    let anonymous = forwarder.send(get("/y")).await.expect("response");
    assert_eq!(
        text(anonymous).await,
        format!(r#"/y Some("{}")"#, server.address)
    );
}

#[tokio::test]
async fn http2_requests_share_one_connection() {
    let server = Server::start().await;
    let forwarder = server.forwarder();
    let requests = (0..8).map(|_| {
        let mut request = get("/size/50000");
        *request.version_mut() = Version::HTTP_2;
        *request.method_mut() = Method::GET;
        forwarder.send(request)
    });
    for response in futures_util::future::join_all(requests).await {
        let response = response.expect("response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(text(response).await.len(), 50_000);
    }
    assert_eq!(server.connections(), 1);
}
