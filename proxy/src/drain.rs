//! The proxy's way out, in the order a cluster needs so that no client loses a request.
//!
//! When the pod is deleted (SIGTERM), the cluster stops listing it as an endpoint, but kube-proxy
//! and ingress controllers follow seconds later, and connections they already made to the proxy
//! stay pinned to it. So the proxy:
//!
//! 1. **begins draining** at once: every HTTP/1 response carries
//!    `Connection: close` and its connection closes after it, an HTTP/2 connection gets GOAWAY
//!    (graceful: its streams in flight finish) once it has served a request, and a connection
//!    idle for [`QUIET`] is closed — never one whose client may just have sent a request;
//! 2. **keeps accepting** new connections for the shutdown delay (`--shutdown-delay`), served
//!    the same way, for the clients that the cluster still sends to it — with `/readyz` still
//!    passing: the pod's endpoint is terminating (not ready) from the moment it is deleted, and
//!    kube-proxy falls back to a terminating endpoint only while it is serving, which is what
//!    keeps a Service whole while a deleted proxy's replacement starts;
//! 3. **closes its listeners** after the delay, fails `/readyz`, and lets what is in flight
//!    finish, up to the drain timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a client connection must have gone without a request during the drain before it
/// is closed. A client sending continuously gets `Connection: close` (or GOAWAY) on a response
/// instead; one idle this long is unlikely to be sending right now, which is the one moment
/// closing an HTTP/1 connection loses a request.
pub const QUIET: Duration = Duration::from_secs(1);

/// The drain's two moments, shared by every worker and listener.
#[derive(Clone)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    begun: CancellationToken,
    closed: CancellationToken,
}

impl Drain {
    /// A drain that begins when `shutdown` is cancelled and closes the listeners `delay` later;
    /// the returned future runs it.
    pub fn after(
        shutdown: CancellationToken,
        delay: Duration,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let drain = Self {
            draining: Arc::default(),
            begun: CancellationToken::new(),
            closed: CancellationToken::new(),
        };
        let run = {
            let drain = drain.clone();
            async move {
                shutdown.cancelled().await;
                drain.draining.store(true, Ordering::Relaxed);
                drain.begun.cancel();
                tokio::time::sleep(delay).await;
                drain.closed.cancel();
            }
        };
        (drain, run)
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// What a connection keeps to ask, once per response, whether the drain has begun.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal(self.draining.clone())
    }

    /// Cancelled when the drain begins: connections watch it.
    pub fn begun(&self) -> &CancellationToken {
        &self.begun
    }

    /// Cancelled when the listeners close: accept loops watch it.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

/// Whether the drain has begun, as one connection asks it (one atomic load).
#[derive(Clone, Default)]
pub struct DrainSignal(Arc<AtomicBool>);

impl DrainSignal {
    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn listeners_close_the_delay_after_the_drain_begins() {
        let shutdown = CancellationToken::new();
        let (drain, run) = Drain::after(shutdown.clone(), Duration::from_secs(5));
        let run = tokio::spawn(run);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!drain.is_draining() && !drain.begun().is_cancelled());
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(drain.is_draining() && drain.begun().is_cancelled());
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(!drain.closed().is_cancelled(), "still accepting");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(drain.closed().is_cancelled());
        run.await.expect("the drain ran");
    }
}
