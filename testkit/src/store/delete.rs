//! Deleting objects as an API server does: gracefully for running pods, with their dependents
//! (garbage collection, or orphaned on request), and refused where a test says RBAC would.

use std::sync::Arc;

use serde_json::Value;

use super::{key, meta, ApiError, ChangeType, Key, Propagation, Store};
use crate::resources::{self, Kind};

impl Store {
    /// From now on, refuses to delete `kind` objects in `namespace` with 403 Forbidden, as an API
    /// server does when RBAC grants no `delete` on them: for tests of what a refused clean-up
    /// reports.
    pub fn refuse_deletes(&self, kind: &'static Kind, namespace: &str) {
        self.lock()
            .refused_deletes
            .insert((kind.group, kind.plural, namespace.to_owned()));
    }

    /// Deletes an object and, unless orphaned, everything it owns; deleting a namespace deletes
    /// everything in it. A running pod is deleted gracefully, as by a real API server: it gets a
    /// `deletionTimestamp` (terminating: no longer ready in its Services' endpoints, replaced by
    /// its ReplicaSet) and goes once the kubelet has stopped its process, which deletes it again.
    pub fn delete(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Arc<Value>, ApiError> {
        if std::ptr::eq(kind, &resources::PODS) {
            let pod = self.get(kind, namespace, name)?;
            let phase = pod.pointer("/status/phase").and_then(Value::as_str);
            let running = !matches!(phase, Some("Failed" | "Succeeded"));
            if running && pod.pointer("/metadata/deletionTimestamp").is_none() {
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                return self.update(kind, namespace, name, false, |pod| {
                    pod["metadata"]["deletionTimestamp"] = now.to_string().into();
                });
            }
        }
        let mut state = self.lock();
        if state
            .refused_deletes
            .contains(&(kind.group, kind.plural, namespace.to_owned()))
        {
            return Err(ApiError::delete_forbidden(kind, namespace, name));
        }
        let object = state
            .objects
            .remove(&key(kind, namespace, name))
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        state.revision += 1;
        self.record(&mut state, kind, ChangeType::Deleted, object.clone(), None);
        let uid = meta::field(&object, "uid");
        let contained = |(group, plural, ns, _): &Key, _: &Arc<Value>| {
            std::ptr::eq(kind, &resources::NAMESPACES)
                && ns == name
                && !(group.is_empty() && *plural == "namespaces")
        };
        let dependents: Vec<Key> = state
            .objects
            .iter()
            .filter(|(k, o)| contained(k, o) || meta::owned_by(o, &uid))
            .map(|(k, _)| k.clone())
            .collect();
        drop(state);
        for (group, plural, ns, dependent) in dependents {
            let dependent_kind =
                resources::find(group, "v1", plural).expect("stored kinds are served");
            if propagation == Propagation::Orphan && ns != name {
                let _ = self.update(dependent_kind, &ns, &dependent, false, |o| {
                    meta::disown(o, &uid)
                });
            } else {
                let _ = self.delete(dependent_kind, &ns, &dependent, propagation);
            }
        }
        Ok(object)
    }
}
