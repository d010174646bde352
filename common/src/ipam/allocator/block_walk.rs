//! The order in which a node tries the blocks of a pool.

use ipnetwork::IpNetwork;

use crate::datastore::keys::IpFamily;
use crate::error::Result;
use crate::ipam::block::{addr_to_u128, block_cidr_for, block_prefix, network_at};

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
