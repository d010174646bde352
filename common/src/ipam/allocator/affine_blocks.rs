//! The node's own blocks: read through the block hint when it is kept, else found by listing the
//! node's affinities (which rewrites the hint).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::Allocator;
use super::auto_assign::in_requested_pools;
use super::commit::HandleView;
use crate::datastore::Entry;
use crate::datastore::keys::{self, IpFamily};
use crate::error::Result;
use crate::ipam::block::{AllocationBlock, addr_to_u128, family_name};
use crate::ipam::hint::BlockHints;
use crate::ipam::store::read_many;
use crate::log;

impl Allocator<'_> {
    /// The common case with a hint: one read of the handle, the hinted blocks and their
    /// affinity keys, then one transaction, conditional on the block and on the affinity key
    /// that confirmed it. `None` when no hinted block is confirmed as the node's with room; the
    /// listing of the node's affinities then decides, and rewrites the hint.
    pub(super) fn assign_from_hinted_blocks(
        &self,
        handle: &mut HandleView,
        family: IpFamily,
        requested: &[IpNetwork],
    ) -> Result<Option<IpAddr>> {
        let Some(hints) = &self.hints else {
            return Ok(None);
        };
        let (cidrs, wanted) = hinted_read(hints, &self.node, &handle.key, family, requested);
        if cidrs.is_empty() {
            return Ok(None);
        }
        let found = read_many(self.store, &wanted)?;
        handle.entry = found[0].clone();
        let mut stale = Vec::new();
        for (cidr, pair) in cidrs.iter().zip(found[1..].chunks(2)) {
            let (Some(block), Some(affinity)) = (&pair[0], &pair[1]) else {
                stale.push(*cidr);
                continue;
            };
            if !self.is_affine_block(block)? {
                stale.push(*cidr);
                continue;
            }
            if let Some(addr) =
                self.assign_in_block(handle, block.clone(), true, Some(affinity.clone()))?
            {
                hints.remove(family, &stale);
                return Ok(Some(addr));
            }
        }
        log::debug(&format!(
            "no {} block hinted for node {} has room or is still its own; listing its affinities",
            family_name(family),
            self.node
        ));
        Ok(None)
    }

    /// The blocks this node holds affinity for, from a listing of its affinity keys.
    pub(super) fn affine_blocks(&self, family: IpFamily) -> Result<Vec<IpNetwork>> {
        Ok(self
            .store
            .list_keys(&keys::host_affinities_prefix(&self.node, family))?
            .iter()
            .filter_map(|k| keys::parse_host_affinity(k))
            .map(|(_, cidr)| cidr)
            .collect())
    }

    /// Without a usable hint: one listing of the node's affinities, one read of their blocks
    /// (and the handle), one transaction. The listing, less the blocks found missing or affine
    /// to another node, becomes the new hint.
    pub(super) fn assign_from_affine_blocks(
        &self,
        handle: &mut HandleView,
        family: IpFamily,
        requested: &[IpNetwork],
        tried: &mut HashSet<IpNetwork>,
    ) -> Result<Option<IpAddr>> {
        let listed = self.affine_blocks(family)?;
        let mut cidrs: Vec<IpNetwork> = listed
            .iter()
            .copied()
            .filter(|cidr| in_requested_pools(*cidr, requested))
            .collect();
        if cidrs.is_empty() {
            self.hint_blocks(family, &listed);
            return Ok(None);
        }
        cidrs.sort_by_key(|c| addr_to_u128(c.network()));
        tried.extend(cidrs.iter().copied());
        let mut wanted: Vec<String> = cidrs.iter().map(keys::block).collect();
        wanted.push(handle.key.clone());
        let entries = read_many(self.store, &wanted)?;
        handle.entry = entries.last().cloned().flatten();
        let mut ours = Vec::new();
        let mut stale = Vec::new();
        for (cidr, entry) in cidrs.iter().zip(entries.into_iter().take(cidrs.len())) {
            match entry {
                Some(entry) if self.is_affine_block(&entry)? => ours.push(entry),
                _ => stale.push(*cidr),
            }
        }
        let hinted: Vec<IpNetwork> = listed.into_iter().filter(|c| !stale.contains(c)).collect();
        self.hint_blocks(family, &hinted);
        for entry in ours {
            if let Some(addr) = self.assign_in_block(handle, entry, true, None)? {
                return Ok(Some(addr));
            }
        }
        Ok(None)
    }

    fn is_affine_block(&self, entry: &Entry) -> Result<bool> {
        Ok(AllocationBlock::from_json(&entry.key, &entry.value)?.is_affine_to(&self.node))
    }

    /// Replaces the hint of `family` (when hints are kept).
    fn hint_blocks(&self, family: IpFamily, blocks: &[IpNetwork]) {
        if let Some(hints) = &self.hints {
            hints.write(family, blocks);
        }
    }

    /// Adds a block the node has just claimed (or found claimed for it) to the hint.
    pub(super) fn hint_claimed_block(&self, block: IpNetwork) {
        if let Some(hints) = &self.hints {
            hints.add(block);
        }
    }
}

/// The keys the first read of an assignment with a block hint reads, in its order: the handle,
/// then each hinted block of `family` (within `requested` pools) and the node's affinity key
/// for it; with the hinted blocks. A caller can read them ahead, with its own first read.
pub fn hinted_read(
    hints: &BlockHints,
    node: &str,
    handle_key: &str,
    family: IpFamily,
    requested: &[IpNetwork],
) -> (Vec<IpNetwork>, Vec<String>) {
    let cidrs: Vec<IpNetwork> = hints
        .read(family)
        .into_iter()
        .filter(|cidr| in_requested_pools(*cidr, requested))
        .collect();
    let mut wanted = vec![handle_key.to_string()];
    for cidr in &cidrs {
        wanted.push(keys::block(cidr));
        wanted.push(keys::host_affinity(node, cidr));
    }
    (cidrs, wanted)
}
