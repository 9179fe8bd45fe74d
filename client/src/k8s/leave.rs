//! Sessions leaving an intercept that several developers may share: while others stay, the
//! leaving sessions' routes are detached from the proxy (their matching requests go to the
//! original pods at once) and they are taken off the record on the Service; the last one out
//! restores the Service and removes the proxy, the shadow Service and the Secret
//! ([`cleanup::clean_up`]).

use std::future::Future;

use k8s_openapi::api::core::v1::Service;
use kube::Api;

use super::api_error::CallContext;
use super::cleanup::{self, Cleaned, CleanupError};
use super::names::SessionNames;
use super::owned::{self, ObjectRef};
use super::proxy_control;
use super::record::{Leaving, Record};
use super::selector::Restored;
use crate::progress::Progress;

/// Takes the sessions `leaving` names off the intercept whose proxy is session `proxy`'s.
/// `created` are the proxy session's objects if the caller created them (else they are looked
/// up, verified as the session's, when the intercept ends). `proxy_drained` is awaited, once the
/// proxy is deleted, before the shadow Service goes. Idempotent.
pub(crate) async fn leave(
    client: &kube::Client,
    proxy: &SessionNames,
    leaving: &Leaving,
    created: &[ObjectRef],
    proxy_drained: impl Future<Output = ()>,
    progress: &mut impl FnMut(Progress),
) -> Result<Cleaned, CleanupError> {
    let namespace = proxy.namespace.as_str();
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let service = services
        .get_opt(&proxy.service)
        .await
        .during::<Service>("get", Some(namespace))
        .map_err(|source| unverified(proxy, source))?;
    // Without the Service there is nothing to restore, and its objects go with it (owners).
    let Some(service) = service else {
        return Ok(Cleaned {
            restored: Restored::Nothing,
            removed: Vec::new(),
        });
    };
    let record = Record::read(&service).filter(|record| record.session == proxy.id);
    if let Some(record) = record.as_ref().filter(|r| r.without(leaving).is_some()) {
        // Others stay: detach the leaving routes first, so their requests go to the original
        // pods from now on, whatever happens next.
        for member in record.members() {
            if leaving.includes(&member.session) {
                proxy_control::leave(client, proxy, None, &member.session)
                    .await
                    .map_err(|source| CleanupError::RouteNotDetached {
                        session: member.session.clone(),
                        namespace: namespace.to_owned(),
                        source: Box::new(source),
                    })?;
            }
        }
    }
    let objects = if created.is_empty() {
        let uid = service.metadata.uid.clone().unwrap_or_default();
        owned::find(client, proxy, &uid)
            .await
            .map_err(|source| unverified(proxy, source))?
    } else {
        created.to_vec()
    };
    cleanup::clean_up(client, proxy, leaving, &objects, proxy_drained, progress).await
}

fn unverified(proxy: &SessionNames, source: super::api_error::ApiCallError) -> CleanupError {
    CleanupError::Unverified {
        session: proxy.id.clone(),
        namespace: proxy.namespace.clone(),
        source,
    }
}
