//! Authentication: bearer tokens to users, and impersonation (`kubectl --as USER --as-group
//! GROUP`), as a real API server does them. The kubeconfig `up` writes carries the admin's token
//! (a member of `system:masters`); [`Authenticator::mint`] adds users for tests and `--user`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use http::HeaderMap;
use serde_json::{json, Value};

use crate::rbac::{self, Attributes, User, SUPERUSER_GROUP};
use crate::store::{ApiError, Store};

/// The admin's token, in the kubeconfig `up` writes.
pub const ADMIN_TOKEN: &str = "cz-testkit";
/// The admin's user name.
pub const ADMIN_USER: &str = "cz-testkit-admin";
/// The group every authenticated user is in.
const AUTHENTICATED: &str = "system:authenticated";

/// The known tokens and whose they are.
pub struct Authenticator {
    tokens: Mutex<HashMap<String, User>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        let admin = User {
            name: ADMIN_USER.to_owned(),
            groups: vec![SUPERUSER_GROUP.to_owned(), AUTHENTICATED.to_owned()],
        };
        Self {
            tokens: Mutex::new(HashMap::from([(ADMIN_TOKEN.to_owned(), admin)])),
        }
    }
}

impl Authenticator {
    /// A new bearer token for `name` in `groups` (and `system:authenticated`). Tokens are
    /// unguessable enough for a test stand-in, not for anything secret.
    pub fn mint(&self, name: &str, groups: &[String]) -> String {
        let random = |salt: &str| RandomState::new().hash_one((salt, name));
        let token = format!("{:016x}{:016x}", random("a"), random("b"));
        let mut groups = groups.to_vec();
        groups.push(AUTHENTICATED.to_owned());
        let user = User {
            name: name.to_owned(),
            groups,
        };
        self.lock().insert(token.clone(), user);
        token
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who sent a request: the bearer token's user, or whom it impersonates when allowed.
    /// 401 for a missing or unknown token; 403 for impersonation the user may not do.
    pub fn authenticate(&self, headers: &HeaderMap, store: &Store) -> Result<User, ApiError> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let user = token
            .and_then(|token| self.lock().get(token).cloned())
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
        impersonate(headers, store, user)
    }
}

/// The user after the `Impersonate-User`/`Impersonate-Group` headers: each impersonated name
/// needs the `impersonate` verb on `users`, `groups` or `serviceaccounts`.
fn impersonate(headers: &HeaderMap, store: &Store, user: User) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let Some(name) = values("impersonate-user").into_iter().next() else {
        if values("impersonate-group").is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups without impersonating a user",
        ));
    };
    let mut groups = values("impersonate-group");
    let mut checks = vec![user_attributes(&name)];
    checks.extend(groups.iter().map(|group| Attributes {
        verb: "impersonate".into(),
        resource: "groups".into(),
        name: group.clone(),
        ..Attributes::default()
    }));
    for check in &checks {
        rbac::authorize(store, &user, check)?;
    }
    if let Some((namespace, _)) = service_account(&name) {
        groups.push("system:serviceaccounts".to_owned());
        groups.push(format!("system:serviceaccounts:{namespace}"));
    }
    groups.push(AUTHENTICATED.to_owned());
    Ok(User { name, groups })
}

/// `system:serviceaccount:NS:NAME` as (NS, NAME).
fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

/// What impersonating `name` asks of the authorizer.
fn user_attributes(name: &str) -> Attributes {
    match service_account(name) {
        Some((namespace, account)) => Attributes {
            verb: "impersonate".into(),
            resource: "serviceaccounts".into(),
            namespace: namespace.into(),
            name: account.into(),
            ..Attributes::default()
        },
        None => Attributes {
            verb: "impersonate".into(),
            resource: "users".into(),
            name: name.into(),
            ..Attributes::default()
        },
    }
}

/// `kubeconfig` (JSON) with a user and a context both called `name`, authenticating with
/// `token`, in the cluster and namespace of the current context; made current if `current`.
pub fn add_context(
    kubeconfig: &str,
    name: &str,
    token: &str,
    current: bool,
) -> Result<String, serde_json::Error> {
    let mut config: Value = serde_json::from_str(kubeconfig)?;
    let active = config["current-context"].clone();
    let context = config["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == active)
        .map(|c| c["context"].clone())
        .unwrap_or_default();
    let context =
        json!({"cluster": context["cluster"], "user": name, "namespace": context["namespace"]});
    if let Some(users) = config["users"].as_array_mut() {
        users.push(json!({"name": name, "user": {"token": token}}));
    }
    if let Some(contexts) = config["contexts"].as_array_mut() {
        contexts.push(json!({"name": name, "context": context}));
    }
    if current {
        config["current-context"] = json!(name);
    }
    serde_json::to_string_pretty(&config)
}
