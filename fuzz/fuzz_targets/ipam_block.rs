//! Allocation block JSON as found in etcd: decoding never panics, an accepted block encodes
//! and decodes to itself, and assigning and releasing in it keep it valid and never hand out
//! an address twice.
#![no_main]

use std::collections::HashSet;

use common::ipam::{AllocationBlock, BLOCK_SIZE};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "/calico/ipam/v2/assignment/ipv4/block/fuzz";

fn round_trip(block: &AllocationBlock) {
    let json = block.to_json();
    let again = AllocationBlock::from_json(KEY, &json)
        .unwrap_or_else(|e| panic!("encoded block does not decode: {e:?}"));
    assert_eq!(&again, block);
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut block) = AllocationBlock::from_json(KEY, data) else {
        return;
    };
    round_trip(&block);
    for ordinal in 0..BLOCK_SIZE {
        assert_eq!(block.ordinal(block.address(ordinal)), Some(ordinal));
    }
    let handle = "fuzz-handle";
    if !block.addresses_of(handle).is_empty() {
        return;
    }
    let free = block.free_count();
    let mut assigned = HashSet::new();
    while let Some(addr) = block.assign_next(handle) {
        assert!(assigned.insert(addr), "{addr} handed out twice");
        assert_eq!(block.handle_of(addr), Some(handle));
    }
    assert_eq!(assigned.len(), free);
    round_trip(&block);
    if let Some(&addr) = assigned.iter().next() {
        assert_eq!(block.release(addr), Some(Some(handle.to_string())));
        assert_eq!(block.handle_of(addr), None);
        block.assign(addr, handle).expect("a released address is assignable");
    }
    assert_eq!(block.release_handle(handle), assigned.len());
    assert_eq!(block.free_count(), free);
    round_trip(&block);
});
