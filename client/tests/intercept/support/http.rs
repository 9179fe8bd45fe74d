//! HTTP for the tests: a client that says who answered (the echo pods and the laptop app answer
//! with JSON naming themselves), with fresh or keep-alive connections, and the laptop app.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The default intercept header.
pub const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");
/// How long one request may take before it counts as lost.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// Opens an HTTP/1.1 connection to `address`.
pub async fn connect(address: &str) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {address}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Why a request got no whole answer.
#[derive(Debug)]
pub enum Failure {
    /// Before the response head arrived.
    NoAnswer(hyper::Error),
    /// The head arrived, the body did not end properly.
    CutBody(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer(error) => write!(f, "no answer: {error}"),
            Self::CutBody(error) => write!(f, "body cut: {error}"),
        }
    }
}

/// A whole response.
pub struct Answer {
    pub status: StatusCode,
    /// Whether it announced `Connection: close`: the connection ends after it.
    pub closes: bool,
    pub body: String,
}

/// Sends `GET path` with `header` on `sender`; returns the status and the whole body, or why
/// not (a body cut short is an error, never a shorter body).
pub async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    header: Option<(&str, &str)>,
    close: bool,
) -> Result<(StatusCode, String), Failure> {
    exchange(sender, path, header, close)
        .await
        .map(|answer| (answer.status, answer.body))
}

/// [`get`], with whether the response closes the connection.
pub async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    header: Option<(&str, &str)>,
    close: bool,
) -> Result<Answer, Failure> {
    let mut request = Request::get(path).header("host", "echo.demo");
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    if close {
        request = request.header("connection", "close");
    }
    let response = sender
        .send_request(request.body(Empty::new()).expect("a valid request"))
        .await
        .map_err(Failure::NoAnswer)?;
    let status = response.status();
    let closes = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Failure::CutBody)?
        .to_bytes();
    Ok(Answer {
        status,
        closes,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Who answered: the `pod` field of a 200 JSON answer.
pub fn who(status: StatusCode, body: &str) -> Result<String, String> {
    if status != StatusCode::OK {
        return Err(format!("{status}: {body}"));
    }
    let json: Value = serde_json::from_str(body.trim()).map_err(|e| format!("{e}: {body:?}"))?;
    json["pod"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no pod in {body:?}"))
}

/// Who answers `GET /probe` with `header` on a fresh connection to `address`.
pub async fn answered_by(address: &str, header: Option<(&str, &str)>) -> Result<String, String> {
    tokio::time::timeout(REQUEST_DEADLINE, async {
        let mut sender = connect(address).await?;
        let (status, body) = get(&mut sender, "/probe", header, true)
            .await
            .map_err(|e| e.to_string())?;
        who(status, &body)
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_DEADLINE:?}")))
}

/// `len` bytes of the pattern `GET /bytes/N` answers, from offset `start`: byte `i` is
/// `i % 251`, so a byte lost, repeated or reordered anywhere shows.
pub fn pattern(start: usize, len: usize) -> Bytes {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

/// The developer's app on the laptop: answers `{"pod": "laptop"}` (or its own name) to
/// everything, once it has read the request's body; `GET /hold` is announced on `held_rx` and
/// answered only once `release` is called.
pub struct LaptopApp {
    pub port: u16,
    pub held_rx: mpsc::Receiver<()>,
    release_tx: watch::Sender<bool>,
    _stop: tokio_util::sync::DropGuard,
}

/// Body size of an answer to `/hold`: several flow-control-free frames, so a cut shows.
pub const HELD_BODY: usize = 256 * 1024;

impl LaptopApp {
    /// Listens on 127.0.0.1:`port` (0: any).
    pub async fn start(port: u16) -> Self {
        Self::named(port, "laptop").await
    }

    /// Listens on 127.0.0.1:`port` (0: any), answering as `name`.
    pub async fn named(port: u16, name: &'static str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the laptop app binds");
        let port = listener.local_addr().expect("local address").port();
        let (held_tx, held_rx) = mpsc::channel(16);
        let (release_tx, release_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
                };
                let (held_tx, release_rx) = (held_tx.clone(), release_rx.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (held_tx, mut release_rx) = (held_tx.clone(), release_rx.clone());
                        async move {
                            if let Some(size) = request.uri().path().strip_prefix("/bytes/") {
                                let size = size.parse().unwrap_or(0);
                                return Ok::<_, Infallible>(Response::new(Full::new(pattern(
                                    0, size,
                                ))));
                            }
                            let body = if request.uri().path() == "/hold" {
                                let _ = held_tx.send(()).await;
                                let _ = release_rx.wait_for(|released| *released).await;
                                let filler = "x".repeat(HELD_BODY);
                                json!({"pod": name, "filler": filler}).to_string()
                            } else {
                                let path = request.uri().path().to_owned();
                                // As most handlers do, it reads what it is sent, then answers.
                                let _ = request.into_body().collect().await;
                                json!({"pod": name, "path": path}).to_string()
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    // HTTP/1.1 and h2c: czctl speaks to the app as the cluster's client spoke.
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            held_rx,
            release_tx,
            _stop: stop.drop_guard(),
        }
    }

    /// Answers the held requests.
    pub fn release(&self) {
        self.release_tx.send_replace(true);
    }
}
