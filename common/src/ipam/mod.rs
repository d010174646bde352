//! Calico IP address management (`calico-ipam`), compatible with the etcd data of Calico v1
//! (libcalico-go v1 and pycalico): pools, 64-address allocation blocks with node affinity,
//! allocation handles and the global IPAM config.
//!
//! Every change is one compare-and-swap transaction that writes the block and the handle
//! together, so the two can never disagree.

pub mod allocator;
pub mod block;
pub mod check;
pub mod gc;
pub mod handle;
pub mod hint;
pub mod pool;
pub mod status;
pub mod store;

pub use allocator::{Allocator, AutoAssign, BlockWalk};
pub use block::{AllocationAttribute, AllocationBlock, BLOCK_SIZE};
pub use check::handle_mismatches;
pub use gc::{GcOutcome, GcScope, release_unlisted_handles};
pub use handle::AllocationHandle;
pub use hint::BlockHints;
pub use pool::{
    IpPool, IpamConfig, PoolSpec, StoredPool, add_pool, list_all_pools, list_pools, remove_pool,
};
pub use status::{RoomRequest, address_shortages};
pub use store::{MemoryStore, Store};

/// The handle id of an ADD since Calico v1.11.2: `<network name>.<container id>`.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}
