//! The one change czctl makes to a user's object: the intercepted Service's selector. The
//! original selector is recorded in an annotation on the Service, and both the switch and the
//! restore are JSON patches whose `test` operations make them fail instead of overwriting a
//! concurrent change by someone else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::INTERCEPT_ANNOTATION;
use crate::intercept::InterceptError;

/// What the annotation records: enough to restore the Service exactly and to tell others who
/// intercepts it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Session id.
    pub session: String,
    /// The selector before the intercept.
    pub original_selector: BTreeMap<String, String>,
    /// The selector during the intercept (the proxy's pods).
    pub proxy_selector: BTreeMap<String, String>,
    /// The intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The intercepted Service port.
    pub remote_port: u16,
    /// The laptop port requests go to.
    pub local_port: u16,
    /// Who intercepts (user@host).
    pub owner: String,
    /// When the intercept started (RFC 3339).
    pub since: String,
}

impl Record {
    /// The record on `service`, if it is intercepted.
    pub fn read(service: &Service) -> Option<Self> {
        let text = service
            .metadata
            .annotations
            .as_ref()?
            .get(INTERCEPT_ANNOTATION)?;
        serde_json::from_str(text).ok()
    }
}

/// JSON pointer escaping of the annotation key.
fn annotation_path() -> String {
    format!(
        "/metadata/annotations/{}",
        INTERCEPT_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 || status.code == 422)
}

/// Points `service` at the proxy's pods and records the original selector, provided the
/// Service is unchanged since it was read.
pub async fn switch(
    api: &Api<Service>,
    service: &Service,
    record: &Record,
) -> Result<(), InterceptError> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut operations = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": service.metadata.resource_version}),
        json!({"op": "test", "path": "/spec/selector", "value": record.original_selector}),
    ];
    if service.metadata.annotations.is_none() {
        operations.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    operations.push(json!({"op": "add", "path": annotation_path(), "value": serde_json::to_string(record).expect("a record serializes")}));
    operations
        .push(json!({"op": "replace", "path": "/spec/selector", "value": record.proxy_selector}));
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(operations)).expect("valid JSON patch");
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_conflict(&error) => Err(InterceptError::ChangedMeanwhile { name }),
        Err(error) => Err(error.into()),
    }
}

/// What restoring found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The original selector is back.
    Selector,
    /// Someone else changed the selector during the intercept; it was left as they set it and
    /// only the record was removed.
    LeftAsChanged(BTreeMap<String, String>),
    /// Nothing to restore (no record of this session, or no Service).
    Nothing,
}

/// Restores the selector recorded by `session` (any session when `None`) and removes the
/// record; leaves every other field, and a selector someone else changed, as they are.
pub async fn restore(
    api: &Api<Service>,
    name: &str,
    session: Option<&str>,
) -> Result<Restored, InterceptError> {
    for _ in 0..5 {
        let Some(service) = api.get_opt(name).await? else {
            return Ok(Restored::Nothing);
        };
        let Some(record) = Record::read(&service) else {
            return Ok(Restored::Nothing);
        };
        if session.is_some_and(|session| session != record.session) {
            return Ok(Restored::Nothing);
        }
        let current = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let ours = current == record.proxy_selector;
        // The annotations map goes too when ours was its only entry (czctl added the map).
        let only_ours = service
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.len() == 1);
        let removal = if only_ours {
            "/metadata/annotations".to_owned()
        } else {
            annotation_path()
        };
        let mut operations = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": service.metadata.resource_version}),
            json!({"op": "remove", "path": removal}),
        ];
        if ours {
            operations.push(json!({"op": "replace", "path": "/spec/selector", "value": record.original_selector}));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(operations)).expect("valid JSON patch");
        match api
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) if ours => return Ok(Restored::Selector),
            Ok(_) => return Ok(Restored::LeftAsChanged(current)),
            Err(error) if is_conflict(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(InterceptError::ChangedMeanwhile {
        name: name.to_owned(),
    })
}
