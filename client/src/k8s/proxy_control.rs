//! The proxy's control channel as czctl speaks it (`cz_shared::control`), through a port-forward
//! to the proxy pod's loopback-only control port: join a running proxy with a session's rule and
//! CA, leave it, read its routes.

use bytes::Bytes;
use cz_shared::control::{self, route_path, Join, Refusal, Routes, CONTROL_PORT_NAME, ROUTES_PATH};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use super::names::SessionNames;
use super::proxy_admin::{self, AdminError};

/// Why a control request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The proxy could not be asked.
    #[error(transparent)]
    Unreachable(#[from] AdminError),
    /// The proxy refused.
    #[error("the proxy refused ({status}): {}", refusal.message)]
    Refused {
        /// The status it answered with.
        status: StatusCode,
        /// Why.
        refusal: Refusal,
    },
    /// The proxy's answer is not one this czctl reads.
    #[error(transparent)]
    Message(#[from] control::ControlError),
}

/// Adds `session`'s route to the proxy of session `proxy`; returns every route and the proxy's CA.
pub(crate) async fn join(
    client: &kube::Client,
    proxy: &SessionNames,
    session: &str,
    join: &Join,
) -> Result<Routes, ControlError> {
    join_on(client, proxy, None, session, join).await
}

/// [`join`], on the proxy pod named `pod` (else a ready one).
pub(crate) async fn join_on(
    client: &kube::Client,
    proxy: &SessionNames,
    pod: Option<&str>,
    session: &str,
    join: &Join,
) -> Result<Routes, ControlError> {
    let body = Bytes::from(control::write(join));
    let path = route_path(session);
    let (status, body) = ask(client, proxy, pod, Method::PUT, &path, body).await?;
    answer(status, &body)
}

/// Detaches `session`'s route from the proxy of session `proxy`, on the pod named `pod` (else a
/// ready one); a route already gone is fine.
pub(crate) async fn leave(
    client: &kube::Client,
    proxy: &SessionNames,
    pod: Option<&str>,
    session: &str,
) -> Result<(), ControlError> {
    let path = route_path(session);
    let (status, body) = ask(client, proxy, pod, Method::DELETE, &path, Bytes::new()).await?;
    match status {
        StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
        status => Err(ControlError::Refused {
            status,
            refusal: control::read(&body)?,
        }),
    }
}

/// Every route of the proxy of session `proxy`.
pub(crate) async fn routes(
    client: &kube::Client,
    proxy: &SessionNames,
) -> Result<Routes, ControlError> {
    let (status, body) = ask(client, proxy, None, Method::GET, ROUTES_PATH, Bytes::new()).await?;
    answer(status, &body)
}

fn answer(status: StatusCode, body: &[u8]) -> Result<Routes, ControlError> {
    if status.is_success() {
        Ok(control::read(body)?)
    } else {
        Err(ControlError::Refused {
            status,
            refusal: control::read(body)?,
        })
    }
}

async fn ask(
    client: &kube::Client,
    proxy: &SessionNames,
    pod: Option<&str>,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), AdminError> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(Full::new(body))
        .expect("a control request of a valid path is a valid request");
    proxy_admin::exchange(client, proxy, pod, CONTROL_PORT_NAME, request).await
}
