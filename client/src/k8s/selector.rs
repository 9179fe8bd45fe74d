//! The one change czctl makes to a user's object: the intercepted Service's selector, switched
//! to the proxy and restored with the patches of `selector_patch`, which fail instead of
//! overwriting a concurrent change by someone else.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::Api;

use super::api_error::{ApiCallError, CallContext};
use super::record::{Leaving, Member, Record};
use super::selector_patch;
pub use super::selector_patch::Restored;
pub(crate) use super::selector_patch::{rerecorded, switched};

/// How often a restore reads the Service again after someone else changed it meanwhile.
const RESTORE_ATTEMPTS: usize = 5;

/// Why the selector could not be switched or restored.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    /// The switch found the Service changed since it was checked; czctl changed nothing.
    #[error("service {namespace}/{name} was changed by someone else while czctl switched it to the proxy; its selector was not changed, try again")]
    ChangedBeforeSwitch {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
    },
    /// Every restore attempt found the Service changed again: it still routes to the proxy.
    #[error("service {namespace}/{name} kept being changed by someone else while czctl restored it ({RESTORE_ATTEMPTS} attempts); it may still route through the proxy, so czctl left the session's objects in place: run `czctl session close -n {namespace}` once the changes settle")]
    KeptChanging {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
    },
    /// Every attempt to record a joining session found the Service changed again.
    #[error("service {namespace}/{name} kept being changed by someone else while czctl recorded your session on it ({RESTORE_ATTEMPTS} attempts); nothing was changed, try again")]
    KeptChangingOnJoin {
        /// Namespace.
        namespace: String,
        /// Service.
        name: String,
    },
    /// The API call failed.
    #[error(transparent)]
    Api(#[from] ApiCallError),
}

/// What recording a joining session found.
#[derive(Debug)]
pub(crate) enum Joined {
    /// The session is recorded; the record as it is now.
    Recorded(Record),
    /// Another session holds the rule.
    RuleTaken(Member),
    /// The Service is no longer intercepted (the last session left meanwhile).
    NotIntercepted,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 || status.code == 422)
}

/// Points `service` at the proxy's pods and records `record`, provided the Service is unchanged
/// since it was read.
pub(crate) async fn switch(
    api: &Api<Service>,
    namespace: &str,
    service: &Service,
    record: &Record,
) -> Result<(), SelectorError> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let patch = selector_patch::switch(service, record);
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_conflict(&error) => Err(SelectorError::ChangedBeforeSwitch {
            namespace: namespace.to_owned(),
            name,
        }),
        Err(error) => Err(ApiCallError::new::<Service>("patch", Some(namespace), error).into()),
    }
}

/// What an attempt of [`update`] does with the Service as it reads it.
enum Decision<T> {
    /// Nothing to change: the outcome.
    Done(T),
    /// Apply this patch (its `test` operations guard against a change since the read); the
    /// outcome once it applies.
    Patch(json_patch::Patch, T),
}

/// Reads Service `name` (`None` if it is gone), lets `decide` what to do, and applies its patch;
/// when someone else changed the Service meanwhile, reads it again and decides afresh, up to
/// [`RESTORE_ATTEMPTS`] times (then `None`).
async fn update<T>(
    api: &Api<Service>,
    namespace: &str,
    name: &str,
    mut decide: impl FnMut(Option<Service>) -> Decision<T>,
) -> Result<Option<T>, SelectorError> {
    for _ in 0..RESTORE_ATTEMPTS {
        let service = api
            .get_opt(name)
            .await
            .during::<Service>("get", Some(namespace))?;
        let (patch, outcome) = match decide(service) {
            Decision::Done(outcome) => return Ok(Some(outcome)),
            Decision::Patch(patch, outcome) => (patch, outcome),
        };
        match api
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => return Ok(Some(outcome)),
            Err(error) if is_conflict(&error) => continue,
            Err(error) => {
                return Err(ApiCallError::new::<Service>("patch", Some(namespace), error).into())
            }
        }
    }
    Ok(None)
}

/// Records `member` on the intercept of Service `name`, unless its rule is taken; retried while
/// others change the Service at the same moment.
pub(crate) async fn join(
    api: &Api<Service>,
    namespace: &str,
    name: &str,
    member: &Member,
) -> Result<Joined, SelectorError> {
    let rule: cz_shared::InterceptRule = member
        .header
        .parse()
        .expect("a member's rule was parsed before it joins");
    let joined = update(api, namespace, name, |service| {
        let Some(record) = service.as_ref().and_then(Record::read) else {
            return Decision::Done(Joined::NotIntercepted);
        };
        if let Some(holder) = record.holder_of(&rule) {
            return Decision::Done(Joined::RuleTaken(holder));
        }
        let joined = record.with_member(member.clone());
        let service = service.expect("a record is read from a Service");
        Decision::Patch(
            selector_patch::rerecord(&service, &joined),
            Joined::Recorded(joined),
        )
    });
    joined
        .await?
        .ok_or_else(|| SelectorError::KeptChangingOnJoin {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

/// Removes the sessions `leaving` names from the intercept of Service `name` whose proxy is
/// session `proxy_session`'s. When nobody is left, restores the selector and removes the record;
/// leaves every other field, and a selector someone else changed, as they are. When others
/// remain, only the record changes. Retried while others change the Service at the same moment,
/// each attempt deciding afresh, so a session joining meanwhile is never dropped.
pub(crate) async fn restore(
    api: &Api<Service>,
    namespace: &str,
    name: &str,
    proxy_session: &str,
    leaving: &Leaving,
) -> Result<Restored, SelectorError> {
    let restored = update(api, namespace, name, |service| {
        let Some(service) = service else {
            return Decision::Done(Restored::Nothing);
        };
        let Some(record) = Record::read(&service).filter(|r| r.session == proxy_session) else {
            return Decision::Done(Restored::Nothing);
        };
        let (patch, restored) = match record.without(leaving) {
            Some(rest) => (
                selector_patch::rerecord(&service, &rest),
                Restored::StillShared(rest.members),
            ),
            None => selector_patch::restore(&service, &record),
        };
        Decision::Patch(patch, restored)
    });
    restored.await?.ok_or_else(|| SelectorError::KeptChanging {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}
