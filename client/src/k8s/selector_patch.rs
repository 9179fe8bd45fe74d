//! The JSON patches that switch an intercepted Service's selector to the proxy and restore it:
//! pure functions of the Service as read and the session's record, so they are tested without a
//! cluster. Each patch starts with `test` operations, so the API server refuses it when someone
//! else changed the Service since it was read.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::record::{Member, Record};
use super::INTERCEPT_ANNOTATION;

/// What a restore does to the selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The original selector is back.
    Selector,
    /// Someone else changed the selector during the intercept; it was left as they set it and
    /// only the record was removed.
    LeftAsChanged(BTreeMap<String, String>),
    /// Other sessions still use the intercept: only the leaving ones were removed from the
    /// record, and the Service stays switched to the proxy.
    StillShared(Vec<Member>),
    /// Nothing to restore (no record of this session, or no Service).
    Nothing,
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn test(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: pointer(tokens),
        value,
    })
}

fn selector_value(selector: &BTreeMap<String, String>) -> Value {
    Value::Object(
        selector
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The Service's resourceVersion as read: the precondition of every patch.
fn unchanged(service: &Service) -> PatchOperation {
    let version = service.metadata.resource_version.clone();
    test(
        &["metadata", "resourceVersion"],
        version.map_or(Value::Null, Value::String),
    )
}

/// The selector the Service has now.
pub(super) fn current_selector(service: &Service) -> BTreeMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

/// The annotation value of `record`.
fn record_value(record: &Record) -> Value {
    Value::String(
        serde_json::to_string(record).expect("a record of strings and numbers serializes"),
    )
}

/// Replaces the record on `service` by `record` (a session joining or leaving), provided the
/// Service is unchanged since it was read: two developers joining or leaving at the same moment
/// cannot lose each other's update.
pub(super) fn rerecord(service: &Service, record: &Record) -> Patch {
    Patch(vec![
        unchanged(service),
        PatchOperation::Replace(ReplaceOperation {
            path: pointer(&["metadata", "annotations", INTERCEPT_ANNOTATION]),
            value: record_value(record),
        }),
    ])
}

/// Points `service` at the proxy's pods and records `record` on it, provided the Service is
/// unchanged since it was read.
pub(super) fn switch(service: &Service, record: &Record) -> Patch {
    let mut operations = vec![
        unchanged(service),
        test(
            &["spec", "selector"],
            selector_value(&record.original_selector),
        ),
    ];
    if service.metadata.annotations.is_none() {
        operations.push(PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations"]),
            value: Value::Object(serde_json::Map::new()),
        }));
    }
    operations.push(PatchOperation::Add(AddOperation {
        path: pointer(&["metadata", "annotations", INTERCEPT_ANNOTATION]),
        value: record_value(record),
    }));
    operations.push(PatchOperation::Replace(ReplaceOperation {
        path: pointer(&["spec", "selector"]),
        value: selector_value(&record.proxy_selector),
    }));
    Patch(operations)
}

/// What [`switch`] changes, as an object `kubectl apply` takes and a reviewer reads (for
/// `--dry-run`): the Service's name, namespace and resourceVersion (the switch's precondition:
/// applied to a newer Service it is refused), the record annotation and the selector as they are
/// after the switch, and nothing else. Built by applying the very patch [`switch`] makes to the
/// Service as read. czctl itself sends the JSON patch, which replaces the whole selector.
pub(crate) fn switched(service: &Service, record: &Record) -> Service {
    shown_after(service, &switch(service, record))
}

/// What [`rerecord`] changes, shown as [`switched`] shows a switch: the record annotation as it is
/// after the patch, and the selector, which it leaves as it is.
pub(crate) fn rerecorded(service: &Service, record: &Record) -> Service {
    shown_after(service, &rerecord(service, record))
}

/// `service` after `patch`, reduced to its name, namespace, resourceVersion, record annotation
/// and selector.
fn shown_after(service: &Service, patch: &Patch) -> Service {
    let mut document = serde_json::to_value(service).expect("a Service serializes to JSON");
    json_patch::patch(&mut document, patch)
        .expect("the patch's preconditions hold on the Service it was built from");
    let annotation = document["metadata"]["annotations"][INTERCEPT_ANNOTATION]
        .as_str()
        .map(ToOwned::to_owned)
        .unwrap_or_default();
    let selector = serde_json::from_value(document["spec"]["selector"].take()).unwrap_or_default();
    Service {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            resource_version: service.metadata.resource_version.clone(),
            annotations: Some(BTreeMap::from([(
                INTERCEPT_ANNOTATION.to_owned(),
                annotation,
            )])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Removes `record` from `service` and, if the selector is still the proxy's, puts the original
/// back; a selector someone else changed stays as they set it. Returns the patch and what it
/// does.
pub(super) fn restore(service: &Service, record: &Record) -> (Patch, Restored) {
    let current = current_selector(service);
    let ours = current == record.proxy_selector;
    // The annotations map goes too when ours is its only entry (czctl added the map).
    let only_ours = service
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.len() == 1);
    let removal = if only_ours {
        pointer(&["metadata", "annotations"])
    } else {
        pointer(&["metadata", "annotations", INTERCEPT_ANNOTATION])
    };
    let mut operations = vec![
        unchanged(service),
        PatchOperation::Remove(RemoveOperation { path: removal }),
    ];
    if ours {
        operations.push(PatchOperation::Replace(ReplaceOperation {
            path: pointer(&["spec", "selector"]),
            value: selector_value(&record.original_selector),
        }));
        (Patch(operations), Restored::Selector)
    } else {
        (Patch(operations), Restored::LeftAsChanged(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Record {
        Record {
            session: "0123abcd".into(),
            original_selector: [("app".into(), "echo".into())].into(),
            proxy_selector: [("czctl.io/session".into(), "0123abcd".into())].into(),
            header: "x-c6o-intercept:yes".into(),
            remote_port: 80,
            local_port: 3000,
            owner: "dev@laptop".into(),
            since: "2026-01-01T00:00:00Z".into(),
            members: Vec::new(),
        }
    }

    fn service(annotations: Value, selector: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "echo", "resourceVersion": "7", "annotations": annotations},
            "spec": {"selector": selector},
        }))
        .expect("a Service")
    }

    fn apply(service: &Service, patch: &Patch) -> Result<Value, json_patch::PatchError> {
        let mut document = serde_json::to_value(service).expect("serializes");
        json_patch::patch(&mut document, patch)?;
        Ok(document)
    }

    #[test]
    fn switch_records_and_points_at_the_proxy() {
        let original = service(Value::Null, json!({"app": "echo"}));
        let switched = apply(&original, &switch(&original, &record())).expect("applies");
        assert_eq!(
            switched["spec"]["selector"],
            json!({"czctl.io/session": "0123abcd"})
        );
        let recorded = switched["metadata"]["annotations"][INTERCEPT_ANNOTATION]
            .as_str()
            .expect("recorded");
        assert_eq!(
            serde_json::from_str::<Record>(recorded).expect("a record"),
            record()
        );
    }

    #[test]
    fn switched_shows_only_what_the_switch_sets() {
        let original = service(json!({"team": "payments"}), json!({"app": "echo"}));
        let shown = serde_json::to_value(switched(&original, &record())).expect("serializes");
        assert_eq!(
            shown,
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "echo",
                    "resourceVersion": "7",
                    "annotations": {
                        INTERCEPT_ANNOTATION: serde_json::to_string(&record()).expect("serializes"),
                    },
                },
                "spec": {"selector": {"czctl.io/session": "0123abcd"}},
            })
        );
    }

    #[test]
    fn rerecorded_shows_the_new_record_and_leaves_the_selector() {
        let original = service(json!({"team": "payments"}), json!({"app": "echo"}));
        let switched: Service = serde_json::from_value(
            apply(&original, &switch(&original, &record())).expect("switches"),
        )
        .expect("a Service");
        let joined = record().with_member(Member {
            session: "4567cdef".into(),
            header: "x-dev:bob".into(),
            local_port: 3001,
            owner: "bob@laptop".into(),
            since: "2026-01-01T00:01:00Z".into(),
            orphan_after_seconds: 900,
        });
        let shown = serde_json::to_value(rerecorded(&switched, &joined)).expect("serializes");
        assert_eq!(
            shown["metadata"]["annotations"][INTERCEPT_ANNOTATION],
            serde_json::to_string(&joined).expect("serializes")
        );
        assert_eq!(
            shown["spec"],
            json!({"selector": {"czctl.io/session": "0123abcd"}})
        );
        assert_eq!(shown["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn switch_refuses_a_service_changed_since_it_was_read() {
        let read = service(Value::Null, json!({"app": "echo"}));
        let patch = switch(&read, &record());
        let changed = service(Value::Null, json!({"app": "echo", "version": "v2"}));
        assert!(apply(&changed, &patch).is_err(), "selector test fails");
        let mut newer = read.clone();
        newer.metadata.resource_version = Some("8".into());
        assert!(apply(&newer, &patch).is_err(), "resourceVersion test fails");
    }

    #[test]
    fn restore_undoes_switch_exactly() {
        let original = service(json!({"team": "payments"}), json!({"app": "echo"}));
        let switched: Service = serde_json::from_value(
            apply(&original, &switch(&original, &record())).expect("switches"),
        )
        .expect("a Service");
        let (patch, restored) = restore(&switched, &record());
        assert_eq!(restored, Restored::Selector);
        assert_eq!(
            apply(&switched, &patch).expect("restores"),
            serde_json::to_value(&original).expect("serializes")
        );
        // czctl added the annotations map, so it goes too.
        let bare = service(Value::Null, json!({"app": "echo"}));
        let switched: Service =
            serde_json::from_value(apply(&bare, &switch(&bare, &record())).expect("switches"))
                .expect("a Service");
        let (patch, _) = restore(&switched, &record());
        assert_eq!(
            apply(&switched, &patch).expect("restores"),
            serde_json::to_value(&bare).expect("serializes")
        );
    }

    #[test]
    fn a_session_joins_and_leaves_by_rerecording_only_if_the_service_is_unchanged() {
        let original = service(Value::Null, json!({"app": "echo"}));
        let switched: Service = serde_json::from_value(
            apply(&original, &switch(&original, &record())).expect("switches"),
        )
        .expect("a Service");
        let bob = Member {
            session: "b0b0b0b0".into(),
            header: "x-dev:bob".into(),
            local_port: 3001,
            owner: "bob@laptop".into(),
            since: "2026-01-01T00:01:00Z".into(),
            orphan_after_seconds: 900,
        };
        let joined = record().with_member(bob.clone());
        let after = apply(&switched, &rerecord(&switched, &joined)).expect("applies");
        let after: Service = serde_json::from_value(after).expect("a Service");
        let read = Record::read(&after).expect("recorded");
        assert_eq!(read.members().len(), 2);
        assert_eq!(read.members()[1], bob);
        assert_eq!(after.spec, switched.spec, "the selector is untouched");

        let mut newer = switched.clone();
        newer.metadata.resource_version = Some("8".into());
        assert!(apply(&newer, &rerecord(&switched, &joined)).is_err());

        let leaving = super::super::record::Leaving::Session("0123abcd".into());
        let left = read.without(&leaving).expect("bob stays");
        assert_eq!(left.members(), vec![bob]);
        assert_eq!(
            left.session, "0123abcd",
            "the objects keep their creator's names"
        );
        assert!(left
            .without(&super::super::record::Leaving::Session("b0b0b0b0".into()))
            .is_none());
    }

    #[test]
    fn restore_leaves_a_selector_someone_else_set() {
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            INTERCEPT_ANNOTATION.into(),
            Value::String(serde_json::to_string(&record()).expect("serializes")),
        );
        let theirs = service(
            Value::Object(annotations),
            json!({"app": "echo", "version": "v2"}),
        );
        let (patch, restored) = restore(&theirs, &record());
        assert_eq!(
            restored,
            Restored::LeftAsChanged(
                [
                    ("app".into(), "echo".into()),
                    ("version".into(), "v2".into())
                ]
                .into()
            )
        );
        let after = apply(&theirs, &patch).expect("applies");
        assert_eq!(
            after["spec"]["selector"],
            json!({"app": "echo", "version": "v2"})
        );
        assert!(after["metadata"].get("annotations").is_none());
    }
}
