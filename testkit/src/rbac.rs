//! The authorizer: decides each request as a real API server's RBAC authorizer does, from the
//! Roles, ClusterRoles and their bindings in the store. Rules are additive (nothing denies); a
//! ClusterRole bound by a RoleBinding grants only within the binding's namespace; members of
//! `system:masters` may do everything, as the real superuser group.

use http::Method;
use serde_json::{json, Value};

use crate::resources::{CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, RBAC_GROUP, ROLES, ROLE_BINDINGS};
use crate::selector::Selector;
use crate::store::{ApiError, Store};

/// The group whose members may do everything.
pub const SUPERUSER_GROUP: &str = "system:masters";

/// Who is asking: an authenticated (or impersonated) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name, as bindings' `User` subjects name it.
    pub name: String,
    /// The groups, as bindings' `Group` subjects name them.
    pub groups: Vec<String>,
}

/// What a resource request does to what, as RBAC rules describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`...
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// Subresource (`status`, `portforward`, `log`...), or empty.
    pub subresource: String,
    /// Namespace, or empty for cluster-scoped requests (and lists across namespaces).
    pub namespace: String,
    /// Object name, or empty for collections.
    pub name: String,
}

/// The RBAC verb of an HTTP request: by method, whether it names an object, and `?watch`.
pub fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// Whether a request authorized as `attributes` must also be allowed `create`: a WebSocket
/// upgrade (an HTTP GET) to `pods/exec`, `pods/attach` or `pods/portforward`, as Kubernetes 1.35
/// checks it (feature gate `AuthorizePodWebsocketUpgradeCreatePermission`, on by default), so
/// the streams that SPDY opened with `create` need it over WebSocket as well as `get`.
pub fn needs_create_too(method: &Method, attributes: &Attributes) -> bool {
    *method == Method::GET
        && attributes.group.is_empty()
        && attributes.resource == "pods"
        && matches!(
            attributes.subresource.as_str(),
            "exec" | "attach" | "portforward"
        )
}

/// Whether `user` may do what `attributes` describe.
pub fn allowed(store: &Store, user: &User, attributes: &Attributes) -> bool {
    user.groups.iter().any(|g| g == SUPERUSER_GROUP)
        || rules(store, user, &attributes.namespace)
            .iter()
            .any(|rule| rule_allows(rule, attributes))
}

/// `Ok` when allowed, else the 403 a real API server sends, with its message form.
pub fn authorize(store: &Store, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
    if allowed(store, user, attributes) {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "Forbidden",
        forbidden_message(user, attributes),
    ))
}

/// The message of a denied request, e.g. `services "echo" is forbidden: User "dev" cannot patch
/// resource "services" in API group "" in the namespace "demo"`.
pub fn forbidden_message(user: &User, attributes: &Attributes) -> String {
    let Attributes {
        verb,
        group,
        resource,
        subresource,
        namespace,
        name,
    } = attributes;
    let qualified = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    let target = if name.is_empty() {
        qualified
    } else {
        format!("{qualified} {name:?}")
    };
    let combined = if subresource.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{subresource}")
    };
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace {namespace:?}")
    };
    format!(
        "{target} is forbidden: User {:?} cannot {verb} resource {combined:?} in API group {group:?} {scope}",
        user.name
    )
}

/// Every rule granted to `user` in `namespace` (cluster-wide ones included), or cluster-wide
/// only when `namespace` is empty. A binding to a missing role grants nothing.
pub fn rules(store: &Store, user: &User, namespace: &str) -> Vec<Value> {
    let all = Selector::default();
    let mut granted = Vec::new();
    let (cluster_bindings, _) = store.list(&CLUSTER_ROLE_BINDINGS, None, &all);
    let (bindings, _) = if namespace.is_empty() {
        (Vec::new(), 0)
    } else {
        store.list(&ROLE_BINDINGS, Some(namespace), &all)
    };
    for binding in cluster_bindings.iter().chain(&bindings) {
        if !binds(binding, user) {
            continue;
        }
        let role_name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role = match binding.pointer("/roleRef/kind").and_then(Value::as_str) {
            Some("ClusterRole") => store.get(&CLUSTER_ROLES, "", role_name),
            Some("Role") => store.get(&ROLES, namespace, role_name),
            _ => continue,
        };
        if let Ok(role) = role {
            granted.extend(
                role.get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
    }
    granted
}

/// Creates `role` (a Role, in its `metadata.namespace`, or a ClusterRole) and binds it to the
/// user `user` with a RoleBinding or ClusterRoleBinding named `USER-ROLE`. A role that exists
/// already with the same rules is bound as it is.
pub fn grant(store: &Store, user: &str, mut role: Value) -> Result<(), ApiError> {
    let role_name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let namespace = role
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = role["kind"].as_str().unwrap_or_default().to_owned();
    let (role_kind, binding_kind) = match kind.as_str() {
        "Role" if !namespace.is_empty() => (&ROLES, &ROLE_BINDINGS),
        "Role" => {
            return Err(ApiError::bad_request(format!(
                "Role {role_name:?} has no metadata.namespace; say which namespace it grants in"
            )))
        }
        "ClusterRole" => (&CLUSTER_ROLES, &CLUSTER_ROLE_BINDINGS),
        other => {
            return Err(ApiError::bad_request(format!(
                "a user can be bound to a Role or a ClusterRole, not {other:?}"
            )))
        }
    };
    if role_kind.namespaced {
        role["metadata"]["namespace"] = json!(namespace);
    } else {
        role["metadata"]["namespace"] = Value::Null;
    }
    let rules = role["rules"].clone();
    if let Err(error) = store.create(role_kind, &namespace, role) {
        let same = store
            .get(role_kind, &namespace, &role_name)
            .is_ok_and(|existing| existing["rules"] == rules);
        if !same {
            return Err(error);
        }
    }
    let binding = json!({
        "metadata": {"name": format!("{user}-{role_name}")},
        "subjects": [{"kind": "User", "apiGroup": RBAC_GROUP, "name": user}],
        "roleRef": {"kind": kind, "apiGroup": RBAC_GROUP, "name": role_name},
    });
    store.create(binding_kind, &namespace, binding)?;
    Ok(())
}

/// Whether one of `binding`'s subjects is `user` (by name, group or service account).
fn binds(binding: &Value, user: &User) -> bool {
    let subjects = binding.get("subjects").and_then(Value::as_array);
    subjects.into_iter().flatten().any(|subject| {
        let name = subject["name"].as_str().unwrap_or_default();
        match subject["kind"].as_str() {
            Some("User") => user.name == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let namespace = subject["namespace"].as_str().unwrap_or_default();
                user.name == format!("system:serviceaccount:{namespace}:{name}")
            }
            _ => false,
        }
    })
}

fn listed(rule: &Value, field: &str) -> Vec<String> {
    rule.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Whether one PolicyRule grants the request, with the real matching: `*` wildcards for verbs,
/// groups and resources, `resource/subresource` and `*/subresource`, and `resourceNames`
/// (empty = any).
fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    let matches = |field: &str, wanted: &str| {
        listed(rule, field)
            .iter()
            .any(|item| item == "*" || item == wanted)
    };
    let combined = if attributes.subresource.is_empty() {
        attributes.resource.clone()
    } else {
        format!("{}/{}", attributes.resource, attributes.subresource)
    };
    let resource = listed(rule, "resources").iter().any(|item| {
        item == "*"
            || *item == combined
            || (!attributes.subresource.is_empty()
                && item.strip_prefix("*/") == Some(attributes.subresource.as_str()))
    });
    let names = listed(rule, "resourceNames");
    matches("verbs", &attributes.verb)
        && matches("apiGroups", &attributes.group)
        && resource
        && (names.is_empty() || names.contains(&attributes.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(verb: &str, resource: &str, subresource: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: "demo".into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let rule = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "*/status"], "resourceNames": ["a"]});
        assert!(rule_allows(&rule, &attributes("get", "pods", "", "a")));
        assert!(rule_allows(
            &rule,
            &attributes("get", "services", "status", "a")
        ));
        assert!(!rule_allows(&rule, &attributes("get", "pods", "", "b")));
        assert!(!rule_allows(&rule, &attributes("get", "pods", "log", "a")));
        assert!(!rule_allows(&rule, &attributes("list", "pods", "", "a")));
        let mut apps = attributes("get", "pods", "", "a");
        apps.group = "apps".into();
        assert!(!rule_allows(&rule, &apps));
    }

    #[test]
    fn forbidden_messages_take_the_real_forms() {
        let dev = User {
            name: "dev".into(),
            groups: vec![],
        };
        assert_eq!(
            forbidden_message(&dev, &attributes("patch", "services", "", "echo")),
            r#"services "echo" is forbidden: User "dev" cannot patch resource "services" in API group "" in the namespace "demo""#
        );
        let list = Attributes {
            verb: "list".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            ..Attributes::default()
        };
        assert_eq!(
            forbidden_message(&dev, &list),
            r#"deployments.apps is forbidden: User "dev" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
    }
}
