//! HTTP/1 on one client connection, served by hyper while requests come and parked while it
//! idles: once no exchange has been in progress for [`PARK_AFTER_IDLE`], hyper gives the socket
//! back (with the bytes it read but did not use) and its buffers and state are dropped, so an
//! idle keep-alive connection costs its socket and a small task, not hyper's read and write
//! buffers. The client's next bytes start a fresh hyper connection on the same socket; the
//! client sees one keep-alive connection throughout.
//!
//! Time limits: hyper's `header_read_timeout` bounds every head while hyper serves the
//! connection; the connection itself bounds the time from accept (or from the end of the last
//! exchange) to a complete head across parking, so neither an idle connection nor a client that
//! trickles a head in pieces outlives the header timeout.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1::{Builder, Parts, UpgradeableConnection};
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::bounds::{Bounds, Interrupted};
use crate::exchange::{ConnectionState, ExchangeBody};
use crate::park::{IoSignals, ParkableIo};

/// How long a connection goes without an exchange in progress before it is parked. Long enough
/// that a client sending its requests back to back (microseconds apart) never pays for a fresh
/// hyper connection (about 2,600 instructions, 7% of a request); short enough that connections
/// accepted in a burst do not hold hyper's buffers all at once, which would leave the heap that
/// much larger after they park.
pub const PARK_AFTER_IDLE: Duration = Duration::from_millis(10);

/// What serves the requests of one connection.
pub trait Handler:
    Service<
        Request<Incoming>,
        Response = Response<ExchangeBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Unpin
    + Send
    + 'static
{
}

impl<S> Handler for S where
    S: Service<
            Request<Incoming>,
            Response = Response<ExchangeBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Unpin
        + Send
        + 'static
{
}

type Connection<S> = UpgradeableConnection<TokioIo<ParkableIo>, S>;

/// Serves HTTP/1 on `io` until the connection closes, is upgraded, goes without a complete head
/// until the head deadline of `bounds` (moved to `header_timeout` after each exchange), or the
/// proxy drains and the connection, parked, stays quiet for [`crate::drain::QUIET`].
pub async fn serve<S: Handler>(
    mut io: ParkableIo,
    builder: &Builder,
    mut handler: S,
    state: &ConnectionState,
    bounds: &mut Bounds<'_, '_>,
    header_timeout: Duration,
) {
    // A connection accepted just now waits out the idle time before it parks.
    let mut parked_long = false;
    loop {
        let requests = state.requests();
        // Boxed: a parked connection's task does not keep room for hyper's state.
        let served = Box::pin(serve_until_parked(
            io,
            builder,
            handler,
            state,
            bounds,
            parked_long,
        ));
        let Some((parked, parked_handler)) = served.await else {
            return;
        };
        (io, handler) = (parked, parked_handler);
        let parked_at = Instant::now();
        if state.requests() != requests {
            bounds.set_head_deadline(parked_at + header_timeout);
        }
        match bounds.until(poll_fn(|cx| io.poll_read_ready(cx))).await {
            Ok(Ok(())) => parked_long = parked_at.elapsed() >= PARK_AFTER_IDLE,
            Ok(Err(error)) => return debug!(%error, "waiting for the client failed"),
            Err(Interrupted::Shutdown) => return,
            Err(Interrupted::HeadDeadline) => {
                return debug!("idle keep-alive connection sent no request head within the header timeout; closing");
            }
        }
    }
}

/// Serves `io` with a fresh hyper connection until it parks (then returns the socket and the
/// handler) or ends. A connection that was `parked_long` (its client sends requests further
/// apart than [`PARK_AFTER_IDLE`]) parks again as soon as its next exchange is over, so that such
/// a client's requests do not each cost a timer's wake-up as well.
async fn serve_until_parked<S: Handler>(
    io: ParkableIo,
    builder: &Builder,
    handler: S,
    state: &ConnectionState,
    bounds: &mut Bounds<'_, '_>,
    parked_long: bool,
) -> Option<(ParkableIo, S)> {
    io.reset_signals();
    let mut period = Period {
        signals: io.signals(),
        connection: Some(
            builder
                .serve_connection(TokioIo::new(io), handler)
                .with_upgrades(),
        ),
        requests_at_start: state.requests(),
        idle_seen: state.requests(),
        awaiting_head: true,
        closing: false,
        park_at_once: parked_long,
    };
    let mut idle = pin!(tokio::time::sleep(PARK_AFTER_IDLE));
    poll_fn(|cx| period.poll(cx, state, bounds, idle.as_mut())).await
}

/// One hyper connection's time on the socket.
struct Period<S: Handler> {
    connection: Option<Connection<S>>,
    signals: Arc<IoSignals>,
    /// Requests seen when the period began: until one more arrives, hyper's keep-alive state is
    /// not idle and the connection cannot be parked.
    requests_at_start: u64,
    /// Requests seen when the connection was last found between exchanges.
    idle_seen: u64,
    awaiting_head: bool,
    closing: bool,
    /// Park when the first exchange is over, without waiting out [`PARK_AFTER_IDLE`].
    park_at_once: bool,
}

impl<S: Handler> Period<S> {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        state: &ConnectionState,
        bounds: &mut Bounds<'_, '_>,
        mut idle: Pin<&mut Sleep>,
    ) -> Poll<Option<(ParkableIo, S)>> {
        // The drain never ends a hyper connection here: its responses carry `Connection: close`
        // (see `connection::handler`), and once idle it parks and closes after a quiet moment.
        let connection = self.connection.as_mut().expect("polled after it ended");
        if self.awaiting_head {
            if state.requests() != self.requests_at_start {
                self.awaiting_head = false;
            } else if bounds.poll_head_deadline(cx).is_ready() {
                debug!("no complete request head within the header timeout; closing");
                return Poll::Ready(None);
            }
        }
        if let Poll::Ready(ended) = Pin::new(&mut *connection).poll(cx) {
            if let Err(error) = ended {
                debug!(%error, "connection ended with an error");
            }
            return Poll::Ready(None);
        }
        let requests = state.requests();
        if self.closing || requests == self.requests_at_start || !state.is_between_exchanges() {
            return Poll::Pending;
        }
        if requests != self.idle_seen {
            self.idle_seen = requests;
            if std::mem::take(&mut self.park_at_once) && self.signals.waits_for_client() {
                return self.park(cx);
            }
            idle.as_mut().reset(Instant::now() + PARK_AFTER_IDLE);
        }
        if idle.as_mut().poll(cx).is_pending() || !self.signals.waits_for_client() {
            return Poll::Pending;
        }
        self.park(cx)
    }

    /// Ends the hyper connection, idle between exchanges, without a word to the client, and
    /// takes the socket back.
    fn park(&mut self, cx: &mut Context<'_>) -> Poll<Option<(ParkableIo, S)>> {
        let mut connection = self.connection.take().expect("parked once");
        self.signals.set_parking(true);
        // Idle, hyper closes at once: no `Connection: close`, nothing written.
        Pin::new(&mut connection).graceful_shutdown();
        let ended = Pin::new(&mut connection).poll(cx);
        self.signals.set_parking(false);
        match ended {
            Poll::Ready(Ok(())) => Poll::Ready(connection.into_parts().map(taken_back)),
            Poll::Ready(Err(error)) => {
                debug!(%error, "connection ended with an error while parking");
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Still reading a request body its response did not wait for: hyper closes the
                // connection once it has.
                debug!("connection busy after all; it closes after the exchange in progress");
                self.closing = true;
                self.connection = Some(connection);
                Poll::Pending
            }
        }
    }
}

/// The socket and handler of a parked hyper connection, with the bytes it had read and not used.
fn taken_back<S>(parts: Parts<TokioIo<ParkableIo>, S>) -> (ParkableIo, S) {
    let Parts {
        io,
        read_buf,
        service,
        ..
    } = parts;
    let mut io = io.into_inner();
    if !read_buf.is_empty() {
        io.unread(&read_buf);
    }
    (io, service)
}
