//! Block claims: a new block for this node, its affinity key and the first address taken from it,
//! all in one transaction, tried along the node's walk through each candidate pool.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::commit::{Commit, HandleView, find};
use super::{Allocator, BlockWalk};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Condition, Txn, Write};
use crate::error::Result;
use crate::ipam::block::AllocationBlock;
use crate::ipam::pool::{IpPool, IpamConfig, StoredPool};

/// The value of a host affinity key, as libcalico-go writes it.
const AFFINITY_VALUE: &[u8] = b"{}";

/// The result of trying to claim one free block.
enum Claim {
    Assigned(IpAddr),
    /// The block exists now (another node's, or ours but full).
    Taken,
    /// The pool was disabled or removed meanwhile.
    PoolGone,
}

impl Allocator<'_> {
    /// Claims the first free block of the candidate pools, walking each pool from the node's
    /// pseudo-random start, and assigns from it in the same transaction.
    ///
    /// A block met on the walk that this node claimed after the affine blocks were read (a
    /// concurrent request on the same node) is used before anything new is claimed, so that
    /// concurrent requests on one node fill one block instead of claiming one each.
    pub(super) fn assign_from_new_block(
        &self,
        handle: &mut HandleView,
        pools: &mut [StoredPool],
        config: IpamConfig,
        tried: &mut HashSet<IpNetwork>,
    ) -> Result<Option<IpAddr>> {
        let Some(first) = pools.first() else {
            return Ok(None);
        };
        let family = IpFamily::of(&first.pool.cidr);
        // Blocks first, affinities second: a block claimed in between is then either unknown
        // (and its claim fails here, returning it) or known as ours.
        let mut existing: HashSet<IpNetwork> = self
            .store
            .list_keys(&keys::blocks_prefix(family))?
            .iter()
            .filter_map(|k| keys::parse_block(k))
            .collect();
        let ours: HashSet<IpNetwork> = self.affine_blocks(family)?.into_iter().collect();
        for pool in pools.iter_mut() {
            for cidr in BlockWalk::new(pool.pool.cidr, &self.node)? {
                if existing.contains(&cidr) {
                    if ours.contains(&cidr)
                        && tried.insert(cidr)
                        && let Some(addr) = self.assign_in_existing_block(handle, cidr)?
                    {
                        self.hint_claimed_block(cidr);
                        return Ok(Some(addr));
                    }
                    continue;
                }
                match self.claim_block(handle, pool, cidr, config)? {
                    Claim::Assigned(addr) => {
                        self.hint_claimed_block(cidr);
                        return Ok(Some(addr));
                    }
                    Claim::Taken => {
                        existing.insert(cidr);
                    }
                    Claim::PoolGone => break,
                }
            }
        }
        Ok(None)
    }

    /// Reads one of the node's blocks (with the handle) and assigns from it.
    fn assign_in_existing_block(
        &self,
        handle: &mut HandleView,
        cidr: IpNetwork,
    ) -> Result<Option<IpAddr>> {
        match self.read_block_with_handle(&cidr, handle)? {
            Some(entry) => self.assign_in_block(handle, entry, true, None),
            None => Ok(None),
        }
    }

    /// One block claim: affinity key, block and handle in one transaction, conditional on the
    /// block not existing and on the pool being unchanged (so a pool being removed cannot gain
    /// a block).
    fn claim_block(
        &self,
        handle: &mut HandleView,
        pool: &mut StoredPool,
        cidr: IpNetwork,
        config: IpamConfig,
    ) -> Result<Claim> {
        let block_key = keys::block(&cidr);
        loop {
            let mut block = AllocationBlock::new_affine(
                cidr,
                &self.node,
                config.strict_affinity,
                pool.pool.cidr,
            );
            let Some(addr) = block.assign_next(&handle.id) else {
                return Ok(Claim::Taken);
            };
            let txn = self.claim_txn(&block, pool, handle)?;
            let current = match self.commit(&txn)? {
                Commit::Done => return Ok(Claim::Assigned(addr)),
                Commit::Conflict(current) => current,
            };
            handle.refresh(&current);
            match find(&current, &pool.key) {
                None => return Ok(Claim::PoolGone),
                Some(now) if now.mod_revision != pool.revision => {
                    let fresh = IpPool::from_json(&now.key, &now.value)?;
                    if !fresh.is_enabled() {
                        return Ok(Claim::PoolGone);
                    }
                    *pool = StoredPool {
                        pool: fresh,
                        key: now.key,
                        revision: now.mod_revision,
                    };
                }
                Some(_) => {}
            }
            if let Some(claimed) = find(&current, &block_key) {
                // Another process claimed it first; if it is this node, the block is ours to use.
                return Ok(match self.assign_in_block(handle, claimed, true, None)? {
                    Some(addr) => Claim::Assigned(addr),
                    None => Claim::Taken,
                });
            }
            self.conflicted(&format!("block {cidr}"), false)?;
        }
    }

    /// The transaction that claims `block` (a new block, its first address already assigned)
    /// for this node: block, affinity key and handle together, provided the block is still
    /// unclaimed, the pool unchanged and the handle as read.
    pub(super) fn claim_txn(
        &self,
        block: &AllocationBlock,
        pool: &StoredPool,
        handle: &HandleView,
    ) -> Result<Txn> {
        let block_key = keys::block(&block.cidr);
        let affinity_key = keys::host_affinity(&self.node, &block.cidr);
        Ok(Txn {
            conditions: vec![
                Condition::Absent(block_key.clone()),
                Condition::Revision(pool.key.clone(), pool.revision),
                handle.condition(),
            ],
            writes: vec![
                Write::Put(affinity_key.clone(), AFFINITY_VALUE.to_vec()),
                Write::Put(block_key.clone(), block.to_json()),
                handle.incremented(block.cidr)?,
            ],
            reads_on_failure: vec![
                block_key,
                handle.key.clone(),
                pool.key.clone(),
                affinity_key,
            ],
        })
    }
}
