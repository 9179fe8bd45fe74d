//! The one HTTP/2 (h2c) connection to the address that every HTTP/2 request shares, opened on
//! the first request and again when the server has closed it.

use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use crate::dial::Dialer;
use crate::error::ForwardError;
use crate::http1::ResponseBody;

/// The shared HTTP/2 connection, if one is open.
pub(crate) struct Http2Connection<B> {
    current: Mutex<Option<http2::SendRequest<B>>>,
    /// Held while dialing, so that requests arriving meanwhile wait for that connection instead
    /// of each opening one.
    dialing: tokio::sync::Mutex<()>,
}

impl<B> Http2Connection<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` over the shared connection; if that connection turns out to be closed
    /// before the request left, over a new one.
    pub(crate) async fn send(
        &self,
        dialer: &Dialer,
        request: Request<B>,
    ) -> Result<Response<ResponseBody<B>>, ForwardError> {
        let mut sender = self.sender(dialer).await?;
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut error) => match error.take_message() {
                Some(unsent) => {
                    drop(sender);
                    self.forget_closed();
                    let mut sender = self.sender(dialer).await?;
                    sender
                        .send_request(unsent)
                        .await
                        .map_err(|error| ForwardError::exchange(dialer, error))?
                }
                None => return Err(ForwardError::exchange(dialer, error.into_error())),
            },
        };
        Ok(response.map(|body| ResponseBody::new(body, None)))
    }

    /// The open connection, or a new one.
    async fn sender(&self, dialer: &Dialer) -> Result<http2::SendRequest<B>, ForwardError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let stream = dialer
            .connect()
            .await
            .map_err(|error| ForwardError::connect(dialer, error))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ForwardError::exchange(dialer, error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "HTTP/2 connection to the upstream ended with an error");
            }
        });
        *self.lock() = Some(sender.clone());
        Ok(sender)
    }

    fn open(&self) -> Option<http2::SendRequest<B>> {
        self.lock()
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    /// Drops the shared connection if it is closed, so the next request dials anew.
    fn forget_closed(&self) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *current = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<http2::SendRequest<B>>> {
        // Nothing panics while holding the lock; the slot is valid whatever happened.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
