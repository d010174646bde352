//! Assigning and releasing addresses: Calico v1's algorithm (affine blocks, then a new block
//! claimed at a node-seeded pseudo-random position, then borrowing), with every change made by
//! one compare-and-swap transaction that updates the block and the handle together.
//!
//! `auto_assign` orders the sources of an address: `affine_blocks` finds the node's own blocks
//! (through the hint or a listing), `block_claim` claims new ones along the `block_walk`, and
//! `explicit_address` assigns a requested address; `release` frees addresses again. Each of
//! them changes the store only through `commit`.

mod affine_blocks;
mod auto_assign;
mod block_claim;
mod block_walk;
mod commit;
mod explicit_address;
mod release;

use std::path::Path;

use ipnetwork::IpNetwork;

use super::hint::BlockHints;
use super::store::Store;
use crate::datastore::retry::{Backoff, CasRetry};

pub use affine_blocks::hinted_read;
pub use block_walk::BlockWalk;

/// Conflicting compare-and-swap attempts allowed per operation before giving up (Calico v1
/// uses 100 as well).
pub const DEFAULT_MAX_CONFLICTS: u32 = 100;

/// How an allocator retries: every request on a node contends for the node's blocks, so
/// contenders spread out after losing a race.
const RETRY_BACKOFF: Backoff = Backoff::Jitter;

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
    retry: CasRetry,
}

impl<'s> Allocator<'s> {
    /// IPAM acting for `node` (the affinity owner of the blocks it claims).
    pub fn new(store: &'s dyn Store, node: &str) -> Self {
        Allocator {
            store,
            node: node.to_string(),
            network: None,
            hints: None,
            retry: CasRetry::new(DEFAULT_MAX_CONFLICTS, RETRY_BACKOFF),
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

    /// The same allocator with another bound on conflicting attempts per operation.
    pub fn with_max_conflicts(mut self, max_conflicts: u32) -> Self {
        self.retry = CasRetry::new(max_conflicts, RETRY_BACKOFF);
        self
    }
}

#[cfg(test)]
mod tests;
