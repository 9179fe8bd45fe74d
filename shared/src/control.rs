//! The proxy's control channel: how a second developer's czctl joins a running proxy, how a
//! developer leaves it, and what every route's state is.
//!
//! # Transport and authentication
//! HTTP/1.1 with JSON bodies on the proxy's control port ([`DEFAULT_CONTROL_PORT`]), which the
//! proxy binds on its pod's loopback only, like the carrier port: the cluster network cannot
//! reach it, only `pods/portforward` through the API server, which authenticates the caller and
//! authorizes `create` on the proxy pod's `portforward` subresource. Being allowed to
//! port-forward to the proxy pod is what permits joining, leaving and reading routes — the same
//! people may delete the proxy's Deployment. A joining session proves nothing more here; its
//! laptop is then authenticated on the tunnel by its own session CA, which it registers when
//! joining (only that CA's client certificates attach to its route).
//!
//! # Messages
//! * `GET /v1/routes` → 200 [`Routes`]: the CA that issued the proxy's server certificate (a
//!   joining laptop trusts it) and every route in order.
//! * `PUT /v1/routes/{session}` with [`Join`] → 200 [`Routes`]: adds the session's route (or
//!   keeps it when the same session joins again with the same CA and rule: a laptop coming back
//!   after the proxy pod was replaced) and answers with every route and the proxy's CA. 409 [`Refusal`] when another session holds
//!   the rule (`rule-taken`) or the CA (`ca-taken`), or the session exists with another rule or
//!   CA (`session-taken`); 400 [`Refusal`] for a malformed body or rule (`bad-request`).
//! * `DELETE /v1/routes/{session}` → 204: the route is detached (its matching requests go to the
//!   original pods from then on; requests in flight finish); 404 [`Refusal`] (`no-route`) when
//!   the proxy has no such route.
//!
//! # Versioning
//! The path carries the major version (`/v1/`); every body carries [`CONTROL_VERSION`] in its
//! `version` field, which readers check first. Compatible changes add fields: readers ignore
//! unknown ones and default missing ones.

use serde::{Deserialize, Serialize};

/// The control port unless the intercepted Service uses it.
pub const DEFAULT_CONTROL_PORT: u16 = 7445;
/// Name of the control channel's container port (TCP, on the pod's loopback only).
pub const CONTROL_PORT_NAME: &str = "cz-control";
/// The collection of routes.
pub const ROUTES_PATH: &str = "/v1/routes";
/// The version of the bodies this build reads and writes.
pub const CONTROL_VERSION: u32 = 1;

/// The path of `session`'s route.
pub fn route_path(session: &str) -> String {
    format!("{ROUTES_PATH}/{session}")
}

/// A session joining the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    /// [`CONTROL_VERSION`] of the writer.
    pub version: u32,
    /// The intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The session CA's certificate (PEM): the proxy accepts laptops whose client certificate it
    /// issued, on this route only.
    pub client_ca: String,
    /// How long the route's matching requests wait for a laptop that went away before they go
    /// to the original pods instead, in whole seconds.
    pub orphan_after_seconds: u64,
}

/// Every route of a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    /// [`CONTROL_VERSION`] of the writer.
    pub version: u32,
    /// The CA certificate (PEM) that issued the proxy's server certificate.
    pub proxy_ca: String,
    /// The routes, in the order requests are matched against them.
    pub routes: Vec<RouteState>,
}

/// One route, as the proxy sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteState {
    /// The session that owns the route.
    pub session: String,
    /// Its rule, `NAME:VALUE`.
    pub header: String,
    /// Whether its laptop is connected now.
    pub connected: bool,
    /// What carries its laptop's connection (`port-forward` or `direct UDP`), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// Seconds since its laptop was last connected (since the route was added if it never
    /// was); absent while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_seconds: Option<u64>,
    /// Whether its matching requests go to the original pods because its laptop has been away
    /// longer than its orphan delay.
    #[serde(default)]
    pub abandoned: bool,
    /// Its orphan delay, in seconds.
    pub orphan_after_seconds: u64,
    /// Requests it sent to its laptop.
    #[serde(default)]
    pub requests: u64,
    /// Requests that matched it and another route, refused with 409.
    #[serde(default)]
    pub conflicts: u64,
}

/// Why the proxy refused a control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// [`CONTROL_VERSION`] of the writer.
    pub version: u32,
    /// What kind of refusal: `rule-taken`, `ca-taken`, `session-taken`, `no-route`,
    /// `bad-request`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// The session in the way, for the `-taken` codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// Why a control body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The body is not the JSON it should be.
    #[error("the proxy's control message is not valid JSON of its kind: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The writer speaks another version.
    #[error("the control message is of version {found}, this build reads version {CONTROL_VERSION}; use a czctl and cz-proxy of the same release")]
    Version {
        /// The writer's version.
        found: u32,
    },
}

/// Reads a control body of this build's version.
pub fn read<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let Versioned { version } = serde_json::from_slice(body).map_err(ControlError::Malformed)?;
    if version != CONTROL_VERSION {
        return Err(ControlError::Version { found: version });
    }
    serde_json::from_slice(body).map_err(ControlError::Malformed)
}

/// Writes a control body.
pub fn write<T: Serialize>(body: &T) -> String {
    serde_json::to_string(body).expect("control messages of strings and numbers serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_ignore_unknown_fields() {
        let join = Join {
            version: CONTROL_VERSION,
            header: "x-dev:alice".into(),
            client_ca: "-----BEGIN CERTIFICATE-----".into(),
            orphan_after_seconds: 900,
        };
        assert_eq!(read::<Join>(write(&join).as_bytes()).expect("reads"), join);
        let newer = br#"{"version":1,"session":"a","header":"x:y","connected":true,
            "orphanAfterSeconds":900,"later":[1]}"#;
        let route: RouteState = read(newer).expect("reads");
        assert_eq!(
            (route.connected, route.disconnected_seconds, route.requests),
            (true, None, 0)
        );
    }

    #[test]
    fn another_version_or_garbage_is_refused() {
        assert!(matches!(
            read::<Routes>(br#"{"version":2,"proxyCa":"","routes":[]}"#),
            Err(ControlError::Version { found: 2 })
        ));
        assert!(matches!(
            read::<Join>(b"PUT me"),
            Err(ControlError::Malformed(_))
        ));
    }
}
