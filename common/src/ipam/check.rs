//! CHECK of an attachment's addresses: the handle must hold exactly the addresses the runtime
//! was given, no more and no fewer.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::block::{AllocationBlock, block_cidr_for};
use super::handle::AllocationHandle;
use super::store::{Store, read_many};
use crate::datastore::keys;
use crate::error::Result;

/// Compares what `handle_id` holds with `expected`; every difference is one message naming the
/// handle and the address or block. An empty list means they agree.
///
/// The handle and the blocks of the expected addresses are read together (one request); the
/// handle's other blocks only when it has any (a second request, only on a mismatch).
pub fn handle_mismatches(
    store: &dyn Store,
    handle_id: &str,
    expected: &[IpAddr],
) -> Result<Vec<String>> {
    let handle_key = keys::handle(handle_id);
    let expected: BTreeSet<IpAddr> = expected.iter().copied().collect();
    let mut cidrs: BTreeSet<IpNetwork> = expected.iter().map(|a| block_cidr_for(*a)).collect();
    let mut wanted = vec![handle_key.clone()];
    wanted.extend(cidrs.iter().map(keys::block));
    let mut entries = read_many(store, &wanted)?.into_iter();
    let Some(stored) = entries.next().flatten() else {
        return Ok(vec![format!(
            "handle {handle_id} does not exist (etcd key {handle_key}): no address is held for the attachment"
        )]);
    };
    let handle = AllocationHandle::from_json(handle_id, &handle_key, &stored.value)?;
    let mut blocks = Vec::new();
    for entry in entries.flatten() {
        blocks.push(AllocationBlock::from_json(&entry.key, &entry.value)?);
    }
    let unread: Vec<IpNetwork> = handle
        .blocks
        .keys()
        .filter(|c| !cidrs.contains(c))
        .copied()
        .collect();
    if !unread.is_empty() {
        let unread_keys: Vec<String> = unread.iter().map(keys::block).collect();
        for entry in read_many(store, &unread_keys)?.into_iter().flatten() {
            blocks.push(AllocationBlock::from_json(&entry.key, &entry.value)?);
        }
        cidrs.extend(unread);
    }
    let mut found = count_mismatches(&handle, &blocks);
    let held: BTreeSet<IpAddr> = blocks
        .iter()
        .flat_map(|b| b.addresses_of(handle_id))
        .collect();
    for addr in expected.difference(&held) {
        found.push(format!("address {addr} is not held by handle {handle_id}"));
    }
    for addr in held.difference(&expected) {
        found.push(format!(
            "handle {handle_id} holds address {addr}, which prevResult does not list"
        ));
    }
    Ok(found)
}

/// The handle's per-block counts against what the blocks hold for it.
fn count_mismatches(handle: &AllocationHandle, blocks: &[AllocationBlock]) -> Vec<String> {
    let mut found = Vec::new();
    for (cidr, &count) in &handle.blocks {
        let held = blocks
            .iter()
            .find(|b| b.cidr == *cidr)
            .map(|b| b.addresses_of(&handle.id).len());
        match held {
            None => found.push(format!(
                "handle {} counts {count} addresses in block {cidr}, which does not exist",
                handle.id
            )),
            Some(n) if n as u64 != count => found.push(format!(
                "handle {} counts {count} addresses in block {cidr}, which holds {n} for it",
                handle.id
            )),
            Some(_) => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::store::MemoryStore;
    use crate::ipam::{Allocator, AutoAssign};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn store_with_pool() -> MemoryStore {
        MemoryStore::with_pools(&["10.7.0.0/16"])
    }

    fn assign(store: &MemoryStore, handle: &str) -> IpAddr {
        let req = AutoAssign {
            handle,
            ipv4: true,
            ipv6: false,
            ipv4_pools: &[],
            ipv6_pools: &[],
        };
        Allocator::new(store, "n1").auto_assign(&req).unwrap()[0]
    }

    #[test]
    fn a_handle_holding_exactly_the_addresses_passes_in_one_request() {
        let store = store_with_pool();
        let addr = assign(&store, "net.c1");
        let before = store.requests_made();
        assert!(
            handle_mismatches(&store, "net.c1", &[addr])
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.requests_made() - before, 1);
    }

    #[test]
    fn every_difference_is_named() {
        let store = store_with_pool();
        let first = assign(&store, "net.c1");
        let second = assign(&store, "net.c1");
        let other = assign(&store, "net.c2");
        let cases: [(&[IpAddr], &[String]); 3] = [
            (
                &[first],
                &[format!(
                    "handle net.c1 holds address {second}, which prevResult does not list"
                )],
            ),
            (
                &[first, second, other],
                &[format!("address {other} is not held by handle net.c1")],
            ),
            (
                &[ip("10.99.0.1")],
                &[
                    "address 10.99.0.1 is not held by handle net.c1".to_string(),
                    format!("handle net.c1 holds address {first}, which prevResult does not list"),
                    format!("handle net.c1 holds address {second}, which prevResult does not list"),
                ],
            ),
        ];
        for (expected, want) in cases {
            let got = handle_mismatches(&store, "net.c1", expected).unwrap();
            assert_eq!(got, want, "expected {expected:?}");
        }
    }

    #[test]
    fn a_missing_handle_is_one_mismatch() {
        let store = store_with_pool();
        let got = handle_mismatches(&store, "net.gone", &[ip("10.7.0.1")]).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("handle net.gone does not exist"), "{got:?}");
        assert!(
            got[0].contains("/calico/ipam/v2/handle/net.gone"),
            "{got:?}"
        );
    }

    #[test]
    fn a_handle_counting_a_vanished_block_is_reported() {
        let store = store_with_pool();
        let addr = assign(&store, "net.c1");
        let vanished: IpNetwork = if block_cidr_for(addr).network() == ip("10.7.9.0") {
            "10.7.10.0/26".parse().unwrap()
        } else {
            "10.7.9.0/26".parse().unwrap()
        };
        let mut handle = AllocationHandle::new("net.c1");
        handle.increment(block_cidr_for(addr), 1);
        handle.increment(vanished, 2);
        store.put(&keys::handle("net.c1"), &handle.to_json());
        let got = handle_mismatches(&store, "net.c1", &[addr]).unwrap();
        assert_eq!(
            got,
            [format!(
                "handle net.c1 counts 2 addresses in block {vanished}, which does not exist"
            )]
        );
    }
}
