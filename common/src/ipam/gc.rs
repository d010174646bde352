//! GC of IPAM: release the handles of one network on one node whose container the runtime no
//! longer lists, and nothing else.
//!
//! A handle is `<network>.<container id>` and has no interface name, so it stays as long as any
//! valid attachment has its container id. Only handles that record this node and this network
//! (written by an ADD of this plugin) are candidates: the id alone cannot tell network `net`'s
//! container `1.abc` from network `net.1`'s container `abc`, and handles of other tools or
//! older versions record no owner at all.

use super::allocator::Allocator;
use super::handle::AllocationHandle;
use super::store::Store;
use super::{PRIMARY_IFNAME, parse_handle_id};
use crate::datastore::keys;
use crate::error::{Error, Result};

/// Whose handles a GC may release.
#[derive(Debug, Clone, Copy)]
pub struct GcScope<'r> {
    /// This node.
    pub node: &'r str,
    /// The network's config `name`.
    pub network: &'r str,
}

/// What a GC did.
#[derive(Debug, Default)]
pub struct GcOutcome {
    /// The handles released, with the number of addresses each held.
    pub released: Vec<(String, usize)>,
    /// One error per handle that could not be read or released; the others were still done.
    pub failures: Vec<Error>,
}

/// Releases every handle of `scope` that no attachment in `valid` (container id, interface
/// name) holds. A handle in Calico's form names no interface: it stays while any valid
/// attachment has its container id.
///
/// Requests: one listing of the handles under `<network>.`, then per released handle one read
/// of its blocks and one transaction (more only after a conflict). A failing listing is an
/// error; a failing handle is recorded and the next one is tried.
pub fn release_unlisted_handles(
    store: &dyn Store,
    scope: &GcScope,
    valid: &[(&str, &str)],
) -> Result<GcOutcome> {
    release_unlisted_idle_handles(store, scope, valid, |_, _| Ok(Some(())))
}

/// [`release_unlisted_handles`], for attachments that no verb is working on right now: before a
/// handle is released, `hold` is asked for the attachment (container id, interface name; eth0
/// for Calico's form). It answers a guard that keeps other verbs of the attachment out while the
/// handle is released, or `None` when a verb holds the attachment (an ADD that allocated after
/// the runtime made its list): that handle is left for the next GC.
pub fn release_unlisted_idle_handles<G>(
    store: &dyn Store,
    scope: &GcScope,
    valid: &[(&str, &str)],
    hold: impl Fn(&str, &str) -> Result<Option<G>>,
) -> Result<GcOutcome> {
    let listed = store.list(&keys::handle(&format!("{}.", scope.network)))?;
    let ipam = Allocator::new(store, scope.node);
    let selected = |h: &AllocationHandle| h.belongs_to(scope.node, scope.network);
    let is_valid = |container_id: &str, ifname: Option<&str>| {
        valid
            .iter()
            .any(|&(c, i)| c == container_id && ifname.is_none_or(|ifname| ifname == i))
    };
    let mut outcome = GcOutcome::default();
    for entry in listed {
        let Some(id) = keys::parse_handle(&entry.key).map(str::to_string) else {
            continue;
        };
        let (container_id, ifname) = match parse_handle_id(scope.network, &id) {
            Some((container_id, ifname)) if !is_valid(container_id, ifname) => (
                container_id.to_string(),
                ifname.unwrap_or(PRIMARY_IFNAME).to_string(),
            ),
            _ => continue,
        };
        match AllocationHandle::from_json(&id, &entry.key, &entry.value) {
            Ok(handle) if !selected(&handle) => continue,
            Ok(_) => {}
            Err(err) => {
                outcome.failures.push(err);
                continue;
            }
        }
        let _held = match hold(&container_id, &ifname) {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                crate::log::info(&format!(
                    "gc: attachment {container_id}/{ifname} is busy: keeping handle {id}"
                ));
                continue;
            }
            Err(err) => {
                outcome
                    .failures
                    .push(err.context(format!("release handle {id}")));
                continue;
            }
        };
        match ipam.release_listed_handle(entry, &selected) {
            Ok(0) => {}
            Ok(n) => outcome.released.push((id, n)),
            Err(err) => outcome
                .failures
                .push(err.context(format!("release handle {id}"))),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::handle_id;
    use crate::ipam::store::MemoryStore;
    use crate::ipam::{AutoAssign, block::AllocationBlock};

    fn store_with_pool() -> MemoryStore {
        MemoryStore::with_pools(&["10.8.0.0/16"])
    }

    /// An ADD of `container` on `network` at `node`, as the plugin makes it.
    fn add(store: &MemoryStore, node: &str, network: &str, container: &str) {
        add_interface(store, node, network, container, "eth0");
    }

    /// An ADD of one interface of `container`.
    fn add_interface(
        store: &MemoryStore,
        node: &str,
        network: &str,
        container: &str,
        ifname: &str,
    ) {
        let handle = handle_id(network, container, ifname);
        let req = AutoAssign {
            handle: &handle,
            ipv4: true,
            ipv6: false,
            ipv4_pools: &[],
            ipv6_pools: &[],
        };
        Allocator::new(store, node)
            .with_network(network)
            .auto_assign(&req)
            .unwrap();
    }

    fn handles(store: &MemoryStore) -> Vec<String> {
        store
            .dump()
            .iter()
            .filter_map(|e| keys::parse_handle(&e.key).map(str::to_string))
            .collect()
    }

    fn allocated(store: &MemoryStore) -> usize {
        store
            .dump()
            .iter()
            .filter(|e| keys::parse_block(&e.key).is_some())
            .map(|e| {
                let block = AllocationBlock::from_json(&e.key, &e.value).unwrap();
                block.allocations.iter().flatten().count()
            })
            .sum()
    }

    const SCOPE: GcScope = GcScope {
        node: "n1",
        network: "net",
    };

    #[test]
    fn only_unlisted_handles_of_this_network_and_node_are_released() {
        let store = store_with_pool();
        add(&store, "n1", "net", "keep");
        add(&store, "n1", "net", "stale");
        add(&store, "n1", "net", "stale");
        add(&store, "n1", "net.1", "abc");
        add(&store, "n1", "net", "2.abc");
        add(&store, "n2", "net", "remote");
        add(&store, "n1", "other", "stale");
        store.put(
            &keys::handle("net.legacy"),
            br#"{"id":"net.legacy","block":{}}"#,
        );
        let outcome = release_unlisted_handles(&store, &SCOPE, &[("keep", "eth0")]).unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        let mut released = outcome.released;
        released.sort();
        assert_eq!(
            released,
            [("net.2.abc".to_string(), 1), ("net.stale".to_string(), 2)]
        );
        assert_eq!(
            handles(&store),
            [
                "net.1.abc",
                "net.keep",
                "net.legacy",
                "net.remote",
                "other.stale"
            ]
        );
        assert_eq!(allocated(&store), 4);
    }

    #[test]
    fn a_network_named_like_a_handle_prefix_keeps_its_handles() {
        let store = store_with_pool();
        add(&store, "n1", "net.1", "abc");
        let outcome = release_unlisted_handles(&store, &SCOPE, &[]).unwrap();
        assert!(outcome.released.is_empty() && outcome.failures.is_empty());
        let scope = GcScope {
            network: "net.1",
            ..SCOPE
        };
        let outcome = release_unlisted_handles(&store, &scope, &[]).unwrap();
        assert_eq!(outcome.released, [("net.1.abc".to_string(), 1)]);
        assert_eq!(allocated(&store), 0);
    }

    #[test]
    fn a_broken_handle_is_reported_and_the_others_are_released() {
        let store = store_with_pool();
        add(&store, "n1", "net", "a");
        add(&store, "n1", "net", "c");
        store.put(&keys::handle("net.b"), b"not json");
        let outcome = release_unlisted_handles(&store, &SCOPE, &[]).unwrap();
        assert_eq!(outcome.released.len(), 2);
        assert_eq!(outcome.failures.len(), 1);
        assert!(
            outcome.failures[0]
                .msg()
                .contains("/calico/ipam/v2/handle/net.b")
        );
    }

    #[test]
    fn releasing_costs_one_listing_plus_two_requests_per_handle() {
        let store = store_with_pool();
        for c in ["a", "b", "c"] {
            add(&store, "n1", "net", c);
        }
        let before = store.requests_made();
        let outcome = release_unlisted_handles(&store, &SCOPE, &[("b", "eth0")]).unwrap();
        assert_eq!(outcome.released.len(), 2);
        assert_eq!(store.requests_made() - before, 1 + 2 * 2);
    }

    #[test]
    fn a_further_interface_is_released_when_only_the_first_is_listed() {
        let store = store_with_pool();
        add_interface(&store, "n1", "net", "c", "eth0");
        add_interface(&store, "n1", "net", "c", "eth1");
        let outcome = release_unlisted_handles(&store, &SCOPE, &[("c", "eth0")]).unwrap();
        assert_eq!(outcome.released, [("net.c:eth1".to_string(), 1)]);
        // Calico's form names no interface: any listed interface of the container keeps it.
        let outcome = release_unlisted_handles(&store, &SCOPE, &[("c", "eth1")]).unwrap();
        assert!(outcome.released.is_empty());
        assert_eq!(handles(&store), ["net.c"]);
    }

    #[test]
    fn a_handle_whose_attachment_is_busy_is_kept_for_the_next_gc() {
        let store = store_with_pool();
        add(&store, "n1", "net", "busy");
        add(&store, "n1", "net", "idle");
        let hold = |container_id: &str, ifname: &str| {
            assert_eq!(ifname, "eth0");
            Ok((container_id != "busy").then_some(()))
        };
        let outcome = release_unlisted_idle_handles(&store, &SCOPE, &[], hold).unwrap();
        assert_eq!(outcome.released, [("net.idle".to_string(), 1)]);
        assert_eq!(handles(&store), ["net.busy"]);
    }
}
