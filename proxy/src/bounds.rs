//! What bounds every wait of one client connection: the proxy's drain, and the deadline for
//! the client's next complete request head. Made once per connection and lent to each wait, so
//! that an idle connection's task holds one timer and one drain waiter, however many waits it
//! goes through. During the drain a wait for the client ends once the client has been quiet for
//! [`QUIET`] (the same timer, brought forward), never at the moment the drain begins: a client
//! may be sending a request just then.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

use crate::drain::QUIET;

/// Why a wait ended before what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The proxy drains and the client was quiet for [`QUIET`].
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

    /// Ready once the proxy drains.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shutdown.as_mut().poll(cx)
    }

    /// Brings the head deadline forward to `QUIET` from now, if it is later.
    fn quiet_from_now(&mut self) {
        let quiet = Instant::now() + QUIET;
        if self.head_deadline.deadline() > quiet {
            self.head_deadline.as_mut().reset(quiet);
        }
    }

    /// Gives the client `QUIET` from now to complete the head it began.
    fn quiet_for_the_head(&mut self) {
        self.head_deadline.as_mut().reset(Instant::now() + QUIET);
    }

    /// Ready once the head deadline has passed.
    pub fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.head_deadline.as_mut().poll(cx)
    }

    /// Moves the head deadline to `deadline`.
    pub fn set_head_deadline(&mut self, deadline: Instant) {
        self.head_deadline.as_mut().reset(deadline);
    }

    /// Awaits `future` (what the client sends), unless the head deadline passes first or, once
    /// the proxy drains, the client stays quiet for [`QUIET`]. What the client sends during the
    /// drain gets another [`QUIET`] to become a complete head.
    pub async fn until<F: Future>(&mut self, future: F) -> Result<F::Output, Interrupted> {
        let mut future = pin!(future);
        let mut draining = false;
        poll_fn(|cx| {
            if !draining && self.poll_shutdown(cx).is_ready() {
                draining = true;
                self.quiet_from_now();
            }
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                if draining {
                    self.quiet_for_the_head();
                }
                return Poll::Ready(Ok(output));
            }
            if self.poll_head_deadline(cx).is_ready() {
                return Poll::Ready(Err(if draining {
                    Interrupted::Shutdown
                } else {
                    Interrupted::HeadDeadline
                }));
            }
            Poll::Pending
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
    async fn a_wait_ends_at_the_head_deadline_or_after_a_quiet_moment_of_the_drain() {
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
        let began = Instant::now();
        let slow = bounds.until(std::future::pending::<()>()).await;
        assert_eq!(slow, Err(Interrupted::Shutdown));
        assert_eq!(
            began.elapsed(),
            QUIET,
            "closed after a quiet moment, not at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_client_sends_during_the_drain_is_waited_for() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let cancelled = pin!(shutdown.cancelled());
        let deadline = pin!(tokio::time::sleep(Duration::from_secs(60)));
        let mut bounds = Bounds::new(cancelled, deadline);
        let sent = bounds.until(tokio::time::sleep(QUIET / 2)).await;
        assert_eq!(sent, Ok(()), "the client sent within the quiet moment");
        tokio::time::sleep(QUIET * 3 / 4).await;
        let passed = poll_fn(|cx| Poll::Ready(bounds.poll_head_deadline(cx))).await;
        assert!(
            passed.is_pending(),
            "another quiet moment for the rest of its head"
        );
        tokio::time::sleep(QUIET / 2).await;
        let passed = poll_fn(|cx| Poll::Ready(bounds.poll_head_deadline(cx))).await;
        assert!(passed.is_ready());
    }
}
