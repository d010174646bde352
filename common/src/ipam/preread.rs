//! A [`Store`] in front of the datastore for one IPAM operation of the `calico` plugin: it
//! answers the allocator's first reads from entries read earlier (calico's first read, the
//! node's block copy), adds the attachment's own writes to the allocator's first transaction
//! that writes, and remembers every block and affinity it saw, for the block copy.
//!
//! Entries given in advance serve one read each and are then forgotten, so a retry after a
//! failed compare-and-swap always reads etcd again: an entry that was stale costs one failed
//! transaction, never a wrong assignment.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::store::Store;
use crate::datastore::{Condition, Entry, Txn, TxnOutcome, Write, keys};
use crate::error::{Error, Kind, Result, codes};

/// What became of the writes added to the allocator's transaction (see
/// [`Preread::with_companion`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanionOutcome {
    /// No transaction that writes was made (the allocation failed before one).
    NotSent,
    /// Committed together with an assignment, at this revision: the `mod_revision` its keys
    /// carry.
    Committed(i64),
    /// Its conditions no longer held: another writer changed one of its keys. The allocation
    /// stopped with a conflict, and nothing of it was written.
    Broken,
}

/// The store wrapper; see the module documentation.
pub struct Preread<'s> {
    inner: &'s dyn Store,
    state: Mutex<State>,
}

struct State {
    known: HashMap<String, Option<Entry>>,
    seen: BTreeMap<String, Option<Entry>>,
    companion: Option<Txn>,
    outcome: CompanionOutcome,
}

impl<'s> Preread<'s> {
    /// A wrapper over `inner` answering reads of the keys in `known` (an entry, or `None` for a
    /// key known to be absent) once each.
    pub fn new(inner: &'s dyn Store, known: HashMap<String, Option<Entry>>) -> Self {
        Preread {
            inner,
            state: Mutex::new(State {
                known,
                seen: BTreeMap::new(),
                companion: None,
                outcome: CompanionOutcome::NotSent,
            }),
        }
    }

    /// The same wrapper adding `companion`'s conditions, writes and failure reads to the first
    /// transaction that writes, and to each retry of it until one commits. When a failed
    /// attempt shows a companion condition broken, the allocation stops with a conflict.
    pub fn with_companion(self, companion: Txn) -> Self {
        self.lock().companion = Some(companion);
        self
    }

    /// What became of the companion writes.
    pub fn companion_outcome(&self) -> CompanionOutcome {
        self.lock().outcome
    }

    /// Every block and host affinity key seen (read, or written by a committed transaction),
    /// as last seen: `None` when deleted or found absent.
    pub fn seen(&self) -> BTreeMap<String, Option<Entry>> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers a read-only transaction (the shape `store::read_many` sends) from the known
    /// entries when every key it reads is known, consuming them.
    fn answer_from_known(&self, txn: &Txn) -> Option<TxnOutcome> {
        let is_read = txn.writes.is_empty()
            && txn.conditions.len() == txn.reads_on_failure.len()
            && txn
                .conditions
                .iter()
                .zip(&txn.reads_on_failure)
                .all(|(c, k)| matches!(c, Condition::Absent(key) if key == k));
        let mut state = self.lock();
        if !is_read
            || txn.reads_on_failure.is_empty()
            || !txn
                .reads_on_failure
                .iter()
                .all(|k| state.known.contains_key(k))
        {
            return None;
        }
        let current: Vec<Entry> = txn
            .reads_on_failure
            .iter()
            .filter_map(|k| state.known.remove(k).flatten())
            .collect();
        Some(TxnOutcome {
            committed: current.is_empty(),
            current,
            resent: false,
            revision: 0,
        })
    }

    fn remember_read(&self, keys: &[String], entries: &[Entry]) {
        let mut state = self.lock();
        for key in keys.iter().filter(|k| is_copied(k)) {
            let found = entries.iter().find(|e| &e.key == key).cloned();
            state.seen.insert(key.clone(), found);
        }
    }

    fn remember_writes(&self, writes: &[Write], revision: i64) {
        let mut state = self.lock();
        for write in writes {
            match write {
                Write::Put(key, value) if is_copied(key) => {
                    let create_revision = match state.seen.get(key) {
                        Some(Some(before)) => before.create_revision,
                        _ => revision,
                    };
                    state.seen.insert(
                        key.clone(),
                        Some(Entry {
                            key: key.clone(),
                            value: value.clone(),
                            mod_revision: revision,
                            create_revision,
                        }),
                    );
                }
                Write::Delete(key) if is_copied(key) => {
                    state.seen.insert(key.clone(), None);
                }
                _ => {}
            }
        }
    }

    /// The transaction to send: `txn` plus the pending companion, if any.
    fn with_pending_companion(&self, txn: &Txn) -> (Txn, Option<Txn>) {
        let state = self.lock();
        match (&state.companion, txn.writes.is_empty()) {
            (Some(companion), false) => {
                let mut combined = txn.clone();
                combined
                    .conditions
                    .extend(companion.conditions.iter().cloned());
                combined.writes.extend(companion.writes.iter().cloned());
                combined
                    .reads_on_failure
                    .extend(companion.reads_on_failure.iter().cloned());
                (combined, Some(companion.clone()))
            }
            _ => (txn.clone(), None),
        }
    }

    /// After a transaction carrying the companion: committed, broken, or still pending.
    fn settle_companion(&self, companion: &Txn, outcome: &TxnOutcome) -> Result<()> {
        let mut state = self.lock();
        let applied_before = outcome.resent
            && companion.writes.iter().all(|w| match w {
                Write::Put(k, v) => outcome.current.iter().any(|e| &e.key == k && &e.value == v),
                _ => false,
            });
        if outcome.committed || applied_before {
            // An attempt applied before has its revision on the keys it wrote.
            let written = |key: &str| {
                companion
                    .writes
                    .iter()
                    .any(|w| matches!(w, Write::Put(k, _) if k == key))
            };
            let revision = match outcome.committed {
                true => outcome.revision,
                false => outcome
                    .current
                    .iter()
                    .find(|e| written(&e.key))
                    .map_or(0, |e| e.mod_revision),
            };
            state.companion = None;
            state.outcome = CompanionOutcome::Committed(revision);
            return Ok(());
        }
        let broken = companion.conflicting_keys(&outcome.current);
        if broken.is_empty() {
            return Ok(());
        }
        state.companion = None;
        state.outcome = CompanionOutcome::Broken;
        Err(Error::new(
            codes::CONFLICT,
            format!(
                "{} changed while addresses were assigned with it",
                broken.join(", ")
            ),
        )
        .with_kind(Kind::CasConflict))
    }
}

/// Whether the block copy keeps `key`: allocation blocks and host affinities.
fn is_copied(key: &str) -> bool {
    keys::parse_block(key).is_some() || keys::parse_host_affinity(key).is_some()
}

impl Store for Preread<'_> {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let found = self.inner.get(key)?;
        self.remember_read(&[key.to_string()], found.as_slice());
        Ok(found)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.inner.list(prefix)
    }

    fn list_paged(&self, prefix: &str, page: i64) -> Result<Vec<Entry>> {
        self.inner.list_paged(prefix, page)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_keys(prefix)
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        if let Some(answer) = self.answer_from_known(txn) {
            return Ok(answer);
        }
        let (sent, companion) = self.with_pending_companion(txn);
        let mut outcome = self.inner.txn(&sent)?;
        if outcome.committed {
            self.remember_writes(&sent.writes, outcome.revision);
        } else {
            self.remember_read(&sent.reads_on_failure, &outcome.current);
        }
        if let Some(companion) = companion {
            self.settle_companion(&companion, &outcome)?;
            // The allocator sees only its own keys read back.
            outcome
                .current
                .retain(|e| txn.reads_on_failure.contains(&e.key));
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::MemoryStore;

    fn read(keys: &[&str]) -> Txn {
        Txn {
            conditions: keys
                .iter()
                .map(|k| Condition::Absent(k.to_string()))
                .collect(),
            writes: Vec::new(),
            reads_on_failure: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn a_known_entry_answers_one_read_then_etcd_answers() {
        let store = MemoryStore::new();
        store.put("/a", b"fresh");
        let stale = Entry {
            key: "/a".into(),
            value: b"stale".to_vec(),
            mod_revision: 0,
            create_revision: 0,
        };
        let preread = Preread::new(&store, HashMap::from([("/a".to_string(), Some(stale))]));
        let first = preread.txn(&read(&["/a"])).unwrap();
        assert_eq!(first.current[0].value, b"stale");
        assert_eq!(store.requests_made(), 0);
        let second = preread.txn(&read(&["/a"])).unwrap();
        assert_eq!(second.current[0].value, b"fresh");
        // A read of a known and an unknown key goes to the store.
        let preread = Preread::new(&store, HashMap::from([("/a".to_string(), None)]));
        assert_eq!(preread.txn(&read(&["/a", "/b"])).unwrap().current.len(), 1);
    }

    #[test]
    fn the_companion_rides_on_the_first_write_and_a_broken_one_stops_it() {
        let store = MemoryStore::new();
        let write = |key: &str| Txn {
            conditions: vec![Condition::Absent(key.into())],
            writes: vec![Write::Put(key.into(), b"v".to_vec())],
            reads_on_failure: vec![key.into()],
        };
        let companion = write("/claim");
        let preread = Preread::new(&store, HashMap::new()).with_companion(companion.clone());
        assert!(preread.txn(&write("/block1")).unwrap().committed);
        assert!(matches!(
            preread.companion_outcome(),
            CompanionOutcome::Committed(_)
        ));
        assert!(store.get("/claim").unwrap().is_some());
        // Only once: the next write goes alone.
        assert!(preread.txn(&write("/block2")).unwrap().committed);

        // The claim exists now: a companion needing it absent is broken.
        let preread = Preread::new(&store, HashMap::new()).with_companion(companion);
        let err = preread.txn(&write("/block3")).unwrap_err();
        assert_eq!(err.kind(), Kind::CasConflict);
        assert_eq!(preread.companion_outcome(), CompanionOutcome::Broken);
        assert!(store.get("/block3").unwrap().is_none());
    }
}
