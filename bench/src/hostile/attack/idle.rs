//! 2,000 idle keep-alive connections on the HTTP port, each served one request first (half to
//! the pods, half intercepted), then held open doing nothing.

use std::time::Duration;

use http_body_util::{Either, Empty};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::hostile::victim::Addresses;
use crate::load;

/// Idle connections opened.
pub const CONNECTIONS: usize = 2_000;
/// How long one connection may take to be opened and served.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

/// Opens [`CONNECTIONS`] keep-alive connections, each served once, and holds them until `stop`.
pub async fn run(
    addresses: &Addresses,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let mut held = Vec::with_capacity(CONNECTIONS);
    let mut first_error = None;
    for n in 0..CONNECTIONS {
        // A proxy that holds connections without serving them must not hold the suite.
        if stop.is_cancelled() {
            break;
        }
        let target = addresses.http_target(n % 2 == 1);
        let served = tokio::time::timeout(SERVED_WITHIN, async {
            let mut sender = load::connect(target.ip, target.h1_port).await?;
            let request = load::request(target, "/", Either::Left(Empty::new()));
            load::exchange(&mut sender, request).await?;
            anyhow::Ok(sender)
        })
        .await;
        match served {
            Ok(Ok(sender)) => held.push(sender),
            Ok(Err(error)) => {
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Err(_) => {
                first_error.get_or_insert_with(|| format!("not served within {SERVED_WITHIN:?}"));
            }
        }
    }
    let _ = ready.send(());
    stop.cancelled().await;
    let served = held.len();
    let still_open = held.iter().filter(|sender| !sender.is_closed()).count();
    let refused = first_error.map_or_else(String::new, |e| format!(" (first refusal: {e})"));
    Ok(Outcome {
        figures: format!(
            "{served}/{CONNECTIONS} opened and served{refused}; at the end {still_open} still open"
        ),
        failures: Vec::new(),
    })
}
