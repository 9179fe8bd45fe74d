//! The control channel (`cz_shared::control`): other developers' czctl join the proxy's routes,
//! leave them, and read every route's state, over HTTP/1.1 on a port bound to the pod's loopback,
//! which only `pods/portforward` reaches.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cz_shared::control::{self, Join, Refusal, Routes, CONTROL_VERSION, ROUTES_PATH};
use cz_shared::InterceptRule;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::accept;
use crate::body::ProxyBody;
use crate::limits::ConnectionLimit;
use crate::routes::{Route, RouteTable, Session, TunnelLimits};

/// Most control connections at once: a czctl holds one for a moment to join, leave or list.
pub const MAX_CONNECTIONS: usize = 32;

/// How long a control client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body: a join carries one CA certificate of under 1 KiB.
const MAX_BODY: usize = 64 * 1024;

/// How long a detached route's requests in flight may take before its laptop is disconnected.
const DETACH_DRAIN: Duration = Duration::from_secs(30);

/// What the control channel acts on.
pub struct Control {
    /// The proxy's routes.
    pub routes: Arc<RouteTable>,
    /// The CA certificate (PEM) that issued the proxy's server certificate.
    pub proxy_ca: String,
    /// The limits every joined route gets.
    pub limits: TunnelLimits,
}

/// Serves the control channel on `listener`, at most `limit` connections at once, until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    limit: ConnectionLimit,
    control: Arc<Control>,
    shutdown: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    while let Some((stream, _, permit)) = accept::next(&listener, &limit, &shutdown).await {
        let control = control.clone();
        let service = service_fn(move |request| {
            let control = control.clone();
            async move { Ok::<_, Infallible>(control.answer(request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = connection.await {
                debug!(%error, "control connection failed");
            }
        });
    }
}

impl Control {
    async fn answer(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let path = request.uri().path().to_owned();
        let session = path
            .strip_prefix(ROUTES_PATH)
            .and_then(|rest| rest.strip_prefix('/'));
        match (request.method().clone(), session) {
            (Method::GET, None) if path == ROUTES_PATH => self.routes(),
            (Method::PUT, Some(session)) if valid_session(session) => {
                let session = session.to_owned();
                match Limited::new(request.into_body(), MAX_BODY).collect().await {
                    Ok(body) => self.join(session, &body.to_bytes()),
                    Err(error) => refuse(StatusCode::BAD_REQUEST, "bad-request", error, None),
                }
            }
            (Method::PUT, Some(_)) => refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "a session id is 1 to 63 lower-case letters, digits and '-'",
                None,
            ),
            (Method::DELETE, Some(session)) => self.leave(session),
            _ => refuse(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no such control request: GET {ROUTES_PATH}, PUT or DELETE {ROUTES_PATH}/SESSION"),
                None,
            ),
        }
    }

    fn routes(&self) -> Response<ProxyBody> {
        let routes = Routes {
            version: CONTROL_VERSION,
            proxy_ca: self.proxy_ca.clone(),
            routes: self
                .routes
                .all()
                .iter()
                .map(|route| route.state())
                .collect(),
        };
        json(StatusCode::OK, control::write(&routes))
    }

    fn join(&self, session: String, body: &Bytes) -> Response<ProxyBody> {
        let join: Join = match control::read(body) {
            Ok(join) => join,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, "bad-request", error, None),
        };
        let rule: InterceptRule = match join.header.parse() {
            Ok(rule) => rule,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, "bad-request", error, None),
        };
        let session = Session {
            id: session,
            client_ca: join.client_ca,
            orphan_after: Duration::from_secs(join.orphan_after_seconds),
        };
        let route = match Route::new(session, rule, self.limits) {
            Ok(route) => route,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, "bad-request", error, None),
        };
        match self.routes.join(route) {
            Ok(route) => {
                info!(session = %route.session().id, rule = %route.rule(), "session joined");
                self.routes()
            }
            Err(refused) => {
                let held_by = Some(refused.held_by().to_owned());
                refuse(StatusCode::CONFLICT, refused.code(), &refused, held_by)
            }
        }
    }

    fn leave(&self, session: &str) -> Response<ProxyBody> {
        let Some(route) = self.routes.remove(session) else {
            let message = format!("this proxy has no route of session {session}");
            return refuse(StatusCode::NOT_FOUND, "no-route", message, None);
        };
        info!(%session, rule = %route.rule(), "session left");
        // The laptop learns that its requests are answered when the proxy closes its connection.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DETACH_DRAIN, route.idle()).await;
            route.close_laptop(b"session left");
        });
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
    }
}

/// A session id as czctl makes them: 1 to 63 lower-case letters, digits and `-`.
fn valid_session(session: &str) -> bool {
    (1..=63).contains(&session.len())
        && session
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn refuse(
    status: StatusCode,
    code: &str,
    message: impl ToString,
    held_by: Option<String>,
) -> Response<ProxyBody> {
    let refusal = Refusal {
        version: CONTROL_VERSION,
        code: code.to_owned(),
        message: message.to_string(),
        held_by,
    };
    json(status, control::write(&refusal))
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
