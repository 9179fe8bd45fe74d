//! The objects a session creates and deletes, how to tell that an object really is the session's
//! (its name, session label and annotation, and an owner reference to the intercepted Service's
//! uid), and deleting one with a uid precondition, so an object that replaced it under the same
//! name is never deleted.
//!
//! The session's Secret is not one of them: it is owned by the shadow Service, and the cluster's
//! garbage collector deletes it with its owner, so czctl never reads, lists or deletes Secrets.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::api_error::{ApiCallError, CallContext};
use super::names::SessionNames;
use super::{SESSION_ANNOTATION, SESSION_LABEL};

/// The kinds of object a session creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionObject {
    /// The proxy Deployment.
    ProxyDeployment,
    /// The shadow Service (which owns the session's Secret).
    ShadowService,
}

impl SessionObject {
    /// Every kind, in the order clean-up deletes them (the proxy first, so it drains).
    pub const ALL: [Self; 2] = [Self::ProxyDeployment, Self::ShadowService];

    /// How progress messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ProxyDeployment => "proxy deployment",
            Self::ShadowService => "shadow service",
        }
    }

    /// How `kubectl` names its kind.
    pub fn kubectl_kind(self) -> &'static str {
        match self {
            Self::ProxyDeployment => "deployment",
            Self::ShadowService => "service",
        }
    }

    /// Its name in session `names`.
    pub fn name(self, names: &SessionNames) -> String {
        match self {
            Self::ProxyDeployment => names.proxy(),
            Self::ShadowService => names.shadow(),
        }
    }
}

/// One object of a session, as created (or as verified to be the session's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Which of the session's objects.
    pub kind: SessionObject,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The uid it had when czctl created or verified it.
    pub uid: String,
}

impl ObjectRef {
    /// The reference to `meta` (as the API server returned it) of kind `kind`; `None` without a
    /// uid.
    pub(crate) fn from_meta(kind: SessionObject, meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            kind,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
        })
    }

    /// The command a user runs to delete it by hand.
    pub fn kubectl_delete(&self) -> String {
        format!(
            "kubectl delete {} {} -n {}",
            self.kind.kubectl_kind(),
            self.name,
            self.namespace
        )
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.describe(),
            self.namespace,
            self.name
        )
    }
}

/// Whether `meta` is the object `kind` of session `names`, owned by the Service whose uid is
/// `service_uid`: a user's object that merely carries czctl's labels is not.
pub(crate) fn is_sessions(
    kind: SessionObject,
    meta: &ObjectMeta,
    names: &SessionNames,
    service_uid: &str,
) -> bool {
    let session = Some(&names.id);
    meta.name.as_deref() == Some(kind.name(names).as_str())
        && meta.labels.as_ref().and_then(|l| l.get(SESSION_LABEL)) == session
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SESSION_ANNOTATION))
            == session
        && meta.owner_references.iter().flatten().any(|owner| {
            owner.kind == "Service" && owner.name == names.service && owner.uid == service_uid
        })
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object is gone now.
    Removed,
    /// It was gone already.
    AlreadyGone,
    /// An object with another uid holds the name now; it was left alone.
    Replaced,
}

async fn delete_kind<K>(client: &kube::Client, object: &ObjectRef) -> Result<Deleted, ApiCallError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(object.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match Api::<K>::namespaced(client.clone(), &object.namespace)
        .delete(&object.name, &params)
        .await
    {
        Ok(_) => Ok(Deleted::Removed),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deleted::AlreadyGone),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Deleted::Replaced),
        Err(error) => Err(ApiCallError::new::<K>(
            "delete",
            Some(&object.namespace),
            error,
        )),
    }
}

/// Deletes `object` if it still has its uid.
pub(crate) async fn delete(
    client: &kube::Client,
    object: &ObjectRef,
) -> Result<Deleted, ApiCallError> {
    match object.kind {
        SessionObject::ProxyDeployment => delete_kind::<Deployment>(client, object).await,
        SessionObject::ShadowService => delete_kind::<Service>(client, object).await,
    }
}

async fn find_kind<K>(
    client: &kube::Client,
    kind: SessionObject,
    names: &SessionNames,
    service_uid: &str,
) -> Result<Option<ObjectRef>, ApiCallError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let object = Api::<K>::namespaced(client.clone(), &names.namespace)
        .get_opt(&kind.name(names))
        .await
        .during::<K>("get", Some(&names.namespace))?;
    Ok(object
        .filter(|object| is_sessions(kind, object.meta(), names, service_uid))
        .and_then(|object| ObjectRef::from_meta(kind, object.meta())))
}

/// The session's objects that exist and are verifiably its own (see [`is_sessions`]).
pub(crate) async fn find(
    client: &kube::Client,
    names: &SessionNames,
    service_uid: &str,
) -> Result<Vec<ObjectRef>, ApiCallError> {
    let mut found = Vec::new();
    for kind in SessionObject::ALL {
        let object = match kind {
            SessionObject::ProxyDeployment => {
                find_kind::<Deployment>(client, kind, names, service_uid).await?
            }
            SessionObject::ShadowService => {
                find_kind::<Service>(client, kind, names, service_uid).await?
            }
        };
        found.extend(object);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::MANAGED_BY_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn names() -> SessionNames {
        SessionNames::existing("demo", "echo", "0123abcd".into())
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "echo".into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_sessions_own_objects_are_recognised() {
        let names = names();
        let meta = names.metadata(names.proxy(), Some(owner("uid-echo")));
        assert!(is_sessions(
            SessionObject::ProxyDeployment,
            &meta,
            &names,
            "uid-echo"
        ));
        assert!(
            !is_sessions(SessionObject::ShadowService, &meta, &names, "uid-echo"),
            "another name"
        );
        assert!(
            !is_sessions(SessionObject::ProxyDeployment, &meta, &names, "uid-other"),
            "owned by a Service of the same name that was replaced"
        );
    }

    #[test]
    fn a_users_object_with_czctl_labels_is_not_the_sessions() {
        let names = names();
        let users = ObjectMeta {
            name: Some(names.proxy()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), "czctl".to_owned()),
                    (SESSION_LABEL.to_owned(), names.id.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        assert!(!is_sessions(
            SessionObject::ProxyDeployment,
            &users,
            &names,
            "uid-echo"
        ));
    }

    #[test]
    fn the_kubectl_command_names_kind_name_and_namespace() {
        let object = ObjectRef {
            kind: SessionObject::ProxyDeployment,
            namespace: "demo".into(),
            name: "cz-proxy-echo-0123abcd".into(),
            uid: "u".into(),
        };
        assert_eq!(
            object.kubectl_delete(),
            "kubectl delete deployment cz-proxy-echo-0123abcd -n demo"
        );
    }
}
