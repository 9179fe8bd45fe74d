//! Connection caps: a listener admits at most so many connections at once. Beyond the cap a new
//! connection is refused at once (reset, no state kept) and counted; open ones are unaffected.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Listener, Metrics};

/// The cap of one listener (or of several sharing one budget).
#[derive(Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
}

impl ConnectionLimit {
    /// At most `max` connections at once on `listener`, counted in `metrics`.
    pub fn new(listener: Listener, max: usize, metrics: &Metrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            open: metrics.connections(listener),
            refused: metrics.connections_refused(listener),
        }
    }

    /// A permit for one more connection, held as long as it is open; `None` (counted as
    /// refused) at the cap.
    pub fn admit(&self) -> Option<ConnectionPermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.inc();
                Some(ConnectionPermit {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                None
            }
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_counts_the_rest() {
        let metrics = Metrics::new();
        let limit = ConnectionLimit::new(Listener::Admin, 2, &metrics);
        let first = limit.admit().expect("first");
        let _second = limit.admit().expect("second");
        assert!(limit.admit().is_none(), "the third is over the cap");
        let text = metrics.encode();
        assert!(
            text.contains(r#"cz_proxy_connections{listener="Admin"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cz_proxy_connections_refused_total{listener="Admin"} 1"#),
            "{text}"
        );
        drop(first);
        assert!(
            limit.admit().is_some(),
            "a closed connection frees its place"
        );
    }
}
