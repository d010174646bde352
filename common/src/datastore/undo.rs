//! Undoing this run's writes without touching anybody else's: a key goes back to its previous
//! value only while it still carries the revision this run's write gave it.

use super::{Condition, Datastore, Txn, Write};
use crate::rollback::{RollbackLog, Undo};
use crate::{Context, Result};

/// One write of this run, and what the key held before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenKey {
    /// The key.
    pub key: String,
    /// The `mod_revision` this run's write gave the key.
    pub revision: i64,
    /// The value before, put back by the undo; `None` when the key was new and is deleted.
    pub previous: Option<Vec<u8>>,
}

/// Undoes `writes` in one transaction, each conditional on its key still carrying the revision
/// this run's write gave it. Keys that another writer changed since (or removed) are left as
/// they are and returned, so the caller can say so.
pub fn undo_writes(store: &Datastore, writes: &[WrittenKey]) -> Result<Vec<String>> {
    let first = writes.first().map_or("", |w| w.key.as_str());
    let mut ours: Vec<&WrittenKey> = writes.iter().collect();
    let mut left = Vec::new();
    // Each failed attempt shows at least one key taken over, so this ends.
    while !ours.is_empty() {
        let txn = Txn {
            conditions: ours
                .iter()
                .map(|w| Condition::Revision(w.key.clone(), w.revision))
                .collect(),
            writes: ours
                .iter()
                .map(|w| match &w.previous {
                    Some(value) => Write::Put(w.key.clone(), value.clone()),
                    None => Write::Delete(w.key.clone()),
                })
                .collect(),
            reads_on_failure: ours.iter().map(|w| w.key.clone()).collect(),
        };
        let outcome = store
            .txn(&txn)
            .with_context(|| format!("undo the write of {first}"))?;
        if outcome.committed {
            break;
        }
        let unchanged = |w: &WrittenKey| {
            outcome
                .current
                .iter()
                .any(|e| e.key == w.key && e.mod_revision == w.revision)
        };
        let (still, taken): (Vec<&WrittenKey>, Vec<&WrittenKey>) =
            ours.into_iter().partition(|w| unchanged(w));
        if taken.is_empty() {
            return Err(crate::Error::new(
                crate::error::codes::CONFLICT,
                format!("{first} kept changing while undoing this run's write"),
            ));
        }
        left.extend(taken.into_iter().map(|w| w.key.clone()));
        ours = still;
    }
    Ok(left)
}

/// This run's writes, under a guard that undoes them with [`undo_writes`] unless committed.
pub struct WrittenKeys<'a> {
    store: &'a Datastore,
    writes: Vec<WrittenKey>,
}

impl<'a> WrittenKeys<'a> {
    /// The writes `writes` made in `store`.
    pub fn new(store: &'a Datastore, writes: Vec<WrittenKey>) -> WrittenKeys<'a> {
        WrittenKeys { store, writes }
    }

    /// The first key written.
    pub fn first_key(&self) -> &str {
        self.writes.first().map_or("", |w| w.key.as_str())
    }
}

impl Undo for WrittenKeys<'_> {
    fn action(&self) -> String {
        let keys: Vec<&str> = self.writes.iter().map(|w| w.key.as_str()).collect();
        format!("undo the write of {}", keys.join(", "))
    }

    fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
        undo_writes(self.store, &self.writes)
    }
}
