//! STATUS of IPAM: is there room for one more ADD on this node, with this config's families and
//! pools?
//!
//! A pool has room for the node when a block of it is still unclaimed (and nodes may claim
//! blocks), or when a block of it that the node may allocate from (its own, or any block when
//! affinity is not strict) has a free address. Block values are read only when every block of
//! the candidate pools is claimed already.

use ipnetwork::IpNetwork;

use super::block::{AllocationBlock, block_prefix, family_name};
use super::pool::{IpamConfig, StoredPool, list_all_pools, read_ipam_config};
use super::store::Store;
use crate::datastore::keys::{self, IpFamily};
use crate::error::Result;

/// Every allocation block of both families (the parent of `keys::blocks_prefix`).
const ALL_BLOCKS_PREFIX: &str = "/calico/ipam/v2/assignment/";

/// What an ADD with this config would ask for.
#[derive(Debug, Clone, Copy)]
pub struct RoomRequest<'r> {
    /// The node the ADD runs on.
    pub node: &'r str,
    /// An IPv4 address is assigned (`assign_ipv4`).
    pub ipv4: bool,
    /// An IPv6 address is assigned (`assign_ipv6`).
    pub ipv6: bool,
    /// `ipam.ipv4_pools` (empty: every enabled IPv4 pool).
    pub ipv4_pools: &'r [IpNetwork],
    /// `ipam.ipv6_pools` (empty: every enabled IPv6 pool).
    pub ipv6_pools: &'r [IpNetwork],
}

/// The reasons an ADD could not get its addresses now, one per requested family without room;
/// empty when there is room for every family.
///
/// Requests: the pools (one listing for both families); when a candidate pool exists, the IPAM
/// config and the block keys (one listing for both families); the block values of a family
/// only when all its candidate pools' blocks are claimed.
pub fn address_shortages(store: &dyn Store, req: &RoomRequest) -> Result<Vec<String>> {
    let pools = list_all_pools(store)?;
    let mut shortages = Vec::new();
    let mut wanted = Vec::new();
    for (family, requested) in requested_families(req) {
        match candidate_pools(&pools, family, requested) {
            Ok(candidates) => wanted.push((family, candidates)),
            Err(reason) => shortages.push(reason),
        }
    }
    if wanted.is_empty() {
        return Ok(shortages);
    }
    let config = read_ipam_config(store)?;
    let claimed: Vec<IpNetwork> = store
        .list_keys(ALL_BLOCKS_PREFIX)?
        .iter()
        .filter_map(|k| keys::parse_block(k))
        .collect();
    for (family, candidates) in wanted {
        if config.auto_allocate_blocks
            && candidates
                .iter()
                .any(|p| has_unclaimed_block(p.pool.cidr, &claimed))
        {
            continue;
        }
        let mut room = false;
        for entry in store.list(&keys::blocks_prefix(family))? {
            let block = AllocationBlock::from_json(&entry.key, &entry.value)?;
            room |= block.free_count() > 0
                && usable_by(&block, req.node, config)
                && candidates
                    .iter()
                    .any(|p| block_in_pool(block.cidr, p.pool.cidr));
        }
        if !room {
            let names: Vec<String> = candidates.iter().map(|p| p.pool.cidr.to_string()).collect();
            shortages.push(format!(
                "no free {} address for node {}: pools {} are full",
                family_name(family),
                req.node,
                names.join(", ")
            ));
        }
    }
    Ok(shortages)
}

fn requested_families<'r>(req: &RoomRequest<'r>) -> Vec<(IpFamily, &'r [IpNetwork])> {
    let mut families = Vec::new();
    if req.ipv4 {
        families.push((IpFamily::V4, req.ipv4_pools));
    }
    if req.ipv6 {
        families.push((IpFamily::V6, req.ipv6_pools));
    }
    families
}

/// The enabled pools of `family`, limited to `requested` when it is not empty; the reason
/// there are none otherwise.
fn candidate_pools(
    pools: &[StoredPool],
    family: IpFamily,
    requested: &[IpNetwork],
) -> std::result::Result<Vec<StoredPool>, String> {
    let name = family_name(family);
    let of_family = pools
        .iter()
        .filter(|p| IpFamily::of(&p.pool.cidr) == family);
    if let Some(missing) = requested
        .iter()
        .find(|want| !of_family.clone().any(|p| p.pool.cidr == **want))
    {
        return Err(format!(
            "{name} pool {missing} named in ipam.{name}_pools does not exist"
        ));
    }
    let candidates: Vec<StoredPool> = of_family
        .filter(|p| {
            p.pool.is_enabled() && (requested.is_empty() || requested.contains(&p.pool.cidr))
        })
        .cloned()
        .collect();
    if candidates.is_empty() {
        return Err(if requested.is_empty() {
            format!("there are no enabled {name} pools")
        } else {
            let names: Vec<String> = requested.iter().map(IpNetwork::to_string).collect();
            format!(
                "{name} pools {} named in ipam.{name}_pools are disabled",
                names.join(", ")
            )
        });
    }
    Ok(candidates)
}

/// True when fewer blocks of `pool` exist than fit into it.
fn has_unclaimed_block(pool: IpNetwork, claimed: &[IpNetwork]) -> bool {
    let prefix = block_prefix(IpFamily::of(&pool));
    let capacity: u128 = if pool.prefix() >= prefix {
        1
    } else {
        1u128 << u32::from(prefix - pool.prefix())
    };
    let existing = claimed.iter().filter(|b| block_in_pool(**b, pool)).count();
    (existing as u128) < capacity
}

/// True when `node` may allocate from the block: its own, or anyone's without strict affinity.
fn usable_by(block: &AllocationBlock, node: &str, config: IpamConfig) -> bool {
    block.is_affine_to(node) || (!config.strict_affinity && block.allows_borrowing_by(node))
}

/// True when a block belongs to a pool: inside it, or (for a pool smaller than a block)
/// containing it.
fn block_in_pool(block: IpNetwork, pool: IpNetwork) -> bool {
    IpFamily::of(&block) == IpFamily::of(&pool)
        && (pool.contains(block.network()) || block.contains(pool.network()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::pool::{PoolSpec, add_pool};
    use crate::ipam::store::MemoryStore;
    use crate::ipam::{Allocator, AutoAssign};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn store_with(pools: &[(&str, bool)]) -> MemoryStore {
        let store = MemoryStore::new();
        for (cidr, disabled) in pools {
            let spec = PoolSpec {
                cidr: net(cidr),
                disabled: *disabled,
                ipip: false,
                nat_outgoing: false,
            };
            add_pool(&store, &spec).unwrap();
        }
        store
    }

    fn v4_request<'r>(node: &'r str, pools: &'r [IpNetwork]) -> RoomRequest<'r> {
        RoomRequest {
            node,
            ipv4: true,
            ipv6: false,
            ipv4_pools: pools,
            ipv6_pools: &[],
        }
    }

    fn fill(store: &MemoryStore, node: &str, n: usize) {
        let ipam = Allocator::new(store, node);
        for i in 0..n {
            let handle = format!("net.c{i}");
            let req = AutoAssign {
                handle: &handle,
                ipv4: true,
                ipv6: false,
                ipv4_pools: &[],
                ipv6_pools: &[],
            };
            ipam.auto_assign(&req).unwrap();
        }
    }

    #[test]
    fn room_is_found_in_three_requests_while_blocks_are_unclaimed() {
        let store = store_with(&[("10.1.0.0/16", false)]);
        fill(&store, "n1", 3);
        let before = store.requests_made();
        assert!(
            address_shortages(&store, &v4_request("n1", &[]))
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.requests_made() - before, 3);
    }

    #[test]
    fn missing_disabled_and_absent_pools_are_named() {
        let store = store_with(&[("10.1.0.0/16", true), ("fd00::/64", false)]);
        let cases: [(&[IpNetwork], &str); 3] = [
            (&[], "there are no enabled ipv4 pools"),
            (
                &[net("10.1.0.0/16")],
                "ipv4 pools 10.1.0.0/16 named in ipam.ipv4_pools are disabled",
            ),
            (
                &[net("10.9.0.0/16")],
                "ipv4 pool 10.9.0.0/16 named in ipam.ipv4_pools does not exist",
            ),
        ];
        for (pools, want) in cases {
            let got = address_shortages(&store, &v4_request("n1", pools)).unwrap();
            assert_eq!(got, [want]);
        }
        let v6_only = RoomRequest {
            ipv4: false,
            ipv6: true,
            ..v4_request("n1", &[])
        };
        assert!(address_shortages(&store, &v6_only).unwrap().is_empty());
    }

    #[test]
    fn a_full_pool_has_no_room_and_a_freed_address_is_room() {
        let store = store_with(&[("10.2.0.0/26", false)]);
        fill(&store, "n1", 64);
        let got = address_shortages(&store, &v4_request("n1", &[])).unwrap();
        assert_eq!(
            got,
            ["no free ipv4 address for node n1: pools 10.2.0.0/26 are full"]
        );
        Allocator::new(&store, "n1")
            .release_handles(&["net.c5"])
            .unwrap();
        assert!(
            address_shortages(&store, &v4_request("n1", &[]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn another_nodes_free_addresses_count_only_without_strict_affinity() {
        let store = store_with(&[("10.3.0.0/26", false)]);
        fill(&store, "n1", 1);
        assert!(
            address_shortages(&store, &v4_request("n2", &[]))
                .unwrap()
                .is_empty()
        );
        store.put(
            keys::IPAM_CONFIG,
            br#"{"strict_affinity":true,"auto_allocate_blocks":true}"#,
        );
        assert_eq!(
            address_shortages(&store, &v4_request("n2", &[]))
                .unwrap()
                .len(),
            1
        );
        assert!(
            address_shortages(&store, &v4_request("n1", &[]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unclaimed_blocks_are_no_room_when_nodes_may_not_claim() {
        let store = store_with(&[("10.4.0.0/24", false)]);
        store.put(
            keys::IPAM_CONFIG,
            br#"{"strict_affinity":false,"auto_allocate_blocks":false}"#,
        );
        assert_eq!(
            address_shortages(&store, &v4_request("n1", &[]))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn every_requested_family_needs_room() {
        let store = store_with(&[("10.5.0.0/16", false)]);
        let dual = RoomRequest {
            ipv6: true,
            ..v4_request("n1", &[])
        };
        assert_eq!(
            address_shortages(&store, &dual).unwrap(),
            ["there are no enabled ipv6 pools"]
        );
    }
}
