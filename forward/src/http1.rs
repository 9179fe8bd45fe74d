//! HTTP/1.1 connections to the one address, kept between requests.
//!
//! A general-purpose client keys its pool by scheme and authority (hashed on every checkout),
//! takes locks in several places and spawns a task per request to watch the connection become
//! idle again. Here there is one address, so the pool is a stack of idle connections behind one
//! short lock: a request takes the most recently used one (its socket and buffers are the
//! warmest), and the connection goes back when the response body has been read to its end
//! (see [`ResponseBody`]). A task is spawned only when a connection is not yet idle at that moment
//! (its request body still uploading), and one per pool evicts connections idle for too long.

mod response;

pub use response::ResponseBody;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::dial::Dialer;
use crate::error::ForwardError;

/// How long an idle connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle HTTP/1.1 connections to one address.
pub(crate) struct Http1Pool<B> {
    idle: Mutex<VecDeque<Idle<B>>>,
    reaper_started: AtomicBool,
}

/// A connection waiting for its next request.
struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

impl<B> Http1Pool<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new() -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            reaper_started: AtomicBool::new(false),
        }
    }

    /// Sends `request` over an idle connection, or a new one when none is idle or every idle one
    /// turns out to be closed before the request could be written (the server closed it while it
    /// idled: the request is then retried, as it never left).
    pub(crate) async fn send(
        self: &Arc<Self>,
        dialer: &Dialer,
        mut request: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, ForwardError> {
        while let Some(mut sender) = self.take() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.hand_over(response, sender)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(ForwardError::exchange(dialer, error.into_error())),
                },
            }
        }
        let mut sender = self.connect(dialer).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.hand_over(response, sender)),
            Err(error) => Err(ForwardError::exchange(dialer, error)),
        }
    }

    /// The most recently used idle connection that can take a request now.
    fn take(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.lock();
        while let Some(Idle { sender, .. }) = idle.pop_back() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// A new connection, driven by a task of its own (upgrades included).
    async fn connect(
        self: &Arc<Self>,
        dialer: &Dialer,
    ) -> Result<http1::SendRequest<B>, ForwardError> {
        let stream = dialer
            .connect()
            .await
            .map_err(|error| ForwardError::connect(dialer, error))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ForwardError::exchange(dialer, error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%error, "connection to the upstream ended with an error");
            }
        });
        self.start_reaper();
        Ok(sender)
    }

    /// The response, whose body gives the connection back once read to its end; an upgraded
    /// connection (101) is no longer HTTP and never goes back.
    fn hand_over(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<B>,
    ) -> Response<ResponseBody<B>> {
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        let give_back = reusable.then(|| GiveBack {
            pool: self.clone(),
            sender,
        });
        response.map(|body| ResponseBody::new(body, give_back))
    }

    /// Starts, once per pool, the task that closes connections idle for longer than
    /// [`IDLE_TIMEOUT`]; it ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(reap(pool));
    }
}

impl<B: Send + 'static> Http1Pool<B> {
    /// Puts a connection whose exchange is over back on the stack: at once if it is idle, else
    /// once it is (its request body may still be uploading after an early response).
    fn put(self: Arc<Self>, mut sender: http1::SendRequest<B>) {
        if sender.is_ready() {
            self.push(sender);
        } else if !sender.is_closed() {
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    self.push(sender);
                }
            });
        }
    }

    fn push(&self, sender: http1::SendRequest<B>) {
        let since = Instant::now();
        self.lock().push_back(Idle { sender, since });
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle<B>>> {
        // Nothing panics while holding the lock; a poisoned stack is still a valid stack.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every half timeout, drops the connections idle for longer than [`IDLE_TIMEOUT`] or closed by
/// the server (the oldest are at the front).
async fn reap<B: Send + 'static>(pool: Weak<Http1Pool<B>>) {
    let mut interval = tokio::time::interval(IDLE_TIMEOUT / 2);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.lock()
            .retain(|idle| idle.since.elapsed() < IDLE_TIMEOUT && !idle.sender.is_closed());
    }
}

/// What a response body needs to give its connection back to the pool.
pub(crate) struct GiveBack<B: Send + 'static> {
    pool: Arc<Http1Pool<B>>,
    sender: http1::SendRequest<B>,
}

impl<B: Send + 'static> GiveBack<B> {
    /// Returns the connection: its response was read to the end.
    pub(crate) fn give_back(self) {
        self.pool.put(self.sender);
    }
}
