use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Condition, Txn, TxnOutcome, Write};
use crate::error::{Code, codes};
use crate::ipam::block::{AllocationBlock, addr_to_u128};
use crate::ipam::handle::AllocationHandle;
use crate::ipam::pool::{IpPool, PoolSpec, add_pool};
use crate::ipam::store::{MemoryStore, TxnHook};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn store_with_pools(pools: &[&str]) -> MemoryStore {
    MemoryStore::with_pools(pools)
}

fn v4(handle: &str) -> AutoAssign<'_> {
    AutoAssign {
        handle,
        ipv4: true,
        ipv6: false,
        ipv4_pools: &[],
        ipv6_pools: &[],
    }
}

fn blocks(store: &MemoryStore) -> Vec<AllocationBlock> {
    store
        .dump()
        .iter()
        .filter(|e| keys::parse_block(&e.key).is_some())
        .map(|e| AllocationBlock::from_json(&e.key, &e.value).unwrap())
        .collect()
}

fn handle_total(store: &MemoryStore, id: &str) -> u64 {
    store.get(&keys::handle(id)).unwrap().map_or(0, |e| {
        AllocationHandle::from_json(id, &e.key, &e.value)
            .unwrap()
            .total()
    })
}

/// Every allocation in every block must be counted by its handle, and vice versa.
fn assert_handles_match_blocks(store: &MemoryStore) {
    let mut from_blocks = std::collections::BTreeMap::<String, u64>::new();
    for block in blocks(store) {
        for attr in block.allocations.iter().flatten() {
            let handle = block.attributes[*attr].handle_id.clone().unwrap();
            *from_blocks.entry(handle).or_default() += 1;
        }
    }
    let mut from_handles = std::collections::BTreeMap::new();
    for entry in store.dump() {
        if let Some(id) = keys::parse_handle(&entry.key) {
            let handle = AllocationHandle::from_json(id, &entry.key, &entry.value).unwrap();
            from_handles.insert(id.to_string(), handle.total());
        }
    }
    assert_eq!(from_blocks, from_handles);
}

#[test]
fn first_assignment_claims_a_block_then_reuses_it_in_three_requests() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let ipam = Allocator::new(&store, "node-1");
    let first = ipam.auto_assign(&v4("net.a")).unwrap();
    let claimed = blocks(&store);
    assert_eq!(claimed.len(), 1);
    assert_eq!(first, vec![claimed[0].address(0)]);
    assert!(claimed[0].is_affine_to("node-1"));
    let affinity = store
        .get(&keys::host_affinity("node-1", &claimed[0].cidr))
        .unwrap()
        .unwrap();
    assert_eq!(affinity.value, b"{}");

    let before = store.requests_made();
    let second = ipam.auto_assign(&v4("net.b")).unwrap();
    assert_eq!(
        store.requests_made() - before,
        3,
        "list affinities, read block+handle, commit"
    );
    assert_eq!(second, vec![claimed[0].address(1)]);
    assert_eq!(blocks(&store).len(), 1);
    assert_eq!(handle_total(&store, "net.a"), 1);
    assert_handles_match_blocks(&store);
}

#[test]
fn families_follow_the_request() {
    let store = store_with_pools(&["10.0.0.0/16", "fd00::/64"]);
    let ipam = Allocator::new(&store, "n");
    let cases = [(true, false, "4"), (false, true, "6"), (true, true, "46")];
    for (i, (ipv4, ipv6, want)) in cases.into_iter().enumerate() {
        let handle = format!("net.{i}");
        let req = AutoAssign {
            handle: &handle,
            ipv4,
            ipv6,
            ipv4_pools: &[],
            ipv6_pools: &[],
        };
        let got: String = ipam
            .auto_assign(&req)
            .unwrap()
            .iter()
            .map(|a| if a.is_ipv4() { '4' } else { '6' })
            .collect();
        assert_eq!(got, want);
    }
    let neither = AutoAssign {
        handle: "x",
        ipv4: false,
        ipv6: false,
        ipv4_pools: &[],
        ipv6_pools: &[],
    };
    assert_eq!(
        ipam.auto_assign(&neither).unwrap_err().code(),
        Code::InvalidConfig
    );
    assert_handles_match_blocks(&store);
}

#[test]
fn requested_pools_are_honoured_and_must_exist() {
    let store = store_with_pools(&["10.0.0.0/16", "10.1.0.0/16"]);
    let ipam = Allocator::new(&store, "n");
    let wanted = [net("10.1.0.0/16")];
    for i in 0..3 {
        let handle = format!("h{i}");
        let req = AutoAssign {
            ipv4_pools: &wanted,
            ..v4(&handle)
        };
        let addr = ipam.auto_assign(&req).unwrap()[0];
        assert!(net("10.1.0.0/16").contains(addr), "{addr}");
    }
    let missing = [net("10.1.0.0/16"), net("10.9.0.0/16")];
    let err = ipam
        .auto_assign(&AutoAssign {
            ipv4_pools: &missing,
            ..v4("h9")
        })
        .unwrap_err();
    assert!(err.msg().contains("10.9.0.0/16"), "{}", err.msg());
    assert_eq!(handle_total(&store, "h9"), 0);
}

#[test]
fn no_pool_is_a_clear_error() {
    let store = MemoryStore::new();
    let err = Allocator::new(&store, "n")
        .auto_assign(&v4("h"))
        .unwrap_err();
    assert_eq!(err.code(), codes::IPAM_EXHAUSTED);
    assert!(err.msg().contains("no enabled ipv4 pool"), "{}", err.msg());
}

#[test]
fn exhausted_pool_names_the_pool_and_writes_nothing() {
    let store = store_with_pools(&["10.0.0.0/26"]);
    let ipam = Allocator::new(&store, "n");
    let mut seen = BTreeSet::new();
    for i in 0..64 {
        assert!(seen.insert(ipam.auto_assign(&v4(&format!("h{i}"))).unwrap()[0]));
    }
    let before = store.dump();
    let err = ipam.auto_assign(&v4("h64")).unwrap_err();
    assert_eq!(err.code(), codes::IPAM_EXHAUSTED);
    assert!(err.msg().contains("10.0.0.0/26"), "{}", err.msg());
    assert_eq!(store.dump(), before);
}

#[test]
fn failed_ipv6_releases_the_ipv4_address() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let ipam = Allocator::new(&store, "n");
    let req = AutoAssign {
        ipv6: true,
        ..v4("net.dual")
    };
    let err = ipam.auto_assign(&req).unwrap_err();
    assert!(err.msg().contains("ipv6"), "{}", err.msg());
    assert!(store.get(&keys::handle("net.dual")).unwrap().is_none());
    let remaining = blocks(&store);
    assert!(remaining.iter().all(AllocationBlock::is_empty));
    // The released address goes to the back of the queue.
    assert_eq!(remaining[0].unallocated.last(), Some(&0));
}

#[test]
fn explicit_address_is_assigned_once_and_only_inside_enabled_pools() {
    let store = store_with_pools(&["10.0.0.0/24"]);
    add_pool(
        &store,
        &PoolSpec {
            cidr: net("10.5.0.0/24"),
            disabled: true,
            ipip: false,
            nat_outgoing: false,
        },
    )
    .unwrap();
    let ipam = Allocator::new(&store, "n");
    ipam.assign_ip("net.a", ip("10.0.0.77")).unwrap();
    let block = &blocks(&store)[0];
    assert_eq!(block.cidr, net("10.0.0.64/26"));
    assert_eq!(block.handle_of(ip("10.0.0.77")), Some("net.a"));
    assert!(block.is_affine_to("n"));

    let taken = ipam.assign_ip("net.b", ip("10.0.0.77")).unwrap_err();
    assert_eq!(taken.code(), codes::IPAM_EXHAUSTED);
    assert!(taken.msg().contains("10.0.0.77"), "{}", taken.msg());
    for outside in ["10.0.1.1", "10.5.0.1", "fd00::1"] {
        let err = ipam.assign_ip("net.c", ip(outside)).unwrap_err();
        assert!(
            err.msg().contains(outside) && err.msg().contains("pool"),
            "{}",
            err.msg()
        );
    }
    // The next automatic address in the same block skips the taken one.
    ipam.assign_ip("net.d", ip("10.0.0.64")).unwrap();
    assert_eq!(
        ipam.auto_assign(&v4("net.e")).unwrap(),
        vec![ip("10.0.0.65")]
    );
    assert_handles_match_blocks(&store);
}

#[test]
fn release_handles_frees_compacts_and_deletes() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let ipam = Allocator::new(&store, "n");
    let a = ipam.auto_assign(&v4("net.a")).unwrap()[0];
    ipam.auto_assign(&v4("net.b")).unwrap();
    ipam.auto_assign(&v4("legacy")).unwrap();
    assert_eq!(ipam.release_handles(&["net.a", "missing"]).unwrap(), 1);
    let block = &blocks(&store)[0];
    assert_eq!(block.attributes.len(), 2);
    assert_eq!(block.handle_of(a), None);
    assert_eq!(block.unallocated.last(), Some(&0));
    assert_eq!(ipam.release_handles(&["net.b", "legacy"]).unwrap(), 2);
    let block = &blocks(&store)[0];
    assert!(
        block.is_empty() && block.attributes.is_empty(),
        "affine block stays, empty"
    );

    let before = store.requests_made();
    assert_eq!(ipam.release_handles(&["net.a", "legacy"]).unwrap(), 0);
    assert_eq!(
        store.requests_made() - before,
        1,
        "nothing held costs one read"
    );
    assert_handles_match_blocks(&store);
}

#[test]
fn empty_block_without_affinity_is_deleted_on_release() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let ipam = Allocator::new(&store, "n");
    ipam.auto_assign(&v4("net.a")).unwrap();
    let mut block = blocks(&store).remove(0);
    block.affinity = None;
    store.put(&keys::block(&block.cidr), &block.to_json());
    ipam.release_handles(&["net.a"]).unwrap();
    assert!(blocks(&store).is_empty());
}

#[test]
fn other_nodes_borrow_unless_strict_affinity() {
    let store = store_with_pools(&["10.0.0.0/26"]);
    let owner = Allocator::new(&store, "owner");
    owner.auto_assign(&v4("h0")).unwrap();
    let borrowed = Allocator::new(&store, "other")
        .auto_assign(&v4("h1"))
        .unwrap()[0];
    assert_eq!(borrowed, ip("10.0.0.1"));
    assert!(
        store
            .list_keys(&keys::host_affinities_prefix("other", IpFamily::V4))
            .unwrap()
            .is_empty()
    );

    store.put(
        keys::IPAM_CONFIG,
        br#"{"strict_affinity":true,"auto_allocate_blocks":true}"#,
    );
    let err = Allocator::new(&store, "other")
        .auto_assign(&v4("h2"))
        .unwrap_err();
    assert_eq!(err.code(), codes::IPAM_EXHAUSTED);
    assert_handles_match_blocks(&store);
}

#[test]
fn pool_smaller_than_a_block_hands_out_only_its_addresses() {
    let store = MemoryStore::new();
    let pool = IpPool::from_spec(&PoolSpec {
        cidr: net("10.0.0.16/28"),
        disabled: false,
        ipip: false,
        nat_outgoing: false,
    });
    store.put(&keys::pool(&pool.cidr), &pool.to_json());
    let ipam = Allocator::new(&store, "n");
    for i in 0..16 {
        let addr = ipam.auto_assign(&v4(&format!("h{i}"))).unwrap()[0];
        assert!(pool.cidr.contains(addr), "{addr}");
    }
    assert!(ipam.auto_assign(&v4("h16")).is_err());
    assert!(ipam.assign_ip("x", ip("10.0.0.40")).is_err());
    assert_eq!(blocks(&store).len(), 1);
}

/// Calico v1 failure history, row 10: every host scanned each pool from its first block (claim
/// contention), and the first randomised walk could miss a block.
#[test]
fn nodes_start_claiming_at_different_blocks_and_skip_none() {
    let pool = net("10.0.0.0/22");
    let a: Vec<IpNetwork> = BlockWalk::new(pool, "node-a").unwrap().collect();
    assert_eq!(a.len(), 16);
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 16);
    assert!(
        a.iter()
            .all(|b| pool.contains(b.network()) && b.prefix() == 26)
    );
    let again: Vec<IpNetwork> = BlockWalk::new(pool, "node-a").unwrap().collect();
    assert_eq!(a, again, "deterministic per node");
    let walk = BlockWalk::new(pool, "node-a").unwrap();
    for (i, b) in a.iter().enumerate() {
        assert_eq!(walk.position_of(*b), i as u128);
    }
    let starts: BTreeSet<IpNetwork> = (0..8)
        .map(|i| {
            BlockWalk::new(pool, &format!("node-{i}"))
                .unwrap()
                .next()
                .unwrap()
        })
        .collect();
    assert!(
        starts.len() > 1,
        "different nodes start at different blocks"
    );
    let huge = BlockWalk::new(net("fd00::/48"), "n")
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(huge.prefix(), 122);
}

/// Eight threads of node-1 each assign one IPv4 address `per_thread` times at once, round `i`
/// of thread `t` under the handle `handle(t, i)`; returns every address handed out.
fn assign_from_eight_threads(
    store: &MemoryStore,
    per_thread: usize,
    handle: impl Fn(usize, usize) -> String + Sync,
) -> Vec<IpAddr> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let handle = &handle;
                s.spawn(move || {
                    let ipam = Allocator::new(store, "node-1");
                    (0..per_thread)
                        .map(|i| ipam.auto_assign(&v4(&handle(t, i))).unwrap()[0])
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// Calico v1 failure history, row 8: blocks were written without compare-and-swap, so concurrent
/// assignments handed out one address twice.
#[test]
fn concurrent_assignments_never_hand_out_one_address_twice() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let addrs = assign_from_eight_threads(&store, 20, |t, i| format!("h{t}.{i}"));
    assert_eq!(addrs.iter().collect::<BTreeSet<_>>().len(), 160);
    assert_eq!(blocks(&store).len(), 3, "160 addresses fit in 3 blocks");
    assert_handles_match_blocks(&store);
}

#[test]
fn concurrent_assignments_under_one_handle_never_share_an_address() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let addrs = assign_from_eight_threads(&store, 10, |_, _| "same".to_string());
    assert_eq!(addrs.iter().collect::<BTreeSet<_>>().len(), 80, "{addrs:?}");
    assert_eq!(handle_total(&store, "same"), 80);
    assert_handles_match_blocks(&store);
}

/// Changes the block a transaction is conditional on right before it runs, like a faster
/// writer on another node.
fn always_raced(store: MemoryStore) -> TxnHook {
    TxnHook(store, |store, txn| {
        if let (Some(Condition::Revision(key, _)), false) =
            (txn.conditions.first(), txn.writes.is_empty())
        {
            let value = store.get(key)?.unwrap().value;
            store.put(key, &value);
        }
        store.txn(txn)
    })
}

#[test]
fn endless_conflicts_give_up_with_a_conflict_error() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    Allocator::new(&store, "n")
        .auto_assign(&v4("first"))
        .unwrap();
    let raced = always_raced(store);
    let err = Allocator::new(&raced, "n")
        .with_max_conflicts(5)
        .auto_assign(&v4("h"))
        .unwrap_err();
    assert_eq!(err.code(), codes::CONFLICT);
    assert!(err.msg().contains("block 10."), "{}", err.msg());
    assert_eq!(handle_total(&raced.0, "h"), 0);
}

/// Applies every transaction but reports it as failed, as when etcd's answer is lost and the
/// datastore's retry finds the conditions no longer hold.
fn lost_answers(store: MemoryStore) -> TxnHook {
    TxnHook(store, |store, txn| {
        let first = store.txn(txn)?;
        if txn.writes.is_empty() || !first.committed {
            return Ok(first);
        }
        Ok(TxnOutcome {
            resent: true,
            ..store.txn(txn)?
        })
    })
}

#[test]
fn an_applied_transaction_with_a_lost_answer_is_not_repeated() {
    let store = lost_answers(store_with_pools(&["10.0.0.0/16"]));
    let ipam = Allocator::new(&store, "n");
    ipam.auto_assign(&v4("a")).unwrap();
    ipam.auto_assign(&v4("b")).unwrap();
    ipam.assign_ip("c", ip("10.200.0.1")).unwrap_err();
    assert_eq!(handle_total(&store.0, "a"), 1);
    assert_eq!(handle_total(&store.0, "b"), 1);
    assert_eq!(blocks(&store.0)[0].allocations.iter().flatten().count(), 2);
}

/// A throwaway directory for block hints, removed when dropped.
struct HintDir(std::path::PathBuf);

impl HintDir {
    fn new(label: &str) -> HintDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ipam-hints-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        HintDir(dir)
    }

    fn hints(&self, node: &str) -> BlockHints {
        BlockHints::new(&self.0, node)
    }

    fn allocator<'s>(&self, store: &'s dyn Store, node: &str) -> Allocator<'s> {
        Allocator::new(store, node).with_block_hints(Some(&self.0))
    }
}

impl Drop for HintDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The node's IPv4 affinities in the store, in address order.
fn affine_blocks(store: &MemoryStore, node: &str) -> Vec<IpNetwork> {
    let mut cidrs: Vec<IpNetwork> = store
        .list_keys(&keys::host_affinities_prefix(node, IpFamily::V4))
        .unwrap()
        .iter()
        .filter_map(|k| keys::parse_host_affinity(k))
        .map(|(_, cidr)| cidr)
        .collect();
    cidrs.sort_by_key(|c| addr_to_u128(c.network()));
    cidrs
}

fn delete(store: &MemoryStore, key: &str) {
    let txn = Txn {
        writes: vec![Write::Delete(key.to_string())],
        ..Txn::default()
    };
    assert!(store.txn(&txn).unwrap().committed);
}

fn assign_counting(store: &MemoryStore, ipam: &Allocator, handle: &str) -> (IpAddr, u64) {
    let before = store.requests_made();
    let addr = ipam.auto_assign(&v4(handle)).unwrap()[0];
    (addr, store.requests_made() - before)
}

#[test]
fn hinted_assignment_is_one_read_and_one_transaction() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let dir = HintDir::new("common");
    let (first, claim_requests) = assign_counting(&store, &dir.allocator(&store, "node-1"), "a");
    let block = blocks(&store).remove(0);
    assert_eq!(dir.hints("node-1").read(IpFamily::V4), [block.cidr]);
    assert_eq!(
        claim_requests, 6,
        "list affinities, config, pools, blocks, affinities, claim"
    );
    // A fresh allocator, as in the next calico-ipam process.
    let (second, requests) = assign_counting(&store, &dir.allocator(&store, "node-1"), "b");
    assert_eq!(requests, 2, "read handle+block+affinity, commit");
    assert_eq!((first, second), (block.address(0), block.address(1)));
    assert_handles_match_blocks(&store);
}

#[test]
fn unusable_hints_fall_back_to_the_listing_and_are_rewritten() {
    type Spoil = fn(&MemoryStore, &HintDir, IpNetwork);
    let cases: [(&str, Spoil, u64); 6] = [
        (
            "no hint yet",
            |_, dir, _| {
                let _ = std::fs::remove_dir_all(&dir.0);
            },
            3,
        ),
        (
            "garbage file",
            |_, dir, _| {
                std::fs::write(
                    dir.hints("node-1").path(IpFamily::V4),
                    b"\xff\x00garbage\n10.0.0.1/7",
                )
                .unwrap();
            },
            3,
        ),
        (
            "hinted block unknown to etcd",
            |_, dir, _| {
                dir.hints("node-1")
                    .write(IpFamily::V4, &[net("10.0.77.0/26")]);
            },
            4,
        ),
        (
            "affinity released",
            |store, _, block| {
                delete(store, &keys::host_affinity("node-1", &block));
            },
            7,
        ),
        (
            "block reassigned to another node",
            |store, _, block| {
                delete(store, &keys::host_affinity("node-1", &block));
                let entry = store.get(&keys::block(&block)).unwrap().unwrap();
                let mut moved = AllocationBlock::from_json(&entry.key, &entry.value).unwrap();
                moved.affinity = Some("host:node-2".into());
                store.put(&entry.key, &moved.to_json());
                store.put(&keys::host_affinity("node-2", &block), b"{}");
            },
            7,
        ),
        (
            "hinted block full, another has room",
            |store, dir, block| {
                let other = Allocator::new(store, "node-1");
                for i in 1..64 {
                    other.auto_assign(&v4(&format!("fill{i}"))).unwrap();
                }
                other.auto_assign(&v4("spill")).unwrap();
                dir.hints("node-1").write(IpFamily::V4, &[block]);
            },
            4,
        ),
    ];
    for (name, spoil, want_requests) in cases {
        let store = store_with_pools(&["10.0.0.0/16"]);
        let dir = HintDir::new("stale");
        dir.allocator(&store, "node-1")
            .auto_assign(&v4("first"))
            .unwrap();
        let block = blocks(&store)[0].cidr;
        spoil(&store, &dir, block);
        let (addr, requests) = assign_counting(&store, &dir.allocator(&store, "node-1"), "next");
        let holder = blocks(&store)
            .into_iter()
            .find(|b| b.cidr.contains(addr))
            .unwrap();
        assert!(
            holder.is_affine_to("node-1"),
            "{name}: {addr} in {holder:?}"
        );
        assert_eq!(requests, want_requests, "{name}");
        assert_eq!(
            dir.hints("node-1").read(IpFamily::V4),
            affine_blocks(&store, "node-1"),
            "{name}: hint rewritten"
        );
        assert_handles_match_blocks(&store);
        let (_, requests) = assign_counting(&store, &dir.allocator(&store, "node-1"), "after");
        assert_eq!(requests, 2, "{name}: the rewritten hint is used");
    }
}

/// Deletes the node's affinity key of the block a transaction writes right before it runs,
/// like the block being released between the read and the commit.
fn affinity_released_before_commit(store: MemoryStore) -> TxnHook {
    TxnHook(store, |store, txn| {
        for condition in &txn.conditions {
            if let Condition::Revision(key, _) = condition
                && keys::parse_host_affinity(key).is_some()
            {
                delete(store, key);
            }
        }
        store.txn(txn)
    })
}

#[test]
fn commit_from_a_hinted_block_requires_its_affinity_key() {
    let store = affinity_released_before_commit(store_with_pools(&["10.0.0.0/16"]));
    let dir = HintDir::new("affinity-condition");
    dir.allocator(&store, "node-1")
        .auto_assign(&v4("a"))
        .unwrap();
    let first = blocks(&store.0)[0].cidr;
    let addr = dir
        .allocator(&store, "node-1")
        .auto_assign(&v4("b"))
        .unwrap()[0];
    assert!(
        !first.contains(addr),
        "{addr} taken from released block {first}"
    );
    assert_eq!(affine_blocks(&store.0, "node-1").len(), 1);
    assert_eq!(
        dir.hints("node-1").read(IpFamily::V4),
        affine_blocks(&store.0, "node-1")
    );
    assert_handles_match_blocks(&store.0);
}

#[test]
fn unwritable_hint_directory_only_turns_hints_off() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let dir = HintDir::new("unwritable");
    std::fs::write(&dir.0, b"a file where the directory should be").unwrap();
    let ipam = dir.allocator(&store, "node-1");
    ipam.auto_assign(&v4("a")).unwrap();
    let (_, requests) = assign_counting(&store, &ipam, "b");
    assert_eq!(requests, 3);
    let _ = std::fs::remove_file(&dir.0);
}

#[test]
fn concurrent_hinted_assignments_on_two_nodes_are_distinct() {
    let store = store_with_pools(&["10.0.0.0/16"]);
    let dir = HintDir::new("concurrent");
    let addrs: Vec<(String, IpAddr)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let (store, dir) = (&store, &dir);
                s.spawn(move || {
                    let node = format!("node-{}", t % 2);
                    (0..20)
                        .map(|i| {
                            let ipam = dir.allocator(store, &node);
                            let addr = ipam.auto_assign(&v4(&format!("h{t}.{i}"))).unwrap()[0];
                            (node.clone(), addr)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(
        addrs.iter().map(|(_, a)| a).collect::<BTreeSet<_>>().len(),
        160
    );
    let all = blocks(&store);
    for (node, addr) in &addrs {
        let block = all.iter().find(|b| b.cidr.contains(*addr)).unwrap();
        assert!(block.is_affine_to(node), "{addr} of {node} in {block:?}");
    }
    assert_eq!(all.len(), 4, "80 addresses per node fit in 2 blocks each");
    assert_handles_match_blocks(&store);
}
