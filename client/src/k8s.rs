//! Everything czctl changes in a cluster, one file per object it manages. Every object czctl
//! creates carries [`MANAGED_BY`] and the session id, and is owned (ownerReferences) by
//! something whose deletion removes it; the one change to a user's object — the intercepted
//! Service's selector — is recorded in an annotation on that Service and applied and undone with
//! JSON-patch `test` preconditions, so a concurrent change by someone else is never overwritten.

pub mod proxy_deployment;
pub mod secret;
pub mod selector;
pub mod session;
pub mod shadow_service;
pub mod target;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// `app.kubernetes.io/managed-by` value on everything czctl creates.
pub const MANAGED_BY: &str = "czctl";
/// Label naming the session an object belongs to.
pub const SESSION_LABEL: &str = "czctl.io/session";
/// Label naming the intercepted Service an object serves.
pub const SERVICE_LABEL: &str = "czctl.io/service";
/// Annotation on an intercepted Service recording the intercept (see [`selector::Record`]).
pub const INTERCEPT_ANNOTATION: &str = "czctl.io/intercept";
/// Port of the proxy's QUIC tunnel (UDP) when the Service does not use it.
pub const TUNNEL_PORT: u16 = 7443;
/// Port of the proxy's admin endpoints when the Service does not use it.
pub const ADMIN_PORT: u16 = 9901;

/// The ids and names of one intercept session's objects.
#[derive(Debug, Clone)]
pub struct SessionNames {
    /// Short random id.
    pub id: String,
    /// Namespace of the intercepted Service (and of everything created).
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
}

impl SessionNames {
    /// Names for a new session intercepting `namespace/service`.
    pub fn new(namespace: &str, service: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
        Self {
            id: format!("{:08x}", (mixed ^ (mixed >> 29)) as u32),
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        }
    }

    /// `<prefix>-<service>-<id>`, cut to a valid object name.
    fn name(&self, prefix: &str) -> String {
        let room = 63 - prefix.len() - self.id.len() - 2;
        let service: String = self.service.chars().take(room).collect();
        format!("{prefix}-{}-{}", service.trim_end_matches('-'), self.id)
    }

    /// The proxy Deployment's name.
    pub fn proxy(&self) -> String {
        self.name("cz-proxy")
    }

    /// The shadow Service's name.
    pub fn shadow(&self) -> String {
        self.name("cz-shadow")
    }

    /// The Secret's name.
    pub fn secret(&self) -> String {
        self.name("cz-tls")
    }

    /// Labels of every object of the session.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            ),
            (SESSION_LABEL.to_owned(), self.id.clone()),
            (SERVICE_LABEL.to_owned(), self.service.clone()),
        ])
    }

    /// Metadata of the session's object `name`, labelled and owned by `owner`.
    pub fn metadata(&self, name: String, owner: Option<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        }
    }

    /// Labels of the proxy's pods: what the intercepted Service selects during the session.
    pub fn proxy_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "cz-proxy".to_owned()),
            (SESSION_LABEL.to_owned(), self.id.clone()),
        ])
    }
}

/// An owner reference to `object` (not a controller: czctl, not a controller, manages it).
pub fn owner_reference<K: kube::Resource<DynamicType = ()>>(
    object: &K,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    let meta = object.meta();
    Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            controller: Some(false),
            block_owner_deletion: Some(false),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_valid_for_long_services() {
        let names = SessionNames::new("demo", &"a".repeat(80));
        for name in [names.proxy(), names.shadow(), names.secret()] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.ends_with(&names.id));
        }
        let names = SessionNames::new("demo", "echo");
        assert_eq!(names.proxy(), format!("cz-proxy-echo-{}", names.id));
    }
}
