//! Undoing this run's writes without touching anybody else's: a key goes back to its previous
//! value only while it still holds exactly what this run wrote there.

use super::{Condition, Datastore, Read, Txn, Write};
use crate::rollback::{RollbackLog, Undo};
use crate::{Context, Result};

/// How often the undo is retried after the keys changed between its read and its write.
const ATTEMPTS: usize = 3;

/// One write of this run, and what the key held before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenKey {
    /// The key.
    pub key: String,
    /// The value this run wrote.
    pub written: Vec<u8>,
    /// The value before, put back by the undo; `None` when the key was new and is deleted.
    pub previous: Option<Vec<u8>>,
}

/// Undoes `writes` in one transaction, conditional on each key's current revision. Keys that no
/// longer hold what this run wrote (another writer took them over, or they are gone) are left
/// as they are and returned, so the caller can say so.
pub fn undo_writes(store: &Datastore, writes: &[WrittenKey]) -> Result<Vec<String>> {
    let reads: Vec<Read> = writes.iter().map(|w| Read::Key(w.key.clone())).collect();
    let first = writes.first().map_or("", |w| w.key.as_str());
    for _ in 0..ATTEMPTS {
        let current = store
            .read(&reads)
            .with_context(|| format!("read {first} to undo this run's writes"))?;
        let mut txn = Txn::default();
        let mut left = Vec::new();
        for (write, entries) in writes.iter().zip(current) {
            match entries.into_iter().next() {
                Some(entry) if entry.value == write.written => {
                    txn.conditions
                        .push(Condition::Revision(write.key.clone(), entry.mod_revision));
                    txn.writes.push(match &write.previous {
                        Some(value) => Write::Put(write.key.clone(), value.clone()),
                        None => Write::Delete(write.key.clone()),
                    });
                }
                _ => left.push(write.key.clone()),
            }
        }
        if txn.writes.is_empty()
            || store
                .txn(&txn)
                .with_context(|| format!("undo the write of {first}"))?
                .committed
        {
            return Ok(left);
        }
    }
    Err(crate::Error::new(
        crate::error::codes::CONFLICT,
        format!("{first} kept changing while undoing this run's write"),
    ))
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
