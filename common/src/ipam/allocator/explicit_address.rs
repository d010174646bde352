//! Explicit addresses: exactly the address an ADD asks for (CNI_ARGS `IP=`).

use std::net::IpAddr;

use super::Allocator;
use super::commit::{Commit, find};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Condition, Txn, Write};
use crate::error::{Error, Result, codes};
use crate::ipam::block::{AllocationBlock, block_cidr_for, family_name};
use crate::ipam::pool::{IpamConfig, StoredPool, list_pools, read_ipam_config};

impl Allocator<'_> {
    /// Assigns exactly `addr` (CNI_ARGS `IP=`) for `handle`. The address must be inside an
    /// enabled pool and free; its block is claimed for this node when it does not exist yet.
    pub fn assign_ip(&self, handle_id: &str, addr: IpAddr) -> Result<()> {
        self.retry.restart();
        let family = IpFamily::of_addr(&addr);
        let mut pool = self.enabled_pool_containing(addr)?;
        let cidr = block_cidr_for(addr);
        let block_key = keys::block(&cidr);
        let mut handle = self.handle_view(handle_id);
        let mut current_block = self.read_block_with_handle(&cidr, &mut handle)?;
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
}
