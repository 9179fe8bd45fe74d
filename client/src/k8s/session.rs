//! Sessions as the cluster records them: listing them, and closing them — restoring every
//! intercepted Service and deleting what each session created — whatever state a crash left.
//!
//! A session's objects are found by the names derived from its id and Service, and each is
//! checked to be the session's own (see [`owned::is_sessions`]) before it is deleted: labels
//! only point at candidate sessions (one that crashed before recording itself on its Service),
//! so a user's object that carries czctl's labels is never deleted.

use std::collections::BTreeSet;

use cz_shared::contract::ProxyState;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::core::{Expression, Selector};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::api_error::{ApiCallError, CallContext};
use super::cleanup::{self, CleanupError};
use super::leave;
use super::names::SessionNames;
use super::owned;
use super::proxy_admin::{self, AdminError};
use super::proxy_control::{self, ControlError};
use super::record::{Leaving, Record};
use super::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_LABEL, SESSION_LABEL};
use crate::progress::Progress;

/// An intercept recorded on a Service.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Namespace of the Service.
    pub namespace: String,
    /// The intercepted Service.
    pub service: String,
    /// What the Service's annotation records.
    pub record: Record,
}

/// Why closing sessions is not complete.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Looking for sessions failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
    /// Some sessions could not be cleaned up completely.
    #[error("{}", describe(failures))]
    Incomplete {
        /// One entry per session that was not cleaned up completely.
        failures: Vec<CleanupError>,
    },
}

fn describe(failures: &[CleanupError]) -> String {
    failures
        .iter()
        .map(|failure| cleanup::with_causes(failure))
        .collect::<Vec<_>>()
        .join("\n")
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The intercepted Services in `namespace` (all namespaces when `None`).
pub async fn list(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<SessionInfo>, ApiCallError> {
    let services = api::<Service>(client, namespace)
        .list(&ListParams::default())
        .await
        .during::<Service>("list", namespace)?;
    Ok(services
        .items
        .iter()
        .filter_map(|service| {
            Some(SessionInfo {
                namespace: service.metadata.namespace.clone()?,
                service: service.metadata.name.clone()?,
                record: Record::read(service)?,
            })
        })
        .collect())
}

/// Sessions named by the labels of objects of kind `K`: candidates only, verified later.
async fn labelled_sessions<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    labels: &Selector,
) -> Result<Vec<SessionNames>, ApiCallError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let objects = api::<K>(client, namespace)
        .list(&ListParams::default().labels_from(labels))
        .await
        .during::<K>("list", namespace)?;
    Ok(objects
        .items
        .iter()
        .filter_map(|object| {
            let meta = object.meta();
            let labels = meta.labels.as_ref()?;
            Some(SessionNames::existing(
                meta.namespace.as_deref()?,
                labels.get(SERVICE_LABEL)?,
                labels.get(SESSION_LABEL)?.clone(),
            ))
        })
        .collect())
}

/// Which sessions [`close`] closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// The caller's own: those recorded with the caller's `user@host`, and what sessions that
    /// crashed before recording themselves left behind.
    Own,
    /// The session with this id (recorded, or left behind by a crash).
    Session(String),
    /// Every session.
    All,
}

impl Closing {
    /// The sessions of `record` to close.
    fn of(&self, record: &Record, caller: &str) -> Vec<Leaving> {
        let members = record.members();
        let sessions = members.iter().filter(|member| match self {
            Self::Own => member.owner == caller,
            Self::Session(id) => &member.session == id,
            Self::All => true,
        });
        match self {
            Self::All => vec![Leaving::All],
            _ => sessions
                .map(|member| Leaving::Session(member.session.clone()))
                .collect(),
        }
    }

    /// Whether the leftovers of crashed session `id` are closed.
    fn takes_leftover(&self, id: &str) -> bool {
        match self {
            Self::Own | Self::All => true,
            Self::Session(session) => session == id,
        }
    }
}

/// Closes the sessions `closing` names in `namespace` (all namespaces when `None`), only on
/// `service` if given: a session leaving a shared intercept has its route detached, the last one
/// out restores the Service and deletes what the intercept created; another developer's session
/// is never touched unless named or [`Closing::All`]. Safe to run when nothing is left.
/// Returns how many recorded sessions were closed.
pub async fn close(
    client: &kube::Client,
    namespace: Option<&str>,
    service: Option<&str>,
    closing: &Closing,
    progress: &mut impl FnMut(Progress),
) -> Result<usize, SessionError> {
    let recorded: Vec<SessionInfo> = list(client, namespace)
        .await?
        .into_iter()
        .filter(|session| service.is_none_or(|s| s == session.service))
        .collect();
    let caller = crate::intercept::owner();
    let mut closed = 0;
    let mut failures = Vec::new();
    let mut proxies = BTreeSet::new();
    for info in &recorded {
        let proxy =
            SessionNames::existing(&info.namespace, &info.service, info.record.session.clone());
        for leaving in closing.of(&info.record, &caller) {
            let ready = std::future::ready(());
            match leave::leave(client, &proxy, &leaving, &[], ready, progress).await {
                Ok(_) if leaving == Leaving::All => closed += info.record.members().len(),
                Ok(_) => closed += 1,
                Err(failure) => failures.push(failure),
            }
        }
        proxies.insert(proxy);
    }

    // Sessions that crashed before recording themselves on their Service. (Their Secrets need
    // no search: each is owned by its session's shadow Service and goes with it.) The objects
    // of a recorded intercept's proxy are not leftovers: they go with its last session.
    let mut labels: Selector = [(MANAGED_BY_LABEL, MANAGED_BY)].into_iter().collect();
    labels.extend([Expression::Exists(SESSION_LABEL.to_owned())]);
    if let Some(service) = service {
        labels.extend([Expression::Equal(
            SERVICE_LABEL.to_owned(),
            service.to_owned(),
        )]);
    }
    let mut leftovers = BTreeSet::new();
    leftovers.extend(labelled_sessions::<Deployment>(client, namespace, &labels).await?);
    leftovers.extend(labelled_sessions::<Service>(client, namespace, &labels).await?);
    leftovers.retain(|names| !proxies.contains(names) && closing.takes_leftover(&names.id));
    for names in &leftovers {
        let intercepted = Api::<Service>::namespaced(client.clone(), &names.namespace)
            .get_opt(&names.service)
            .await
            .during::<Service>("get", Some(&names.namespace))?;
        // Without the Service, nothing can be verified as the session's; its objects are owned
        // by the Service, so the cluster's garbage collector removes them.
        let Some(uid) = intercepted.and_then(|s| s.metadata.uid) else {
            continue;
        };
        let objects = owned::find(client, names, &uid).await?;
        let ready = std::future::ready(());
        if let Err(failure) =
            cleanup::clean_up(client, names, &Leaving::All, &objects, ready, progress).await
        {
            failures.push(failure);
        }
    }
    if failures.is_empty() {
        Ok(closed)
    } else {
        Err(SessionError::Incomplete { failures })
    }
}

/// The state of `session`'s proxy (whether a laptop is connected), read from its admin port
/// through a port-forward.
pub async fn proxy_state(
    client: &kube::Client,
    session: &SessionInfo,
) -> Result<ProxyState, AdminError> {
    let names = SessionNames::existing(
        &session.namespace,
        &session.service,
        session.record.session.clone(),
    );
    proxy_admin::proxy_state(client, &names).await
}

/// Every route of `session`'s proxy, read through its control channel: who is connected, since
/// when not, how many requests each served.
pub async fn routes(
    client: &kube::Client,
    session: &SessionInfo,
) -> Result<cz_shared::control::Routes, ControlError> {
    let names = SessionNames::existing(
        &session.namespace,
        &session.service,
        session.record.session.clone(),
    );
    proxy_control::routes(client, &names).await
}
