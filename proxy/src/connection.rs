//! One connection on the intercepted port, from accept to close, with the time limits hyper does
//! not enforce itself: from accept to the first complete request head (protocol detection and
//! the HTTP/2 preface included), and how long an HTTP/2 connection may start no request. hyper's
//! own `header_read_timeout` covers every later HTTP/1 head, idle keep-alive included.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::headers::ClientAddr;
use crate::linger::Lingering;
use crate::router::Router;

/// What the requests of one connection share: the client, and the signs of life the
/// connection's time limits watch.
pub struct ConnectionState {
    client: ClientAddr,
    requests: AtomicU64,
    http2: AtomicBool,
}

impl ConnectionState {
    /// The state of a new connection from `client`.
    pub fn new(client: ClientAddr) -> Self {
        Self {
            client,
            requests: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn request_arrived(&self, version: Version) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
    }
}

/// Serves one accepted connection until it closes, `header_timeout` passes without a complete
/// first request head, an HTTP/2 connection starts no request for a whole `header_timeout`
/// period, or `shutdown` (then gracefully: in-flight requests finish, HTTP/2 gets GOAWAY).
pub async fn serve(
    io: Lingering,
    builder: auto::Builder<TokioExecutor>,
    router: Arc<Router>,
    state: Arc<ConnectionState>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    // No buffer or protocol state is spent on a connection until its client sends something.
    tokio::select! {
        () = shutdown.cancelled() => return,
        readable = tokio::time::timeout(header_timeout, io.readable()) => {
            if !matches!(readable, Ok(Ok(()))) {
                return debug!("the client sent nothing within the header timeout; closing");
            }
        }
    }
    let service = {
        let state = state.clone();
        service_fn(move |request| {
            let (router, state) = (router.clone(), state.clone());
            async move {
                state.request_arrived(request.version());
                Ok::<_, Infallible>(router.handle(request, &state.client).await)
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut watchdog = Watchdog {
        state,
        period: header_timeout,
        seen: 0,
        armed: true,
    };
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            quiet = watchdog.quiet_period(), if !closing && watchdog.armed => match quiet {
                Quiet::NoRequest => {
                    return debug!("no complete request head within the header timeout; closing");
                }
                Quiet::Http2Idle => {
                    debug!("HTTP/2 connection idle for the header timeout; closing gracefully");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                Quiet::Alive => {}
            },
        }
    }
}

/// What a connection did during one period of the watchdog.
enum Quiet {
    /// Not one complete request head since accept.
    NoRequest,
    /// An HTTP/2 connection that started no request in the period.
    Http2Idle,
    /// Requests came, or hyper's own timer watches it (HTTP/1).
    Alive,
}

/// Looks at a connection once per period; disarmed once it turns out to be HTTP/1, whose idle
/// time hyper bounds itself.
struct Watchdog {
    state: Arc<ConnectionState>,
    period: Duration,
    seen: u64,
    armed: bool,
}

impl Watchdog {
    async fn quiet_period(&mut self) -> Quiet {
        tokio::time::sleep(self.period).await;
        let requests = self.state.requests.load(Ordering::Relaxed);
        let http2 = self.state.http2.load(Ordering::Relaxed);
        if requests == 0 {
            Quiet::NoRequest
        } else if !http2 {
            self.armed = false;
            Quiet::Alive
        } else if requests == self.seen {
            Quiet::Http2Idle
        } else {
            self.seen = requests;
            Quiet::Alive
        }
    }
}
