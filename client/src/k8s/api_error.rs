//! A Kubernetes API call that failed, with what czctl asked for: the verb, the resource and the
//! namespace. A 403 becomes one message naming them and the RBAC manifest that grants them.

use kube::Resource;

/// Where the permissions czctl needs are written down.
pub const RBAC_MANIFEST: &str = "deploy/rbac.yaml";

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ApiCallError {
    /// What czctl asked to do: `get`, `list`, `create`, `patch`, `delete` (`get and create` for a
    /// port-forward, which RBAC checks as both).
    pub verb: &'static str,
    /// The resource, as RBAC names it (`deployments`, `services`, `pods/portforward`).
    pub resource: String,
    /// The namespace, or `None` for all namespaces.
    pub namespace: Option<String>,
    /// What the API server (or the connection to it) said.
    #[source]
    pub source: Box<kube::Error>,
}

impl ApiCallError {
    /// The failed call `verb` on `K`'s resource in `namespace` (`None`: all namespaces).
    pub(crate) fn new<K: Resource<DynamicType = ()>>(
        verb: &'static str,
        namespace: Option<&str>,
        source: kube::Error,
    ) -> Self {
        Self {
            verb,
            resource: K::plural(&()).into_owned(),
            namespace: namespace.map(str::to_owned),
            source: Box::new(source),
        }
    }

    /// The API server's status code, if it answered (a refused upgrade, as for
    /// `pods/portforward`, included).
    pub fn status_code(&self) -> Option<u16> {
        match &*self.source {
            kube::Error::Api(status) => Some(status.code),
            kube::Error::UpgradeConnection(
                kube::client::UpgradeConnectionError::ProtocolSwitch(status),
            ) => Some(status.as_u16()),
            _ => None,
        }
    }

    /// Whether RBAC refused the call.
    pub fn is_forbidden(&self) -> bool {
        self.status_code() == Some(403)
    }

    fn scope(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("in namespace \"{namespace}\""),
            None => "across all namespaces".to_owned(),
        }
    }

    fn describe(&self) -> String {
        let (verb, resource, scope) = (self.verb, &self.resource, self.scope());
        if self.is_forbidden() {
            format!(
                "the cluster refused (403 Forbidden) to let you {verb} {resource} {scope}; ask a cluster admin to grant you the role in {RBAC_MANIFEST}, or switch to a context that has it (--context)"
            )
        } else {
            format!("could not {verb} {resource} {scope}")
        }
    }
}

/// Adds what was asked to a failed call's error.
pub(crate) trait CallContext<T> {
    /// Names the call: `verb` on `K`'s resource in `namespace` (`None`: all namespaces).
    fn during<K: Resource<DynamicType = ()>>(
        self,
        verb: &'static str,
        namespace: Option<&str>,
    ) -> Result<T, ApiCallError>;
}

impl<T> CallContext<T> for Result<T, kube::Error> {
    fn during<K: Resource<DynamicType = ()>>(
        self,
        verb: &'static str,
        namespace: Option<&str>,
    ) -> Result<T, ApiCallError> {
        self.map_err(|source| ApiCallError::new::<K>(verb, namespace, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn refused(code: u16) -> Result<(), kube::Error> {
        Err(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "deployments.apps \"x\" is forbidden".into(),
            reason: "Forbidden".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn forbidden_names_verb_resource_namespace_and_the_rbac_manifest() {
        let error = refused(403)
            .during::<Deployment>("delete", Some("demo"))
            .expect_err("refused");
        assert!(error.is_forbidden());
        let message = error.to_string();
        for part in ["delete", "deployments", "namespace \"demo\"", RBAC_MANIFEST] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }

    #[test]
    fn other_failures_name_the_call_and_keep_the_cause() {
        let error = refused(500)
            .during::<Deployment>("list", None)
            .expect_err("failed");
        assert_eq!(
            error.to_string(),
            "could not list deployments across all namespaces"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
