//! Automatic assignment: which sources an address comes from, in which order (the node's
//! affine blocks, a newly claimed block, then borrowing from any block with room).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::commit::{Commit, HandleView, find};
use super::{Allocator, AutoAssign, BlockWalk};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Condition, Entry, Txn, Write};
use crate::error::{Code, Error, Result, codes};
use crate::ipam::block::{AllocationBlock, family_name};
use crate::ipam::pool::{StoredPool, list_pools, read_ipam_config};

impl Allocator<'_> {
    /// Assigns the requested families, IPv4 first. When IPv6 fails after IPv4 succeeded, the
    /// IPv4 address is released again before the error is returned.
    pub fn auto_assign(&self, req: &AutoAssign) -> Result<Vec<IpAddr>> {
        if !req.ipv4 && !req.ipv6 {
            return Err(Error::new(
                Code::InvalidConfig,
                "ipam assigns neither ipv4 nor ipv6 (assign_ipv4 and assign_ipv6 are false)",
            ));
        }
        let mut assigned = Vec::new();
        if req.ipv4 {
            assigned.push(self.assign_one(req.handle, IpFamily::V4, req.ipv4_pools)?);
        }
        if req.ipv6 {
            match self.assign_one(req.handle, IpFamily::V6, req.ipv6_pools) {
                Ok(addr) => assigned.push(addr),
                Err(err) => return Err(self.undo_assignments(req.handle, &assigned, err)),
            }
        }
        Ok(assigned)
    }

    /// Releases addresses assigned earlier in a failed request; failures join the error.
    fn undo_assignments(&self, handle: &str, assigned: &[IpAddr], err: Error) -> Error {
        let mut err = err;
        for &addr in assigned {
            if let Err(undo) = self.release_address(handle, addr) {
                err = err.context(format!("(and releasing {addr} again failed: {undo})"));
            }
        }
        err
    }

    /// Assigns one address of `family` for `handle`: from the node's affine blocks, else from a
    /// newly claimed block, else (without strict affinity) from any block with room.
    pub fn assign_one(
        &self,
        handle: &str,
        family: IpFamily,
        requested: &[IpNetwork],
    ) -> Result<IpAddr> {
        self.retry.restart();
        let mut handle = self.handle_view(handle);
        let mut pools = None;
        if !requested.is_empty() {
            pools = Some(self.candidate_pools(family, requested)?);
        }
        if let Some(addr) = self.assign_from_hinted_blocks(&mut handle, family, requested)? {
            return Ok(addr);
        }
        let mut tried = HashSet::new();
        if let Some(addr) =
            self.assign_from_affine_blocks(&mut handle, family, requested, &mut tried)?
        {
            return Ok(addr);
        }
        let config = read_ipam_config(self.store)?;
        let mut pools = match pools {
            Some(p) => p,
            None => self.candidate_pools(family, requested)?,
        };
        if pools.is_empty() {
            return Err(Error::new(
                codes::IPAM_EXHAUSTED,
                format!("no enabled {} pool to allocate from", family_name(family)),
            ));
        }
        if config.auto_allocate_blocks
            && let Some(addr) =
                self.assign_from_new_block(&mut handle, &mut pools, config, &mut tried)?
        {
            return Ok(addr);
        }
        if !config.strict_affinity
            && let Some(addr) = self.assign_from_any_block(&mut handle, family, &pools)?
        {
            return Ok(addr);
        }
        let names: Vec<String> = pools.iter().map(|p| p.pool.cidr.to_string()).collect();
        Err(Error::new(
            codes::IPAM_EXHAUSTED,
            format!(
                "no free {} address for node {} in pools {}",
                family_name(family),
                self.node,
                names.join(", ")
            ),
        ))
    }

    /// Enabled pools of `family`, limited to `requested` when it is not empty. Every requested
    /// pool must exist.
    fn candidate_pools(
        &self,
        family: IpFamily,
        requested: &[IpNetwork],
    ) -> Result<Vec<StoredPool>> {
        let all = list_pools(self.store, family)?;
        for want in requested {
            if IpFamily::of(want) != family || !all.iter().any(|p| p.pool.cidr == *want) {
                return Err(Error::new(
                    Code::InvalidConfig,
                    format!(
                        "ipam.{}_pools: {} pool {want} does not exist",
                        family_name(family),
                        family_name(family)
                    ),
                ));
            }
        }
        Ok(all
            .into_iter()
            .filter(|p| {
                p.pool.is_enabled() && (requested.is_empty() || requested.contains(&p.pool.cidr))
            })
            .collect())
    }

    /// Takes the first free ordinal of an existing block, retrying on conflicts with the values
    /// the failed transaction read back. `None` when the block is full or not ours to use.
    ///
    /// With `affinity` (the node's affinity key for the block, as read), the transaction also
    /// requires that key unchanged, and the block is given up when the key is gone.
    pub(super) fn assign_in_block(
        &self,
        handle: &mut HandleView,
        entry: Entry,
        affine_only: bool,
        affinity: Option<Entry>,
    ) -> Result<Option<IpAddr>> {
        let mut entry = entry;
        let mut affinity = affinity;
        loop {
            let mut block = AllocationBlock::from_json(&entry.key, &entry.value)?;
            let usable = if affine_only {
                block.is_affine_to(&self.node)
            } else {
                block.allows_borrowing_by(&self.node)
            };
            if !usable {
                return Ok(None);
            }
            let Some(addr) = block.assign_next(&handle.id) else {
                return Ok(None);
            };
            let mut txn = Txn {
                conditions: vec![
                    Condition::Revision(entry.key.clone(), entry.mod_revision),
                    handle.condition(),
                ],
                writes: vec![
                    Write::Put(entry.key.clone(), block.to_json()),
                    handle.incremented(block.cidr)?,
                ],
                reads_on_failure: vec![entry.key.clone(), handle.key.clone()],
            };
            if let Some(key) = &affinity {
                txn.conditions
                    .push(Condition::Revision(key.key.clone(), key.mod_revision));
                txn.reads_on_failure.push(key.key.clone());
            }
            match self.commit(&txn)? {
                Commit::Done => return Ok(Some(addr)),
                Commit::Conflict(current) => {
                    handle.refresh(&current);
                    let Some(now) = find(&current, &entry.key) else {
                        return Ok(None);
                    };
                    if let Some(key) = affinity.as_ref().map(|a| a.key.clone()) {
                        affinity = find(&current, &key);
                        if affinity.is_none() {
                            return Ok(None);
                        }
                    }
                    let raced = now.mod_revision != entry.mod_revision;
                    entry = now;
                    self.conflicted(&format!("block {}", block.cidr), raced)?;
                }
            }
        }
    }

    /// Borrowing: any existing block of the candidate pools with a free address that the node
    /// may use, in the order of the node's walk through each pool.
    fn assign_from_any_block(
        &self,
        handle: &mut HandleView,
        family: IpFamily,
        pools: &[StoredPool],
    ) -> Result<Option<IpAddr>> {
        let mut candidates = Vec::new();
        for entry in self.store.list(&keys::blocks_prefix(family))? {
            let Some(cidr) = keys::parse_block(&entry.key) else {
                continue;
            };
            let Some(pool_index) = pools.iter().position(|p| block_in_pool(cidr, p.pool.cidr))
            else {
                continue;
            };
            let block = AllocationBlock::from_json(&entry.key, &entry.value)?;
            if block.free_count() == 0 || !block.allows_borrowing_by(&self.node) {
                continue;
            }
            let position =
                BlockWalk::new(pools[pool_index].pool.cidr, &self.node)?.position_of(cidr);
            candidates.push((pool_index, position, entry));
        }
        candidates.sort_by_key(|(pool, position, _)| (*pool, *position));
        for (_, _, entry) in candidates {
            if let Some(addr) = self.assign_in_block(handle, entry, false, None)? {
                return Ok(Some(addr));
            }
        }
        Ok(None)
    }
}

/// True when a block belongs to one of the requested pools, or when no pool was requested.
pub(super) fn in_requested_pools(block: IpNetwork, requested: &[IpNetwork]) -> bool {
    requested.is_empty() || requested.iter().any(|p| block_in_pool(block, *p))
}

/// True when a block belongs to a pool: inside it, or (for a pool smaller than a block)
/// containing it.
fn block_in_pool(block: IpNetwork, pool: IpNetwork) -> bool {
    pool.contains(block.network()) || block.contains(pool.network())
}
