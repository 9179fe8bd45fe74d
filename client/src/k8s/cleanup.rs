//! Undoing a session: restore the Service's selector first (so new connections go to the
//! original pods), wait until the Service's endpoints no longer list the proxy, then delete the
//! session's objects, each with its uid precondition — the proxy first (it keeps serving for its
//! shutdown delay, while kube-proxy follows the endpoints, then drains), and the objects it
//! drains through only once it has drained. The session's Secret goes with the shadow Service that owns it (the cluster's garbage
//! collector deletes it; czctl may not even read Secrets). Every object that could not be removed
//! is reported with the command that removes it; nothing is claimed that was not verified.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use super::api_error::ApiCallError;
use super::endpoints::{self, ProxyListing};
use super::names::SessionNames;
use super::owned::{self, Deleted, ObjectRef, SessionObject};
use super::record::{Leaving, Member};
use super::selector::{self, Restored, SelectorError};
use crate::progress::Progress;

/// An object clean-up could not delete.
#[derive(Debug)]
pub struct FailedDelete {
    /// The object, still in the cluster.
    pub object: ObjectRef,
    /// Why it is still there.
    pub error: ApiCallError,
}

/// Why a clean-up is not complete.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The selector could not be restored, so the proxy was kept: deleting it would cut the
    /// Service off.
    #[error("czctl could not restore service {namespace}/{service}, so it kept the session's proxy running (removing it would leave the service without pods); fix the cause below, then run `czctl session close -n {namespace}`")]
    NotRestored {
        /// Namespace.
        namespace: String,
        /// The intercepted Service.
        service: String,
        /// Why.
        #[source]
        source: SelectorError,
    },
    /// What the session knew it created is gone, but whether an interrupted creation left more
    /// could not be checked.
    #[error("czctl removed the objects it knew it had created, but could not check for others of session {session} whose creation was interrupted; run `czctl session close -n {namespace}` to remove them")]
    Unverified {
        /// The session id.
        session: String,
        /// Namespace.
        namespace: String,
        /// Why the check failed.
        #[source]
        source: ApiCallError,
    },
    /// A leaving session's route could not be detached from the proxy others still use; the
    /// session stays recorded, so the command can be repeated.
    #[error("czctl could not detach session {session}'s route from the proxy, which other sessions still use, so the session stays recorded on the service; its matching requests get 503 until its --orphan-after passes, then go to the original pods. Retry with `czctl session close -n {namespace} --session {session}`")]
    RouteNotDetached {
        /// The session.
        session: String,
        /// Namespace.
        namespace: String,
        /// Why.
        #[source]
        source: Box<super::proxy_control::ControlError>,
    },
    /// Some objects could not be deleted.
    #[error("{}", describe_failures(failed))]
    Incomplete {
        /// Each object still in the cluster, and why.
        failed: Vec<FailedDelete>,
    },
}

/// One paragraph per object left, with why and the `kubectl delete` that removes it.
fn describe_failures(failed: &[FailedDelete]) -> String {
    let mut text = format!(
        "czctl could not remove {} object(s) it created",
        failed.len()
    );
    for FailedDelete { object, error } in failed {
        let error = if error.is_forbidden() {
            error.to_string()
        } else {
            with_causes(error)
        };
        text.push_str(&format!(
            "\n  - {object}: {error}\n    remove it with: {}",
            object.kubectl_delete()
        ));
    }
    text
}

/// `error` and its causes on one line, each cause once.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let line = current.to_string();
        if !text.contains(&line) {
            text.push_str(&format!(": {line}"));
        }
        cause = current.source();
    }
    text
}

/// What a complete clean-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// What happened to the Service's selector.
    pub restored: Restored,
    /// The objects deleted now.
    pub removed: Vec<ObjectRef>,
}

/// How long Services may keep sending new connections to the old endpoints after a selector
/// change: kube-proxy applies endpoint changes a second or so late. After the switch, the
/// intercept is announced only after this; after a restore, when the endpoints cannot be read,
/// the proxy is removed only after this.
pub const ENDPOINT_PROPAGATION: Duration = Duration::from_secs(2);

/// `objects` in the order they must go: the proxy first (it drains its in-flight requests
/// through the shadow Service, with the Secret mounted), then the shadow Service (and with it,
/// by garbage collection, the Secret) — whatever order they were created or found in.
fn deletion_order(objects: &[ObjectRef]) -> impl Iterator<Item = &ObjectRef> {
    SessionObject::ALL
        .into_iter()
        .flat_map(move |kind| objects.iter().filter(move |o| o.kind == kind))
}

/// Takes the sessions `leaving` names off the intercept whose proxy is session `names`' (if it
/// is still recorded). When others stay, that is all (see [`Restored::StillShared`]). Otherwise
/// restores the selector, waits until the Service's endpoints no longer list the proxy if it
/// did, then deletes `objects`, which must be the proxy session's own (created by it, or
/// verified by [`owned::find`]). Once the proxy Deployment is deleted, `proxy_drained` is
/// awaited before the shadow Service (the draining proxy's upstream, and the owner of the
/// Secret) goes. Idempotent.
pub(crate) async fn clean_up(
    client: &kube::Client,
    names: &SessionNames,
    leaving: &Leaving,
    objects: &[ObjectRef],
    proxy_drained: impl Future<Output = ()>,
    progress: &mut impl FnMut(Progress),
) -> Result<Cleaned, CleanupError> {
    let services = Api::<Service>::namespaced(client.clone(), &names.namespace);
    let restored = selector::restore(
        &services,
        &names.namespace,
        &names.service,
        &names.id,
        leaving,
    )
    .await
    .map_err(|source| CleanupError::NotRestored {
        namespace: names.namespace.clone(),
        service: names.service.clone(),
        source,
    })?;
    match &restored {
        Restored::Selector => {
            progress(Progress::Restored);
            // Connections still routed to the proxy meanwhile are served, not refused.
            wait_until_unlisted(client, names, progress).await;
        }
        Restored::LeftAsChanged(selector) => {
            progress(Progress::LeftAsChanged(format!("{selector:?}")))
        }
        Restored::StillShared(others) => {
            let others = others.iter().map(Member::describe).collect();
            progress(Progress::StillShared { others });
            return Ok(Cleaned {
                restored,
                removed: Vec::new(),
            });
        }
        Restored::Nothing => {}
    }
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let mut proxy_drained = Some(proxy_drained);
    let mut proxy_removed = false;
    for object in deletion_order(objects) {
        if object.kind != SessionObject::ProxyDeployment && proxy_removed {
            if let Some(drained) = proxy_drained.take() {
                drained.await;
            }
        }
        match owned::delete(client, object).await {
            Ok(Deleted::Removed) => {
                progress(Progress::Deleted(object.to_string()));
                if object.kind == SessionObject::ShadowService {
                    progress(Progress::GoesWithOwner {
                        object: format!("secret {}/{}", names.namespace, names.secret()),
                        owner: object.to_string(),
                    });
                }
                proxy_removed |= object.kind == SessionObject::ProxyDeployment;
                removed.push(object.clone());
            }
            Ok(Deleted::AlreadyGone) => {}
            Ok(Deleted::Replaced) => progress(Progress::LeftAlone(object.to_string())),
            Err(error) => failed.push(FailedDelete {
                object: object.clone(),
                error,
            }),
        }
    }
    if failed.is_empty() {
        Ok(Cleaned { restored, removed })
    } else {
        Err(CleanupError::Incomplete { failed })
    }
}

/// Waits until the Service's endpoints no longer list the proxy; when they cannot be read (a
/// missing permission need not fail the stop), waits [`ENDPOINT_PROPAGATION`] instead.
async fn wait_until_unlisted(
    client: &kube::Client,
    names: &SessionNames,
    progress: &mut impl FnMut(Progress),
) {
    match endpoints::wait_until_unlisted(client, names).await {
        ProxyListing::Unlisted => progress(Progress::ProxyUnlisted),
        ProxyListing::StillListed => {
            progress(Progress::ProxyStillListed(endpoints::UNLISTED_TIMEOUT))
        }
        ProxyListing::Unreadable(error) => {
            progress(Progress::EndpointsUnreadable {
                why: with_causes(&error),
                waiting: ENDPOINT_PROPAGATION,
            });
            tokio::time::sleep(ENDPOINT_PROPAGATION).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    #[test]
    fn the_proxy_goes_first_and_the_shadow_service_last() {
        let object = |kind| ObjectRef {
            kind,
            namespace: "demo".into(),
            name: format!("{kind:?}"),
            uid: "u".into(),
        };
        // The order an intercept creates them in.
        let created = [
            object(SessionObject::ShadowService),
            object(SessionObject::ProxyDeployment),
        ];
        let kinds: Vec<SessionObject> = deletion_order(&created).map(|o| o.kind).collect();
        assert_eq!(kinds, SessionObject::ALL);
        assert_eq!(kinds[0], SessionObject::ProxyDeployment);
    }

    #[test]
    fn a_failed_delete_is_reported_with_its_kubectl_command() {
        let object = ObjectRef {
            kind: SessionObject::ProxyDeployment,
            namespace: "demo".into(),
            name: "cz-proxy-echo-0123abcd".into(),
            uid: "u".into(),
        };
        let refused = kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            ..Default::default()
        }));
        let error = CleanupError::Incomplete {
            failed: vec![FailedDelete {
                object,
                error: ApiCallError::new::<Deployment>("delete", Some("demo"), refused),
            }],
        };
        let message = error.to_string();
        for part in [
            "could not remove 1 object(s)",
            "proxy deployment demo/cz-proxy-echo-0123abcd",
            "403 Forbidden",
            "deploy/rbac.yaml",
            "kubectl delete deployment cz-proxy-echo-0123abcd -n demo",
        ] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }
}
