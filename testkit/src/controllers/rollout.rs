//! The Deployment controller: each pod template gets its own ReplicaSet, numbered by the
//! `deployment.kubernetes.io/revision` annotation. The ReplicaSet whose template is the
//! Deployment's (ignoring `pod-template-hash`) is the new one and gets `spec.replicas`; the others
//! are scaled to zero and kept, up to `spec.revisionHistoryLimit`, as the history
//! `kubectl rollout undo` rolls back to (putting an old template back re-adopts its ReplicaSet
//! under the next revision). The status says what `kubectl rollout status` reads.
//!
//! Unlike a real cluster's RollingUpdate, old ReplicaSets go to zero at once rather than as the
//! new one's pods become available (`maxSurge`/`maxUnavailable` are not honoured).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{all, owned_by, owner_reference, set_status, text};
use crate::resources::{Kind, DEPLOYMENTS, REPLICA_SETS};
use crate::store::{Propagation, Store};

/// The annotation numbering a Deployment's ReplicaSets (and naming the Deployment's current one).
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The label telling a ReplicaSet's pods from other templates' pods.
const TEMPLATE_HASH: &str = "pod-template-hash";

/// How many old ReplicaSets are kept when the Deployment does not say.
const DEFAULT_HISTORY: usize = 10;

/// A ReplicaSet's revision (0 when it has none).
fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|revision| revision.parse().ok())
        .unwrap_or(0)
}

/// `value` without nulls, empty objects and empty arrays: the unset fields a typed client
/// writes out (`creationTimestamp: null`, `resources: {}`) and a JSON client leaves out.
fn normalized(value: &Value) -> Value {
    let is_empty = |value: &Value| match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    };
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), normalized(value)))
                .filter(|(_, value)| !is_empty(value))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Whether `rs` runs `template` (its own template without the `pod-template-hash` label).
fn runs(rs: &Value, template: &Value) -> bool {
    let mut own = rs.pointer("/spec/template").cloned().unwrap_or_default();
    if let Some(labels) = own
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH);
    }
    normalized(&own) == *template
}

/// The `pod-template-hash` of a (normalized) template.
fn template_hash(template: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:x}", hasher.finish() & 0xff_ffff_ffff)
}

/// The Deployment's annotations a new ReplicaSet carries (e.g. `kubernetes.io/change-cause`,
/// which `kubectl rollout history` shows), without the controller's and kubectl's own.
fn inherited_annotations(deployment: &Value) -> Map<String, Value> {
    deployment
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            !key.starts_with("deployment.kubernetes.io/")
                && key.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Sets annotation [`REVISION`] of `object` (a `kind` object) to `revision`.
fn annotate_revision(store: &Store, kind: &'static Kind, object: &Value, revision: i64) {
    let _ = store.update(
        kind,
        text(object, "/metadata/namespace"),
        text(object, "/metadata/name"),
        false,
        |object| object["metadata"]["annotations"][REVISION] = json!(revision.to_string()),
    );
}

/// Reconciles every Deployment.
pub(super) fn reconcile(store: &Store) {
    let replica_sets = all(store, &REPLICA_SETS);
    for deployment in all(store, &DEPLOYMENTS) {
        reconcile_one(store, &deployment, &replica_sets);
    }
}

fn reconcile_one(store: &Store, deployment: &Value, replica_sets: &[Arc<Value>]) {
    let namespace = text(deployment, "/metadata/namespace");
    let template = normalized(deployment.pointer("/spec/template").unwrap_or(&Value::Null));
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let owned: Vec<Arc<Value>> = owned_by(replica_sets, deployment).cloned().collect();
    let latest = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let current = owned.iter().find(|rs| runs(rs, &template));
    let current_revision = match current {
        // Rolled back to (or still at) this template: it becomes the latest revision.
        Some(rs) if revision(rs) < latest || revision(rs) == 0 => {
            annotate_revision(store, &REPLICA_SETS, rs, latest + 1);
            latest + 1
        }
        Some(rs) => revision(rs),
        None => {
            create_replica_set(store, deployment, &template, replicas, latest + 1);
            latest + 1
        }
    };
    if revision(deployment) != current_revision {
        annotate_revision(store, &DEPLOYMENTS, deployment, current_revision);
    }
    let current_name = current.map(|rs| text(rs, "/metadata/name"));
    let (mut ready, mut available, mut total, mut updated) = (0, 0, 0, 0);
    for rs in &owned {
        let is_current = Some(text(rs, "/metadata/name")) == current_name;
        let wanted = if is_current { replicas } else { 0 };
        if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(wanted) {
            let _ = store.update(
                &REPLICA_SETS,
                namespace,
                text(rs, "/metadata/name"),
                false,
                |rs| rs["spec"]["replicas"] = json!(wanted),
            );
        }
        let count = |field: &str| {
            rs.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        total += count("replicas");
        ready += count("readyReplicas");
        available += count("availableReplicas");
        if is_current {
            updated = count("replicas");
        }
    }
    prune_history(store, deployment, &owned, current_name);
    let complete = updated == replicas && total == updated && available >= replicas;
    let condition = |kind: &str, status: bool, reason: &str| json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason});
    let status = json!({
        "observedGeneration": deployment["metadata"]["generation"], "replicas": total, "readyReplicas": ready,
        "availableReplicas": available, "updatedReplicas": updated, "unavailableReplicas": (replicas - available).max(0),
        "conditions": [
            if available >= replicas {
                condition("Available", true, "MinimumReplicasAvailable")
            } else {
                condition("Available", false, "MinimumReplicasUnavailable")
            },
            condition("Progressing", true, if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }),
        ],
    });
    set_status(
        store,
        &DEPLOYMENTS,
        deployment,
        status.as_object().expect("object").clone(),
    );
}

/// Creates the ReplicaSet for `template` (normalized) as revision `revision`.
fn create_replica_set(
    store: &Store,
    deployment: &Value,
    template: &Value,
    replicas: i64,
    revision: i64,
) {
    let hash = template_hash(template);
    let mut template = template.clone();
    template["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
    let mut selector = deployment
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    selector["matchLabels"][TEMPLATE_HASH] = json!(hash);
    let mut annotations = inherited_annotations(deployment);
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    let replica_set = json!({
        "metadata": {
            "name": format!("{}-{hash}", text(deployment, "/metadata/name")),
            "labels": template["metadata"]["labels"], "annotations": annotations,
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    });
    let _ = store.create(
        &REPLICA_SETS,
        text(deployment, "/metadata/namespace"),
        replica_set,
    );
}

/// Deletes the oldest scaled-down ReplicaSets beyond the Deployment's `revisionHistoryLimit`.
fn prune_history(
    store: &Store,
    deployment: &Value,
    owned: &[Arc<Value>],
    current_name: Option<&str>,
) {
    let limit = deployment
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_HISTORY, |limit| limit as usize);
    let mut old: Vec<&Arc<Value>> = owned
        .iter()
        .filter(|rs| Some(text(rs, "/metadata/name")) != current_name)
        .collect();
    old.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    let idle = |rs: &Value| {
        rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0)
            && rs
                .pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
    };
    for rs in old.into_iter().skip(limit).filter(|rs| idle(rs)) {
        let _ = store.delete(
            &REPLICA_SETS,
            text(rs, "/metadata/namespace"),
            text(rs, "/metadata/name"),
            Propagation::Background,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_written_back_by_a_typed_client_is_the_same_template() {
        let rs = json!({"spec": {"template": {
            "metadata": {"labels": {"app": "web", TEMPLATE_HASH: "abc"}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo"}]},
        }}});
        let typed = json!({
            "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "echo", "image": "example/echo", "resources": {}}]},
        });
        assert!(runs(&rs, &normalized(&typed)));
        let other = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "echo", "image": "example/other"}]}});
        assert!(!runs(&rs, &normalized(&other)));
    }
}
