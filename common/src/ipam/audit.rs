//! The whole-datastore view an operator needs: what each pool and node uses (`calico-ipam
//! show`), who holds one address, and every place where allocations, handles, affinities,
//! workload endpoints and attachment records disagree (`calico-ipam check`).
//!
//! Everything is read with a few prefix listings (paged, each at one revision), never one
//! request per key, so that a cluster of ten thousand allocations is read in seconds. The
//! listings are not one snapshot: an ADD or DEL running meanwhile may show up as a finding
//! that is gone on the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::block::{AllocationBlock, BLOCK_SIZE, block_cidr_for};
use super::handle::AllocationHandle;
use super::pool::{StoredPool, list_all_pools};
use super::store::Store;
use crate::datastore::keys::{self, IpFamily, WorkloadEndpointKey};
use crate::datastore::model::WorkloadEndpoint;
use crate::datastore::records::AttachmentRecord;
use crate::error::{Context, Result};

/// Entries per request of a listing: well below the 4 MiB a gRPC answer may carry even for
/// endpoints with many labels.
const PAGE: i64 = 1000;

/// A workload endpoint as listed.
#[derive(Debug, Clone)]
pub struct ListedEndpoint {
    /// Its etcd key.
    pub key: String,
    /// The identifiers in the key.
    pub ids: WorkloadEndpointKey,
    /// The value.
    pub endpoint: WorkloadEndpoint,
}

impl ListedEndpoint {
    /// The addresses the endpoint lists, without prefix lengths.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let e = &self.endpoint;
        e.ipv4_nets.iter().chain(&e.ipv6_nets).map(IpNetwork::ip)
    }
}

/// Everything IPAM and the plugin keep, as listed.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Every pool.
    pub pools: Vec<StoredPool>,
    /// Every allocation block, in key order.
    pub blocks: Vec<AllocationBlock>,
    /// Every handle, in key order.
    pub handles: Vec<AllocationHandle>,
    /// Every affinity key, as (node, block CIDR, key).
    pub affinities: Vec<(String, IpNetwork, String)>,
    /// Every workload endpoint of every node.
    pub endpoints: Vec<ListedEndpoint>,
    /// Every attachment record, with its key.
    pub attachments: Vec<(String, AttachmentRecord)>,
    /// Keys whose value could not be decoded, each with the reason.
    pub unreadable: Vec<String>,
}

/// Reads the whole inventory: one listing each of pools, blocks (per family), handles,
/// affinities, endpoints and attachment records.
pub fn read_inventory(store: &dyn Store) -> Result<Inventory> {
    let mut inv = Inventory {
        pools: list_all_pools(store)?,
        ..Inventory::default()
    };
    for family in [IpFamily::V4, IpFamily::V6] {
        for entry in list(store, &keys::blocks_prefix(family))? {
            match AllocationBlock::from_json(&entry.key, &entry.value) {
                Ok(block) => inv.blocks.push(block),
                Err(e) => inv.unreadable.push(e.msg().to_string()),
            }
        }
    }
    for entry in list(store, keys::HANDLES_PREFIX)? {
        let id = keys::parse_handle(&entry.key).unwrap_or_default();
        match AllocationHandle::from_json(id, &entry.key, &entry.value) {
            Ok(handle) => inv.handles.push(handle),
            Err(e) => inv.unreadable.push(e.msg().to_string()),
        }
    }
    inv.affinities = list(store, keys::IPAM_HOSTS_PREFIX)?
        .into_iter()
        .filter_map(|e| keys::parse_host_affinity(&e.key).map(|(n, c)| (n, c, e.key)))
        .collect();
    inv.endpoints = list_endpoints(store, &mut inv.unreadable)?;
    for entry in list(store, keys::ATTACHMENTS_PREFIX)? {
        match serde_json::from_slice::<AttachmentRecord>(&entry.value) {
            Ok(record) => inv.attachments.push((entry.key, record)),
            Err(e) => inv
                .unreadable
                .push(format!("decode attachment record {}: {e}", entry.key)),
        }
    }
    Ok(inv)
}

fn list(store: &dyn Store, prefix: &str) -> Result<Vec<crate::datastore::Entry>> {
    store
        .list_paged(prefix, PAGE)
        .with_context(|| format!("list {prefix}"))
}

/// Every workload endpoint under `/calico/v1/host/`; other keys there (node config, BGP
/// addresses) are skipped, undecodable endpoints recorded in `unreadable`.
pub fn list_endpoints(
    store: &dyn Store,
    unreadable: &mut Vec<String>,
) -> Result<Vec<ListedEndpoint>> {
    let mut endpoints = Vec::new();
    for entry in list(store, keys::HOSTS_PREFIX)? {
        let Some(ids) = keys::parse_workload_endpoint(&entry.key) else {
            continue;
        };
        match WorkloadEndpoint::from_json(&entry.value) {
            Ok(endpoint) => endpoints.push(ListedEndpoint {
                key: entry.key,
                ids,
                endpoint,
            }),
            Err(e) => unreadable.push(format!("decode endpoint {}: {e}", entry.key)),
        }
    }
    Ok(endpoints)
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub address: IpAddr,
    /// Its block.
    pub block: IpNetwork,
    /// The handle it was allocated for; `None` for an allocation without one.
    pub handle: Option<String>,
}

/// Every allocated address of a block.
pub fn allocations_of(block: &AllocationBlock) -> impl Iterator<Item = Allocation> + '_ {
    (0..BLOCK_SIZE.min(block.allocations.len())).filter_map(move |ordinal| {
        let index = block.allocations[ordinal]?;
        Some(Allocation {
            address: block.address(ordinal),
            block: block.cidr,
            handle: block
                .attributes
                .get(index)
                .and_then(|a| a.handle_id.clone()),
        })
    })
}

/// What one pool holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// The pool's CIDR.
    #[serde(serialize_with = "as_string")]
    pub cidr: IpNetwork,
    /// Number of addresses in the pool.
    pub size: u128,
    /// Number of them allocated.
    pub allocated: u64,
    /// Number of them not allocated.
    pub free: u128,
    /// Number of blocks carved out of the pool.
    pub blocks: usize,
    /// The pool hands out no new addresses.
    pub disabled: bool,
}

/// What one block holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    /// The block's CIDR.
    #[serde(serialize_with = "as_string")]
    pub cidr: IpNetwork,
    /// Number of addresses allocated.
    pub allocated: u64,
    /// Number of addresses free; 0 for a block whose affinity names no block.
    pub free: u64,
}

/// The blocks a node has affinity to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeUsage {
    /// The node.
    pub node: String,
    /// Its affine blocks, in key order.
    pub blocks: Vec<BlockUsage>,
}

/// Writes a CIDR as its text, as Calico's JSON does.
fn as_string<S: serde::Serializer>(
    net: &IpNetwork,
    ser: S,
) -> std::result::Result<S::Ok, S::Error> {
    ser.collect_str(net)
}

/// True when a block belongs to a pool: inside it, or (a pool smaller than a block) around it.
fn block_in_pool(block: IpNetwork, pool: IpNetwork) -> bool {
    pool.contains(block.network()) || block.contains(pool.network())
}

/// Per pool: size, allocated, free, blocks, disabled.
pub fn pool_usage(inv: &Inventory) -> Vec<PoolUsage> {
    inv.pools
        .iter()
        .map(|stored| {
            let pool = &stored.pool;
            let size = match pool.cidr {
                IpNetwork::V4(n) => 1u128 << (32 - n.prefix()),
                IpNetwork::V6(n) => 1u128
                    .checked_shl(128 - u32::from(n.prefix()))
                    .unwrap_or(u128::MAX),
            };
            let blocks: Vec<&AllocationBlock> = inv
                .blocks
                .iter()
                .filter(|b| block_in_pool(b.cidr, pool.cidr))
                .collect();
            let allocated = blocks
                .iter()
                .flat_map(|b| allocations_of(b))
                .filter(|a| pool.cidr.contains(a.address))
                .count() as u64;
            PoolUsage {
                cidr: pool.cidr,
                size,
                allocated,
                free: size.saturating_sub(u128::from(allocated)),
                blocks: blocks.len(),
                disabled: pool.disabled,
            }
        })
        .collect()
}

/// Per node with any affinity: its affine blocks and their usage.
pub fn node_usage(inv: &Inventory) -> Vec<NodeUsage> {
    let mut nodes: BTreeMap<&str, Vec<BlockUsage>> = BTreeMap::new();
    for (node, cidr, _) in &inv.affinities {
        let block = inv.blocks.iter().find(|b| b.cidr == *cidr);
        let allocated = block.map_or(0, |b| allocations_of(b).count() as u64);
        nodes.entry(node).or_default().push(BlockUsage {
            cidr: *cidr,
            allocated,
            free: block.map_or(0, |b| b.free_count() as u64),
        });
    }
    nodes
        .into_iter()
        .map(|(node, blocks)| NodeUsage {
            node: node.to_string(),
            blocks,
        })
        .collect()
}

/// Who holds one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressOwner {
    /// The address asked about.
    pub address: IpAddr,
    /// The block it falls into.
    #[serde(serialize_with = "as_string")]
    pub block: IpNetwork,
    /// The block exists and the address is allocated in it.
    pub allocated: bool,
    /// The handle it is allocated for.
    pub handle: Option<String>,
    /// The keys of the workload endpoints listing the address.
    pub endpoints: Vec<String>,
}

/// The block, handle and workload endpoints of `address`: one read of the block, one listing
/// of the endpoints.
pub fn address_owner(store: &dyn Store, address: IpAddr) -> Result<AddressOwner> {
    let cidr = block_cidr_for(address);
    let key = keys::block(&cidr);
    let block = store
        .get(&key)
        .with_context(|| format!("read block {key}"))?
        .map(|e| AllocationBlock::from_json(&e.key, &e.value))
        .transpose()?;
    let allocation = block
        .as_ref()
        .and_then(|b| allocations_of(b).find(|a| a.address == address));
    let endpoints = list_endpoints(store, &mut Vec::new())?
        .into_iter()
        .filter(|e| e.addresses().any(|a| a == address))
        .map(|e| e.key)
        .collect();
    Ok(AddressOwner {
        address,
        block: cidr,
        allocated: allocation.is_some(),
        handle: allocation.and_then(|a| a.handle),
        endpoints,
    })
}

/// The kinds of inconsistency `check` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A key whose value cannot be decoded.
    Unreadable,
    /// An allocation that no workload endpoint lists (a leak).
    Leak,
    /// An endpoint lists an address inside a pool that is not allocated.
    NotAllocated,
    /// A handle's per-block count differs from what the block holds for it.
    HandleCount,
    /// An allocation outside every pool.
    OutsidePools,
    /// An affinity of a node that has no workload endpoint.
    IdleAffinity,
    /// An attachment record whose endpoint does not exist.
    RecordWithoutEndpoint,
}

/// One inconsistency, with the objects involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// One sentence naming the objects.
    pub message: String,
    /// The addresses, handle ids and etcd keys involved.
    pub objects: Vec<String>,
}

impl Finding {
    fn new(kind: FindingKind, message: String, objects: Vec<String>) -> Finding {
        Finding {
            kind,
            message,
            objects,
        }
    }
}

/// Every inconsistency of the inventory, ordered by kind.
pub fn check(inv: &Inventory) -> Vec<Finding> {
    let mut found: Vec<Finding> = inv
        .unreadable
        .iter()
        .map(|m| Finding::new(FindingKind::Unreadable, m.clone(), Vec::new()))
        .collect();
    let allocations: Vec<Allocation> = inv.blocks.iter().flat_map(allocations_of).collect();
    found.extend(allocation_findings(inv, &allocations));
    found.extend(endpoint_findings(inv, &allocations));
    found.extend(handle_findings(inv, &allocations));
    found.extend(affinity_findings(inv));
    found.extend(record_findings(inv));
    found.sort_by_key(|f| f.kind);
    found
}

/// Leaks and allocations outside every pool.
fn allocation_findings(inv: &Inventory, allocations: &[Allocation]) -> Vec<Finding> {
    let listed: BTreeSet<IpAddr> = inv.endpoints.iter().flat_map(|e| e.addresses()).collect();
    let mut found = Vec::new();
    for a in allocations {
        let handle = a.handle.as_deref().unwrap_or("(none)");
        let objects = vec![
            a.address.to_string(),
            keys::handle(handle),
            keys::block(&a.block),
        ];
        if !listed.contains(&a.address) {
            found.push(Finding::new(
                FindingKind::Leak,
                format!(
                    "address {} (handle {handle}, block {}) is allocated but no workload endpoint lists it",
                    a.address, a.block
                ),
                objects.clone(),
            ));
        }
        if !inv.pools.iter().any(|p| p.pool.cidr.contains(a.address)) {
            found.push(Finding::new(
                FindingKind::OutsidePools,
                format!(
                    "address {} (handle {handle}, block {}) is allocated outside every pool",
                    a.address, a.block
                ),
                objects,
            ));
        }
    }
    found
}

/// Endpoint addresses inside a pool that are not allocated. Addresses outside every pool came
/// from another IPAM plugin, and those of an attachment recorded as set up without IPAM (a
/// pod's `ipAddrsNoIpam`) were never allocated: neither is reported.
fn endpoint_findings(inv: &Inventory, allocations: &[Allocation]) -> Vec<Finding> {
    let allocated: BTreeSet<IpAddr> = allocations.iter().map(|a| a.address).collect();
    let without_ipam: BTreeSet<&str> = inv
        .attachments
        .iter()
        .filter(|(_, r)| r.without_ipam)
        .map(|(_, r)| r.endpoint.as_str())
        .collect();
    let mut found = Vec::new();
    for e in inv
        .endpoints
        .iter()
        .filter(|e| !without_ipam.contains(e.key.as_str()))
    {
        for address in e.addresses() {
            let in_pool = inv.pools.iter().any(|p| p.pool.cidr.contains(address));
            if in_pool && !allocated.contains(&address) {
                found.push(Finding::new(
                    FindingKind::NotAllocated,
                    format!(
                        "endpoint {} lists address {address}, which is not allocated",
                        e.key
                    ),
                    vec![address.to_string(), e.key.clone()],
                ));
            }
        }
    }
    found
}

/// Handles whose per-block counts disagree with the blocks, including allocations whose
/// handle does not exist.
fn handle_findings(inv: &Inventory, allocations: &[Allocation]) -> Vec<Finding> {
    let mut held: BTreeMap<(&str, IpNetwork), u64> = BTreeMap::new();
    for a in allocations {
        if let Some(handle) = a.handle.as_deref() {
            *held.entry((handle, a.block)).or_default() += 1;
        }
    }
    let mut counted: BTreeMap<(&str, IpNetwork), u64> = BTreeMap::new();
    for handle in &inv.handles {
        for (cidr, &count) in &handle.blocks {
            counted.insert((handle.id.as_str(), *cidr), count);
        }
    }
    let pairs: BTreeSet<(&str, IpNetwork)> = held.keys().chain(counted.keys()).copied().collect();
    let known: BTreeSet<&str> = inv.handles.iter().map(|h| h.id.as_str()).collect();
    let mut found = Vec::new();
    for (handle, cidr) in pairs {
        let n = held.get(&(handle, cidr)).copied().unwrap_or(0);
        let count = counted.get(&(handle, cidr)).copied().unwrap_or(0);
        if n == count {
            continue;
        }
        let message = if known.contains(handle) {
            format!(
                "handle {handle} counts {count} addresses in block {cidr}, which holds {n} for it"
            )
        } else {
            format!("block {cidr} holds {n} addresses for handle {handle}, which does not exist")
        };
        found.push(Finding::new(
            FindingKind::HandleCount,
            message,
            vec![keys::handle(handle), keys::block(&cidr)],
        ));
    }
    found
}

/// Affinities of nodes without any workload endpoint: a node that left the cluster.
fn affinity_findings(inv: &Inventory) -> Vec<Finding> {
    let nodes: BTreeSet<&str> = inv.endpoints.iter().map(|e| e.ids.node.as_str()).collect();
    inv.affinities
        .iter()
        .filter(|(node, _, _)| !nodes.contains(node.as_str()))
        .map(|(node, cidr, key)| {
            Finding::new(
                FindingKind::IdleAffinity,
                format!("node {node} has affinity to block {cidr} but no workload endpoint"),
                vec![key.clone(), keys::block(cidr)],
            )
        })
        .collect()
}

/// Attachment records whose endpoint does not exist.
fn record_findings(inv: &Inventory) -> Vec<Finding> {
    let endpoints: BTreeSet<&str> = inv.endpoints.iter().map(|e| e.key.as_str()).collect();
    inv.attachments
        .iter()
        .filter(|(_, r)| !endpoints.contains(r.endpoint.as_str()))
        .map(|(key, r)| {
            Finding::new(
                FindingKind::RecordWithoutEndpoint,
                format!(
                    "attachment record {key} names endpoint {}, which does not exist",
                    r.endpoint
                ),
                vec![key.clone(), r.endpoint.clone()],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::store::MemoryStore;
    use crate::ipam::{Allocator, AutoAssign, handle_id};

    const NODE: &str = "n1";

    fn store_with_pool() -> MemoryStore {
        MemoryStore::with_pools(&["10.9.0.0/16"])
    }

    /// What an ADD of `container` leaves: an allocation, its endpoint and its record.
    fn attach(store: &MemoryStore, container: &str) -> (IpAddr, String) {
        let handle = handle_id("net", container, "eth0");
        let req = AutoAssign {
            handle: &handle,
            ipv4: true,
            ipv6: false,
            ipv4_pools: &[],
            ipv6_pools: &[],
        };
        let addr = Allocator::new(store, NODE)
            .with_network("net")
            .auto_assign(&req)
            .unwrap()[0];
        let key = keys::workload_endpoint(NODE, "cni", container, "eth0");
        let endpoint = WorkloadEndpoint {
            state: "active".into(),
            name: format!("cali{container}"),
            ipv4_nets: vec![IpNetwork::from(addr)],
            ..WorkloadEndpoint::default()
        };
        store.put(&key, &endpoint.to_json().unwrap());
        let record = AttachmentRecord {
            container_id: container.into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            host_veth: format!("cali{container}"),
            endpoint: key.clone(),
            without_ipam: false,
            nft_table: None,
        };
        store.put(
            &keys::attachment(NODE, "net", container, "eth0"),
            &serde_json::to_vec(&record).unwrap(),
        );
        (addr, key)
    }

    fn findings(store: &MemoryStore) -> Vec<(FindingKind, String)> {
        check(&read_inventory(store).unwrap())
            .into_iter()
            .map(|f| (f.kind, f.message))
            .collect()
    }

    #[test]
    fn a_consistent_datastore_has_no_findings_and_is_read_in_few_requests() {
        let store = store_with_pool();
        for c in ["a", "b", "c"] {
            attach(&store, c);
        }
        let before = store.requests_made();
        let inv = read_inventory(&store).unwrap();
        assert!(store.requests_made() - before <= 9);
        assert_eq!(check(&inv), []);
        let usage = pool_usage(&inv);
        assert_eq!(usage.len(), 1);
        assert_eq!(
            (
                usage[0].size,
                usage[0].allocated,
                usage[0].free,
                usage[0].blocks
            ),
            (65536, 3, 65533, 1)
        );
        let nodes = node_usage(&inv);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].node, NODE);
        assert_eq!(
            (nodes[0].blocks[0].allocated, nodes[0].blocks[0].free),
            (3, 61)
        );
    }

    #[test]
    fn each_inconsistency_is_named_with_its_objects() {
        let store = store_with_pool();
        let (kept, _) = attach(&store, "keep");
        let (leaked, leaked_endpoint) = attach(&store, "leak");
        let (_, ghost_endpoint) = attach(&store, "ghost");
        // A leak: the endpoint is gone, the allocation stays. Its record then names a missing
        // endpoint too.
        store
            .txn(&crate::datastore::Txn {
                writes: vec![crate::datastore::Write::Delete(leaked_endpoint.clone())],
                ..Default::default()
            })
            .unwrap();
        // An endpoint listing an address in the pool that nobody allocated.
        let mut ghost =
            WorkloadEndpoint::from_json(&store.get(&ghost_endpoint).unwrap().unwrap().value)
                .unwrap();
        ghost.ipv4_nets.push("10.9.200.1/32".parse().unwrap());
        store.put(&ghost_endpoint, &ghost.to_json().unwrap());
        // A handle counting one address too many.
        let mut handle = AllocationHandle::new("net.keep");
        handle.increment(block_cidr_for(kept), 2);
        store.put(&keys::handle("net.keep"), &handle.to_json());
        // An affinity of a node without endpoints.
        let idle: IpNetwork = "10.9.77.0/26".parse().unwrap();
        store.put(&keys::host_affinity("gone-node", &idle), b"{}");
        let got = findings(&store);
        let kinds: Vec<FindingKind> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                FindingKind::Leak,
                FindingKind::NotAllocated,
                FindingKind::HandleCount,
                FindingKind::IdleAffinity,
                FindingKind::RecordWithoutEndpoint
            ],
            "{got:#?}"
        );
        assert!(got[0].1.contains(&leaked.to_string()) && got[0].1.contains("handle net.leak"));
        assert!(got[1].1.contains("10.9.200.1") && got[1].1.contains(&ghost_endpoint));
        assert!(
            got[2].1.contains("handle net.keep counts 2"),
            "{}",
            got[2].1
        );
        assert!(got[3].1.contains("gone-node") && got[3].1.contains("10.9.77.0/26"));
        assert!(got[4].1.contains(&leaked_endpoint));
    }

    #[test]
    fn allocations_outside_pools_and_without_handles_are_reported() {
        let store = store_with_pool();
        let (addr, _) = attach(&store, "a");
        let block = block_cidr_for(addr);
        let mut stored = AllocationBlock::from_json(
            &keys::block(&block),
            &store.get(&keys::block(&block)).unwrap().unwrap().value,
        )
        .unwrap();
        stored.assign(stored.address(10), "net.orphan").unwrap();
        store.put(&keys::block(&block), &stored.to_json());
        store.put(&keys::handle("net.bad"), b"not json");
        let mut outside = AllocationBlock::new_affine(
            "10.10.0.0/26".parse().unwrap(),
            NODE,
            false,
            "10.10.0.0/16".parse().unwrap(),
        );
        outside
            .assign("10.10.0.5".parse().unwrap(), "net.x")
            .unwrap();
        store.put(&keys::block(&outside.cidr), &outside.to_json());
        let got = findings(&store);
        let has =
            |kind: FindingKind, text: &str| got.iter().any(|(k, m)| *k == kind && m.contains(text));
        assert!(
            has(FindingKind::Unreadable, "/calico/ipam/v2/handle/net.bad"),
            "{got:#?}"
        );
        assert!(has(FindingKind::OutsidePools, "10.10.0.5"), "{got:#?}");
        assert!(
            has(
                FindingKind::HandleCount,
                "handle net.orphan, which does not exist"
            ),
            "{got:#?}"
        );
        assert!(
            has(FindingKind::Leak, &stored.address(10).to_string()),
            "{got:#?}"
        );
    }

    #[test]
    fn an_address_owner_names_block_handle_and_endpoint() {
        let store = store_with_pool();
        let (addr, endpoint) = attach(&store, "a");
        let owner = address_owner(&store, addr).unwrap();
        assert_eq!(owner.block, block_cidr_for(addr));
        assert!(owner.allocated);
        assert_eq!(owner.handle.as_deref(), Some("net.a"));
        assert_eq!(owner.endpoints, [endpoint]);
        let free = address_owner(&store, "10.9.250.3".parse().unwrap()).unwrap();
        assert!(!free.allocated && free.handle.is_none() && free.endpoints.is_empty());
    }
}
