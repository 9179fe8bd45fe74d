//! What bounds every wait of one client connection: the proxy's shutdown, and the deadline for
//! the client's next complete request head. Made once per connection and lent to each wait, so
//! that an idle connection's task holds one timer and one shutdown waiter, however many waits it
//! goes through.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

/// Why a wait ended before what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The proxy is shutting down.
    Shutdown,
    /// The head deadline passed.
    HeadDeadline,
}

/// The shutdown signal and the head deadline of one connection.
pub struct Bounds<'a, 'token> {
    shutdown: Pin<&'a mut WaitForCancellationFuture<'token>>,
    head_deadline: Pin<&'a mut Sleep>,
}

impl<'a, 'token> Bounds<'a, 'token> {
    /// Bounds by `shutdown` and `head_deadline`.
    pub fn new(
        shutdown: Pin<&'a mut WaitForCancellationFuture<'token>>,
        head_deadline: Pin<&'a mut Sleep>,
    ) -> Self {
        Self {
            shutdown,
            head_deadline,
        }
    }

    /// Ready once the proxy shuts down.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shutdown.as_mut().poll(cx)
    }

    /// Ready once the head deadline has passed.
    pub fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.head_deadline.as_mut().poll(cx)
    }

    /// Moves the head deadline to `deadline`.
    pub fn set_head_deadline(&mut self, deadline: Instant) {
        self.head_deadline.as_mut().reset(deadline);
    }

    /// Awaits `future`, unless the proxy shuts down or the head deadline passes first.
    pub async fn until<F: Future>(&mut self, future: F) -> Result<F::Output, Interrupted> {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if self.poll_shutdown(cx).is_ready() {
                return Poll::Ready(Err(Interrupted::Shutdown));
            }
            if self.poll_head_deadline(cx).is_ready() {
                return Poll::Ready(Err(Interrupted::HeadDeadline));
            }
            future.as_mut().poll(cx).map(Ok)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_shutdown_or_at_the_head_deadline_whichever_comes_first() {
        let shutdown = CancellationToken::new();
        let cancelled = pin!(shutdown.cancelled());
        let deadline = pin!(tokio::time::sleep(Duration::from_secs(10)));
        let mut bounds = Bounds::new(cancelled, deadline);
        let quick = bounds
            .until(tokio::time::sleep(Duration::from_secs(1)))
            .await;
        assert_eq!(quick, Ok(()));
        let slow = bounds
            .until(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(slow, Err(Interrupted::HeadDeadline));
        bounds.set_head_deadline(Instant::now() + Duration::from_secs(10));
        shutdown.cancel();
        let slow = bounds.until(std::future::pending::<()>()).await;
        assert_eq!(slow, Err(Interrupted::Shutdown));
    }
}
