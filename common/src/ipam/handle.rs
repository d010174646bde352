//! The allocation handle: `/calico/ipam/v2/handle/<id>` counts, per block, how many addresses
//! the handle holds there, so that a release needs to read only those blocks. Handles written
//! by an ADD of this plugin also record the node and the network they belong to, which is what
//! GC selects them by.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, codes};

/// One handle's per-block address counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocationHandle {
    /// The handle id (the last segment of the key).
    pub id: String,
    /// Block CIDR → number of addresses the handle holds in it.
    pub blocks: BTreeMap<IpNetwork, u64>,
    /// The node whose ADD last assigned an address under the handle; `None` for handles
    /// written by other tools or older versions.
    pub node: Option<String>,
    /// The network (config `name`) the handle belongs to; `None` as for `node`.
    pub network: Option<String>,
}

/// The stored JSON. libcalico-go writes only `block`; pycalico writes and requires `id` too, so
/// both are written and only `block` is required on read. `node` and `network` are this
/// plugin's additions: libcalico-go and pycalico ignore fields they do not know.
#[derive(Serialize, Deserialize)]
struct HandleJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    block: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<String>,
}

impl AllocationHandle {
    /// An empty handle.
    pub fn new(id: &str) -> Self {
        AllocationHandle {
            id: id.to_string(),
            blocks: BTreeMap::new(),
            node: None,
            network: None,
        }
    }

    /// Decodes the handle JSON read from etcd key `key`.
    pub fn from_json(id: &str, key: &str, bytes: &[u8]) -> Result<Self> {
        let raw: HandleJson = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                codes::DATASTORE,
                format!("decode handle at etcd key {key}: {e}"),
            )
        })?;
        let mut blocks = BTreeMap::new();
        for (cidr, count) in raw.block.unwrap_or_default() {
            let net: IpNetwork = cidr.parse().map_err(|e| {
                Error::new(
                    codes::DATASTORE,
                    format!("invalid block {cidr:?} in handle at etcd key {key}: {e}"),
                )
            })?;
            // Two spellings of one CIDR (`::1/128`, `0::1/128`) add up; counts written by
            // another tool may be anything, and must not overflow.
            let total: &mut u64 = blocks.entry(net).or_insert(0);
            *total = total.saturating_add(count);
        }
        Ok(AllocationHandle {
            id: id.to_string(),
            blocks,
            node: raw.node,
            network: raw.network,
        })
    }

    /// The JSON to store: `{"id":…,"block":{"<cidr>":<count>},"node":…,"network":…}`, the
    /// last two only when known.
    pub fn to_json(&self) -> Vec<u8> {
        let block = self
            .blocks
            .iter()
            .map(|(net, n)| (net.to_string(), *n))
            .collect();
        let raw = HandleJson {
            id: Some(self.id.clone()),
            block: Some(block),
            node: self.node.clone(),
            network: self.network.clone(),
        };
        // A map of strings to integers always serialises.
        serde_json::to_vec(&raw).unwrap_or_default()
    }

    /// Records `n` more addresses in `block`.
    pub fn increment(&mut self, block: IpNetwork, n: u64) {
        let count = self.blocks.entry(block).or_insert(0);
        *count = count.saturating_add(n);
    }

    /// Records `n` fewer addresses in `block`, forgetting the block at zero. A count that would
    /// go negative (another writer's inconsistency) is clamped to zero.
    pub fn decrement(&mut self, block: IpNetwork, n: u64) {
        if let Some(count) = self.blocks.get_mut(&block) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.blocks.remove(&block);
            }
        }
    }

    /// Total addresses recorded.
    pub fn total(&self) -> u64 {
        self.blocks
            .values()
            .fold(0, |total, &count| total.saturating_add(count))
    }

    /// True when the handle holds nothing and its key should be deleted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// True when the handle records that it belongs to `network` on `node`. Handles that
    /// record neither (written by other tools) belong to nobody here.
    pub fn belongs_to(&self, node: &str, network: &str) -> bool {
        self.node.as_deref() == Some(node) && self.network.as_deref() == Some(network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn go_handle_is_read_and_written_with_id() {
        let h = AllocationHandle::from_json("net1.abc", "k", br#"{"block":{"10.0.0.0/26":1}}"#)
            .unwrap();
        assert_eq!(h.blocks[&net("10.0.0.0/26")], 1);
        assert_eq!(
            h.to_json(),
            br#"{"id":"net1.abc","block":{"10.0.0.0/26":1}}"#.to_vec()
        );
        let python =
            AllocationHandle::from_json("x", "k", br#"{"id":"x","block":{"fd00::/122":2}}"#)
                .unwrap();
        assert_eq!(python.total(), 2);
        assert!(
            AllocationHandle::from_json("x", "k", br#"{"block":null}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn node_and_network_are_kept_through_a_rewrite() {
        let stored = br#"{"id":"net.1.c","block":{"10.0.0.0/26":2},"node":"n1","network":"net.1"}"#;
        let mut h = AllocationHandle::from_json("net.1.c", "k", stored).unwrap();
        assert!(h.belongs_to("n1", "net.1"));
        assert!(!h.belongs_to("n1", "net") && !h.belongs_to("n2", "net.1"));
        h.decrement(net("10.0.0.0/26"), 1);
        assert_eq!(
            h.to_json(),
            br#"{"id":"net.1.c","block":{"10.0.0.0/26":1},"node":"n1","network":"net.1"}"#.to_vec()
        );
        let go = AllocationHandle::from_json("x", "k", br#"{"block":{}}"#).unwrap();
        assert!(go.node.is_none() && go.network.is_none() && !go.belongs_to("n1", "net"));
    }

    #[test]
    fn counts_increment_and_decrement_to_removal() {
        let mut h = AllocationHandle::new("h");
        h.increment(net("10.0.0.0/26"), 1);
        h.increment(net("10.0.0.0/26"), 1);
        h.increment(net("fd00::/122"), 1);
        assert_eq!(h.total(), 3);
        h.decrement(net("10.0.0.0/26"), 2);
        h.decrement(net("fd00::/122"), 5);
        h.decrement(net("10.9.0.0/26"), 1);
        assert!(h.is_empty());
    }

    #[test]
    fn bad_handle_json_names_the_key() {
        for bad in [&b"\"text\""[..], br#"{"block":{"nonsense":1}}"#] {
            let err =
                AllocationHandle::from_json("h", "/calico/ipam/v2/handle/h", bad).unwrap_err();
            assert!(
                err.msg().contains("/calico/ipam/v2/handle/h"),
                "{}",
                err.msg()
            );
        }
    }

    /// The `ipam_handle` fuzz target panicked on these: counts near `u64::MAX` (a corrupt or
    /// hostile handle) overflowed when one CIDR was spelled twice, and when they were summed.
    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let cases = [
            r#"{"block":{"::1/128":18446744073709551615,"0::1/128":1}}"#,
            r#"{"block":{"10.0.0.0/26":18446744073709551615,"10.0.0.64/26":1}}"#,
        ];
        for json in cases {
            let mut handle = AllocationHandle::from_json("h", "/k", json.as_bytes()).unwrap();
            assert_eq!(handle.total(), u64::MAX, "{json}");
            let first = *handle.blocks.keys().next().unwrap();
            handle.increment(first, 1);
            assert_eq!(handle.blocks[&first], u64::MAX, "{json}");
        }
    }
}
