//! What a session creates and changes, built once from the checked Service and the options: the
//! one builder behind both [`super::Intercept::start`], which sends these objects, and
//! [`super::Intercept::plan`] (`--dry-run`), which shows them.

use cz_shared::tls::Identity;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::InterceptOptions;
use crate::k8s::names::SessionNames;
use crate::k8s::record::Record;
use crate::k8s::target::Target;
use crate::k8s::{owner_reference, proxy_deployment, secret, selector, shadow_service};

/// The session's objects, before they exist.
pub(super) struct Blueprint<'a> {
    names: &'a SessionNames,
    target: &'a Target,
    record: &'a Record,
    options: &'a InterceptOptions,
    owner: Option<OwnerReference>,
}

impl<'a> Blueprint<'a> {
    /// The objects of session `names` intercepting `target` as `record` says.
    pub(super) fn new(
        names: &'a SessionNames,
        target: &'a Target,
        record: &'a Record,
        options: &'a InterceptOptions,
    ) -> Self {
        Self {
            names,
            target,
            record,
            options,
            owner: owner_reference(&target.service),
        }
    }

    /// The Secret holding the proxy's identity, owned by the `shadow` Service so that it goes
    /// with it: czctl never reads, lists or deletes Secrets.
    pub(super) fn secret(&self, proxy: &Identity, shadow: &Service) -> Secret {
        secret::build(self.names, proxy, owner_reference(shadow))
    }

    /// The shadow Service: the original selector and ports under the session's name.
    pub(super) fn shadow_service(&self) -> Service {
        shadow_service::build(self.names, self.target, self.owner.clone())
    }

    /// The proxy Deployment, forwarding to the shadow Service at `shadow_ip`.
    pub(super) fn proxy_deployment(&self, shadow_ip: &str) -> Deployment {
        let spec = proxy_deployment::ProxySpec {
            target: self.target,
            shadow_ip,
            header: &self.record.header,
            orphan_after: self.options.orphan_after,
            image: &self.options.proxy_image,
            image_pull_secret: self.options.image_pull_secret.as_deref(),
        };
        proxy_deployment::build(self.names, &spec, self.owner.clone())
    }

    /// What the selector switch sets on the intercepted Service, as an object (see
    /// [`selector::switched`]).
    pub(super) fn switched_service(&self) -> Service {
        selector::switched(&self.target.service, self.record)
    }
}
