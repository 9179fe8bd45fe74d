//! What `--dry-run` shows instead of intercepting: the objects a new intercept would create and
//! the change to the Service, or, when another session intercepts the same port already, the
//! one change joining it makes.

use cz_shared::tls::SessionCa;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};

use super::blueprint::Blueprint;
use super::{
    new_member, new_record, resolve, InterceptError, InterceptOptions, Rollback, SetUpError,
};
use crate::k8s::names::SessionNames;
use crate::k8s::record::{Member, Record};
use crate::k8s::secret;
use crate::k8s::selector;
use crate::k8s::target::Target;

/// What an intercept would do, as `--dry-run` shows it.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing intercepts the Service yet: a new intercept.
    Create(Box<Creation>),
    /// Another session intercepts the same port: this one would join it.
    Join(Box<Joining>),
}

/// What a new intercept would create and change: built by the same code as the objects
/// [`crate::Intercept::start`] sends, with the values that exist only once it runs elided (the
/// Secret's certificates and key, the shadow Service's ClusterIP in the proxy's arguments:
/// [`SHADOW_IP_PLACEHOLDER`], its uid in the Secret's owner reference:
/// [`SHADOW_UID_PLACEHOLDER`]).
#[derive(Debug, Clone)]
pub struct Creation {
    /// The shadow Service.
    pub shadow_service: Service,
    /// The Secret, owned by the shadow Service: its data keys with empty values, and an
    /// annotation saying why.
    pub secret: Secret,
    /// The proxy Deployment.
    pub proxy_deployment: Deployment,
    /// The intercepted Service as the selector switch leaves it, reduced to what the switch
    /// sets (name, namespace, resourceVersion, the record annotation, the selector): an object
    /// `kubectl apply` takes, though czctl sends it as a JSON patch with preconditions.
    pub switched_service: Service,
}

/// What joining the intercept another session runs on the same port would change: nothing is
/// created and the selector stays; this session is added to the record on the Service, then its
/// header rule and session CA (made when it starts) are registered with the running proxy over
/// its control channel.
#[derive(Debug, Clone)]
pub struct Joining {
    /// The session whose proxy serves the intercept.
    pub proxy_session: String,
    /// The sessions on the intercept now, one line each (owner, rule, since).
    pub members: Vec<String>,
    /// The intercepted Service as joining leaves it, reduced to what joining sets (name,
    /// namespace, resourceVersion, the record annotation) and its selector, unchanged.
    pub recorded_service: Service,
}

/// What the proxy's arguments say in a [`Creation`] where the shadow Service's ClusterIP goes:
/// the API server assigns it when the shadow Service is created.
pub const SHADOW_IP_PLACEHOLDER: &str = "SHADOW-SERVICE-CLUSTER-IP";

/// What the Secret's owner reference says in a [`Creation`] where the shadow Service's uid goes:
/// the API server assigns it when the shadow Service is created.
pub const SHADOW_UID_PLACEHOLDER: &str = "SHADOW-SERVICE-UID";

impl Plan {
    /// The objects in the order czctl sends them, each as JSON with `apiVersion` and `kind`.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        match self {
            Self::Create(creation) => Ok(vec![
                serde_json::to_value(&creation.shadow_service)?,
                serde_json::to_value(&creation.secret)?,
                serde_json::to_value(&creation.proxy_deployment)?,
                serde_json::to_value(&creation.switched_service)?,
            ]),
            Self::Join(joining) => Ok(vec![serde_json::to_value(&joining.recorded_service)?]),
        }
    }

    /// The Service's resourceVersion the change is conditional on.
    pub fn resource_version(&self) -> &str {
        let service = match self {
            Self::Create(creation) => &creation.switched_service,
            Self::Join(joining) => &joining.recorded_service,
        };
        service.metadata.resource_version.as_deref().unwrap_or("?")
    }
}

/// What [`crate::Intercept::start`] would do with `options`: the Service is checked as `start`
/// checks it, and nothing is changed.
pub(super) async fn plan(
    client: &kube::Client,
    options: &InterceptOptions,
) -> Result<Plan, InterceptError> {
    let target = resolve(client, options).await?;
    let names = SessionNames::generate(&options.namespace, &options.service)?;
    if let Some(record) = Record::read(&target.service) {
        return match plan_join(&names, &target, &record, options) {
            Ok(joining) => Ok(Plan::Join(Box::new(joining))),
            Err(holder) => Err(InterceptError::NotStarted {
                service: format!("{}/{}", names.namespace, names.service),
                cause: SetUpError::RuleTaken {
                    namespace: names.namespace.clone(),
                    name: names.service.clone(),
                    holder,
                },
                rollback: Rollback::Complete,
            }),
        };
    }
    let record = new_record(&names, &target, options);
    let blueprint = Blueprint::new(&names, &target, &record, options);
    let proxy = SessionCa::generate()
        .and_then(|ca| ca.issue_proxy())
        .map_err(InterceptError::Certificates)?;
    let shadow_service = blueprint.shadow_service();
    // The Secret's owner is the shadow Service, whose uid exists once it is created.
    let mut created_shadow = shadow_service.clone();
    created_shadow.metadata.uid = Some(SHADOW_UID_PLACEHOLDER.to_owned());
    Ok(Plan::Create(Box::new(Creation {
        secret: secret::elide(blueprint.secret(&proxy, &created_shadow)),
        shadow_service,
        proxy_deployment: blueprint.proxy_deployment(SHADOW_IP_PLACEHOLDER),
        switched_service: blueprint.switched_service(),
    })))
}

/// What joining `record`'s intercept would change; refused with the holder, as joining is,
/// when the rule is another session's.
fn plan_join(
    names: &SessionNames,
    target: &Target,
    record: &Record,
    options: &InterceptOptions,
) -> Result<Joining, Box<Member>> {
    if let Some(holder) = record.holder_of(&options.rule) {
        return Err(Box::new(holder));
    }
    let joined = record.with_member(new_member(names, target, options));
    Ok(Joining {
        proxy_session: record.session.clone(),
        members: record.members().iter().map(Member::describe).collect(),
        recorded_service: selector::rerecorded(&target.service, &joined),
    })
}
