//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902, `test` included) and
//! Kubernetes strategic merge patch for the fields czctl and kubectl patch.

use serde_json::{Map, Value};

use crate::store::ApiError;

/// The patch formats, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
}

impl PatchType {
    /// The patch type of a request, by its content type.
    pub fn of<B>(request: &http::Request<B>) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default();
        Self::from_content_type(content_type)
    }

    /// The patch type of a content type.
    fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format ({other}); the loopback cluster accepts merge, JSON and strategic merge patches (no server-side apply)"),
            )),
        }
    }
}

/// Applies `patch` to `target`.
pub fn apply(target: &mut Value, patch_type: PatchType, patch: Value) -> Result<(), ApiError> {
    match patch_type {
        PatchType::Merge => {
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|error| ApiError::bad_request(format!("invalid JSON patch: {error}")))?;
            json_patch::patch(target, &patch).map_err(|error| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {error}"),
                )
            })
        }
        PatchType::Strategic => {
            strategic_merge(target, patch, "");
            Ok(())
        }
    }
}

/// The key lists of objects are merged by, by field name (the subset of Kubernetes' patch
/// strategies that the served kinds use).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "volumes" | "env" | "volumeMounts"
        | "imagePullSecrets" => "name",
        "ports" => "port",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

fn strategic_merge(target: &mut Value, patch: Value, field: &str) {
    match (target, patch) {
        (Value::Object(target), Value::Object(mut patch)) => {
            if patch
                .remove("$patch")
                .and_then(|p| p.as_str().map(str::to_owned))
                .as_deref()
                == Some("replace")
            {
                *target = patch;
                return;
            }
            for (name, value) in patch {
                if name.starts_with("$setElementOrder/")
                    || name == "$retainKeys"
                    || name.starts_with("$deleteFromPrimitiveList/")
                {
                    continue;
                }
                match value {
                    Value::Null => {
                        target.remove(&name);
                    }
                    value => match target.get_mut(&name) {
                        Some(existing) => strategic_merge(existing, value, &name),
                        None => {
                            target.insert(name.clone(), strip_directives(value));
                        }
                    },
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if merge_key(field).is_some() => {
            let key = merge_key(field).expect("checked");
            // Container ports merge by containerPort, Service ports by port.
            let key_of =
                |item: &Value| item.get(key).or_else(|| item.get("containerPort")).cloned();
            for item in patch {
                let directive = item
                    .get("$patch")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let position = target.iter().position(|existing| {
                    key_of(existing).is_some() && key_of(existing) == key_of(&item)
                });
                match (directive.as_deref(), position) {
                    (Some("delete"), Some(i)) => {
                        target.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => strategic_merge(&mut target[i], item, ""),
                    (_, None) => target.push(strip_directives(item)),
                }
            }
        }
        (target, patch) => *target = strip_directives(patch),
    }
}

fn strip_directives(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_lists_by_key_and_deletes_nulls() {
        let mut service = json!({
            "metadata": {"annotations": {"a": "1", "b": "2"}},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "name": "http"}, {"port": 9090}]}
        });
        let patch = json!({
            "metadata": {"annotations": {"b": null, "c": "3"}},
            "spec": {"selector": {"app": null, "cz": "proxy"}, "ports": [{"port": 9090, "name": "metrics"}], "$setElementOrder/ports": []}
        });
        apply(&mut service, PatchType::Strategic, patch).expect("applies");
        assert_eq!(
            service["metadata"]["annotations"],
            json!({"a": "1", "c": "3"})
        );
        assert_eq!(service["spec"]["selector"], json!({"cz": "proxy"}));
        assert_eq!(
            service["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 9090, "name": "metrics"}])
        );
    }

    #[test]
    fn json_patch_test_guards_the_change() {
        let mut object = json!({"spec": {"selector": {"app": "echo"}}});
        let guarded = |expected: &str| {
            json!([
                {"op": "test", "path": "/spec/selector/app", "value": expected},
                {"op": "replace", "path": "/spec/selector/app", "value": "proxy"}
            ])
        };
        assert!(apply(&mut object, PatchType::Json, guarded("someone-else")).is_err());
        assert_eq!(
            object["spec"]["selector"]["app"], "echo",
            "a failed test changes nothing"
        );
        apply(&mut object, PatchType::Json, guarded("echo")).expect("applies");
        assert_eq!(object["spec"]["selector"]["app"], "proxy");
    }
}
