//! Calico IP address management (`calico-ipam`), compatible with the etcd data of Calico v1
//! (libcalico-go v1 and pycalico): pools, 64-address allocation blocks with node affinity,
//! allocation handles and the global IPAM config.
//!
//! Every change is one compare-and-swap transaction that writes the block and the handle
//! together, so the two can never disagree.

pub mod allocator;
pub mod audit;
pub mod block;
pub mod check;
pub mod gc;
pub mod handle;
pub mod hint;
pub mod node_lock;
pub mod pool;
pub mod preread;
pub mod status;
pub mod store;
pub mod verbs;

pub use allocator::{Allocator, AutoAssign, BlockWalk};
pub use block::{AllocationAttribute, AllocationBlock, BLOCK_SIZE};
pub use check::handle_mismatches;
pub use gc::{GcOutcome, GcScope, release_unlisted_handles, release_unlisted_idle_handles};
pub use handle::AllocationHandle;
pub use hint::BlockHints;
pub use pool::{
    IpPool, IpamConfig, PoolSpec, StoredPool, add_pool, list_all_pools, list_pools, remove_pool,
};
pub use status::{RoomRequest, address_shortages};
pub use store::{MemoryStore, Store};

/// The interface name whose handle keeps Calico's own form, so that allocations made by Calico
/// and by earlier versions of this plugin stay released by DEL.
pub const PRIMARY_IFNAME: &str = "eth0";

/// Separates the interface name from the container id in the handle of a further interface.
/// Neither a container id (`[a-zA-Z0-9_.-]`) nor an interface name (the kernel refuses `:`)
/// can hold it, so no two attachments share a handle.
const IFNAME_SEPARATOR: char = ':';

/// The handle id of an attachment: `<network name>.<container id>` (Calico's form since
/// v1.11.2) for [`PRIMARY_IFNAME`], `<network name>.<container id>:<ifname>` for any other
/// interface, so that DEL of one interface never releases another's addresses.
pub fn handle_id(network: &str, container_id: &str, ifname: &str) -> String {
    if ifname == PRIMARY_IFNAME {
        format!("{network}.{container_id}")
    } else {
        format!("{network}.{container_id}{IFNAME_SEPARATOR}{ifname}")
    }
}

/// The attachment a handle id of `network` names: its container id and, for a further
/// interface, its interface name (`None` for Calico's form, which may belong to any interface
/// name of a container set up before handles carried one). `None` for another network's id.
pub fn parse_handle_id<'a>(network: &str, id: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = id.strip_prefix(network)?.strip_prefix('.')?;
    Some(match rest.split_once(IFNAME_SEPARATOR) {
        Some((container_id, ifname)) => (container_id, Some(ifname)),
        None => (rest, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interface_has_its_own_handle() {
        assert_eq!(handle_id("net", "c1", "eth0"), "net.c1");
        assert_eq!(handle_id("net", "c1", "eth1"), "net.c1:eth1");
        // A container id with dots cannot be mistaken for another container's interface.
        assert_ne!(
            handle_id("net", "c1.eth1", "eth0"),
            handle_id("net", "c1", "eth1")
        );
        assert_eq!(parse_handle_id("net", "net.c1"), Some(("c1", None)));
        assert_eq!(
            parse_handle_id("net", "net.c1:eth1"),
            Some(("c1", Some("eth1")))
        );
        assert_eq!(parse_handle_id("net", "other.c1"), None);
        assert_eq!(parse_handle_id("net", "netx.c1"), None);
    }
}
