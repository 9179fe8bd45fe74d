//! The names, labels and annotations of one intercept session's objects, derived from the
//! session id and the intercepted Service: clean-up finds them again from those two alone.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::Selector;
use ring::rand::{SecureRandom, SystemRandom};

use super::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_LABEL, SESSION_ANNOTATION, SESSION_LABEL};

/// The operating system gave no random bytes for a session id.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed, so no session id could be drawn")]
pub struct NoRandomness;

/// The ids and names of one intercept session's objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionNames {
    /// Random id, 8 hex digits.
    pub id: String,
    /// Namespace of the intercepted Service (and of everything created).
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
}

impl SessionNames {
    /// Names for a new session intercepting `namespace/service`, with a fresh random id.
    pub fn generate(namespace: &str, service: &str) -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; 4];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| NoRandomness)?;
        let id = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self::existing(namespace, service, id))
    }

    /// Names of the existing session `id` of `namespace/service`.
    pub fn existing(namespace: &str, service: &str, id: String) -> Self {
        Self {
            id,
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
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (SESSION_LABEL.to_owned(), self.id.clone()),
            (SERVICE_LABEL.to_owned(), self.service.clone()),
        ])
    }

    /// Metadata of the session's object `name`: labelled, annotated with the session id, owned
    /// by `owner`.
    pub fn metadata(&self, name: String, owner: Option<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            annotations: Some(BTreeMap::from([(
                SESSION_ANNOTATION.to_owned(),
                self.id.clone(),
            )])),
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

    /// [`Self::proxy_selector`] as a list selector.
    pub fn proxy_pods(&self) -> Selector {
        self.proxy_selector().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_valid_for_long_services() {
        let names = SessionNames::generate("demo", &"a".repeat(80)).expect("random");
        for name in [names.proxy(), names.shadow(), names.secret()] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.ends_with(&names.id));
        }
        let names = SessionNames::existing("demo", "echo", "0123abcd".into());
        assert_eq!(names.proxy(), "cz-proxy-echo-0123abcd");
    }

    #[test]
    fn ids_are_random_hex() {
        let (a, b) = (
            SessionNames::generate("demo", "echo").expect("random"),
            SessionNames::generate("demo", "echo").expect("random"),
        );
        assert_eq!(a.id.len(), 8);
        assert!(a.id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id, "two draws of 32 random bits differ");
    }
}
