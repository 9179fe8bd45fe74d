//! The body of a forwarded response, which gives its HTTP/1.1 connection back to the pool once it
//! has been read to its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::GiveBack;

/// A response body as it arrives from the address. It holds the HTTP/1.1 connection it comes
/// over until it ends; dropped before its end, it closes that connection instead (the rest of
/// the response would still be on it). `B` is the type of the request bodies sent.
pub struct ResponseBody<B: Send + 'static> {
    body: Incoming,
    give_back: Option<GiveBack<B>>,
}

impl<B: Send + 'static> ResponseBody<B> {
    pub(crate) fn new(body: Incoming, give_back: Option<GiveBack<B>>) -> Self {
        Self { body, give_back }
    }

    /// Gives the connection back if the body has ended.
    fn release_if_ended(&mut self, ended: bool) {
        if ended {
            if let Some(give_back) = self.give_back.take() {
                give_back.give_back();
            }
        }
    }
}

impl<B: Send + 'static> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("body", &self.body)
            .field("holds_connection", &self.give_back.is_some())
            .finish()
    }
}

impl<B: Send + Unpin + 'static> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            // A broken body leaves the connection in no state to reuse.
            Poll::Ready(Some(Err(_))) => {
                this.give_back = None;
                false
            }
            Poll::Pending => false,
        };
        this.release_if_ended(ended);
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: Send + 'static> Drop for ResponseBody<B> {
    /// A body with nothing to read (a HEAD answer, 204, 304, an empty 200) may be dropped unread.
    fn drop(&mut self) {
        let ended = self.body.is_end_stream();
        self.release_if_ended(ended);
    }
}
