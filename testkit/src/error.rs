//! The API error type: one failure classified once, and rendered as a Kubernetes `Status` object.

use serde_json::{json, Value};

use crate::resources::Kind;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// 404 for an object.
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural),
        )
    }

    /// Any error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid.
    pub fn invalid(kind: &Kind, name: &str, problems: &[String]) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                kind.kind,
                problems.join(", ")
            ),
        )
    }

    /// 409 AlreadyExists, for a create whose name is taken.
    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural),
        )
    }

    /// 409 Conflict, for a write based on an outdated resourceVersion.
    pub fn conflict(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural
            ),
        )
    }

    /// 403 Forbidden, as RBAC answers a `delete` it does not grant.
    pub fn delete_forbidden(kind: &Kind, namespace: &str, name: &str) -> Self {
        let (group, plural) = (kind.group, kind.plural);
        let resource = if group.is_empty() {
            plural.to_owned()
        } else {
            format!("{plural}.{group}")
        };
        Self::new(
            403,
            "Forbidden",
            format!("{resource} \"{name}\" is forbidden: User \"cz-testkit\" cannot delete resource \"{plural}\" in API group \"{group}\" in the namespace \"{namespace}\""),
        )
    }

    /// 410 Expired, for a watch from a revision older than the kept history.
    pub fn expired(revision: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {revision} ({oldest})"),
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}
