//! A keep-alive client pool, as a busy Service's clients are: HTTP/1.1 connections sending
//! request after request, each kept until the server announces `Connection: close` (or, like
//! many clients, for [`REQUESTS_PER_CONNECTION`] requests), and one HTTP/2 (h2c) connection
//! kept until the server sends GOAWAY; half of them with the intercept header. As with `wrk`,
//! nothing is ever sent again: a connection closed while a request is in flight, or closed
//! without `Connection: close`, is a failed request. Only an HTTP/2 request that hyper never
//! sent (canceled by a GOAWAY that arrived first) is sent on the next connection.
//!
//! Start it, act on the cluster (czctl start, stop, a deleted proxy pod; later a second
//! developer joining and leaving), then [`Pool::finish`] and check [`Summary::failures`]. The
//! clients run on a runtime of their own, as a Service's clients are other processes: on the
//! test's runtime they would starve the in-process cluster (its API server carries the tunnel's
//! port-forward) of turns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::http::{connect, exchange, who, INTERCEPT, REQUEST_DEADLINE};

/// HTTP/1.1 connections of the pool (`wrk -c32`).
pub const HTTP1_CONNECTIONS: usize = 32;

/// A client closes its HTTP/1.1 connection after this many requests, between two requests (the
/// one safe moment), so that connections are also made while an intercept runs: kube-proxy pins
/// a connection to the backend it was made to.
const REQUESTS_PER_CONNECTION: usize = 200;

/// What the pool saw so far, shared by its clients.
struct Counters {
    started: std::time::Instant,
    answered: AtomicUsize,
    by_laptop: AtomicUsize,
    closed_by_server: AtomicUsize,
    resent: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, failure: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.failures
            .lock()
            .expect("not poisoned")
            .push(format!("{failure} (at {at:.1} s)"));
    }

    /// Counts a 200 from the expected backend: a pod without the header, a pod or the laptop
    /// with it.
    fn answered(&self, answer: Result<String, String>, header: bool, path: &str) {
        match answer {
            Ok(pod) if pod.starts_with("echo-") || (header && pod == "laptop") => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                self.by_laptop
                    .fetch_add(usize::from(pod == "laptop"), Ordering::Relaxed);
            }
            Ok(pod) => self.fail(format!("{path} answered by {pod}")),
            Err(error) => self.fail(format!("{path}: {error}")),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            answered: AtomicUsize::default(),
            by_laptop: AtomicUsize::default(),
            closed_by_server: AtomicUsize::default(),
            resent: AtomicUsize::default(),
            failures: Mutex::default(),
        }
    }
}

/// What the pool saw, once finished.
#[derive(Debug)]
pub struct Summary {
    /// Requests answered by the expected backend.
    pub answered: usize,
    /// Of those, by the laptop.
    pub by_laptop: usize,
    /// Connections the server ended with `Connection: close` or GOAWAY.
    pub closed_by_server: usize,
    /// HTTP/2 requests hyper never sent (a GOAWAY came first), sent on the next connection.
    pub resent: usize,
    /// Every failed request, and why.
    pub failures: Vec<String>,
}

/// The running pool.
pub struct Pool {
    counters: Arc<Counters>,
    stop: CancellationToken,
    clients: JoinSet<()>,
    runtime: tokio::runtime::Runtime,
}

impl Pool {
    /// Starts [`HTTP1_CONNECTIONS`] HTTP/1.1 clients and one HTTP/2 client against `address`.
    pub fn start(address: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the pool's runtime");
        let mut pool = Self {
            counters: Arc::default(),
            stop: CancellationToken::new(),
            clients: JoinSet::new(),
            runtime,
        };
        let on = pool.runtime.handle().clone();
        for index in 0..HTTP1_CONNECTIONS {
            let (address, counters, stop) = pool.parts(address);
            let client = http1_client(address, index % 2 == 0, counters, stop);
            pool.clients.spawn_on(client, &on);
        }
        let (address, counters, stop) = pool.parts(address);
        pool.clients
            .spawn_on(http2_client(address, counters, stop), &on);
        pool
    }

    fn parts(&self, address: &str) -> (String, Arc<Counters>, CancellationToken) {
        (address.to_owned(), self.counters.clone(), self.stop.clone())
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.counters.answered.load(Ordering::Relaxed)
    }

    /// Requests answered by the laptop so far.
    pub fn by_laptop(&self) -> usize {
        self.counters.by_laptop.load(Ordering::Relaxed)
    }

    /// Waits until the pool has had `more` requests answered from now (by the laptop when
    /// `by_laptop`), or fails saying `what` did not happen, with what the pool saw.
    pub async fn wait_for(&self, more: usize, by_laptop: bool, what: &str) {
        let count = || {
            if by_laptop {
                self.by_laptop()
            } else {
                self.answered()
            }
        };
        let target = count() + more;
        let deadline = tokio::time::Instant::now() + super::CZCTL_DEADLINE;
        while count() < target {
            if tokio::time::Instant::now() > deadline {
                let failures = self.counters.failures.lock().expect("not poisoned");
                panic!(
                    "timed out waiting for {what}: {} answered, {} by the laptop, {} failures: {:#?}",
                    self.answered(),
                    self.by_laptop(),
                    failures.len(),
                    failures.iter().step_by(failures.len() / 20 + 1).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients (each after its request in flight) and says what they saw.
    pub async fn finish(mut self) -> Summary {
        self.stop.cancel();
        while let Some(joined) = self.clients.join_next().await {
            joined.expect("a pool client");
        }
        self.runtime.shutdown_background();
        let counters = &self.counters;
        Summary {
            answered: counters.answered.load(Ordering::Relaxed),
            by_laptop: counters.by_laptop.load(Ordering::Relaxed),
            closed_by_server: counters.closed_by_server.load(Ordering::Relaxed),
            resent: counters.resent.load(Ordering::Relaxed),
            failures: counters.failures.lock().expect("not poisoned").clone(),
        }
    }
}

/// One HTTP/1.1 keep-alive client, sending back to back until `stop`.
async fn http1_client(
    address: String,
    header: bool,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let header = header.then_some(INTERCEPT);
    let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
    let mut on_connection = 0;
    for count in 0.. {
        if stop.is_cancelled() {
            return;
        }
        let to = if header.is_some() { "header" } else { "plain" };
        let path = format!("/pool/h1/{to}/{count}");
        let mut connection = match sender.take() {
            Some(connection) => connection,
            None => match connect(&address).await {
                Ok(connection) => {
                    on_connection = 0;
                    connection
                }
                Err(error) => {
                    counters.fail(format!("{path}: {error}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        on_connection += 1;
        let sent = exchange(&mut connection, &path, header, false);
        match tokio::time::timeout(REQUEST_DEADLINE, sent).await {
            Err(_) => counters.fail(format!("{path}: no answer within {REQUEST_DEADLINE:?}")),
            Ok(Err(failure)) => counters.fail(format!("{path}: {failure}")),
            Ok(Ok(answer)) => {
                counters.answered(who(answer.status, &answer.body), header.is_some(), &path);
                if answer.closes {
                    counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
                } else if on_connection < REQUESTS_PER_CONNECTION {
                    sender = Some(connection);
                }
            }
        }
    }
}

/// The HTTP/2 (h2c) client, sending back to back until `stop`, half its requests with the
/// intercept header.
async fn http2_client(address: String, counters: Arc<Counters>, stop: CancellationToken) {
    let mut sender: Option<http2::SendRequest<Empty<Bytes>>> = None;
    for count in 0.. {
        if stop.is_cancelled() {
            return;
        }
        let header = count % 2 == 0;
        let to = if header { "header" } else { "plain" };
        let path = format!("/pool/h2/{to}/{count}");
        let mut connection = match sender.take() {
            Some(connection) if !connection.is_closed() => connection,
            ended => {
                let sent_away = usize::from(ended.is_some());
                counters
                    .closed_by_server
                    .fetch_add(sent_away, Ordering::Relaxed);
                match connect_h2(&address).await {
                    Ok(connection) => connection,
                    Err(error) => {
                        counters.fail(format!("{path}: {error}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        // A connection the server sent away takes no more requests: the next one will.
        if connection.ready().await.is_err() {
            counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut request = Request::get(format!("http://echo.demo{path}"));
        if header {
            request = request.header(INTERCEPT.0, INTERCEPT.1);
        }
        let request = request.body(Empty::new()).expect("a valid request");
        let answer = async {
            let response = connection.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<(StatusCode, Bytes), hyper::Error>((status, body))
        };
        match tokio::time::timeout(REQUEST_DEADLINE, answer).await {
            Err(_) => counters.fail(format!("{path}: no answer within {REQUEST_DEADLINE:?}")),
            Ok(Err(error)) if error.is_canceled() => {
                counters.resent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(error)) => counters.fail(format!("{path} (HTTP/2): {error}")),
            Ok(Ok((status, body))) => {
                let body = String::from_utf8_lossy(&body);
                counters.answered(who(status, &body), header, &path);
            }
        }
        sender = Some(connection);
    }
}

/// An h2c connection to `address`.
async fn connect_h2(address: &str) -> Result<http2::SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| format!("h2 handshake with {address}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}
