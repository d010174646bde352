//! The typed requests of the datastore (keys as stored, reads, compare-and-swap transactions)
//! and their translation to and from etcd's transactions.

use etcd_client::{Compare, CompareOp, GetOptions, TxnOp, TxnOpResponse, TxnResponse};

use crate::error::{Error, Result, codes};

/// The most operations etcd accepts in one branch of a transaction (its `--max-txn-ops`
/// default), and so the most reads one [`Datastore::read`](super::Datastore::read) can make.
pub const MAX_TXN_OPS: usize = 128;

/// One key as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the last change of the key; what [`Condition::Revision`] compares.
    pub mod_revision: i64,
    /// Revision at which the key was created.
    pub create_revision: i64,
}

/// A condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key's `mod_revision` equals the given one (it was not changed since it was read).
    Revision(String, i64),
}

/// A write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set the key to the value.
    Put(String, Vec<u8>),
    /// Delete the key (a missing key is not an error).
    Delete(String),
    /// Apply `writes` only when `key` does not exist before the transaction (its own writes do
    /// not count). When it does, the group is skipped and the rest of the transaction still
    /// commits. Groups do not nest, and etcd refuses a key written twice in one transaction.
    IfAbsent {
        /// The key whose absence the group needs.
        key: String,
        /// Applied together when `key` is absent: puts and deletes only.
        writes: Vec<Write>,
    },
}

/// One read of [`Datastore::read`](super::Datastore::read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One key: its entry, or nothing when it does not exist.
    Key(String),
    /// Every key under a prefix, sorted by key.
    Prefix(String),
}

impl Read {
    /// The key or prefix read.
    pub fn key(&self) -> &str {
        match self {
            Read::Key(key) | Read::Prefix(key) => key,
        }
    }
}

impl Condition {
    /// The key the condition is on.
    pub fn key(&self) -> &str {
        match self {
            Condition::Absent(key) | Condition::Revision(key, _) => key,
        }
    }
}

/// An atomic transaction: when every condition holds, all writes happen; otherwise nothing is
/// written and the keys in `reads_on_failure` are read in the same round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for the writes to happen. Empty means the writes always happen.
    pub conditions: Vec<Condition>,
    /// Applied together when the conditions hold.
    pub writes: Vec<Write>,
    /// Keys to read when the conditions do not hold, so a compare-and-swap loop can retry
    /// without another request.
    pub reads_on_failure: Vec<String>,
}

/// The result of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// True when the conditions held and the writes were applied.
    pub committed: bool,
    /// When not committed: the current entries of `reads_on_failure` that exist, in request
    /// order. Missing keys have no entry. Empty when committed.
    pub current: Vec<Entry>,
    /// True when the transaction was sent more than once (after a timeout or a broken
    /// connection), so an earlier attempt may have been applied and its answer lost: only then
    /// may a failed outcome whose keys already hold what was written count as this run's own.
    pub resent: bool,
    /// The store's revision after the transaction: when it committed writes, the
    /// `mod_revision` they now carry (what a later compare-and-swap on them compares); 0 when
    /// unknown.
    pub revision: i64,
}

impl Txn {
    /// Adds `other`'s conditions, writes and failure reads to this transaction's, so that both
    /// commit together or not at all.
    pub fn join(&mut self, other: Txn) {
        self.conditions.extend(other.conditions);
        self.writes.extend(other.writes);
        self.reads_on_failure.extend(other.reads_on_failure);
    }

    /// Whether this transaction's writes are in the store after `outcome`: etcd says it
    /// committed, or it failed after the datastore resent it and an earlier attempt, whose
    /// answer was lost, was [applied](Txn::applied_earlier).
    pub fn landed(&self, outcome: &TxnOutcome) -> bool {
        outcome.committed || (outcome.resent && self.applied_earlier(&outcome.current))
    }

    /// The revision this transaction's writes carry when they [landed](Txn::landed): etcd's
    /// answer, or for an earlier attempt the one its first put shows now (not the store's
    /// revision, which later writes moved on). `None` when it did not land.
    pub fn landed_at(&self, outcome: &TxnOutcome) -> Option<i64> {
        if outcome.committed {
            Some(outcome.revision)
        } else if self.landed(outcome) {
            self.written_revision(&outcome.current)
        } else {
            None
        }
    }

    /// Whether a transaction that failed after the datastore resent it had been applied by an
    /// earlier attempt whose answer was lost: it has plain writes, and each reads back in
    /// `current` (its failure reads) as written, every key it puts holding exactly its value
    /// and every key it deletes gone. A conditional group cannot be judged so and is left out.
    pub fn applied_earlier(&self, current: &[Entry]) -> bool {
        let read_back = |key: &String| self.reads_on_failure.contains(key);
        let plain: Vec<&Write> = self
            .writes
            .iter()
            .filter(|w| !matches!(w, Write::IfAbsent { .. }))
            .collect();
        !plain.is_empty()
            && plain.iter().all(|w| match w {
                Write::Put(k, v) => {
                    read_back(k) && current.iter().any(|e| &e.key == k && &e.value == v)
                }
                Write::Delete(k) => read_back(k) && !current.iter().any(|e| &e.key == k),
                Write::IfAbsent { .. } => true,
            })
    }

    /// The revision the writes of an [applied earlier](Txn::applied_earlier) transaction carry:
    /// the `mod_revision` of the first key it puts, as `current` shows it.
    pub fn written_revision(&self, current: &[Entry]) -> Option<i64> {
        self.writes.iter().find_map(|w| match w {
            Write::Put(key, _) => current
                .iter()
                .find(|e| &e.key == key)
                .map(|e| e.mod_revision),
            _ => None,
        })
    }

    /// The keys whose condition the failure reads `current` show broken: created, changed or
    /// deleted since they were read. Conditions on keys that were not read back cannot be
    /// judged and are left out.
    pub fn conflicting_keys(&self, current: &[Entry]) -> Vec<&str> {
        let now = |key: &str| current.iter().find(|e| e.key == key);
        let read_back = |key: &str| self.reads_on_failure.iter().any(|k| k == key);
        self.conditions
            .iter()
            .filter_map(|condition| match condition {
                Condition::Absent(key) => now(key).is_some().then_some(key.as_str()),
                Condition::Revision(key, revision) => (read_back(key)
                    && now(key).is_none_or(|e| e.mod_revision != *revision))
                .then_some(key.as_str()),
            })
            .collect()
    }
}

/// Logs, at info, a compare-and-swap lost to another writer, naming the keys that changed
/// since they were read (every key of a condition when the transaction read nothing back).
pub fn log_conflict(txn: &Txn, current: &[Entry]) {
    let mut keys = txn.conflicting_keys(current);
    let which = if keys.is_empty() {
        keys = txn.conditions.iter().map(Condition::key).collect();
        "one of"
    } else {
        "changed:"
    };
    crate::log::info(&format!(
        "compare-and-swap conflict, {which} {}",
        keys.join(", ")
    ));
}

/// The etcd transaction, without conditions, that makes `reads` in request order. More than
/// [`MAX_TXN_OPS`] reads are refused, naming the first key.
pub(super) fn etcd_reads(reads: &[Read]) -> Result<etcd_client::Txn> {
    if reads.len() > MAX_TXN_OPS {
        return Err(Error::new(
            codes::DATASTORE,
            format!(
                "etcd read of {} keys starting at {}: etcd allows at most {MAX_TXN_OPS} \
                 operations in one transaction",
                reads.len(),
                reads.first().map_or("", Read::key)
            ),
        ));
    }
    let ops: Vec<TxnOp> = reads
        .iter()
        .map(|read| match read {
            Read::Key(key) => TxnOp::get(key.as_str(), None),
            Read::Prefix(prefix) => {
                TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            }
        })
        .collect();
    Ok(etcd_client::Txn::new().and_then(ops))
}

/// The answers of [`etcd_reads`] to `reads`, one list of entries per read; an answer count
/// that differs from the read count is an error.
pub(super) fn read_answers(resp: TxnResponse, reads: &[Read]) -> Result<Vec<Vec<Entry>>> {
    let answers: Vec<Vec<Entry>> = resp
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs().into_iter().map(entry).collect()),
            _ => None,
        })
        .collect();
    if answers.len() != reads.len() {
        return Err(Error::new(
            codes::DATASTORE,
            format!(
                "etcd read starting at {}: {} answers to {} reads",
                reads.first().map_or("", Read::key),
                answers.len(),
                reads.len()
            ),
        ));
    }
    Ok(answers)
}

/// The etcd transaction of a [`Txn`]. A [`Write::IfAbsent`] group inside another one is
/// refused before anything is sent.
pub(super) fn etcd_txn(txn: &Txn) -> Result<etcd_client::Txn> {
    let compares: Vec<Compare> = txn
        .conditions
        .iter()
        .map(|c| match c {
            // A key that does not exist has create_revision 0.
            Condition::Absent(key) => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Condition::Revision(key, rev) => {
                Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
            }
        })
        .collect();
    let writes = txn
        .writes
        .iter()
        .map(etcd_write)
        .collect::<Result<Vec<_>>>()?;
    let reads: Vec<TxnOp> = txn
        .reads_on_failure
        .iter()
        .map(|key| TxnOp::get(key.as_str(), None))
        .collect();
    Ok(etcd_client::Txn::new()
        .when(compares)
        .and_then(writes)
        .or_else(reads))
}

/// One write as a transaction operation. A conditional group becomes a nested transaction
/// (etcd 3.3 and later), whose failed condition does not fail the enclosing one.
fn etcd_write(write: &Write) -> Result<TxnOp> {
    Ok(match write {
        Write::Put(key, value) => TxnOp::put(key.as_str(), value.clone(), None),
        Write::Delete(key) => TxnOp::delete(key.as_str(), None),
        Write::IfAbsent { key, writes } => {
            let ops = writes
                .iter()
                .map(|w| match w {
                    Write::IfAbsent { key: inner, .. } => Err(Error::new(
                        codes::DATASTORE,
                        format!(
                            "etcd write group for absent {inner} inside the group for absent \
                             {key}: groups do not nest"
                        ),
                    )),
                    _ => etcd_write(w),
                })
                .collect::<Result<Vec<_>>>()?;
            // A key that does not exist has create_revision 0.
            TxnOp::txn(
                etcd_client::Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then(ops),
            )
        }
    })
}

/// The outcome of a [`Txn`] from etcd's answer; `resent` when the request went out more than
/// once.
pub(super) fn txn_outcome(resp: TxnResponse, resent: bool) -> TxnOutcome {
    let committed = resp.succeeded();
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut current = Vec::new();
    if !committed {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(mut get) = op {
                current.extend(get.take_kvs().into_iter().map(entry));
            }
        }
    }
    TxnOutcome {
        committed,
        current,
        resent,
        revision,
    }
}

/// An etcd key-value as an [`Entry`].
pub(super) fn entry(kv: etcd_client::KeyValue) -> Entry {
    Entry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    }
}

/// The key a transaction is logged under: the first one it mentions.
pub(super) fn txn_log_key(txn: &Txn) -> &str {
    txn_keys(txn).next().unwrap_or("")
}

/// Every key a transaction names: conditions, writes (with those of groups), reads.
pub(super) fn txn_keys(txn: &Txn) -> impl Iterator<Item = &str> {
    let condition_keys = txn.conditions.iter().map(Condition::key);
    condition_keys
        .chain(txn.writes.iter().flat_map(write_keys))
        .chain(txn.reads_on_failure.iter().map(String::as_str))
}

/// The keys a write names, with those of a group's writes.
fn write_keys(write: &Write) -> Vec<&str> {
    match write {
        Write::Put(key, _) | Write::Delete(key) => vec![key.as_str()],
        Write::IfAbsent { key, writes } => std::iter::once(key.as_str())
            .chain(writes.iter().flat_map(write_keys))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_landed_when_committed_or_found_applied_after_a_resend() {
        let txn = Txn {
            conditions: vec![Condition::Absent("/a".into())],
            writes: vec![
                Write::Put("/a".into(), b"mine".to_vec()),
                Write::Delete("/b".into()),
            ],
            reads_on_failure: ["/a", "/b"].map(String::from).to_vec(),
        };
        let found = |value: &[u8], resent| TxnOutcome {
            committed: false,
            current: vec![Entry {
                key: "/a".into(),
                value: value.to_vec(),
                mod_revision: 7,
                create_revision: 7,
            }],
            resent,
            revision: 12,
        };
        let committed = TxnOutcome {
            committed: true,
            current: Vec::new(),
            resent: false,
            revision: 9,
        };
        assert_eq!(txn.landed_at(&committed), Some(9));
        // Its own first attempt: the revision its write carries, not the store's now.
        assert_eq!(txn.landed_at(&found(b"mine", true)), Some(7));
        assert!(txn.landed(&found(b"mine", true)));
        // Sent once, the same value is another writer's.
        assert_eq!(txn.landed_at(&found(b"mine", false)), None);
        assert!(!txn.landed(&found(b"theirs", true)));
    }

    #[test]
    fn conflicting_keys_are_the_ones_changed_since_read() {
        let entry = |key: &str, mod_revision| Entry {
            key: key.to_string(),
            value: Vec::new(),
            mod_revision,
            create_revision: 1,
        };
        let txn = Txn {
            conditions: vec![
                Condition::Revision("/same".into(), 5),
                Condition::Revision("/changed".into(), 5),
                Condition::Revision("/deleted".into(), 5),
                Condition::Absent("/created".into()),
                Condition::Absent("/still-absent".into()),
                Condition::Revision("/not-read".into(), 5),
            ],
            writes: Vec::new(),
            reads_on_failure: ["/same", "/changed", "/deleted", "/created", "/still-absent"]
                .map(String::from)
                .to_vec(),
        };
        let current = [
            entry("/same", 5),
            entry("/changed", 9),
            entry("/created", 9),
        ];
        assert_eq!(
            txn.conflicting_keys(&current),
            ["/changed", "/deleted", "/created"]
        );
    }

    #[test]
    fn txn_is_logged_under_its_first_key() {
        let txn = Txn {
            conditions: vec![],
            writes: vec![Write::Delete("/b".into())],
            reads_on_failure: vec!["/c".into()],
        };
        assert_eq!(txn_log_key(&txn), "/b");
        let group = Txn {
            writes: vec![Write::IfAbsent {
                key: "/g".into(),
                writes: vec![Write::Put("/p".into(), vec![])],
            }],
            ..Txn::default()
        };
        assert_eq!(txn_log_key(&group), "/g");
        assert_eq!(txn_log_key(&Txn::default()), "");
    }
}
