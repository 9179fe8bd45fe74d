//! A client connection's exchanges — a request in, its response out — counted as they begin and
//! end, so that the connection's time limits know whether requests come, and an idle HTTP/1
//! connection knows when no exchange is in progress and it may give back hyper's state.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cz_shared::stream::BoxError;
use http_body::{Body, Frame, SizeHint};

use crate::body::ProxyBody;
use crate::drain::DrainSignal;
use crate::headers::ClientAddr;

/// What the requests of one connection share: the client, its exchanges so far, and whether
/// the proxy drains.
pub struct ConnectionState {
    /// Who the connection comes from, as the forwarding headers name it.
    pub client: ClientAddr,
    drain: DrainSignal,
    requests: AtomicU64,
    in_flight: AtomicUsize,
}

impl ConnectionState {
    /// The state of a new connection from `client` to a proxy that drains by `drain`.
    pub fn new(client: ClientAddr, drain: DrainSignal) -> Self {
        Self {
            client,
            drain,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// How many requests have arrived on the connection.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether the proxy drains: an HTTP/1 response then closes its connection.
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Whether no exchange is in progress: every request that arrived has been answered and its
    /// response body handed to the connection.
    pub fn is_between_exchanges(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// A request arrived: its exchange lasts until the returned guard (which goes into the
    /// response body, see [`ExchangeBody`]) is dropped.
    pub fn begin_exchange(self: Arc<Self>) -> Exchange {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Exchange(self)
    }
}

/// One exchange in progress; dropping it ends it.
pub struct Exchange(Arc<ConnectionState>);

impl Exchange {
    /// The connection the exchange belongs to.
    pub fn connection(&self) -> &ConnectionState {
        &self.0
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its exchange when hyper is done with it: at its last frame, or
/// when the connection drops it unfinished.
pub struct ExchangeBody {
    body: ProxyBody,
    _exchange: Exchange,
}

impl ExchangeBody {
    /// `body`, ending `exchange` when dropped.
    pub fn new(body: ProxyBody, exchange: Exchange) -> Self {
        Self {
            body,
            _exchange: exchange,
        }
    }
}

impl Body for ExchangeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<ConnectionState> {
        let peer = "127.0.0.1:40000".parse().expect("an address");
        Arc::new(ConnectionState::new(
            ClientAddr::new(peer, &[]),
            DrainSignal::default(),
        ))
    }

    #[test]
    fn an_exchange_lasts_until_its_response_body_is_dropped() {
        let state = state();
        assert!(state.is_between_exchanges());
        let first = state.clone().begin_exchange();
        let second = ExchangeBody::new(ProxyBody::empty(), state.clone().begin_exchange());
        assert_eq!(state.requests(), 2);
        drop(first);
        assert!(!state.is_between_exchanges(), "the second is in progress");
        drop(second);
        assert!(state.is_between_exchanges());
        assert_eq!(state.requests(), 2, "ending an exchange counts no request");
    }
}
