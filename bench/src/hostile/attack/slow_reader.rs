//! Clients that ask for a big download and stop reading, on every route: what piles up is
//! whatever the proxy lets pile up between a fast sender and a stopped reader.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::hostile::victim::Addresses;
use crate::load::INTERCEPT_HEADER;

/// Stopped readers per route.
const PER_ROUTE: usize = 2;
/// Size of each download (`GET /bytes/N` on cz-bench's app and on the sample's echo pods): more
/// than any buffer on the way.
const DOWNLOAD: u64 = 1 << 30;
/// How long one download may take to be asked for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts [`PER_ROUTE`] downloads on each route and never reads them, until `stop`.
pub async fn run(
    addresses: &Addresses,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let intercept = format!("{}: {}\r\n", INTERCEPT_HEADER.0, INTERCEPT_HEADER.1);
    let mut routes: Vec<(SocketAddr, &str)> = vec![
        (addresses.at(addresses.http), ""),
        (addresses.at(addresses.http), &intercept),
    ];
    routes.extend(addresses.passthrough.map(|port| (addresses.at(port), "")));
    let mut readers = Vec::new();
    let mut refused = 0;
    for (address, route) in &routes {
        for _ in 0..PER_ROUTE {
            let head = format!("GET /bytes/{DOWNLOAD} HTTP/1.1\r\nHost: bench\r\n{route}\r\n");
            let started = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut stream = TcpStream::connect(address).await?;
                stream.write_all(head.as_bytes()).await?;
                std::io::Result::Ok(stream)
            })
            .await;
            match started {
                Ok(Ok(stream)) => readers.push(stream),
                _ => refused += 1,
            }
        }
    }
    let _ = ready.send(());
    stop.cancelled().await;
    let mut buf = [0; 1];
    let still_open = readers
        .iter()
        .filter(|s| s.try_read(&mut buf).is_ok_and(|n| n > 0))
        .count();
    Ok(Outcome {
        figures: format!(
            "{} downloads of {} MiB never read ({} routes, {refused} could not start); at the \
             end {still_open} still open",
            readers.len(),
            DOWNLOAD >> 20,
            routes.len()
        ),
        failures: Vec::new(),
    })
}
