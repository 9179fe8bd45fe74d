//! Everything czctl changes in a cluster, one module per object it manages and per operation.
//! Every object czctl creates carries [`MANAGED_BY`], the session id (label and annotation) and
//! an owner reference to the intercepted Service — except the session's Secret, owned by the
//! shadow Service so that it goes with it and czctl never needs to read or delete Secrets; the
//! one change to a user's object — the intercepted Service's selector — is recorded in an
//! annotation on that Service and applied and undone with JSON-patch `test` preconditions, so a
//! concurrent change by someone else is never overwritten. Clean-up deletes only objects it
//! verified as the session's, each with a uid precondition.

pub(crate) mod api_error;
pub(crate) mod cleanup;
pub(crate) mod client;
pub(crate) mod endpoints;
pub(crate) mod leave;
pub(crate) mod names;
pub(crate) mod owned;
pub(crate) mod port_forward;
pub(crate) mod proxy_admin;
pub(crate) mod proxy_control;
pub(crate) mod proxy_deployment;
pub(crate) mod proxy_pod;
pub(crate) mod record;
pub(crate) mod secret;
pub(crate) mod selector;
mod selector_patch;
pub mod session;
pub(crate) mod shadow_service;
pub(crate) mod target;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// `app.kubernetes.io/managed-by` value on everything czctl creates.
pub const MANAGED_BY: &str = "czctl";
/// The label carrying [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label naming the session an object belongs to.
pub const SESSION_LABEL: &str = "czctl.io/session";
/// Annotation naming the session that created an object (checked before every delete).
pub const SESSION_ANNOTATION: &str = "czctl.io/session";
/// Label naming the intercepted Service an object serves.
pub const SERVICE_LABEL: &str = "czctl.io/service";
/// Annotation on an intercepted Service recording the intercept (see [`record::Record`]).
pub const INTERCEPT_ANNOTATION: &str = "czctl.io/intercept";

/// An owner reference to `object` (not a controller: czctl, not a controller, manages it).
pub(crate) fn owner_reference<K: kube::Resource<DynamicType = ()>>(
    object: &K,
) -> Option<OwnerReference> {
    let meta = object.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}
