//! Serving the inspector: bind its address (or the next free port), accept connections (a
//! bounded number), and answer only requests addressed to it by a loopback name when it listens
//! on loopback, so a web page elsewhere cannot reach it through a DNS name that resolves to
//! 127.0.0.1.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::api::{error_json, InspectorBody};
use super::Inspector;

/// How many ports after the asked one [`bind`] tries when it is taken.
pub const PORT_TRIES: u16 = 20;
/// Connections served at once (a browser opens a few; scripts a few more).
const MAX_CONNECTIONS: usize = 64;

/// Binds `address`, or when its port is taken the next free one of the [`PORT_TRIES`] after it;
/// port 0 takes any free port.
pub async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let mut last_error = None;
    for offset in 0..PORT_TRIES {
        let Some(port) = address.port().checked_add(offset) else {
            break;
        };
        match TcpListener::bind(SocketAddr::new(address.ip(), port)).await {
            Ok(listener) => return Ok(listener),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && address.port() != 0 => {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// Serves `inspector` on `listener` until `stop`.
pub(super) async fn serve(
    inspector: Inspector,
    listener: TcpListener,
    stop: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "inspector accept failed");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "inspector connection refused: too many open");
            continue;
        };
        let inspector = inspector.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let inspector = inspector.clone();
                async move { Ok::<_, Infallible>(answer(&inspector, local, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                result = connection => if let Err(error) = result {
                    debug!(%error, %peer, "inspector connection ended");
                },
            }
            drop(slot);
        });
    }
}

async fn answer(
    inspector: &Inspector,
    local: SocketAddr,
    request: Request<Incoming>,
) -> Response<InspectorBody> {
    if local.ip().is_loopback() && !addressed_to_loopback(&request, local.port()) {
        return error_json(
            StatusCode::FORBIDDEN,
            format!(
                "the inspector answers only requests to localhost:{0} or 127.0.0.1:{0}",
                local.port()
            ),
        );
    }
    inspector.handle(request).await
}

/// Whether the request's host (authority or `Host`) is a loopback name with this port.
fn addressed_to_loopback<B>(request: &Request<B>, port: u16) -> bool {
    let host = request.uri().authority().map(|a| a.as_str()).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
    });
    let Some(host) = host else {
        return false;
    };
    let port_text = port.to_string();
    let name = match host.rsplit_once(':') {
        Some((name, given)) if !name.ends_with(':') && given == port_text => name,
        Some((name, _)) if name == "[::1]" || !name.contains(':') => return false,
        _ => host,
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "[::1]"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> Request<()> {
        Request::get("/")
            .header("host", host)
            .body(())
            .expect("valid test input")
    }

    #[test]
    fn only_loopback_names_with_this_port_are_answered() {
        for host in [
            "localhost:4040",
            "127.0.0.1:4040",
            "[::1]:4040",
            "LOCALHOST:4040",
        ] {
            assert!(addressed_to_loopback(&with_host(host), 4040), "{host}");
        }
        for host in [
            "evil.example:4040",
            "localhost:4041",
            "127.0.0.1.evil:4040",
            "10.0.0.1:4040",
        ] {
            assert!(!addressed_to_loopback(&with_host(host), 4040), "{host}");
        }
        let no_host = Request::get("/").body(()).expect("valid test input");
        assert!(!addressed_to_loopback(&no_host, 4040));
    }

    #[tokio::test]
    async fn a_taken_port_gives_the_next_free_one() {
        let taken = bind("127.0.0.1:0".parse().expect("valid test input"))
            .await
            .expect("valid test input");
        let port = taken.local_addr().expect("valid test input").port();
        let next = bind(taken.local_addr().expect("valid test input"))
            .await
            .expect("valid test input");
        assert!(next.local_addr().expect("valid test input").port() > port);
    }
}
