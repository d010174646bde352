//! Assigning and releasing addresses: Calico v1's algorithm (affine blocks, then a new block
//! claimed at a node-seeded pseudo-random position, then borrowing), with every change made by
//! one compare-and-swap transaction that updates the block and the handle together.

use std::cell::Cell;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::block::{
    AllocationBlock, addr_to_u128, block_cidr_for, block_prefix, family_name, network_at,
};
use super::handle::AllocationHandle;
use super::hint::BlockHints;
use super::pool::{IpPool, IpamConfig, StoredPool, list_pools, read_ipam_config};
use super::store::{Store, read_many};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{self, Condition, Entry, Txn, Write};
use crate::error::{Code, Error, Kind, Result, codes};
use crate::log;

/// Conflicting compare-and-swap attempts allowed per operation before giving up (Calico v1
/// uses 100 as well).
pub const DEFAULT_MAX_CONFLICTS: u32 = 100;

/// The value of a host affinity key, as libcalico-go writes it.
const AFFINITY_VALUE: &[u8] = b"{}";

/// Upper bound of the random pause after losing a race for a block.
const MAX_JITTER: Duration = Duration::from_millis(20);

/// What an ADD asks for when no specific address is requested.
#[derive(Debug, Clone, Copy)]
pub struct AutoAssign<'r> {
    /// The handle the addresses are recorded under.
    pub handle: &'r str,
    /// Assign one IPv4 address.
    pub ipv4: bool,
    /// Assign one IPv6 address.
    pub ipv6: bool,
    /// Allocate IPv4 only from these pools (empty: every enabled IPv4 pool).
    pub ipv4_pools: &'r [IpNetwork],
    /// Allocate IPv6 only from these pools (empty: every enabled IPv6 pool).
    pub ipv6_pools: &'r [IpNetwork],
}

/// Calico IPAM for one node over a [`Store`].
pub struct Allocator<'s> {
    store: &'s dyn Store,
    node: String,
    network: Option<String>,
    hints: Option<BlockHints>,
    max_conflicts: u32,
    conflicts: Cell<u32>,
}

/// What a transaction did.
enum Commit {
    /// The writes are in the store.
    Done,
    /// A condition failed; the current values of the keys read on failure.
    Conflict(Vec<Entry>),
}

/// The result of trying to claim one free block.
enum Claim {
    Assigned(IpAddr),
    /// The block exists now (another node's, or ours but full).
    Taken,
    /// The pool was disabled or removed meanwhile.
    PoolGone,
}

/// The handle key as last read, for the condition of the next transaction, and the owner
/// recorded whenever an address is added under it.
struct HandleView {
    id: String,
    key: String,
    entry: Option<Entry>,
    node: String,
    network: Option<String>,
}

impl HandleView {
    fn condition(&self) -> Condition {
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
    fn incremented(&self, block: IpNetwork) -> Result<Write> {
        let mut handle = self.parsed()?;
        handle.increment(block, 1);
        handle.node = Some(self.node.clone());
        if let Some(network) = &self.network {
            handle.network = Some(network.clone());
        }
        Ok(Write::Put(self.key.clone(), handle.to_json()))
    }

    fn refresh(&mut self, current: &[Entry]) {
        self.entry = find(current, &self.key);
    }
}

fn find(entries: &[Entry], key: &str) -> Option<Entry> {
    entries.iter().find(|e| e.key == key).cloned()
}

impl<'s> Allocator<'s> {
    /// IPAM acting for `node` (the affinity owner of the blocks it claims).
    pub fn new(store: &'s dyn Store, node: &str) -> Self {
        Allocator {
            store,
            node: node.to_string(),
            network: None,
            hints: None,
            max_conflicts: DEFAULT_MAX_CONFLICTS,
            conflicts: Cell::new(0),
        }
    }

    /// The same allocator recording `network` in the handles it adds addresses to, so that GC
    /// can tell the handles of networks whose names are prefixes of each other apart.
    pub fn with_network(mut self, network: &str) -> Self {
        self.network = Some(network.to_string());
        self
    }

    /// The same allocator keeping a hint of the node's affine blocks in `dir` (see
    /// [`BlockHints`]), so that the common assignment reads its block without listing the
    /// node's affinities first. `None` keeps no hint.
    pub fn with_block_hints(mut self, dir: Option<&Path>) -> Self {
        self.hints = dir.map(|d| BlockHints::new(d, &self.node));
        self
    }

    fn handle_view(&self, id: &str) -> HandleView {
        HandleView {
            id: id.to_string(),
            key: keys::handle(id),
            entry: None,
            node: self.node.clone(),
            network: self.network.clone(),
        }
    }

    /// The same allocator with another bound on conflicting attempts per operation.
    pub fn with_max_conflicts(mut self, max_conflicts: u32) -> Self {
        self.max_conflicts = max_conflicts;
        self
    }

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
        self.conflicts.set(0);
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

    /// The common case with a hint: one read of the handle, the hinted blocks and their
    /// affinity keys, then one transaction, conditional on the block and on the affinity key
    /// that confirmed it. `None` when no hinted block is confirmed as the node's with room; the
    /// listing of the node's affinities then decides, and rewrites the hint.
    fn assign_from_hinted_blocks(
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
    fn affine_blocks(&self, family: IpFamily) -> Result<Vec<IpNetwork>> {
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
    fn assign_from_affine_blocks(
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
    fn hint_claimed_block(&self, block: IpNetwork) {
        if let Some(hints) = &self.hints {
            hints.add(block);
        }
    }

    /// Takes the first free ordinal of an existing block, retrying on conflicts with the values
    /// the failed transaction read back. `None` when the block is full or not ours to use.
    ///
    /// With `affinity` (the node's affinity key for the block, as read), the transaction also
    /// requires that key unchanged, and the block is given up when the key is gone.
    fn assign_in_block(
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

    /// Claims the first free block of the candidate pools, walking each pool from the node's
    /// pseudo-random start, and assigns from it in the same transaction.
    ///
    /// A block met on the walk that this node claimed after the affine blocks were read (a
    /// concurrent request on the same node) is used before anything new is claimed, so that
    /// concurrent requests on one node fill one block instead of claiming one each.
    fn assign_from_new_block(
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
        let entries = read_many(self.store, &[keys::block(&cidr), handle.key.clone()])?;
        handle.entry = entries[1].clone();
        match entries[0].clone() {
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

    /// The transaction that claims `block` (a new block, its first address already assigned)
    /// for this node: block, affinity key and handle together, provided the block is still
    /// unclaimed, the pool unchanged and the handle as read.
    fn claim_txn(
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

    /// Assigns exactly `addr` (CNI_ARGS `IP=`) for `handle`. The address must be inside an
    /// enabled pool and free; its block is claimed for this node when it does not exist yet.
    pub fn assign_ip(&self, handle_id: &str, addr: IpAddr) -> Result<()> {
        self.conflicts.set(0);
        let family = IpFamily::of_addr(&addr);
        let mut pool = self.enabled_pool_containing(addr)?;
        let cidr = block_cidr_for(addr);
        let block_key = keys::block(&cidr);
        let mut handle = self.handle_view(handle_id);
        let entries = read_many(self.store, &[block_key.clone(), handle.key.clone()])?;
        let mut current_block = entries[0].clone();
        handle.entry = entries[1].clone();
        let mut config: Option<IpamConfig> = None;
        loop {
            let txn = match &current_block {
                Some(entry) => {
                    let mut block = AllocationBlock::from_json(&entry.key, &entry.value)?;
                    if !block.allows_borrowing_by(&self.node) {
                        return Err(Error::new(
                            codes::IPAM_EXHAUSTED,
                            format!(
                                "address {addr} is in block {cidr}, which has strict affinity to another node"
                            ),
                        ));
                    }
                    block.assign(addr, handle_id)?;
                    Txn {
                        conditions: vec![
                            Condition::Revision(block_key.clone(), entry.mod_revision),
                            handle.condition(),
                        ],
                        writes: vec![
                            Write::Put(block_key.clone(), block.to_json()),
                            handle.incremented(cidr)?,
                        ],
                        reads_on_failure: vec![block_key.clone(), handle.key.clone()],
                    }
                }
                None => {
                    let strict = match config {
                        Some(c) => c.strict_affinity,
                        None => config.insert(read_ipam_config(self.store)?).strict_affinity,
                    };
                    let mut block =
                        AllocationBlock::new_affine(cidr, &self.node, strict, pool.pool.cidr);
                    block.assign(addr, handle_id)?;
                    self.claim_txn(&block, &pool, &handle)?
                }
            };
            let current = match self.commit(&txn)? {
                Commit::Done => {
                    if current_block.is_none() {
                        self.hint_claimed_block(cidr);
                    }
                    return Ok(());
                }
                Commit::Conflict(current) => current,
            };
            handle.refresh(&current);
            let raced = find(&current, &block_key).map(|e| e.mod_revision)
                != current_block.as_ref().map(|e| e.mod_revision);
            current_block = find(&current, &block_key);
            if current_block.is_none() {
                // Only a claim reads the pool back; a changed pool must still hold the address.
                match find(&current, &pool.key) {
                    Some(now) if now.mod_revision != pool.revision => {
                        pool = self.enabled_pool_containing(addr)?
                    }
                    None => pool = self.enabled_pool_containing(addr)?,
                    Some(_) => {}
                }
            }
            self.conflicted(
                &format!("block {cidr} ({} address {addr})", family_name(family)),
                raced,
            )?;
        }
    }

    fn enabled_pool_containing(&self, addr: IpAddr) -> Result<StoredPool> {
        let family = IpFamily::of_addr(&addr);
        list_pools(self.store, family)?
            .into_iter()
            .find(|p| p.pool.is_enabled() && p.pool.cidr.contains(addr))
            .ok_or_else(|| {
                Error::new(
                    codes::IPAM_EXHAUSTED,
                    format!(
                        "address {addr} is not in any enabled {} pool",
                        family_name(family)
                    ),
                )
            })
    }

    /// Releases one address if `handle` holds it; false when it does not (nothing to do).
    pub fn release_address(&self, handle_id: &str, addr: IpAddr) -> Result<bool> {
        self.conflicts.set(0);
        let cidr = block_cidr_for(addr);
        let block_key = keys::block(&cidr);
        let mut handle = self.handle_view(handle_id);
        let entries = read_many(self.store, &[block_key.clone(), handle.key.clone()])?;
        let mut current_block = entries[0].clone();
        handle.entry = entries[1].clone();
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
        self.conflicts.set(0);
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
        self.conflicts.set(0);
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

    /// Runs a transaction. A transaction that etcd applied but whose answer was lost is resent
    /// by the datastore and then fails its conditions; when everything it wrote reads back
    /// exactly as written, it is treated as done so that nothing is assigned twice. Only a
    /// resent one: another writer of the same handle may have written exactly the same values,
    /// and taking its write for ours would hand one address to both.
    fn commit(&self, txn: &Txn) -> Result<Commit> {
        let outcome = self.store.txn(txn)?;
        if outcome.committed || (outcome.resent && already_applied(txn, &outcome.current)) {
            return Ok(Commit::Done);
        }
        datastore::log_conflict(txn, &outcome.current);
        Ok(Commit::Conflict(outcome.current))
    }

    /// Counts a failed compare-and-swap; gives up after the bound. After losing a race to
    /// another writer, waits a short random time so that contenders spread out.
    fn conflicted(&self, what: &str, raced: bool) -> Result<()> {
        let n = self.conflicts.get() + 1;
        self.conflicts.set(n);
        if n > self.max_conflicts {
            return Err(Error::new(
                codes::CONFLICT,
                format!(
                    "gave up after {} conflicting updates of {what}",
                    self.max_conflicts
                ),
            )
            .with_kind(Kind::CasConflict));
        }
        if raced {
            std::thread::sleep(jitter(n));
        }
        Ok(())
    }
}

/// A random pause that grows with the number of conflicts, up to [`MAX_JITTER`].
fn jitter(conflicts: u32) -> Duration {
    let ceiling_us = (250u64 << conflicts.min(8)).min(MAX_JITTER.as_micros() as u64);
    Duration::from_micros(RandomState::new().hash_one(conflicts) % ceiling_us.max(1))
}

fn already_applied(txn: &Txn, current: &[Entry]) -> bool {
    !txn.writes.is_empty()
        && txn.writes.iter().all(|w| match w {
            Write::Put(k, v) => {
                txn.reads_on_failure.contains(k)
                    && current.iter().any(|e| &e.key == k && &e.value == v)
            }
            Write::Delete(k) => {
                txn.reads_on_failure.contains(k) && !current.iter().any(|e| &e.key == k)
            }
            Write::IfAbsent { .. } => false,
        })
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

/// True when a block belongs to one of the requested pools, or when no pool was requested.
fn in_requested_pools(block: IpNetwork, requested: &[IpNetwork]) -> bool {
    requested.is_empty() || requested.iter().any(|p| block_in_pool(block, *p))
}

/// True when a block belongs to a pool: inside it, or (for a pool smaller than a block)
/// containing it.
fn block_in_pool(block: IpNetwork, pool: IpNetwork) -> bool {
    pool.contains(block.network()) || block.contains(pool.network())
}

/// The blocks of a pool in the order a node tries them: from a start derived from the node
/// name, upwards, wrapping around, each block once.
///
/// Seeding by node name (not time) makes concurrent requests on one node converge on the same
/// new block instead of each claiming its own, while different nodes start at different places.
pub struct BlockWalk {
    family: IpFamily,
    base: u128,
    count: u128,
    start: u128,
    step: u128,
}

impl BlockWalk {
    /// The walk through `pool` for `node`.
    pub fn new(pool: IpNetwork, node: &str) -> Result<Self> {
        let family = IpFamily::of(&pool);
        let prefix = block_prefix(family);
        let count = if pool.prefix() >= prefix {
            1
        } else {
            1u128 << u32::from(prefix - pool.prefix())
        };
        let base = addr_to_u128(block_cidr_for(pool.network()).network());
        Ok(BlockWalk {
            family,
            base,
            count,
            start: node_seed(node) % count,
            step: 0,
        })
    }

    /// How far into the walk `block` comes (0 = first).
    pub fn position_of(&self, block: IpNetwork) -> u128 {
        let index = (addr_to_u128(block.network()).wrapping_sub(self.base)) >> 6;
        (index + self.count - self.start) % self.count
    }
}

impl Iterator for BlockWalk {
    type Item = IpNetwork;

    fn next(&mut self) -> Option<IpNetwork> {
        if self.step >= self.count {
            return None;
        }
        let index = (self.start + self.step) % self.count;
        self.step += 1;
        network_at(
            self.family,
            self.base + (index << 6),
            block_prefix(self.family),
        )
        .ok()
    }
}

/// A 128-bit pseudo-random number derived from the FNV-1 32-bit hash of the node name (the hash
/// libcalico-go seeds its block search with), spread by two SplitMix64 rounds.
fn node_seed(node: &str) -> u128 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in node.bytes() {
        hash = hash.wrapping_mul(0x0100_0193) ^ u32::from(byte);
    }
    let high = splitmix64(u64::from(hash));
    let low = splitmix64(high);
    (u128::from(high) << 64) | u128::from(low)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
