//! The allocation block: 64 consecutive addresses (an IPv4 /26 or an IPv6 /122) stored as one
//! etcd key in the JSON shape libcalico-go v1 writes, plus the arithmetic on it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::datastore::keys::IpFamily;
use crate::error::{Error, Result, codes};

/// Number of addresses in a block.
pub const BLOCK_SIZE: usize = 64;

/// Prefix of `affinity` values: `host:<node>`.
const AFFINITY_PREFIX: &str = "host:";

/// Block prefix length of a family: 26 for IPv4, 122 for IPv6.
pub fn block_prefix(family: IpFamily) -> u8 {
    family_bits(family) - 6
}

/// Bits in an address of a family.
pub fn family_bits(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

/// `ipv4` or `ipv6`, for messages.
pub fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a family for an integer; IPv4 takes the low 32 bits.
pub fn u128_to_addr(family: IpFamily, n: u128) -> IpAddr {
    match family {
        // Truncation is intended: callers only pass values inside the IPv4 space.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A network built from a base address integer and a prefix length.
pub fn network_at(family: IpFamily, base: u128, prefix: u8) -> Result<IpNetwork> {
    IpNetwork::new(u128_to_addr(family, base), prefix)
        .map_err(|e| Error::internal(format!("invalid network {base}/{prefix}: {e}")))
}

/// The block (/26 or /122) that contains an address.
pub fn block_cidr_for(addr: IpAddr) -> IpNetwork {
    let family = IpFamily::of_addr(&addr);
    let host_bits = u32::from(family_bits(family) - block_prefix(family));
    let base = (addr_to_u128(addr) >> host_bits) << host_bits;
    // The prefix is valid for the family by construction.
    match network_at(family, base, block_prefix(family)) {
        Ok(net) => net,
        Err(_) => IpNetwork::from(addr),
    }
}

/// True when `net` is a network address (no host bits set).
pub fn is_network_address(net: IpNetwork) -> bool {
    net.ip() == net.network()
}

/// The metadata an allocation carries: its handle and optional secondary attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    /// The handle the address was allocated for.
    pub handle_id: Option<String>,
    /// Free-form attributes; `null` when there are none.
    #[serde(default)]
    pub secondary: Option<BTreeMap<String, String>>,
}

/// One allocation block as stored under `/calico/ipam/v2/assignment/ipv{4,6}/block/<cidr>`.
///
/// `allocations[i]` indexes `attributes` for ordinal `i` (`None` = free); `unallocated` lists the
/// free ordinals in the order they are handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationBlock {
    /// The block's network (/26 or /122).
    pub cidr: IpNetwork,
    /// `host:<node>` when a node owns the block.
    pub affinity: Option<String>,
    /// When true only the affine node may allocate from the block.
    pub strict_affinity: bool,
    /// Per ordinal, the index into `attributes`, or `None` when free.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals: allocation takes from the front, release appends at the back.
    pub unallocated: Vec<usize>,
    /// Distinct (handle, attributes) pairs referenced by `allocations`.
    pub attributes: Vec<AllocationAttribute>,
}

/// The Go v1 field order and names, used for writing.
#[derive(Serialize)]
struct BlockOut<'a> {
    cidr: String,
    affinity: &'a Option<String>,
    #[serde(rename = "strictAffinity")]
    strict_affinity: bool,
    allocations: &'a [Option<usize>],
    unallocated: &'a [usize],
    attributes: &'a [AllocationAttribute],
}

/// What may be read: Go v1 blocks, pre-v1.5 Go blocks (`hostAffinity`) and Python blocks
/// (`strict_affinity`, `affinity: ""`).
#[derive(Deserialize)]
struct BlockIn {
    cidr: String,
    #[serde(default)]
    affinity: Option<String>,
    #[serde(rename = "hostAffinity", default)]
    host_affinity: Option<String>,
    #[serde(rename = "strictAffinity", alias = "strict_affinity", default)]
    strict_affinity: bool,
    #[serde(default)]
    allocations: Option<Vec<Option<usize>>>,
    #[serde(default)]
    unallocated: Option<Vec<usize>>,
    #[serde(default)]
    attributes: Option<Vec<AllocationAttribute>>,
}

impl AllocationBlock {
    /// A new block affine to `node`, whose free ordinals are the addresses inside `pool`.
    ///
    /// A pool smaller than a block (possible when another tool created it) leaves the
    /// ordinals outside the pool unusable: free in `allocations` but absent from
    /// `unallocated`, so neither this plugin nor libcalico-go ever hands them out.
    pub fn new_affine(cidr: IpNetwork, node: &str, strict_affinity: bool, pool: IpNetwork) -> Self {
        let mut block = AllocationBlock {
            cidr,
            affinity: Some(affinity_value(node)),
            strict_affinity,
            allocations: vec![None; BLOCK_SIZE],
            unallocated: Vec::with_capacity(BLOCK_SIZE),
            attributes: Vec::new(),
        };
        block.unallocated = (0..BLOCK_SIZE)
            .filter(|&o| pool.contains(block.address(o)))
            .collect();
        block
    }

    /// Decodes and validates block JSON read from etcd key `key`.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        let raw: BlockIn = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                codes::DATASTORE,
                format!("decode block at etcd key {key}: {e}"),
            )
        })?;
        let invalid = |what: String| {
            Error::new(
                codes::DATASTORE,
                format!("invalid block at etcd key {key}: {what}"),
            )
        };
        let cidr: IpNetwork = raw
            .cidr
            .parse()
            .map_err(|e| invalid(format!("cidr {:?}: {e}", raw.cidr)))?;
        let family = IpFamily::of(&cidr);
        if cidr.prefix() != block_prefix(family) || !is_network_address(cidr) {
            return Err(invalid(format!(
                "cidr {cidr} is not a /{} network",
                block_prefix(family)
            )));
        }
        let affinity = match (raw.affinity, raw.host_affinity) {
            (Some(a), _) if !a.is_empty() => Some(a),
            (_, Some(host)) if !host.is_empty() => Some(affinity_value(&host)),
            _ => None,
        };
        let allocations = raw.allocations.unwrap_or_else(|| vec![None; BLOCK_SIZE]);
        let unallocated = raw.unallocated.unwrap_or_default();
        let attributes = raw.attributes.unwrap_or_default();
        if allocations.len() != BLOCK_SIZE {
            return Err(invalid(format!(
                "{} allocations instead of {BLOCK_SIZE}",
                allocations.len()
            )));
        }
        if let Some(bad) = allocations
            .iter()
            .flatten()
            .find(|&&i| i >= attributes.len())
        {
            return Err(invalid(format!(
                "allocation refers to missing attribute {bad}"
            )));
        }
        if let Some(bad) = unallocated
            .iter()
            .find(|&&o| o >= BLOCK_SIZE || allocations[o].is_some())
        {
            return Err(invalid(format!(
                "unallocated ordinal {bad} is out of range or allocated"
            )));
        }
        // A free ordinal listed twice would be handed out twice.
        let mut listed = [false; BLOCK_SIZE];
        if let Some(twice) = unallocated
            .iter()
            .find(|&&o| std::mem::replace(&mut listed[o], true))
        {
            return Err(invalid(format!(
                "unallocated ordinal {twice} is listed twice"
            )));
        }
        Ok(AllocationBlock {
            cidr,
            affinity,
            strict_affinity: raw.strict_affinity,
            allocations,
            unallocated,
            attributes,
        })
    }

    /// The Go v1 JSON of the block.
    pub fn to_json(&self) -> Vec<u8> {
        let out = BlockOut {
            cidr: self.cidr.to_string(),
            affinity: &self.affinity,
            strict_affinity: self.strict_affinity,
            allocations: &self.allocations,
            unallocated: &self.unallocated,
            attributes: &self.attributes,
        };
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// The family of the block.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.cidr)
    }

    /// True when the block's affinity is `host:<node>`.
    pub fn is_affine_to(&self, node: &str) -> bool {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(AFFINITY_PREFIX))
            == Some(node)
    }

    /// True when `node` may allocate here: no strict affinity, or the block is `node`'s or has
    /// no owner.
    pub fn allows_borrowing_by(&self, node: &str) -> bool {
        !self.strict_affinity || self.affinity.is_none() || self.is_affine_to(node)
    }

    /// The address of an ordinal.
    pub fn address(&self, ordinal: usize) -> IpAddr {
        u128_to_addr(
            self.family(),
            addr_to_u128(self.cidr.network()) + ordinal as u128,
        )
    }

    /// The ordinal of an address, if the address is inside the block.
    pub fn ordinal(&self, addr: IpAddr) -> Option<usize> {
        if !self.cidr.contains(addr) {
            return None;
        }
        usize::try_from(addr_to_u128(addr) - addr_to_u128(self.cidr.network())).ok()
    }

    /// Number of free ordinals that may be handed out.
    pub fn free_count(&self) -> usize {
        self.unallocated.len()
    }

    /// True when no address is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// Allocates the first free ordinal for `handle`; `None` when the block is full.
    pub fn assign_next(&mut self, handle: &str) -> Option<IpAddr> {
        if self.unallocated.is_empty() {
            return None;
        }
        let ordinal = self.unallocated.remove(0);
        let attr = self.find_or_add_attribute(handle);
        self.allocations[ordinal] = Some(attr);
        Some(self.address(ordinal))
    }

    /// Allocates exactly `addr` for `handle`.
    pub fn assign(&mut self, addr: IpAddr, handle: &str) -> Result<()> {
        let ordinal = self.ordinal(addr).ok_or_else(|| {
            Error::internal(format!("address {addr} is not in block {}", self.cidr))
        })?;
        if self.allocations[ordinal].is_some() {
            return Err(Error::new(
                codes::IPAM_EXHAUSTED,
                format!("address {addr} is already assigned in block {}", self.cidr),
            ));
        }
        let Some(pos) = self.unallocated.iter().position(|&o| o == ordinal) else {
            return Err(Error::new(
                codes::IPAM_EXHAUSTED,
                format!("address {addr} is not assignable in block {}", self.cidr),
            ));
        };
        self.unallocated.remove(pos);
        let attr = self.find_or_add_attribute(handle);
        self.allocations[ordinal] = Some(attr);
        Ok(())
    }

    /// The handle holding `addr`, if it is allocated.
    pub fn handle_of(&self, addr: IpAddr) -> Option<&str> {
        let attr = self.allocations[self.ordinal(addr)?]?;
        self.attributes.get(attr)?.handle_id.as_deref()
    }

    /// Addresses allocated for `handle`.
    pub fn addresses_of(&self, handle: &str) -> Vec<IpAddr> {
        let attrs = self.attribute_indexes_of(handle);
        (0..BLOCK_SIZE)
            .filter(|&o| self.allocations[o].is_some_and(|a| attrs.contains(&a)))
            .map(|o| self.address(o))
            .collect()
    }

    /// Frees every address of `handle`; returns how many were freed.
    pub fn release_handle(&mut self, handle: &str) -> usize {
        let attrs = self.attribute_indexes_of(handle);
        let ordinals: Vec<usize> = (0..BLOCK_SIZE)
            .filter(|&o| self.allocations[o].is_some_and(|a| attrs.contains(&a)))
            .collect();
        self.free_ordinals(&ordinals);
        ordinals.len()
    }

    /// Frees `addr`; returns its handle, or `None` when it was not allocated.
    pub fn release(&mut self, addr: IpAddr) -> Option<Option<String>> {
        let ordinal = self.ordinal(addr)?;
        let attr = self.allocations[ordinal]?;
        let handle = self.attributes.get(attr).and_then(|a| a.handle_id.clone());
        self.free_ordinals(&[ordinal]);
        Some(handle)
    }

    /// Marks ordinals free (appended to `unallocated`) and drops attributes no longer used,
    /// renumbering the remaining ones.
    fn free_ordinals(&mut self, ordinals: &[usize]) {
        for &o in ordinals {
            if self.allocations[o].take().is_some() {
                self.unallocated.push(o);
            }
        }
        self.compact_attributes();
    }

    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for &a in self.allocations.iter().flatten() {
            used[a] = true;
        }
        let mut renumbered = vec![None; self.attributes.len()];
        let mut next = 0;
        for (old, in_use) in used.iter().enumerate() {
            if *in_use {
                renumbered[old] = Some(next);
                next += 1;
            }
        }
        let mut index = 0;
        self.attributes.retain(|_| {
            let keep = used[index];
            index += 1;
            keep
        });
        for slot in self.allocations.iter_mut() {
            if let Some(a) = slot {
                *slot = renumbered[*a];
            }
        }
    }

    fn attribute_indexes_of(&self, handle: &str) -> Vec<usize> {
        self.attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| a.handle_id.as_deref() == Some(handle))
            .map(|(i, _)| i)
            .collect()
    }

    fn find_or_add_attribute(&mut self, handle: &str) -> usize {
        let wanted = AllocationAttribute {
            handle_id: Some(handle.to_string()),
            secondary: None,
        };
        if let Some(i) = self.attributes.iter().position(|a| *a == wanted) {
            return i;
        }
        self.attributes.push(wanted);
        self.attributes.len() - 1
    }
}

/// The `affinity` value for a node: `host:<node>`.
pub fn affinity_value(node: &str) -> String {
    format!("{AFFINITY_PREFIX}{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn block_cidr_masks_to_block_prefix() {
        let cases = [
            ("10.0.0.0", "10.0.0.0/26"),
            ("10.0.0.63", "10.0.0.0/26"),
            ("10.0.0.64", "10.0.0.64/26"),
            ("192.168.255.255", "192.168.255.192/26"),
            ("fd00::1", "fd00::/122"),
            ("fd00::7f", "fd00::40/122"),
            ("fd00:1:2:3:4:5:6:ffff", "fd00:1:2:3:4:5:6:ffc0/122"),
        ];
        for (addr, block) in cases {
            assert_eq!(block_cidr_for(ip(addr)), net(block), "{addr}");
        }
    }

    #[test]
    fn ordinals_and_addresses_round_trip() {
        let block =
            AllocationBlock::new_affine(net("10.1.2.64/26"), "n1", false, net("10.1.0.0/16"));
        for o in [0, 1, 17, 63] {
            assert_eq!(block.ordinal(block.address(o)), Some(o));
        }
        assert_eq!(block.address(5), ip("10.1.2.69"));
        assert_eq!(block.ordinal(ip("10.1.2.128")), None);
        let v6 = AllocationBlock::new_affine(net("fd00::40/122"), "n1", false, net("fd00::/64"));
        assert_eq!(v6.address(63), ip("fd00::7f"));
    }

    #[test]
    fn new_block_has_all_ordinals_free_in_order() {
        let block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "node-1", true, net("10.0.0.0/24"));
        assert_eq!(block.unallocated, (0..64).collect::<Vec<_>>());
        assert_eq!(block.affinity.as_deref(), Some("host:node-1"));
        assert!(block.strict_affinity && block.is_empty() && block.is_affine_to("node-1"));
        assert!(!block.is_affine_to("node-2"));
    }

    #[test]
    fn pool_smaller_than_block_limits_usable_ordinals() {
        let block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n", false, net("10.0.0.16/28"));
        assert_eq!(block.unallocated, (16..32).collect::<Vec<_>>());
        assert!(block.is_empty());
    }

    #[test]
    fn assign_pops_front_release_appends_back() {
        let mut block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n", false, net("10.0.0.0/16"));
        assert_eq!(block.assign_next("a"), Some(ip("10.0.0.0")));
        assert_eq!(block.assign_next("b"), Some(ip("10.0.0.1")));
        assert_eq!(block.release(ip("10.0.0.0")), Some(Some("a".to_string())));
        assert_eq!(*block.unallocated.last().unwrap(), 0);
        assert_eq!(block.assign_next("c"), Some(ip("10.0.0.2")));
        assert_eq!(block.release(ip("10.0.0.9")), None);
    }

    #[test]
    fn release_compacts_and_renumbers_attributes() {
        let mut block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n", false, net("10.0.0.0/16"));
        block.assign_next("a");
        block.assign_next("b");
        block.assign_next("a");
        block.assign_next("c");
        assert_eq!(block.attributes.len(), 3);
        assert_eq!(block.allocations[..4], [Some(0), Some(1), Some(0), Some(2)]);
        assert_eq!(block.release_handle("a"), 2);
        assert_eq!(block.attributes.len(), 2);
        assert_eq!(block.attributes[0].handle_id.as_deref(), Some("b"));
        assert_eq!(block.allocations[..4], [None, Some(0), None, Some(1)]);
        assert_eq!(block.handle_of(ip("10.0.0.3")), Some("c"));
        assert_eq!(block.release_handle("a"), 0);
        assert_eq!(block.addresses_of("c"), vec![ip("10.0.0.3")]);
    }

    #[test]
    fn full_block_assigns_nothing() {
        let mut block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n", false, net("10.0.0.0/16"));
        for _ in 0..64 {
            assert!(block.assign_next("h").is_some());
        }
        assert_eq!(block.assign_next("h"), None);
        assert_eq!(block.attributes.len(), 1);
    }

    #[test]
    fn explicit_assign_refuses_taken_address() {
        let mut block =
            AllocationBlock::new_affine(net("10.0.0.0/26"), "n", false, net("10.0.0.0/16"));
        block.assign(ip("10.0.0.7"), "h").unwrap();
        assert!(!block.unallocated.contains(&7));
        let err = block.assign(ip("10.0.0.7"), "h2").unwrap_err();
        assert_eq!(err.code(), codes::IPAM_EXHAUSTED);
        assert!(err.msg().contains("10.0.0.7"), "{}", err.msg());
        assert!(block.assign(ip("10.0.1.7"), "h").is_err());
    }

    /// A block as libcalico-go v1 writes it, byte for byte.
    const GO_BLOCK: &str = concat!(
        r#"{"cidr":"192.168.10.0/26","affinity":"host:node-1","strictAffinity":false,"#,
        r#""allocations":[0,null,1,null,null,null,null,null,null,null,null,null,null,null,null,null,"#,
        r#"null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,"#,
        r#"null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,"#,
        r#"null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null],"#,
        r#""unallocated":[3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"#,
        r#"31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,1],"#,
        r#""attributes":[{"handle_id":"net1.3f6c","secondary":null},{"handle_id":"k8s.ns.pod","secondary":null}]}"#
    );

    #[test]
    fn go_block_json_round_trips_byte_for_byte() {
        let block = AllocationBlock::from_json("k", GO_BLOCK.as_bytes()).unwrap();
        assert_eq!(block.cidr, net("192.168.10.0/26"));
        assert_eq!(block.handle_of(ip("192.168.10.2")), Some("k8s.ns.pod"));
        assert_eq!(block.free_count(), 62);
        assert_eq!(String::from_utf8(block.to_json()).unwrap(), GO_BLOCK);
    }

    /// Calico v1 failure history, row 6: Go wrote `hostAffinity` where Python (and Calico's compat
    /// layer) read `affinity: "host:<node>"`, so each saw the other's blocks as unowned.
    #[test]
    fn block_affinity_is_written_as_affinity_host_not_host_affinity() {
        let block = AllocationBlock::new_affine(net("fd00::/122"), "n", false, net("fd00::/64"));
        let v: serde_json::Value = serde_json::from_slice(&block.to_json()).unwrap();
        assert_eq!(v["cidr"], "fd00::/122");
        assert_eq!(v["affinity"], "host:n");
        assert_eq!(v["strictAffinity"], false);
        assert_eq!(v["allocations"].as_array().unwrap().len(), 64);
        assert_eq!(v["unallocated"].as_array().unwrap().len(), 64);
        assert_eq!(v["attributes"], serde_json::json!([]));
        assert_eq!(v.as_object().unwrap().len(), 6);
    }

    #[test]
    fn legacy_block_shapes_are_read() {
        let alloc = serde_json::to_string(&vec![None::<usize>; 64]).unwrap();
        let python = format!(
            r#"{{"cidr":"10.0.0.0/26","affinity":"","strict_affinity":true,"allocations":{alloc},"unallocated":[0],"attributes":[]}}"#
        );
        let block = AllocationBlock::from_json("k", python.as_bytes()).unwrap();
        assert_eq!(block.affinity, None);
        assert!(block.strict_affinity);
        let old_go = format!(
            r#"{{"cidr":"10.0.0.0/26","hostAffinity":"n2","strictAffinity":false,"allocations":{alloc},"unallocated":[0],"attributes":null}}"#
        );
        let block = AllocationBlock::from_json("k", old_go.as_bytes()).unwrap();
        assert_eq!(block.affinity.as_deref(), Some("host:n2"));
        assert!(block.attributes.is_empty());
    }

    #[test]
    fn invalid_blocks_are_rejected_naming_the_key() {
        let alloc = serde_json::to_string(&vec![None::<usize>; 64]).unwrap();
        let cases = [
            r#"{"cidr":"10.0.0.0/24","affinity":null,"allocations":[],"unallocated":[],"attributes":[]}"#.to_string(),
            r#"{"cidr":"10.0.0.0/26","affinity":null,"allocations":[0],"unallocated":[],"attributes":[]}"#.to_string(),
            format!(r#"{{"cidr":"10.0.0.0/26","allocations":{alloc},"unallocated":[64],"attributes":[]}}"#),
            "not json".to_string(),
        ];
        for case in cases {
            let err = AllocationBlock::from_json("/calico/x", case.as_bytes()).unwrap_err();
            assert!(err.msg().contains("/calico/x"), "{}", err.msg());
        }
    }
    /// Found by the `ipam_block` fuzz target: a free list naming ordinal 53 twice made
    /// `assign_next` hand out the same address to two containers.
    #[test]
    fn free_ordinal_listed_twice_is_refused_not_handed_out_twice() {
        let alloc = serde_json::to_string(&vec![None::<usize>; 64]).unwrap();
        let json = format!(
            r#"{{"cidr":"10.0.0.0/26","allocations":{alloc},"unallocated":[52,53,54,53],"attributes":[]}}"#
        );
        let err = AllocationBlock::from_json("/calico/x", json.as_bytes()).unwrap_err();
        assert_eq!(err.code(), codes::DATASTORE);
        assert!(
            err.msg().contains("/calico/x") && err.msg().contains("ordinal 53 is listed twice"),
            "{}",
            err.msg()
        );
    }
}
