//! Allocation handle JSON as found in etcd: decoding never panics, an accepted handle encodes
//! and decodes to itself, and counting never overflows.
#![no_main]

use common::ipam::AllocationHandle;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "/calico/ipam/v2/handle/fuzz";

fuzz_target!(|data: &[u8]| {
    let Ok(mut handle) = AllocationHandle::from_json("fuzz", KEY, data) else {
        return;
    };
    let again = AllocationHandle::from_json("fuzz", KEY, &handle.to_json())
        .unwrap_or_else(|e| panic!("encoded handle does not decode: {e:?}"));
    assert_eq!(again, handle);
    let total = handle.total();
    let blocks: Vec<_> = handle.blocks.keys().copied().collect();
    for block in blocks {
        handle.increment(block, 1);
        handle.decrement(block, 1);
    }
    assert!(handle.total() <= total);
});
