//! Release: freeing one address, or every address of whole handles and the handles with them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::Allocator;
use super::commit::{Commit, find};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Condition, Entry, Txn, Write};
use crate::error::Result;
use crate::ipam::block::{AllocationBlock, addr_to_u128, block_cidr_for};
use crate::ipam::handle::AllocationHandle;
use crate::ipam::store::read_many;

impl Allocator<'_> {
    /// Releases one address if `handle` holds it; false when it does not (nothing to do).
    pub fn release_address(&self, handle_id: &str, addr: IpAddr) -> Result<bool> {
        self.retry.restart();
        let cidr = block_cidr_for(addr);
        let block_key = keys::block(&cidr);
        let mut handle = self.handle_view(handle_id);
        let mut current_block = self.read_block_with_handle(&cidr, &mut handle)?;
        loop {
            let Some(entry) = current_block else {
                return Ok(false);
            };
            let mut block = AllocationBlock::from_json(&entry.key, &entry.value)?;
            if block.handle_of(addr) != Some(handle_id) {
                return Ok(false);
            }
            block.release(addr);
            let mut writes = vec![block_write(&block_key, &block)];
            if let Some(stored) = &handle.entry {
                let mut counts =
                    AllocationHandle::from_json(handle_id, &handle.key, &stored.value)?;
                counts.decrement(cidr, 1);
                writes.push(handle_write(&handle.key, &counts));
            }
            let txn = Txn {
                conditions: vec![
                    Condition::Revision(block_key.clone(), entry.mod_revision),
                    handle.condition(),
                ],
                writes,
                reads_on_failure: vec![block_key.clone(), handle.key.clone()],
            };
            match self.commit(&txn)? {
                Commit::Done => return Ok(true),
                Commit::Conflict(current) => {
                    handle.refresh(&current);
                    current_block = find(&current, &block_key);
                    let raced =
                        current_block.as_ref().map(|e| e.mod_revision) != Some(entry.mod_revision);
                    self.conflicted(&format!("block {cidr}"), raced)?;
                }
            }
        }
    }

    /// Releases every address held by any of `handles` and deletes the handles, all in one
    /// transaction. Returns the number of addresses released; 0 when nothing was held.
    ///
    /// Blocks left empty and without affinity are deleted; a handle's blocks that no longer
    /// exist are simply forgotten.
    pub fn release_handles(&self, handles: &[&str]) -> Result<usize> {
        self.retry.restart();
        loop {
            let held = self.read_handles(handles)?;
            if held.is_empty() {
                return Ok(0);
            }
            if let Some(released) = self.release_held(&held)? {
                return Ok(released);
            }
            self.conflicted(&format!("handle {}", handles.join(", ")), true)?;
        }
    }

    /// The handles of `handles` that exist, as read (one request).
    pub fn read_handles(&self, handles: &[&str]) -> Result<Vec<(AllocationHandle, Entry)>> {
        let handle_keys: Vec<String> = handles.iter().map(|h| keys::handle(h)).collect();
        let stored = read_many(self.store, &handle_keys)?;
        let mut held = Vec::new();
        for ((id, key), entry) in handles.iter().zip(&handle_keys).zip(stored) {
            if let Some(entry) = entry {
                held.push((AllocationHandle::from_json(id, key, &entry.value)?, entry));
            }
        }
        Ok(held)
    }

    /// Releases one handle found by a listing (GC), using the listed entry as the first read.
    /// The handle is released only while `selected` holds for it: after a conflict it is read
    /// again and checked again. Returns the number of addresses released.
    pub fn release_listed_handle(
        &self,
        listed: Entry,
        selected: &dyn Fn(&AllocationHandle) -> bool,
    ) -> Result<usize> {
        self.retry.restart();
        let key = listed.key.clone();
        let id = keys::parse_handle(&key).unwrap_or(&key).to_string();
        let mut current = Some(listed);
        loop {
            let Some(entry) = current else {
                return Ok(0);
            };
            let handle = AllocationHandle::from_json(&id, &key, &entry.value)?;
            if !selected(&handle) {
                return Ok(0);
            }
            if let Some(released) = self.release_held(&[(handle, entry)])? {
                return Ok(released);
            }
            self.conflicted(&format!("handle {id}"), true)?;
            current = self.store.get(&key)?;
        }
    }

    /// One attempt at releasing handles as read: frees their addresses in their blocks and
    /// deletes them, in one transaction conditional on everything read. `None` on a conflict.
    fn release_held(&self, held: &[(AllocationHandle, Entry)]) -> Result<Option<usize>> {
        let (txn, released) = self.release_txn(held)?;
        Ok(match self.commit(&txn)? {
            Commit::Done => Some(released),
            Commit::Conflict(_) => None,
        })
    }

    /// The transaction that releases handles as read: their addresses freed in their blocks
    /// (read now, one request) and the handles deleted, conditional on everything read; with
    /// the number of addresses it frees. A caller may add its own writes before sending it.
    pub fn release_txn(&self, held: &[(AllocationHandle, Entry)]) -> Result<(Txn, usize)> {
        let mut cidrs: Vec<IpNetwork> = held
            .iter()
            .flat_map(|(h, _)| h.blocks.keys().copied())
            .collect();
        cidrs.sort_by_key(|c| (IpFamily::of(c) == IpFamily::V6, addr_to_u128(c.network())));
        cidrs.dedup();
        let block_keys: Vec<String> = cidrs.iter().map(keys::block).collect();
        let mut txn = Txn::default();
        let mut released = 0;
        for entry in read_many(self.store, &block_keys)?.into_iter().flatten() {
            let mut block = AllocationBlock::from_json(&entry.key, &entry.value)?;
            let freed: usize = held.iter().map(|(h, _)| block.release_handle(&h.id)).sum();
            if freed == 0 {
                continue;
            }
            released += freed;
            txn.conditions
                .push(Condition::Revision(entry.key.clone(), entry.mod_revision));
            txn.writes.push(block_write(&entry.key, &block));
        }
        for (_, entry) in held {
            txn.conditions
                .push(Condition::Revision(entry.key.clone(), entry.mod_revision));
            txn.writes.push(Write::Delete(entry.key.clone()));
        }
        Ok((txn, released))
    }
}

/// The write for a block after a release: deleted when empty and without affinity.
fn block_write(key: &str, block: &AllocationBlock) -> Write {
    if block.is_empty() && block.affinity.is_none() {
        Write::Delete(key.to_string())
    } else {
        Write::Put(key.to_string(), block.to_json())
    }
}

/// The write for a handle after a release: deleted when it holds nothing.
fn handle_write(key: &str, handle: &AllocationHandle) -> Write {
    if handle.is_empty() {
        Write::Delete(key.to_string())
    } else {
        Write::Put(key.to_string(), handle.to_json())
    }
}
