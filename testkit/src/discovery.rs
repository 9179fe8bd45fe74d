//! Discovery: the documents kubectl and kube-rs read before anything else (version, API groups,
//! resource lists) and the OpenAPI v3 index.

use serde_json::{json, Value};

use crate::resources;

/// The discovery document at `segments` (the request path split at `/`), if it is one.
pub fn document(segments: &[&str], address: &str) -> Option<Value> {
    Some(match segments {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-cz-testkit", "gitCommit": "", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
        }),
        ["apis"] => json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": resources::groups().into_iter().map(group_json).collect::<Vec<_>>()
        }),
        ["apis", group] if resources::groups().contains(group) => {
            let mut group = group_json(group);
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            group
        }
        ["api", "v1"] => resource_list(""),
        ["apis", group, "v1"] if resources::groups().contains(group) => resource_list(group),
        ["openapi", "v3"] => openapi_index(),
        ["openapi", "v3", "api", "v1"] => openapi_group(""),
        ["openapi", "v3", "apis", group, "v1"] if resources::groups().contains(group) => {
            openapi_group(group)
        }
        _ => return None,
    })
}

fn group_json(group: &str) -> Value {
    let version = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [version.clone()], "preferredVersion": version})
}

fn resource_list(group: &str) -> Value {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for kind in resources::ALL.iter().filter(|k| k.group == group) {
        resources.push(json!({
            "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced, "kind": kind.kind,
            "verbs": verbs, "shortNames": kind.short_names,
        }));
        if kind.has_status {
            resources.push(json!({"name": format!("{}/status", kind.plural), "singularName": "", "namespaced": kind.namespaced, "kind": kind.kind, "verbs": ["get", "patch", "update"]}));
        }
        if crate::scale::is_scalable(kind) {
            resources.push(json!({"name": format!("{}/scale", kind.plural), "singularName": "", "namespaced": kind.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if std::ptr::eq(*kind, &resources::PODS) {
            resources.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// The OpenAPI v3 index. Only what kubectl needs to see that the server validates fields itself
/// (`fieldValidation`), so `kubectl apply` needs no schema; no schemas are served.
fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=cz-testkit"}),
    );
    for group in resources::groups() {
        paths.insert(
            format!("apis/{group}/v1"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{group}/v1?hash=cz-testkit")}),
        );
    }
    json!({"paths": paths})
}

/// One group version's OpenAPI v3 document: create and patch operations per kind, with their
/// `fieldValidation` parameter and group-version-kind.
fn openapi_group(group: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for kind in resources::ALL.iter().filter(|k| k.group == group) {
        let prefix = if group.is_empty() {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{group}/v1")
        };
        let path = if kind.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
        } else {
            format!("{prefix}/{}", kind.plural)
        };
        let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
        let parameter = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let operation = json!({"parameters": [parameter], "x-kubernetes-group-version-kind": gvk, "responses": {}});
        paths.insert(format!("{path}/{{name}}"), json!({"patch": operation}));
        paths.insert(path, json!({"post": operation}));
    }
    json!({"openapi": "3.0.0", "info": {"title": "cz-testkit", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}})
}
