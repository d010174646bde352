//! The storage IPAM needs: reads, prefix listings and compare-and-swap transactions. etcd
//! ([`Datastore`]) implements it for real; [`MemoryStore`] implements the same semantics in
//! memory so that the allocation algorithm can be unit-tested.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::datastore::{Condition, Datastore, Entry, Txn, TxnOutcome, Write};
use crate::error::Result;

/// Key-value storage with revisions and atomic conditional transactions.
pub trait Store: Sync {
    /// The entry at `key`, if it exists.
    fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<Entry>>;
    /// Like [`Store::list`], for prefixes that may hold more than one answer can carry: read
    /// in pages of `page` entries at one revision.
    fn list_paged(&self, prefix: &str, page: i64) -> Result<Vec<Entry>> {
        let _ = page;
        self.list(prefix)
    }
    /// Every key that starts with `prefix`, in key order.
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>>;
    /// Runs a transaction: all writes when every condition holds, else the failure reads.
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome>;
}

impl Store for Datastore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Datastore::get(self, key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        Datastore::list(self, prefix)
    }

    fn list_paged(&self, prefix: &str, page: i64) -> Result<Vec<Entry>> {
        Datastore::list_paged(self, prefix, page)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        Datastore::list_keys(self, prefix)
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        Datastore::txn(self, txn)
    }
}

/// Keys per read in [`read_many`]: etcd refuses transactions with more than 128 operations
/// (`--max-txn-ops`).
const READ_BATCH: usize = 100;

/// Reads several keys, in one round trip per 100 keys; the result is in `keys` order, `None`
/// for a missing key.
///
/// Each batch is a transaction without writes whose conditions say "every key is absent": when
/// they hold nothing exists, otherwise the failure reads return the keys that do. Entries keep
/// their own revisions, so batches need not be read at the same instant.
pub fn read_many(store: &dyn Store, keys: &[String]) -> Result<Vec<Option<Entry>>> {
    let mut found = Vec::with_capacity(keys.len());
    for batch in keys.chunks(READ_BATCH) {
        let outcome = store.txn(&plain_read(batch))?;
        found.extend(
            batch
                .iter()
                .map(|k| outcome.current.iter().find(|e| &e.key == k).cloned()),
        );
    }
    Ok(found)
}

/// The read [`read_many`] sends for `keys`: a transaction without writes whose conditions say
/// "every key is absent", reading them all back when one exists.
pub fn plain_read(keys: &[String]) -> Txn {
    Txn {
        conditions: keys.iter().map(|k| Condition::Absent(k.clone())).collect(),
        writes: Vec::new(),
        reads_on_failure: keys.to_vec(),
    }
}

/// Whether `txn` is a [`plain_read`].
pub fn is_plain_read(txn: &Txn) -> bool {
    txn.writes.is_empty()
        && txn.conditions.len() == txn.reads_on_failure.len()
        && txn
            .conditions
            .iter()
            .zip(&txn.reads_on_failure)
            .all(|(c, k)| matches!(c, Condition::Absent(key) if key == k))
}

/// An in-memory [`Store`] with etcd's revision semantics, for unit tests and dry runs.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    revision: i64,
    entries: BTreeMap<String, Entry>,
    requests: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// A store holding these enabled pools and nothing else (test setup).
    #[cfg(test)]
    pub fn with_pools(pools: &[&str]) -> Self {
        let store = MemoryStore::new();
        for cidr in pools {
            let spec = super::pool::PoolSpec {
                cidr: cidr.parse().expect("pool CIDR"),
                disabled: false,
                ipip: false,
                nat_outgoing: false,
            };
            super::pool::add_pool(&store, &spec).expect("add pool");
        }
        store
    }

    /// Sets a key outside any transaction (test setup).
    pub fn put(&self, key: &str, value: &[u8]) {
        let mut state = self.lock();
        state.revision += 1;
        let revision = state.revision;
        let create_revision = state
            .entries
            .get(key)
            .map_or(revision, |e| e.create_revision);
        state.entries.insert(
            key.to_string(),
            Entry {
                key: key.to_string(),
                value: value.to_vec(),
                mod_revision: revision,
                create_revision,
            },
        );
    }

    /// Every entry, in key order (test inspection).
    pub fn dump(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Number of requests served through [`Store`].
    pub fn requests_made(&self) -> u64 {
        self.lock().requests
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panicking test thread must not hide the state from the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A [`MemoryStore`] whose transactions go to a hook, which may change the store around them:
/// a faster writer elsewhere, an answer lost and the transaction resent (test setup).
#[cfg(test)]
pub struct TxnHook<F = Hook>(pub MemoryStore, pub F);

/// A [`TxnHook`]'s hook as a plain function.
#[cfg(test)]
pub type Hook = fn(&MemoryStore, &Txn) -> Result<TxnOutcome>;

#[cfg(test)]
impl<F: Fn(&MemoryStore, &Txn) -> Result<TxnOutcome> + Sync> Store for TxnHook<F> {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.0.list(prefix)
    }
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.0.list_keys(prefix)
    }
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        (self.1)(&self.0, txn)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let mut state = self.lock();
        state.requests += 1;
        Ok(state.entries.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut state = self.lock();
        state.requests += 1;
        Ok(state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list(prefix)?.into_iter().map(|e| e.key).collect())
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let mut state = self.lock();
        state.requests += 1;
        let holds = txn.conditions.iter().all(|c| match c {
            Condition::Absent(k) => !state.entries.contains_key(k),
            Condition::Revision(k, rev) => {
                state.entries.get(k).is_some_and(|e| e.mod_revision == *rev)
            }
        });
        if !holds {
            let current = txn
                .reads_on_failure
                .iter()
                .filter_map(|k| state.entries.get(k).cloned())
                .collect();
            return Ok(TxnOutcome {
                committed: false,
                current,
                resent: false,
                revision: state.revision,
            });
        }
        if txn.writes.is_empty() {
            return Ok(TxnOutcome {
                committed: true,
                current: Vec::new(),
                resent: false,
                revision: state.revision,
            });
        }
        state.revision += 1;
        let revision = state.revision;
        // Like etcd, a group's condition sees the entries from before this transaction.
        let writes: Vec<&Write> = txn
            .writes
            .iter()
            .flat_map(|w| match w {
                Write::IfAbsent { key, writes } if !state.entries.contains_key(key) => {
                    writes.iter().collect()
                }
                Write::IfAbsent { .. } => Vec::new(),
                other => vec![other],
            })
            .collect();
        for write in writes {
            match write {
                Write::Put(k, v) => {
                    let create_revision =
                        state.entries.get(k).map_or(revision, |e| e.create_revision);
                    let entry = Entry {
                        key: k.clone(),
                        value: v.clone(),
                        mod_revision: revision,
                        create_revision,
                    };
                    state.entries.insert(k.clone(), entry);
                }
                Write::Delete(k) => {
                    state.entries.remove(k);
                }
                // Groups do not nest; the datastore refuses nested ones.
                Write::IfAbsent { .. } => {}
            }
        }
        Ok(TxnOutcome {
            committed: true,
            current: Vec::new(),
            resent: false,
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_applies_all_writes_only_when_conditions_hold() {
        let store = MemoryStore::new();
        store.put("/a", b"1");
        let rev = store.get("/a").unwrap().unwrap().mod_revision;
        let txn = Txn {
            conditions: vec![
                Condition::Revision("/a".into(), rev),
                Condition::Absent("/b".into()),
            ],
            writes: vec![
                Write::Put("/a".into(), b"2".to_vec()),
                Write::Put("/b".into(), b"x".to_vec()),
            ],
            reads_on_failure: vec!["/a".into(), "/b".into()],
        };
        assert!(store.txn(&txn).unwrap().committed);
        let again = store.txn(&txn).unwrap();
        assert!(!again.committed);
        assert_eq!(again.current.len(), 2);
        assert_eq!(again.current[0].value, b"2");
        assert_eq!(store.get("/b").unwrap().unwrap().value, b"x");
    }

    #[test]
    fn read_many_returns_keys_in_order() {
        let store = MemoryStore::new();
        assert_eq!(
            read_many(&store, &["/x".into(), "/y".into()]).unwrap(),
            vec![None, None]
        );
        store.put("/y", b"1");
        let got = read_many(&store, &["/x".into(), "/y".into()]).unwrap();
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().unwrap().value, b"1");
    }

    #[test]
    fn read_many_splits_large_reads_into_batches() {
        let store = MemoryStore::new();
        let keys: Vec<String> = (0..250).map(|i| format!("/k/{i:03}")).collect();
        store.put("/k/007", b"a");
        store.put("/k/201", b"b");
        let got = read_many(&store, &keys).unwrap();
        assert_eq!(store.requests_made(), 3);
        assert_eq!(got.iter().flatten().count(), 2);
        assert_eq!(got[201].as_ref().unwrap().value, b"b");
    }

    #[test]
    fn list_is_limited_to_the_prefix() {
        let store = MemoryStore::new();
        for k in ["/a/1", "/a/2", "/ab", "/b"] {
            store.put(k, b"");
        }
        assert_eq!(store.list_keys("/a/").unwrap(), vec!["/a/1", "/a/2"]);
    }
}
