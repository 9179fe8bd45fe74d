//! What watches and controllers see of the store: changes to objects, and where a watch starts.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{meta, ApiError};
use crate::resources::Kind;

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

/// A watch's start: past changes to replay, then live ones.
pub struct WatchStart {
    /// Changes after the requested revision (or the current objects, as ADDED).
    pub replay: Vec<Change>,
    /// Live changes from here on.
    pub live: broadcast::Receiver<Change>,
    /// The revision `replay` ends at.
    pub revision: u64,
}

impl super::Store {
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
                && namespace.is_none_or(|ns| meta::field(&change.object, "namespace") == ns)
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
            Some(revision) => state.history.since(revision, state.revision, in_scope)?,
        };
        Ok(WatchStart {
            replay,
            live,
            revision: state.revision,
        })
    }
}
