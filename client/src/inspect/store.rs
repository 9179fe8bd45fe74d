//! The ring of captured exchanges: the last N kept, older ones dropped, and every new one
//! announced on a broadcast channel whose slow subscribers lag instead of holding capture back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::exchange::Exchange;

/// How many announcements a subscriber may fall behind before it skips the oldest.
const ANNOUNCE_BACKLOG: usize = 256;

/// The captured exchanges.
#[derive(Debug)]
pub(crate) struct Store {
    ring: Mutex<Ring>,
    capacity: usize,
    body_limit: usize,
    new_tx: broadcast::Sender<Arc<Exchange>>,
}

#[derive(Debug, Default)]
struct Ring {
    exchanges: VecDeque<Arc<Exchange>>,
    last_id: u64,
}

impl Store {
    /// A ring of `capacity` exchanges (at least 1) whose bodies are kept up to `body_limit`
    /// bytes each.
    pub(crate) fn new(capacity: usize, body_limit: usize) -> Self {
        Self {
            ring: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            body_limit,
            new_tx: broadcast::channel(ANNOUNCE_BACKLOG).0,
        }
    }

    /// The cap on each captured body.
    pub(crate) fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Numbers `exchange`, keeps it (dropping the oldest beyond the capacity) and announces it.
    /// Never waits: subscribers that fall behind lag.
    pub(crate) fn record(&self, mut exchange: Exchange) -> Arc<Exchange> {
        let exchange = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.last_id += 1;
            exchange.id = ring.last_id;
            let exchange = Arc::new(exchange);
            if ring.exchanges.len() == self.capacity {
                ring.exchanges.pop_front();
            }
            ring.exchanges.push_back(exchange.clone());
            exchange
        };
        // No subscriber is no error: the ring keeps it.
        let _ = self.new_tx.send(exchange.clone());
        exchange
    }

    /// The exchanges kept, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<Exchange>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.exchanges.iter().cloned().collect()
    }

    /// Exchange `id`, if still kept.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Exchange>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = ring.exchanges.front()?.id;
        let index = usize::try_from(id.checked_sub(oldest)?).ok()?;
        ring.exchanges.get(index).cloned()
    }

    /// Exchanges from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Exchange>> {
        self.new_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testing::exchange;

    #[test]
    fn the_ring_keeps_the_last_n_and_finds_them_by_number() {
        let store = Store::new(3, 1024);
        for n in 0..5 {
            store.record(exchange("GET", &format!("/{n}"), 200, &[]));
        }
        let ids: Vec<u64> = store.all().iter().map(|e| e.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(store.get(4).expect("a captured exchange").path(), "/3");
        assert!(store.get(2).is_none() && store.get(6).is_none() && store.get(0).is_none());
    }

    #[test]
    fn a_subscriber_that_falls_behind_lags_and_capture_goes_on() {
        let store = Store::new(10, 1024);
        let mut slow = store.subscribe();
        for _ in 0..ANNOUNCE_BACKLOG + 5 {
            store.record(exchange("GET", "/", 200, &[]));
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
        assert_eq!(slow.try_recv().expect("a captured exchange").id, 6);
        assert_eq!(store.all().len(), 10);
    }
}
