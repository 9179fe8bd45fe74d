//! The controllers a cluster runs for the served kinds: Deployments roll out ReplicaSets
//! (module `rollout`), ReplicaSets make Pods (replacing failed or deleted ones), and Services get
//! Endpoints and EndpointSlices listing their selected pods. Level-triggered: every change (and
//! a 1 s tick) reconciles everything, writing only what differs.

mod rollout;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::kubelet::is_terminating;
use crate::resources::{Kind, ENDPOINTS, ENDPOINT_SLICES, EVENTS, PODS, REPLICA_SETS, SERVICES};
use crate::selector::Selector;
use crate::store::{Propagation, Store};

const MANAGED_BY: &str = "cz-testkit";

/// Runs the controllers until `shutdown`.
pub async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let mut changes = store.subscribe();
    loop {
        rollout::reconcile(&store);
        reconcile_replica_sets(&store);
        reconcile_endpoints(&store);
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = changes.recv() => {
                // Let a burst of changes settle before the next pass.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while changes.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn all(store: &Store, kind: &'static Kind) -> Vec<Arc<Value>> {
    store.list(kind, None, &Selector::default()).0
}

fn owner_reference(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

fn owned_by<'a>(items: &'a [Arc<Value>], owner: &Value) -> impl Iterator<Item = &'a Arc<Value>> {
    let uid = owner["metadata"]["uid"].clone();
    items.iter().filter(move |item| {
        item.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|owners| owners.iter().any(|o| o["uid"] == uid))
    })
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn is_active(pod: &Value) -> bool {
    !matches!(text(pod, "/status/phase"), "Failed" | "Succeeded")
}

fn set_status(store: &Store, kind: &'static Kind, object: &Value, status: Map<String, Value>) {
    let _ = store.update(
        kind,
        text(object, "/metadata/namespace"),
        text(object, "/metadata/name"),
        true,
        |current| {
            for (key, value) in &status {
                current["status"][key] = value.clone();
            }
        },
    );
}

fn reconcile_replica_sets(store: &Store) {
    let pods = all(store, &PODS);
    for rs in all(store, &REPLICA_SETS) {
        let namespace = text(&rs, "/metadata/namespace");
        let replicas = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let owned: Vec<_> = owned_by(&pods, &rs).cloned().collect();
        // Failed pods are replaced, as with restartPolicy Always the container would be, after a
        // back-off of two seconds (a crash loop does not spin).
        let backed_off = |pod: &Value| {
            pod.pointer("/status/containerStatuses/0/state/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|elapsed| elapsed >= Duration::from_secs(2))
        };
        for failed in owned.iter().filter(|p| !is_active(p) && backed_off(p)) {
            let _ = store.delete(
                &PODS,
                namespace,
                text(failed, "/metadata/name"),
                Propagation::Background,
            );
        }
        // A terminating pod is replaced at once, as a ReplicaSet does.
        let mut active: Vec<_> = owned
            .iter()
            .filter(|p| is_active(p) && !is_terminating(p))
            .collect();
        let waiting = owned
            .iter()
            .filter(|p| !is_active(p) && !backed_off(p))
            .count() as i64;
        for _ in active.len() as i64 + waiting..replicas {
            let template = rs.pointer("/spec/template").cloned().unwrap_or_default();
            let pod = json!({
                "metadata": {"generateName": format!("{}-", text(&rs, "/metadata/name")), "labels": template["metadata"]["labels"], "ownerReferences": [owner_reference(&rs)]},
                "spec": template["spec"],
            });
            let name = format!("{}-", text(&rs, "/metadata/name"));
            if let Err(refused) = crate::pod_security::admit(store, namespace, &name, &pod) {
                report_failed_create(store, &rs, &refused.message);
                break;
            }
            let _ = store.create(&PODS, namespace, pod);
        }
        active.sort_by_key(|p| is_ready(p));
        let excess = (active.len() as i64 - replicas).max(0) as usize;
        for pod in active.iter().take(excess) {
            let _ = store.delete(
                &PODS,
                namespace,
                text(pod, "/metadata/name"),
                Propagation::Background,
            );
        }
        let ready = active.iter().skip(excess).filter(|p| is_ready(p)).count();
        let status = json!({
            "replicas": active.len() - excess, "readyReplicas": ready, "availableReplicas": ready,
            "observedGeneration": rs["metadata"]["generation"],
        });
        set_status(
            store,
            &REPLICA_SETS,
            &rs,
            status.as_object().expect("object").clone(),
        );
    }
}

/// A `FailedCreate` warning on `rs`, as the ReplicaSet controller records a refused pod; once
/// per message, as a real event's count would grow rather than a new event appear.
fn report_failed_create(store: &Store, rs: &Value, refusal: &str) {
    let namespace = text(rs, "/metadata/namespace");
    let message = format!("Error creating: {refusal}");
    let recorded = all(store, &EVENTS).iter().any(|event| {
        event["involvedObject"]["uid"] == rs["metadata"]["uid"]
            && event["message"] == message.as_str()
    });
    if recorded {
        return;
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let _ = store.create(&EVENTS, namespace, json!({
        "metadata": {"generateName": format!("{}.", text(rs, "/metadata/name"))},
        "involvedObject": {"kind": "ReplicaSet", "namespace": namespace, "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"], "apiVersion": "apps/v1"},
        "reason": "FailedCreate", "message": message, "type": "Warning", "count": 1,
        "source": {"component": "replicaset-controller"}, "firstTimestamp": now, "lastTimestamp": now,
    }));
}

/// The container port a Service port targets on `pod` (by number, or by name).
pub fn target_port(service_port: &Value, pod: &Value) -> Option<u16> {
    match service_port
        .get("targetPort")
        .unwrap_or(&service_port["port"])
    {
        Value::Number(port) => port.as_u64().map(|p| p as u16),
        Value::String(name) => pod
            .pointer("/spec/containers")?
            .as_array()?
            .iter()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .map(|p| p as u16),
        _ => None,
    }
}

/// The pods a Service selects now, ready or not.
pub fn selected_pods(store: &Store, service: &Value) -> Vec<Arc<Value>> {
    let Some(selector) = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    let (pods, _) = store.list(
        &PODS,
        Some(text(service, "/metadata/namespace")),
        &Selector::from_labels(selector),
    );
    pods.into_iter()
        .filter(|pod| is_active(pod) && !text(pod, "/status/podIP").is_empty())
        .collect()
}

fn reconcile_endpoints(store: &Store) {
    let services = all(store, &SERVICES);
    for service in &services {
        if service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            continue;
        }
        let namespace = text(service, "/metadata/namespace");
        let name = text(service, "/metadata/name");
        let pods = selected_pods(store, service);
        let address = |pod: &Value| json!({"ip": text(pod, "/status/podIP"), "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": namespace, "uid": pod["metadata"]["uid"]}});
        let ports: Vec<Value> = service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().map(|port| {
            let target = pods.first().and_then(|pod| target_port(port, pod)).or_else(|| port["targetPort"].as_u64().map(|p| p as u16));
            json!({"name": port.get("name").cloned().unwrap_or(json!("")), "port": target, "protocol": port.get("protocol").cloned().unwrap_or(json!("TCP"))})
        }).collect();
        // A terminating pod is not ready, whatever its probe says (it may still be serving).
        let ready_now = |p: &Value| is_ready(p) && !is_terminating(p);
        let ready: Vec<Value> = pods
            .iter()
            .filter(|p| ready_now(p))
            .map(|p| address(p))
            .collect();
        let not_ready: Vec<Value> = pods
            .iter()
            .filter(|p| !ready_now(p))
            .map(|p| address(p))
            .collect();
        let subsets = if pods.is_empty() {
            json!([])
        } else {
            json!([{"addresses": ready, "notReadyAddresses": not_ready, "ports": ports}])
        };
        let labels =
            json!({"app.kubernetes.io/managed-by": MANAGED_BY, "kubernetes.io/service-name": name});
        upsert(
            store,
            &ENDPOINTS,
            namespace,
            json!({"metadata": {"name": name, "labels": labels}, "subsets": subsets}),
            "subsets",
        );
        let endpoints: Vec<Value> = pods.iter().map(|pod| json!({
            "addresses": [text(pod, "/status/podIP")],
            "conditions": {"ready": ready_now(pod), "serving": is_ready(pod), "terminating": is_terminating(pod)},
            "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": namespace, "uid": pod["metadata"]["uid"]},
        })).collect();
        let slice = json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_reference(service)]},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        });
        upsert(store, &ENDPOINT_SLICES, namespace, slice, "endpoints");
    }
    // Endpoints of Services that are gone (EndpointSlices go with their owner).
    for endpoints in all(store, &ENDPOINTS) {
        let namespace = text(&endpoints, "/metadata/namespace");
        let name = text(&endpoints, "/metadata/name");
        let ours = endpoints
            .pointer("/metadata/labels/app.kubernetes.io~1managed-by")
            .and_then(Value::as_str)
            == Some(MANAGED_BY);
        if ours
            && !services.iter().any(|s| {
                text(s, "/metadata/namespace") == namespace && text(s, "/metadata/name") == name
            })
        {
            let _ = store.delete(&ENDPOINTS, namespace, name, Propagation::Background);
        }
    }
}

/// Creates `object`, or updates the fields that differ.
fn upsert(store: &Store, kind: &'static Kind, namespace: &str, object: Value, field: &str) {
    let name = text(&object, "/metadata/name").to_owned();
    if store.get(kind, namespace, &name).is_err() {
        let _ = store.create(kind, namespace, object);
        return;
    }
    let _ = store.update(kind, namespace, &name, false, |current| {
        current[field] = object[field].clone();
        if let Some(ports) = object.get("ports") {
            current["ports"] = ports.clone();
        }
    });
}
