//! The object store: every object as JSON under one resource version counter, with the API
//! server's write semantics (optimistic concurrency, generation, garbage collection of
//! dependents) and watches that resume from a bounded history of changes.

mod change;
mod delete;
mod history;
mod meta;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;

pub use crate::error::ApiError;
use crate::resources::{self, Kind};
use crate::selector::Selector;
use crate::validate;
pub use change::{Change, ChangeType, WatchStart};
use history::History;

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
    history: History,
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
    /// Where NodePorts are allocated from.
    node_ports: std::ops::Range<u16>,
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

impl Store {
    /// An empty store whose Services get ClusterIPs in 127.`service_octet`.0.0/16 and NodePorts
    /// from `node_ports` (a part of the node port range, so that clusters beside each other on
    /// one host do not collide).
    pub fn new(service_octet: u8, node_ports: std::ops::Range<u16>) -> Self {
        Self {
            service_octet,
            node_ports,
            state: Mutex::new(State {
                revision: 1,
                objects: BTreeMap::new(),
                history: History::default(),
                next_name: 0,
                next_cluster_ip: 0,
                refused_deletes: BTreeSet::new(),
            }),
            changes_tx: broadcast::channel(history::CAPACITY).0,
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
        state.history.push(change.clone());
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
            return Err(ApiError::not_found(&resources::NAMESPACES, namespace));
        }
        let metadata = meta::map(&mut object)?;
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
            let name = meta::generated_name(&prefix, state.next_name);
            metadata.insert("name".into(), Value::String(name));
        }
        let name = meta::field(&object, "name");
        if state.objects.contains_key(&key(kind, namespace, &name)) {
            return Err(ApiError::already_exists(kind, &name));
        }
        validate::object(kind, &name, &object)?;
        if std::ptr::eq(kind, &resources::SERVICES) {
            state.next_cluster_ip += 1;
            let cluster_ip = service::cluster_ip(self.service_octet, state.next_cluster_ip);
            service::defaults(&mut object, cluster_ip);
            let taken = node_ports_taken(&state, namespace, &name);
            service::node_ports(&mut object, None, &self.node_ports, &taken)?;
        }
        state.revision += 1;
        let metadata = meta::map(&mut object)?;
        if kind.namespaced {
            metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
        } else {
            metadata.remove("namespace");
        }
        metadata.insert("uid".into(), Value::String(meta::uid(state.revision)));
        metadata.insert(
            "resourceVersion".into(),
            Value::String(state.revision.to_string()),
        );
        metadata.insert("creationTimestamp".into(), Value::String(meta::now()));
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
        let wanted_version = meta::field(&object, "resourceVersion");
        if !wanted_version.is_empty() && wanted_version != meta::field(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(kind, name));
        }
        if meta::field(&object, "name") != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::field(&object, "name")
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
            service::defaults(&mut object, allocated);
            let taken = node_ports_taken(&state, namespace, name);
            service::node_ports(&mut object, Some(&*current), &self.node_ports, &taken)?;
        }
        validate::object(kind, name, &object)?;
        state.revision += 1;
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = !status && object.get("spec") != current.get("spec");
        let metadata = meta::map(&mut object)?;
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
}

/// The node ports of every Service but `namespace/name`.
fn node_ports_taken(state: &State, namespace: &str, name: &str) -> BTreeSet<u16> {
    state
        .objects
        .iter()
        .filter(|((group, plural, object_namespace, object_name), _)| {
            (*group, *plural) == (resources::SERVICES.group, resources::SERVICES.plural)
                && (object_namespace.as_str(), object_name.as_str()) != (namespace, name)
        })
        .flat_map(|(_, service)| {
            service
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|port| port["nodePort"].as_u64())
                .filter_map(|port| u16::try_from(port).ok())
        })
        .collect()
}
