//! The `scale` subresource of Deployments and ReplicaSets (`kubectl scale`, HPA-style clients):
//! an `autoscaling/v1` Scale read from the object, and GET, PUT and PATCH on it, writing back
//! only `spec.replicas`. A resourceVersion in the Scale is a precondition on the object, as
//! `kubectl scale --current-replicas` and `--resource-version` rely on.

use serde_json::{json, Value};

use crate::patch::{self, PatchType};
use crate::resources::{Kind, DEPLOYMENTS, REPLICA_SETS};
use crate::store::{ApiError, Store};

/// The kinds with a `scale` subresource.
pub const SCALABLE: [&Kind; 2] = [&DEPLOYMENTS, &REPLICA_SETS];

/// Whether `kind` has a `scale` subresource.
pub fn is_scalable(kind: &Kind) -> bool {
    SCALABLE
        .iter()
        .any(|scalable| std::ptr::eq(*scalable, kind))
}

/// The Scale of an object: its desired and current replicas and its selector as a string.
fn of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {
            "name": metadata["name"], "namespace": metadata["namespace"], "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"], "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_text(object.pointer("/spec/selector").unwrap_or(&Value::Null)),
        },
    })
}

/// A label selector as the text form a Scale's `status.selector` carries (`app=web,tier in (a,b)`).
fn selector_text(selector: &Value) -> String {
    let labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()));
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|requirement| {
            let key = requirement["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = requirement["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match requirement["operator"].as_str().unwrap_or_default() {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_owned(),
                _ => format!("!{key}"),
            }
        });
    labels.chain(expressions).collect::<Vec<_>>().join(",")
}

/// `GET …/NAME/scale`.
pub fn get(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
) -> Result<Value, ApiError> {
    Ok(of(&*store.get(kind, namespace, name)?))
}

/// `PUT …/NAME/scale`: sets the object's `spec.replicas` to the Scale's, if the Scale's
/// resourceVersion (when given) is still the object's.
pub fn replace(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    scale: &Value,
) -> Result<Value, ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|replicas| *replicas >= 0)
        .ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: must be a number greater than or equal to 0"),
            )
        })?;
    let precondition = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty());
    let scaled = match precondition {
        Some(resource_version) => {
            let mut object = (*store.get(kind, namespace, name)?).clone();
            object["spec"]["replicas"] = json!(replicas);
            object["metadata"]["resourceVersion"] = json!(resource_version);
            store.replace(kind, namespace, name, object, false)?
        }
        None => store.update(kind, namespace, name, false, |object| {
            object["spec"]["replicas"] = json!(replicas);
        })?,
    };
    Ok(of(&scaled))
}

/// `PATCH …/NAME/scale`: the patch applies to the current Scale, which is then written back as
/// by [`replace`] (a resourceVersion the patch sets is a precondition).
pub fn patch(
    store: &Store,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    patch_type: PatchType,
    body: Value,
) -> Result<Value, ApiError> {
    let current = get(store, kind, namespace, name)?;
    let mut scale = current.clone();
    patch::apply(&mut scale, patch_type, body)?;
    if scale.pointer("/metadata/resourceVersion") == current.pointer("/metadata/resourceVersion") {
        scale["metadata"]["resourceVersion"] = json!("");
    }
    replace(store, kind, namespace, name, &scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_reads_as_kubectl_writes_it() {
        let selector = json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [{"key": "track", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}],
        });
        assert_eq!(
            selector_text(&selector),
            "app=web,tier=front,track in (a,b),!canary"
        );
    }
}
