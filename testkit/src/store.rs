//! The object store: every object as JSON, one resource version counter, a bounded history of
//! changes for watches to resume from, and the API server's write semantics (optimistic
//! concurrency, generation, garbage collection of dependents).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::resources::{self, Kind};
use crate::selector::Selector;
use crate::validate;

/// How many changes watches can resume from.
const HISTORY: usize = 10_000;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// 404 for an object.
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural),
        )
    }

    /// Any error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid.
    pub fn invalid(kind: &Kind, name: &str, problems: &[String]) -> Self {
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                kind.kind,
                problems.join(", ")
            ),
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches and controllers see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resource version the change made.
    pub revision: u64,
    /// The object's kind.
    pub kind: &'static Kind,
    /// What happened.
    pub change: ChangeType,
    /// The object after the change (before it, for deletions).
    pub object: Arc<Value>,
    /// The object before a modification.
    pub previous: Option<Arc<Value>>,
}

type Key = (&'static str, &'static str, String, String);

fn key(kind: &'static Kind, namespace: &str, name: &str) -> Key {
    (
        kind.group,
        kind.plural,
        namespace.to_owned(),
        name.to_owned(),
    )
}

struct State {
    revision: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Change>,
    next_name: u64,
    next_cluster_ip: u32,
    /// (group, plural, namespace) whose objects may not be deleted, as if RBAC denied it.
    refused_deletes: BTreeSet<(&'static str, &'static str, String)>,
}

/// The cluster's objects.
pub struct Store {
    state: Mutex<State>,
    /// Second octet of ClusterIPs: 127.<octet>.x.y.
    service_octet: u8,
    changes_tx: broadcast::Sender<Change>,
}

/// How deletion treats dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted too (the default for our kinds).
    Background,
    /// Dependents are deleted first (same effect here: deletion is immediate).
    Foreground,
    /// Dependents lose their owner reference and stay.
    Orphan,
}

/// A watch's start: past changes to replay, then live ones.
pub struct WatchStart {
    /// Changes after the requested revision (or the current objects, as ADDED).
    pub replay: Vec<Change>,
    /// Live changes from here on.
    pub live: broadcast::Receiver<Change>,
    /// The revision `replay` ends at.
    pub revision: u64,
}

fn meta(object: &Value, field: &str) -> String {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Store {
    /// An empty store whose Services get ClusterIPs in 127.`service_octet`.0.0/16.
    pub fn new(service_octet: u8) -> Self {
        Self {
            service_octet,
            state: Mutex::new(State {
                revision: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                next_name: 0,
                next_cluster_ip: 0,
                refused_deletes: BTreeSet::new(),
            }),
            changes_tx: broadcast::channel(HISTORY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes_tx.subscribe()
    }

    fn record(
        &self,
        state: &mut State,
        kind: &'static Kind,
        change: ChangeType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let change = Change {
            revision: state.revision,
            kind,
            change,
            object,
            previous,
        };
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(change.clone());
        let _ = self.changes_tx.send(change);
    }

    /// The object, if it exists.
    pub fn get(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.lock()
            .objects
            .get(&key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Objects of `kind` (in `namespace`, or all) that `selector` selects, and the list's revision.
    pub fn list(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> (Vec<Arc<Value>>, u64) {
        let state = self.lock();
        let items = state
            .objects
            .iter()
            .filter(|((group, plural, ns, _), _)| {
                *group == kind.group
                    && *plural == kind.plural
                    && namespace.is_none_or(|wanted| ns == wanted)
            })
            .map(|(_, object)| object.clone())
            .filter(|object| selector.matches(object))
            .collect();
        (items, state.revision)
    }

    /// Creates an object; fills in uid, resourceVersion, creationTimestamp, generation and a
    /// `generateName` name.
    pub fn create(
        &self,
        kind: &'static Kind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut state = self.lock();
        if kind.namespaced
            && !state
                .objects
                .contains_key(&key(&resources::NAMESPACES, "", namespace))
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            ));
        }
        let metadata = object_metadata(&mut object)?;
        if metadata
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let prefix = metadata
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    &["metadata.name: Required value: name or generateName is required".into()],
                ));
            }
            state.next_name += 1;
            let suffix = format!(
                "{:05x}",
                (state.next_name.wrapping_mul(0x9e37_79b9) >> 7) & 0xfffff
            );
            metadata.insert("name".into(), Value::String(format!("{prefix}{suffix}")));
        }
        let name = meta(&object, "name");
        if state.objects.contains_key(&key(kind, namespace, &name)) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
            ));
        }
        validate::object(kind, &name, &object)?;
        if std::ptr::eq(kind, &resources::SERVICES) {
            state.next_cluster_ip += 1;
            let n = state.next_cluster_ip;
            service_defaults(
                &mut object,
                format!("127.{}.{}.{}", self.service_octet, n / 250, n % 250 + 1),
            );
        }
        state.revision += 1;
        let metadata = object_metadata(&mut object)?;
        if kind.namespaced {
            metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
        } else {
            metadata.remove("namespace");
        }
        metadata.insert("uid".into(), Value::String(uid(state.revision)));
        metadata.insert(
            "resourceVersion".into(),
            Value::String(state.revision.to_string()),
        );
        metadata.insert("creationTimestamp".into(), Value::String(now()));
        metadata.insert("generation".into(), json!(1));
        object["apiVersion"] = Value::String(kind.api_version());
        object["kind"] = Value::String(kind.kind.to_owned());
        if kind.has_status && object.get("status").is_none() {
            object["status"] = json!({});
        }
        let object = Arc::new(object);
        state
            .objects
            .insert(key(kind, namespace, &name), object.clone());
        self.record(&mut state, kind, ChangeType::Added, object.clone(), None);
        Ok(object)
    }

    /// Replaces an object (`status`: only its status). A resourceVersion in `object` must be the
    /// current one (409 Conflict otherwise); generation grows when the spec changes.
    pub fn replace(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        mut object: Value,
        status: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let mut state = self.lock();
        let current = state
            .objects
            .get(&key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let wanted_version = meta(&object, "resourceVersion");
        if !wanted_version.is_empty() && wanted_version != meta(&current, "resourceVersion") {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural
                ),
            ));
        }
        if meta(&object, "name") != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta(&object, "name")
            )));
        }
        if status {
            let new_status = object.get("status").cloned().unwrap_or(Value::Null);
            object = (*current).clone();
            object["status"] = new_status;
        } else if kind.has_status {
            object["status"] = current.get("status").cloned().unwrap_or_else(|| json!({}));
        }
        if std::ptr::eq(kind, &resources::SERVICES) {
            let allocated = current
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            service_defaults(&mut object, allocated);
        }
        validate::object(kind, name, &object)?;
        state.revision += 1;
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = !status && object.get("spec") != current.get("spec");
        let metadata = object_metadata(&mut object)?;
        for immutable in ["uid", "creationTimestamp", "namespace"] {
            match current["metadata"].get(immutable) {
                Some(value) => metadata.insert(immutable.into(), value.clone()),
                None => metadata.remove(immutable),
            };
        }
        metadata.insert(
            "resourceVersion".into(),
            Value::String(state.revision.to_string()),
        );
        metadata.insert(
            "generation".into(),
            json!(generation + i64::from(spec_changed)),
        );
        object["apiVersion"] = Value::String(kind.api_version());
        object["kind"] = Value::String(kind.kind.to_owned());
        let object = Arc::new(object);
        state
            .objects
            .insert(key(kind, namespace, name), object.clone());
        self.record(
            &mut state,
            kind,
            ChangeType::Modified,
            object.clone(),
            Some(current),
        );
        Ok(object)
    }

    /// Applies `mutate` to the current object and stores the result, retrying on conflicts with
    /// concurrent writers; for controllers.
    pub fn update(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        status: bool,
        mutate: impl Fn(&mut Value),
    ) -> Result<Arc<Value>, ApiError> {
        loop {
            let current = self.get(kind, namespace, name)?;
            let mut object = (*current).clone();
            mutate(&mut object);
            if object == *current {
                return Ok(current);
            }
            match self.replace(kind, namespace, name, object, status) {
                Err(error) if error.code == 409 => continue,
                result => return result,
            }
        }
    }

    /// From now on, refuses to delete `kind` objects in `namespace` with 403 Forbidden, as an API
    /// server does when RBAC grants no `delete` on them: for tests of what a refused clean-up
    /// reports.
    pub fn refuse_deletes(&self, kind: &'static Kind, namespace: &str) {
        self.lock()
            .refused_deletes
            .insert((kind.group, kind.plural, namespace.to_owned()));
    }

    /// Deletes an object and, unless orphaned, everything it owns; deleting a namespace deletes
    /// everything in it.
    pub fn delete(
        &self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Arc<Value>, ApiError> {
        let mut state = self.lock();
        if state
            .refused_deletes
            .contains(&(kind.group, kind.plural, namespace.to_owned()))
        {
            let (group, plural) = (kind.group, kind.plural);
            let resource = if group.is_empty() {
                plural.to_owned()
            } else {
                format!("{plural}.{group}")
            };
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("{resource} \"{name}\" is forbidden: User \"cz-testkit\" cannot delete resource \"{plural}\" in API group \"{group}\" in the namespace \"{namespace}\""),
            ));
        }
        let object = state
            .objects
            .remove(&key(kind, namespace, name))
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        state.revision += 1;
        self.record(&mut state, kind, ChangeType::Deleted, object.clone(), None);
        let uid = meta(&object, "uid");
        let contained = |(group, plural, ns, _): &Key, _: &Arc<Value>| {
            std::ptr::eq(kind, &resources::NAMESPACES)
                && ns == name
                && !(group.is_empty() && *plural == "namespaces")
        };
        let dependents: Vec<Key> = state
            .objects
            .iter()
            .filter(|(k, o)| contained(k, o) || owned_by(o, &uid))
            .map(|(k, _)| k.clone())
            .collect();
        drop(state);
        for (group, plural, ns, dependent) in dependents {
            let dependent_kind =
                resources::find(group, "v1", plural).expect("stored kinds are served");
            if propagation == Propagation::Orphan && ns != name {
                let _ = self.update(dependent_kind, &ns, &dependent, false, |o| {
                    if let Some(owners) = o
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        owners.retain(|owner| owner["uid"] != uid.as_str());
                    }
                });
            } else {
                let _ = self.delete(dependent_kind, &ns, &dependent, propagation);
            }
        }
        Ok(object)
    }

    /// Starts a watch of `kind` after `revision` (`None`: the current objects first, as ADDED).
    /// A revision older than the kept history is `410 Expired`.
    pub fn watch(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        revision: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let state = self.lock();
        let live = self.changes_tx.subscribe();
        let in_scope = |change: &Change| {
            std::ptr::eq(change.kind, kind)
                && namespace.is_none_or(|ns| meta(&change.object, "namespace") == ns)
        };
        let replay = match revision {
            None => state
                .objects
                .iter()
                .filter(|((group, plural, ns, _), _)| {
                    *group == kind.group
                        && *plural == kind.plural
                        && namespace.is_none_or(|wanted| ns == wanted)
                })
                .map(|(_, object)| Change {
                    revision: state.revision,
                    kind,
                    change: ChangeType::Added,
                    object: object.clone(),
                    previous: None,
                })
                .collect(),
            Some(revision) => {
                let oldest = state.history.front().map_or(state.revision, |c| c.revision);
                if revision + 1 < oldest {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {revision} ({oldest})"),
                    ));
                }
                state
                    .history
                    .iter()
                    .filter(|c| c.revision > revision && in_scope(c))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            replay,
            live,
            revision: state.revision,
        })
    }
}

/// What the API server fills in on Services: type, ClusterIP, protocols and target ports.
fn service_defaults(service: &mut Value, cluster_ip: String) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("type").or_insert_with(|| json!("ClusterIP"));
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("clusterIP".into(), json!(cluster_ip));
    }
    let ip = spec["clusterIP"].clone();
    spec.insert("clusterIPs".into(), json!([ip]));
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let number = port["port"].clone();
        if let Some(port) = port.as_object_mut() {
            port.entry("protocol").or_insert_with(|| json!("TCP"));
            port.entry("targetPort").or_insert(number);
        }
    }
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| owners.iter().any(|owner| owner["uid"] == uid))
}

fn object_metadata(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    let metadata = object
        .as_object_mut()
        .expect("checked")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    metadata
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is not an object"))
}

/// A UUID-shaped, unique uid.
fn uid(revision: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos()) as u64;
    let mixed = nanos ^ revision.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        mixed & 0xfff,
        revision & 0xfff,
        revision
    )
}
