//! The compare-and-swap machinery every change goes through: the handle as last read, one
//! transaction at a time, and the count of conflicts against the operation's budget.

use ipnetwork::IpNetwork;

use super::Allocator;
use crate::datastore::keys;
use crate::datastore::{self, Condition, Entry, Txn, Write};
use crate::error::Result;
use crate::ipam::handle::AllocationHandle;
use crate::ipam::store::read_many;

/// What a transaction did.
pub(super) enum Commit {
    /// The writes are in the store.
    Done,
    /// A condition failed; the current values of the keys read on failure.
    Conflict(Vec<Entry>),
}

/// The handle key as last read, for the condition of the next transaction, and the owner
/// recorded whenever an address is added under it.
pub(super) struct HandleView {
    pub(super) id: String,
    pub(super) key: String,
    pub(super) entry: Option<Entry>,
    node: String,
    network: Option<String>,
}

impl HandleView {
    /// The condition that the handle is still as read (or still absent).
    pub(super) fn condition(&self) -> Condition {
        match &self.entry {
            Some(e) => Condition::Revision(self.key.clone(), e.mod_revision),
            None => Condition::Absent(self.key.clone()),
        }
    }

    fn parsed(&self) -> Result<AllocationHandle> {
        match &self.entry {
            Some(e) => AllocationHandle::from_json(&self.id, &self.key, &e.value),
            None => Ok(AllocationHandle::new(&self.id)),
        }
    }

    /// The handle with one more address in `block` and this node (and network, when known)
    /// recorded as its owner, as a write.
    pub(super) fn incremented(&self, block: IpNetwork) -> Result<Write> {
        let mut handle = self.parsed()?;
        handle.increment(block, 1);
        handle.node = Some(self.node.clone());
        if let Some(network) = &self.network {
            handle.network = Some(network.clone());
        }
        Ok(Write::Put(self.key.clone(), handle.to_json()))
    }

    /// Takes the handle's current value from what a failed transaction read back.
    pub(super) fn refresh(&mut self, current: &[Entry]) {
        self.entry = find(current, &self.key);
    }
}

/// The entry of `key` among entries read back.
pub(super) fn find(entries: &[Entry], key: &str) -> Option<Entry> {
    entries.iter().find(|e| e.key == key).cloned()
}

impl Allocator<'_> {
    /// The handle `id`, not read yet.
    pub(super) fn handle_view(&self, id: &str) -> HandleView {
        HandleView {
            id: id.to_string(),
            key: keys::handle(id),
            entry: None,
            node: self.node.clone(),
            network: self.network.clone(),
        }
    }

    /// The first read of a change to one block: the block `cidr` (returned) and the handle (kept
    /// in `handle`), in one request.
    pub(super) fn read_block_with_handle(
        &self,
        cidr: &IpNetwork,
        handle: &mut HandleView,
    ) -> Result<Option<Entry>> {
        let entries = read_many(self.store, &[keys::block(cidr), handle.key.clone()])?;
        handle.entry = entries[1].clone();
        Ok(entries[0].clone())
    }

    /// Runs a transaction. A transaction that etcd applied but whose answer was lost is resent
    /// by the datastore and then fails its conditions; when everything it wrote reads back
    /// exactly as written, it is treated as done so that nothing is assigned twice. Only a
    /// resent one: another writer of the same handle may have written exactly the same values,
    /// and taking its write for ours would hand one address to both.
    pub(super) fn commit(&self, txn: &Txn) -> Result<Commit> {
        let outcome = self.store.txn(txn)?;
        if txn.landed(&outcome) {
            return Ok(Commit::Done);
        }
        datastore::log_conflict(txn, &outcome.current);
        Ok(Commit::Conflict(outcome.current))
    }

    /// Counts a failed compare-and-swap of `what` against the operation's budget (see
    /// [`CasRetry`](crate::datastore::retry::CasRetry)); `raced` when another writer changed it in between.
    pub(super) fn conflicted(&self, what: &str, raced: bool) -> Result<()> {
        self.retry.conflicted(raced, || {
            format!(
                "gave up after {} conflicting updates of {what}",
                self.retry.retries()
            )
        })
    }
}
