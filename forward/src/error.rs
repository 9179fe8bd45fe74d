//! Why forwarding failed, and the plain-text response an end answers with instead.

use std::io;

use bytes::Bytes;
use cz_shared::headers::ERROR_HEADER;
use http::{header, HeaderValue, Response, StatusCode};

use crate::dial::Dialer;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made.
    #[error("could not connect to {address}")]
    Unreachable {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("{address} did not accept a connection in time")]
    Timeout {
        /// Where.
        address: String,
    },
    /// The request's own body failed before it was sent in full: the client that sent it broke
    /// off (a truncated chunked body, a connection closed mid-upload).
    #[error("the request's body broke off before all of it reached {address}")]
    RequestBody {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// Connected, but the exchange failed.
    #[error("{address} failed to answer")]
    Failed {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
}

impl ForwardError {
    /// Connecting to `dialer`'s address failed (or timed out).
    pub(crate) fn connect(dialer: &Dialer, error: io::Error) -> Self {
        let address = dialer.address().to_owned();
        if error.kind() == io::ErrorKind::TimedOut {
            Self::Timeout { address }
        } else {
            Self::Unreachable {
                address,
                source: error,
            }
        }
    }

    /// An exchange with `dialer`'s address failed: because of the request's own body (hyper
    /// calls errors of what it was given "user" errors), or on the connection.
    pub(crate) fn exchange(dialer: &Dialer, error: hyper::Error) -> Self {
        let address = dialer.address().to_owned();
        if error.is_user() {
            Self::RequestBody {
                address,
                source: error,
            }
        } else {
            Self::Failed {
                address,
                source: error,
            }
        }
    }

    /// The innermost cause, e.g. "Connection refused (os error 111)".
    pub fn root_cause(&self) -> String {
        let mut cause: &dyn std::error::Error = self;
        while let Some(source) = cause.source() {
            cause = source;
        }
        cause.to_string()
    }
}

/// A response an end writes itself: `status`, `text` as `text/plain`, and [`ERROR_HEADER`] set
/// to `code` so a client can tell it from the app's own answer.
pub fn error_response<B: From<Bytes>>(
    status: StatusCode,
    code: &'static str,
    text: String,
) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
    response
}
