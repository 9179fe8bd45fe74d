//! Why forwarding failed, and the plain-text response an end answers with instead.

use std::io;

use bytes::Bytes;
use cz_shared::headers::ERROR_HEADER;
use http::{header, HeaderValue, Response, StatusCode};

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
        source: hyper_util::client::legacy::Error,
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
        source: hyper_util::client::legacy::Error,
    },
    /// Connected, but the exchange failed.
    #[error("{address} failed to answer")]
    Failed {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

impl ForwardError {
    /// Sorts a client error into the four cases.
    pub(crate) fn classify(address: &str, error: hyper_util::client::legacy::Error) -> Self {
        let causes = || std::iter::successors(std::error::Error::source(&error), |e| e.source());
        let timed_out = causes()
            .filter_map(|e| e.downcast_ref::<io::Error>())
            .any(|e| e.kind() == io::ErrorKind::TimedOut);
        // A hyper client's "user" error is one of the request it was given: its body.
        let request_body = causes()
            .filter_map(|e| e.downcast_ref::<hyper::Error>())
            .any(hyper::Error::is_user);
        let address = address.to_owned();
        if timed_out {
            Self::Timeout { address }
        } else if request_body {
            Self::RequestBody {
                address,
                source: error,
            }
        } else if error.is_connect() {
            Self::Unreachable {
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
