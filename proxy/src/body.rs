//! The one response body type the proxy serves, whichever way the request went.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use cz_forward::ResponseBody;
use cz_shared::stream::{BoxError, TunnelBody};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::metrics::ActiveStream;
use crate::routes::RoutePermit;

/// A response body: from the upstream, from the laptop, or written by the proxy itself.
pub enum ProxyBody {
    /// Streamed from the original pods.
    Upstream(ResponseBody<Incoming>),
    /// Streamed from the laptop; counts as an active tunnel stream and holds its place among the
    /// route's requests in flight until dropped.
    Tunnel(TunnelBody, ActiveStream, RoutePermit),
    /// A short message from the proxy (errors, admin).
    Message(Option<Bytes>),
}

impl ProxyBody {
    /// A body of `text`.
    pub fn message(text: impl Into<Bytes>) -> Self {
        Self::Message(Some(text.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Message(None)
    }
}

impl From<Bytes> for ProxyBody {
    fn from(text: Bytes) -> Self {
        Self::message(text)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Tunnel(body, ..) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Message(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Tunnel(body, ..) => body.is_end_stream(),
            Self::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Tunnel(body, ..) => body.size_hint(),
            Self::Message(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
