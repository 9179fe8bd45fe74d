//! Connections that hold a listener's resources while sending (almost) nothing: slowloris, a
//! request head trickled one byte every few seconds; and silent connections that never send
//! a byte, or only the start of the HTTP/2 preface (half-open from the proxy's point of view:
//! accepted, but no request ever comes).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Outcome;

/// Slowloris connections per port.
const SLOWLORIS: usize = 200;
/// Silent connections per port.
const SILENT: usize = 250;
/// How often a slowloris connection sends its next byte.
const TRICKLE_EVERY: Duration = Duration::from_secs(2);
/// How long one connection may take to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The start of a request head, never finished.
const HEAD_START: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: ";

/// [`SLOWLORIS`] connections to each of `ports`, each sending the start of a request head and
/// then one byte every [`TRICKLE_EVERY`].
pub async fn slowloris(
    ports: Vec<SocketAddr>,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let held = open(&ports, SLOWLORIS, HEAD_START, &stop).await;
    let _ = ready.send(());
    let mut ticks = tokio::time::interval(TRICKLE_EVERY);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        for connection in held.open.iter().flatten() {
            // One byte always fits the socket's buffer, so this never waits; a connection the
            // proxy closed fails here and is counted as closed at the end.
            let _ = connection.try_write(b"x");
        }
    }
    Ok(held.outcome(&format!("a byte every {}s", TRICKLE_EVERY.as_secs())))
}

/// [`SILENT`] connections to each of `ports` that send `first` (perhaps nothing) and then
/// nothing more.
pub async fn still(
    ports: Vec<SocketAddr>,
    first: &[u8],
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let held = open(&ports, SILENT, first, &stop).await;
    let _ = ready.send(());
    stop.cancelled().await;
    let what = match first.len() {
        0 => "nothing sent".to_owned(),
        len => format!("{len} bytes sent, then nothing"),
    };
    Ok(held.outcome(&what))
}

/// Connections being held.
struct Held {
    /// Each attempted connection, `None` where the connect failed.
    open: Vec<Option<TcpStream>>,
}

/// Opens `per_port` connections to each of `ports`, each sending `first` bytes, unless
/// stopped first.
async fn open(
    ports: &[SocketAddr],
    per_port: usize,
    first: &[u8],
    stop: &CancellationToken,
) -> Held {
    let mut open = Vec::with_capacity(ports.len() * per_port);
    for &port in ports {
        for _ in 0..per_port {
            if stop.is_cancelled() {
                return Held { open };
            }
            let connection = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(port))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|c| first.is_empty() || c.try_write(first).is_ok());
            open.push(connection);
        }
    }
    Held { open }
}

impl Held {
    /// How many connections were opened and how many the proxy still holds or closed.
    fn outcome(self, what: &str) -> Outcome {
        let attempted = self.open.len();
        let (mut opened, mut still_open, mut answered) = (0, 0, 0);
        let mut buf = [0; 1024];
        for connection in self.open.iter().flatten() {
            opened += 1;
            match connection.try_read(&mut buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => still_open += 1,
                Ok(n) if n > 0 => answered += 1,
                _ => {}
            }
        }
        Outcome {
            figures: format!(
                "{opened}/{attempted} connected ({what}); at the end {still_open} still open, \
                 {} closed by the proxy ({answered} with an answer)",
                opened - still_open
            ),
            failures: Vec::new(),
        }
    }
}
