//! A [`Store`] in front of the datastore for one IPAM operation of the `calico` plugin: it
//! answers the allocator's first reads from entries read earlier (calico's first read, the
//! node's block copy), can hold the allocator's transactions back so that the caller commits
//! them together with its own writes, and remembers every block and affinity it saw, for the
//! block copy.
//!
//! Entries given in advance serve one read each and are then forgotten, so a retry after a
//! failed compare-and-swap always reads etcd again: an entry that was stale costs one failed
//! transaction, never a wrong assignment.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::store::{Store, is_plain_read, plain_read};
use crate::datastore::{self, Condition, Entry, Txn, TxnOutcome, Write, keys};
use crate::error::Result;

/// The revision a held transaction's writes carry until they are committed. The allocator may
/// put it into a later condition on the same key; such conditions are dropped when the held
/// transactions are joined, since their key's state is then this very batch's own write.
const HELD_REVISION: i64 = i64::MAX;

/// What became of the held transactions and the caller's writes (see [`Preread::holding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldOutcome {
    /// Committed in one transaction at this revision.
    Committed(i64),
    /// Nothing was written: the conditions of the joined transaction no longer held (another
    /// writer came first), or the allocator did something held writes cannot stand in for.
    NotWritten,
}

/// The store wrapper; see the module documentation.
pub struct Preread<'s> {
    inner: &'s dyn Store,
    state: Mutex<State>,
}

struct State {
    known: HashMap<String, Option<Entry>>,
    seen: BTreeMap<String, Option<Entry>>,
    held: Option<Held>,
}

/// Transactions answered as committed but not sent (see [`Preread::holding`]).
#[derive(Default)]
struct Held {
    /// The conditions on what the keys held before the first held transaction.
    conditions: Vec<Condition>,
    /// The writes in order, at most one per key.
    writes: Vec<Write>,
    /// Why the held writes cannot be committed as they are, if they cannot.
    unusable: Option<String>,
}

impl Held {
    fn writes_key(&self, key: &str) -> bool {
        self.writes.iter().any(|w| write_key(w) == Some(key))
    }

    /// The entry a read of `key` finds after the held writes: `Some(None)` when they deleted
    /// it, `None` when they did not touch it.
    fn entry(&self, key: &str) -> Option<Option<Entry>> {
        self.writes.iter().find_map(|w| match w {
            Write::Put(k, value) if k == key => Some(Some(Entry {
                key: k.clone(),
                value: value.clone(),
                mod_revision: HELD_REVISION,
                create_revision: HELD_REVISION,
            })),
            Write::Delete(k) if k == key => Some(None),
            _ => None,
        })
    }

    /// Whether the conditions of `txn` on keys the batch wrote hold for what it wrote, as etcd
    /// would judge them after the batch.
    fn holds(&self, txn: &Txn) -> bool {
        txn.conditions
            .iter()
            .all(|condition| match (condition, self.entry(condition.key())) {
                (_, None) => true,
                (Condition::Absent(_), Some(entry)) => entry.is_none(),
                (Condition::Revision(_, revision), Some(entry)) => {
                    entry.is_some() && *revision == HELD_REVISION
                }
            })
    }

    /// Adds `txn`, whose conditions on the batch's own writes [hold](Held::holds), as if it
    /// committed now: its conditions on keys the batch has not written speak of the state
    /// before the batch and join it, every one of them (etcd checks several conditions on one
    /// key, so a step that read a key again is held to what it read).
    fn add(&mut self, txn: &Txn) {
        for condition in &txn.conditions {
            let key = condition.key();
            if !self.writes_key(key) && !self.conditions.contains(condition) {
                self.conditions.push(condition.clone());
            }
        }
        for write in &txn.writes {
            let Some(key) = write_key(write) else {
                self.unusable = Some("the allocator wrote a conditional group".into());
                return;
            };
            self.writes.retain(|w| write_key(w) != Some(key));
            self.writes.push(write.clone());
        }
    }
}

/// The key a plain write writes; `None` for a conditional group.
fn write_key(write: &Write) -> Option<&str> {
    match write {
        Write::Put(key, _) | Write::Delete(key) => Some(key),
        Write::IfAbsent { .. } => None,
    }
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
                held: None,
            }),
        }
    }

    /// The same wrapper holding back every transaction that writes: each is answered as
    /// committed and joined to the ones before, and reads see the held writes. Nothing is
    /// written until [`Preread::commit_held`] sends them, with the caller's own writes, as one
    /// transaction whose conditions are those the allocator placed on the keys as it found
    /// them. The allocator's steps need not know: every one of them is a compare-and-swap on
    /// what it read, so the joined transaction commits exactly when each step would have.
    pub fn holding(self) -> Self {
        self.lock().held = Some(Held::default());
        self
    }

    /// Sends the held transactions joined with `own` (the caller's conditions and writes, on
    /// keys the allocator does not write) as one transaction. Nothing is written unless all of
    /// it commits.
    pub fn commit_held(&self, own: &Txn) -> Result<HeldOutcome> {
        let Some(held) = self.lock().held.take() else {
            return Ok(HeldOutcome::NotWritten);
        };
        if let Some(why) = &held.unusable {
            crate::log::info(&format!("committing the assignment on its own: {why}"));
            return Ok(HeldOutcome::NotWritten);
        }
        let mut txn = Txn {
            conditions: held.conditions,
            writes: held.writes,
            reads_on_failure: Vec::new(),
        };
        txn.join(own.clone());
        // Read back on failure: every key a condition speaks of and every key put, to tell a
        // lost race from an earlier attempt of this same transaction that was applied.
        let mut reads: Vec<String> = txn.conditions.iter().map(|c| c.key().to_string()).collect();
        reads.extend(txn.writes.iter().filter_map(write_key).map(str::to_string));
        reads.sort();
        reads.dedup();
        txn.reads_on_failure = reads;
        let outcome = self.inner.txn(&txn)?;
        if let Some(revision) = txn.landed_at(&outcome) {
            self.remember_writes(&txn.writes, revision);
            return Ok(HeldOutcome::Committed(revision));
        }
        datastore::log_conflict(&txn, &outcome.current);
        Ok(HeldOutcome::NotWritten)
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
        let mut state = self.lock();
        if !is_plain_read(txn)
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

    /// Answers a read-only transaction while writes are held: keys the held writes touched
    /// from them, the others as usual.
    fn read_through_held(&self, txn: &Txn) -> Result<TxnOutcome> {
        let (mine, others): (Vec<&String>, Vec<&String>) = {
            let state = self.lock();
            let held = state.held.as_ref();
            txn.reads_on_failure
                .iter()
                .partition(|k| held.is_some_and(|h| h.entry(k).is_some()))
        };
        let mut current = Vec::new();
        if !others.is_empty() {
            let others: Vec<String> = others.into_iter().cloned().collect();
            current = self.read(&plain_read(&others))?.current;
        }
        let state = self.lock();
        if let Some(held) = &state.held {
            current.extend(mine.iter().filter_map(|k| held.entry(k).flatten()));
        }
        Ok(TxnOutcome {
            committed: current.is_empty(),
            current,
            resent: false,
            revision: 0,
        })
    }

    /// A read-only transaction: from the known entries, else from the store.
    fn read(&self, txn: &Txn) -> Result<TxnOutcome> {
        if let Some(answer) = self.answer_from_known(txn) {
            return Ok(answer);
        }
        let outcome = self.inner.txn(txn)?;
        self.remember_read(&txn.reads_on_failure, &outcome.current);
        Ok(outcome)
    }

    /// Marks the held writes unusable when a listing of `prefix` cannot see them.
    fn list_past_held(&self, prefix: &str) {
        let mut state = self.lock();
        if let Some(held) = state.held.as_mut()
            && held
                .writes
                .iter()
                .filter_map(write_key)
                .any(|k| k.starts_with(prefix))
        {
            held.unusable = Some(format!(
                "the allocator listed {prefix} after writing under it"
            ));
        }
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
}

/// Whether the block copy keeps `key`: allocation blocks and host affinities.
fn is_copied(key: &str) -> bool {
    keys::parse_block(key).is_some() || keys::parse_host_affinity(key).is_some()
}

impl Store for Preread<'_> {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        if let Some(held) = self.lock().held.as_ref().and_then(|h| h.entry(key)) {
            return Ok(held);
        }
        let found = self.inner.get(key)?;
        self.remember_read(&[key.to_string()], found.as_slice());
        Ok(found)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.list_past_held(prefix);
        self.inner.list(prefix)
    }

    fn list_paged(&self, prefix: &str, page: i64) -> Result<Vec<Entry>> {
        self.list_past_held(prefix);
        self.inner.list_paged(prefix, page)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.list_past_held(prefix);
        self.inner.list_keys(prefix)
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let holding = self.lock().held.is_some();
        if txn.writes.is_empty() {
            return if holding && is_plain_read(txn) {
                self.read_through_held(txn)
            } else {
                self.read(txn)
            };
        }
        if holding {
            let holds = self.lock().held.as_ref().is_some_and(|h| h.holds(txn));
            if !holds {
                // As etcd would answer: not applied, and what the keys hold now.
                let mut answer = self.read_through_held(&plain_read(&txn.reads_on_failure))?;
                answer.committed = false;
                return Ok(answer);
            }
            if let Some(held) = self.lock().held.as_mut() {
                held.add(txn);
            }
            return Ok(TxnOutcome {
                committed: true,
                current: Vec::new(),
                resent: false,
                revision: HELD_REVISION,
            });
        }
        let outcome = self.inner.txn(txn)?;
        if outcome.committed {
            self.remember_writes(&txn.writes, outcome.revision);
        } else {
            self.remember_read(&txn.reads_on_failure, &outcome.current);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::MemoryStore;
    use crate::ipam::store::TxnHook;

    fn read(keys: &[&str]) -> Txn {
        plain_read(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>())
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

    fn put(key: &str, condition: Condition) -> Txn {
        Txn {
            conditions: vec![condition],
            writes: vec![Write::Put(key.into(), b"v".to_vec())],
            reads_on_failure: vec![key.into()],
        }
    }

    #[test]
    fn held_writes_are_read_back_and_sent_once_with_the_callers_own() {
        let store = MemoryStore::new();
        let preread = Preread::new(&store, HashMap::new()).holding();
        let first = preread
            .txn(&put("/block", Condition::Absent("/block".into())))
            .unwrap();
        assert!(first.committed);
        assert_eq!(store.requests_made(), 0);
        // A later step's condition on its own earlier write holds by construction.
        let again = Condition::Revision("/block".into(), first.revision);
        assert!(preread.txn(&put("/block", again)).unwrap().committed);
        assert_eq!(preread.get("/block").unwrap().unwrap().value, b"v");
        assert_eq!(preread.txn(&read(&["/block"])).unwrap().current.len(), 1);
        assert_eq!(store.requests_made(), 0);
        let own = put("/record", Condition::Absent("/record".into()));
        assert!(matches!(
            preread.commit_held(&own).unwrap(),
            HeldOutcome::Committed(_)
        ));
        assert_eq!(store.requests_made(), 1);
        assert!(store.get("/block").unwrap().is_some());
        assert!(store.get("/record").unwrap().is_some());
        assert!(preread.seen().is_empty(), "test keys are not blocks");
    }

    #[test]
    fn held_writes_whose_first_condition_broke_write_nothing() {
        let store = MemoryStore::new();
        let preread = Preread::new(&store, HashMap::new()).holding();
        preread
            .txn(&put("/block", Condition::Absent("/block".into())))
            .unwrap();
        store.put("/block", b"another writer's");
        let own = put("/record", Condition::Absent("/record".into()));
        assert_eq!(preread.commit_held(&own).unwrap(), HeldOutcome::NotWritten);
        assert_eq!(
            store.get("/block").unwrap().unwrap().value,
            b"another writer's"
        );
        assert!(store.get("/record").unwrap().is_none());
    }

    #[test]
    fn a_listing_under_a_held_write_makes_the_held_writes_unusable() {
        let store = MemoryStore::new();
        let preread = Preread::new(&store, HashMap::new()).holding();
        preread
            .txn(&put("/blocks/a", Condition::Absent("/blocks/a".into())))
            .unwrap();
        preread.list_keys("/blocks/").unwrap();
        let own = put("/record", Condition::Absent("/record".into()));
        assert_eq!(preread.commit_held(&own).unwrap(), HeldOutcome::NotWritten);
        assert_eq!(store.requests_made(), 1, "only the listing");
        assert!(store.get("/record").unwrap().is_none());
    }

    #[test]
    fn a_dual_stack_first_assignment_held_commits_in_one_transaction() {
        use crate::ipam::{Allocator, AutoAssign};
        let store = MemoryStore::with_pools(&["10.0.0.0/24", "fd00::/120"]);
        let before = store.requests_made();
        let preread = Preread::new(&store, HashMap::new()).holding();
        let assigned = Allocator::new(&preread, "node-a")
            .auto_assign(&AutoAssign {
                handle: "net.c1",
                ipv4: true,
                ipv6: true,
                ipv4_pools: &[],
                ipv6_pools: &[],
            })
            .unwrap();
        assert_eq!(assigned.len(), 2);
        let reads = store.requests_made() - before;
        assert!(store.dump().iter().all(|e| !e.key.contains("/block/")));
        let own = put("/record", Condition::Absent("/record".into()));
        let outcome = preread.commit_held(&own).unwrap();
        assert!(matches!(outcome, HeldOutcome::Committed(_)));
        assert_eq!(store.requests_made() - before, reads + 1, "one write");
        // Both blocks claimed for the node, both addresses under the one handle.
        let dump = store.dump();
        let count = |part: &str| dump.iter().filter(|e| e.key.contains(part)).count();
        assert_eq!(count("/block/"), 4, "two blocks and two affinities");
        let handle = store.get(&keys::handle("net.c1")).unwrap().unwrap();
        let handle =
            crate::ipam::handle::AllocationHandle::from_json("net.c1", &handle.key, &handle.value)
                .unwrap();
        assert_eq!(handle.total(), 2);
        assert!(store.get("/record").unwrap().is_some());
        assert_eq!(preread.seen().values().flatten().count(), 4);
    }

    /// A store whose answer to a write is lost: it applies the transaction, another writer
    /// moves the store's revision on, and the resent transaction fails its conditions.
    fn lost_answer() -> TxnHook {
        TxnHook(MemoryStore::new(), |store, txn| {
            if txn.writes.is_empty() {
                return store.txn(txn);
            }
            assert!(store.txn(txn)?.committed);
            store.put("/unrelated", b"moved on");
            let mut resent = store.txn(txn)?;
            resent.resent = true;
            Ok(resent)
        })
    }

    #[test]
    fn a_commit_applied_before_its_answer_was_lost_reports_the_revision_of_its_writes() {
        let store = lost_answer();
        let preread = Preread::new(&store, HashMap::new()).holding();
        preread
            .txn(&put("/block", Condition::Absent("/block".into())))
            .unwrap();
        let own = put("/record", Condition::Absent("/record".into()));
        let outcome = preread.commit_held(&own).unwrap();
        let written = store.0.get("/record").unwrap().unwrap().mod_revision;
        assert_eq!(outcome, HeldOutcome::Committed(written));
    }
}
