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

    /// Keeps `exchange` and announces it: numbered anew when its id is 0, else in place of the
    /// record with its id (a provisional one), if that is still kept. The oldest record beyond
    /// the capacity is dropped. Never waits: subscribers that fall behind lag.
    pub(crate) fn record(&self, mut exchange: Exchange) -> Arc<Exchange> {
        let exchange = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let numbered = exchange.id != 0;
            if !numbered {
                ring.last_id += 1;
                exchange.id = ring.last_id;
            }
            let exchange = Arc::new(exchange);
            // Only a final record looks for its provisional one: a new one is never there.
            let kept = if numbered {
                ring.exchanges
                    .iter_mut()
                    .rev()
                    .find(|e| e.id == exchange.id)
            } else {
                None
            };
            match kept {
                Some(provisional) => *provisional = exchange.clone(),
                None => {
                    if ring.exchanges.len() == self.capacity {
                        ring.exchanges.pop_front();
                    }
                    ring.exchanges.push_back(exchange.clone());
                }
            }
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
        ring.exchanges.iter().rev().find(|e| e.id == id).cloned()
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
    fn a_final_record_replaces_its_provisional_one_in_place() {
        let store = Store::new(3, 1024);
        let mut provisional = exchange("GET", "/events", 200, &[]);
        provisional.in_progress = true;
        let id = store.record(provisional).id;
        store.record(exchange("GET", "/other", 200, &[]));
        let mut done = exchange("GET", "/events", 200, &[]);
        done.id = id;
        store.record(done);
        let kept: Vec<(u64, bool)> = store.all().iter().map(|e| (e.id, e.in_progress)).collect();
        assert_eq!(kept, [(1, false), (2, false)]);
        assert!(!store.get(1).expect("kept").in_progress);
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
