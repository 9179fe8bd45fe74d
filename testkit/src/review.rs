//! `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (authorization.k8s.io/v1), and
//! `SelfSubjectReview` (authentication.k8s.io/v1): what `kubectl auth can-i`, `kubectl auth
//! can-i --list` and `kubectl auth whoami` ask. Every authenticated user may ask about
//! themselves, as the real `system:basic-user` ClusterRole allows.

use serde_json::{json, Value};

use crate::rbac::{self, Attributes, User, SUPERUSER_GROUP};
use crate::store::{ApiError, Store};

/// The API group of the access and rules reviews.
pub const GROUP: &str = "authorization.k8s.io";
/// The API group of `SelfSubjectReview`.
pub const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// The non-resource paths every authenticated user may `get` (discovery, version, health), as
/// the real `system:discovery` and `system:public-info-viewer` ClusterRoles grant.
const PUBLIC_PATHS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

/// Answers a review posted to `resource` (`selfsubjectaccessreviews`,
/// `selfsubjectrulesreviews` or `selfsubjectreviews`) by `user`.
pub fn answer(
    store: &Store,
    user: &User,
    resource: &str,
    mut review: Value,
) -> Result<Value, ApiError> {
    let superuser = user.groups.iter().any(|g| g == SUPERUSER_GROUP);
    let status = match resource {
        "selfsubjectaccessreviews" => {
            let allowed = if let Some(attributes) = review.pointer("/spec/resourceAttributes") {
                let field = |name: &str| attributes[name].as_str().unwrap_or_default().to_owned();
                rbac::allowed(
                    store,
                    user,
                    &Attributes {
                        verb: field("verb"),
                        group: field("group"),
                        resource: field("resource"),
                        subresource: field("subresource"),
                        namespace: field("namespace"),
                        name: field("name"),
                    },
                )
            } else {
                superuser
                    || review.pointer("/spec/nonResourceAttributes/verb") == Some(&json!("get"))
            };
            json!({"allowed": allowed})
        }
        "selfsubjectrulesreviews" => {
            let namespace = review
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!({
                "resourceRules": resource_rules(store, user, namespace, superuser),
                "nonResourceRules": if superuser {
                    json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}])
                } else {
                    json!([{"verbs": ["get"], "nonResourceURLs": PUBLIC_PATHS}])
                },
                "incomplete": false,
            })
        }
        "selfsubjectreviews" => json!({"userInfo": {"username": user.name, "groups": user.groups}}),
        other => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({other})"),
            ))
        }
    };
    if !review.is_object() {
        return Err(ApiError::bad_request("a review must be a JSON object"));
    }
    review["status"] = status;
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(review)
}

/// The resource rules `user` has in `namespace`, in the shape a rules review reports them.
fn resource_rules(store: &Store, user: &User, namespace: &str, superuser: bool) -> Value {
    let mut rules = vec![json!({
        "verbs": ["create"], "apiGroups": [GROUP],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    })];
    if superuser {
        rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
    }
    for rule in rbac::rules(store, user, namespace) {
        let mut shown = json!({"verbs": rule["verbs"], "apiGroups": rule["apiGroups"], "resources": rule["resources"]});
        if rule
            .get("resourceNames")
            .is_some_and(|n| n.as_array().is_some_and(|n| !n.is_empty()))
        {
            shown["resourceNames"] = rule["resourceNames"].clone();
        }
        rules.push(shown);
    }
    Value::Array(rules)
}
