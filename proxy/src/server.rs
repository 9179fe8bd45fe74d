//! The intercepted port: HTTP/1.1 and h2c connections, each request routed on its own.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::accept;
use crate::config::Config;
use crate::connection::{self, Protocols};
use crate::drain::Drain;
use crate::exchange::ConnectionState;
use crate::headers::ClientAddr;
use crate::limits::ConnectionLimit;
use crate::linger::Lingering;
use crate::router::Router;

/// Runs [`serve`] on a thread of its own with its own single-threaded event loop, as one more
/// HTTP worker. Workers share nothing on the request path but the route table, the metrics and
/// the connection cap: each has its own upstream connections, so a request never waits for
/// another thread.
pub fn serve_on_own_thread(
    worker: usize,
    listener: std::net::TcpListener,
    router: Arc<Router>,
    limit: ConnectionLimit,
    config: Config,
    drain: Drain,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("http-worker-{worker}"))
        .spawn(move || {
            runtime.block_on(async {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, router, limit, &config, &drain).await,
                    Err(error) => warn!(%error, worker, "HTTP worker could not listen"),
                }
            });
        })
}

/// How often an HTTP/2 connection is pinged to find a client that vanished without closing it.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long an HTTP/2 client may take to answer a ping before its connection is closed.
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves the intercepted port, at most `limit` connections at once; once `drain` begins, each
/// connection is ended at its next safe moment (see [`crate::drain`]); once `drain` closes the
/// listeners, lets what is in flight finish for up to `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    limit: ConnectionLimit,
    config: &Config,
    drain: &Drain,
) {
    let protocols = Arc::new(protocols(config));
    let connections = TaskTracker::new();
    // The worker's connections wait on a token of their own, not on one all threads share.
    let connection_shutdown = drain.begun().child_token();
    while let Some((stream, peer, permit)) = accept::next(&listener, &limit, drain.closed()).await {
        let _ = stream.set_nodelay(true);
        let client = ClientAddr::new(peer, &config.trusted_proxies);
        let state = Arc::new(ConnectionState::new(client, drain.signal()));
        let connection = connection::serve(
            Lingering::new(stream, permit),
            protocols.clone(),
            router.clone(),
            state,
            config.header_read_timeout,
            connection_shutdown.clone(),
        );
        connections.spawn(connection.instrument(tracing::debug_span!("conn", %peer)));
    }
    drop(listener);
    info!("stopped accepting HTTP connections; draining in-flight requests");
    connections.close();
    if tokio::time::timeout(config.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        warn!(timeout = ?config.drain_timeout, "requests still in flight at the drain deadline");
    }
}

/// HTTP/1 and HTTP/2 as `config` sets them.
fn protocols(config: &Config) -> Protocols {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes as usize);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(config.max_header_bytes);
    Protocols { http1, http2 }
}
