//! Where a resource request points: the kind, namespace, name and subresource of a path under
//! `/api/v1` or `/apis/GROUP/v1`.

use crate::resources::{self, Kind};
use crate::store::ApiError;

/// Where a resource request points.
pub struct Target {
    /// The kind addressed.
    pub kind: &'static Kind,
    /// The namespace, for namespaced paths.
    pub namespace: Option<String>,
    /// The object's name; `None` for the collection.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`, `log`, `portforward`).
    pub subresource: Option<String>,
}

impl Target {
    /// The target of the path segments after `/apis/GROUP/v1` (or `/api/v1` for the core
    /// `group` ""); 404 `NotFound` for paths that name no served kind.
    pub fn parse(group: &str, rest: &[&str]) -> Result<Self, ApiError> {
        let (namespace, rest) = match rest {
            ["namespaces", namespace, resource, tail @ ..] => (
                Some(namespace.to_string()),
                [&[*resource][..], tail].concat(),
            ),
            other => (None, other.to_vec()),
        };
        let (resource, name, subresource) = match rest.as_slice() {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(name.to_string()), None),
            [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
            _ => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ))
            }
        };
        let kind = resources::find(group, "v1", resource).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({resource})"),
            )
        })?;
        Ok(Self {
            kind,
            namespace,
            name,
            subresource,
        })
    }
}
