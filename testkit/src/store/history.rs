//! The bounded history of changes that watches resume from.

use std::collections::VecDeque;

use crate::error::ApiError;

use super::change::Change;

/// How many changes watches can resume from.
pub const CAPACITY: usize = 10_000;

/// The last [`CAPACITY`] changes, oldest first.
#[derive(Default)]
pub struct History {
    changes: VecDeque<Change>,
}

impl History {
    /// Keeps `change`, forgetting the oldest one when full.
    pub fn push(&mut self, change: Change) {
        if self.changes.len() == CAPACITY {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// The kept changes after `revision` that `in_scope` accepts; `current` is the store's
    /// revision. A revision older than the kept history is `410 Expired`.
    pub fn since(
        &self,
        revision: u64,
        current: u64,
        in_scope: impl Fn(&Change) -> bool,
    ) -> Result<Vec<Change>, ApiError> {
        let oldest = self.changes.front().map_or(current, |c| c.revision);
        if revision + 1 < oldest {
            return Err(ApiError::expired(revision, oldest));
        }
        Ok(self
            .changes
            .iter()
            .filter(|c| c.revision > revision && in_scope(c))
            .cloned()
            .collect())
    }
}
